"""`whapi`: WHAPI.Cloud, an unofficial WhatsApp gateway (JSON webhooks, REST sends).

- WHAPI signs nothing: the channel's webhook at WHAPI is configured with a custom header
  `X-Webhook-Secret: <webhook_secret>`, and the hub refuses requests without it (403).
- `messages[]`: `from_me=false` ones are stored (deduped on WHAPI's message id); `from_me=true`
  ones are our own sends (or the phone's) echoed back and are ignored. Chats are keyed by
  `chat_id` (`…@s.whatsapp.net` for a person, `…@g.us` for a group), so a group is one chat
  whatever member writes; the member is kept in `meta_data.sender`. Status broadcasts and
  newsletters are ignored, and so are edits and deletions (`action` messages other than
  reactions, non-`post` events). Reactions (`action.type: "reaction"`) update the message
  reacted to; button and list replies carry `meta_data.reply_to` (WHAPI's id prefix
  stripped).
- `statuses[]` move `delivery_status` forward (sent, delivered, read/played, failed).
- Media carry a public `link` when WHAPI's auto-download is on; otherwise `url` points at the
  hub's proxy (`/channels/{channel_id}/media/{media_id}`, fetched with the token).
- Outbound: `POST /messages/text` `{to, body}` and `POST /messages/{image|video|audio|voice|
  document|sticker|gif}` `{to, media, caption?}` with `Authorization: Bearer <token>`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx2
from fastapi import Response

from agenthub.models import DeliveryStatus
from agenthub.platforms.base import (
    Capabilities,
    ChannelContext,
    ChatContext,
    Inbound,
    InboundMessage,
    MediaDownload,
    OutboundContext,
    ReactionUpdate,
    SendError,
    StatusUpdate,
    WebhookRequest,
)
from agenthub.platforms.common import (
    NAME_MAX,
    TEXT_MAX,
    compact,
    epoch,
    guess_type,
    ident,
    json_ack,
    load_json,
    media_proxy_url,
    network_error,
    number,
    obj,
    objs,
    outbound_media,
    outbound_rich,
    phone_digits,
    response_json,
    safe_parse,
    secret_matches,
    text,
)
from agenthub.rich import Rich

DEFAULT_API_BASE = "https://gate.whapi.cloud"
SECRET_HEADER = "x-webhook-secret"  # noqa: S105 - a header name
CAPTION_LIMIT = 1024

STATUS_MAP = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "played": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
    "error": DeliveryStatus.FAILED,
}
MEDIA_TYPES = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "short": "video/mp4",
    "gif": "video/mp4",
    "audio": "audio/mpeg",
    "voice": "audio/ogg",
    "document": "application/octet-stream",
    "sticker": "image/webp",
}
SEND_KINDS = {"image", "video", "gif", "audio", "voice", "document", "sticker"}
CAPTIONED = {"image", "video", "gif", "document"}
IGNORED_CHATS = ("status@broadcast",)
CHOICE_PREFIXES = ("ButtonsV3:", "ListV3:")
IGNORED_SUFFIXES = ("@newsletter", "@broadcast")


class WhapiAdapter:
    name = "whapi"
    reply_window: timedelta | None = None
    # WHAPI's limits are undocumented beyond 3 quick replies: WhatsApp's are assumed.
    capabilities = Capabilities(
        buttons=3,
        list_rows=10,
        templates=False,
        typing=True,
        reactions=True,
        media=True,
        max_text_length=4096,
    )
    window_closed_codes: frozenset[str] = frozenset()

    # --- inbound -------------------------------------------------------------------------------

    def verify(self, request: WebhookRequest, credentials: dict[str, Any]) -> bool:
        return secret_matches(request.headers.get(SECRET_HEADER), credentials.get("webhook_secret"))

    def parse(self, request: WebhookRequest) -> Inbound:
        return safe_parse(self.name, lambda: self._parse(request))

    def _parse(self, request: WebhookRequest) -> Inbound:
        payload = obj(load_json(request.body))
        event = obj(payload.get("event"))
        method = event.get("event")
        if method is not None and method != "post":
            # put/patch/delete events: edits and deletions of earlier messages.
            return Inbound()
        inbound = Inbound()
        for message in objs(payload.get("messages")):
            if message.get("type") == "action":
                if reaction := _reaction(message):
                    inbound.reactions.append(reaction)
            elif parsed := self._message(request, message):
                inbound.messages.append(parsed)
        for status in objs(payload.get("statuses")):
            if update := _status(status):
                inbound.statuses.append(update)
        return inbound

    def _message(self, request: WebhookRequest, message: dict[str, Any]) -> InboundMessage | None:
        if message.get("from_me") in (True, "true"):
            return None  # our own sends (and the phone's), echoed back
        message_id = ident(message.get("id"))
        sender = ident(message.get("from"))
        chat_id = ident(message.get("chat_id")) or ident(
            f"{sender}@s.whatsapp.net" if sender and "@" not in sender else sender
        )
        kind = message.get("type")
        if message_id is None or chat_id is None or not isinstance(kind, str):
            return None
        if chat_id in IGNORED_CHATS or chat_id.endswith(IGNORED_SUFFIXES):
            return None
        is_group = chat_id.endswith("@g.us")
        body = obj(message.get(kind))
        content = ""
        meta: dict[str, Any] = {"type": kind}
        choice: str | None = None  # the id of the button or list row chosen
        if kind == "text":
            content = text(body.get("body"), TEXT_MAX) or ""
            if not content:
                return None
        elif kind == "link_preview":
            content = text(body.get("body"), TEXT_MAX) or text(body.get("url"), TEXT_MAX) or ""
            if not content:
                return None
            meta["link"] = compact(
                {
                    "url": text(body.get("url")),
                    "title": text(body.get("title")),
                    "description": text(body.get("description")),
                }
            )
        elif kind in MEDIA_TYPES:
            item = _media_item(request, body, kind)
            if item is None:
                return None
            content = text(body.get("caption"), TEXT_MAX) or ""
            meta["media"] = [item]
        elif kind in ("location", "live_location"):
            latitude, longitude = number(body.get("latitude")), number(body.get("longitude"))
            if latitude is None or longitude is None:
                return None
            content = text(body.get("caption"), TEXT_MAX) or ""
            meta["location"] = compact(
                {
                    "latitude": latitude,
                    "longitude": longitude,
                    "name": text(body.get("name")),
                    "address": text(body.get("address")),
                    "url": text(body.get("url")),
                }
            )
        elif kind in ("contact", "contact_list"):
            cards = [body] if kind == "contact" else objs(body.get("list"))[:20]
            meta["contacts"] = [
                card
                for card in (
                    compact({"name": text(c.get("name"), NAME_MAX), "vcard": text(c.get("vcard"))})
                    for c in cards
                )
                if card
            ]
            if not meta["contacts"]:
                return None
        elif kind == "reply":
            reply_type = body.get("type")
            reply = obj(body.get(reply_type)) if isinstance(reply_type, str) else {}
            title = text(reply.get("title"), TEXT_MAX)
            if not title and not text(reply.get("id")):
                return None
            content = title or ""
            meta["interactive"] = compact(
                {
                    "type": text(reply_type, 64),
                    "id": text(reply.get("id")),
                    "title": title,
                    "description": text(reply.get("description")),
                }
            )
            choice = _choice_id(meta["interactive"].get("id")) or title
        else:
            # action (reactions, edits, deletions), poll, system, call, …: ignored.
            return None
        replied_to = ident(obj(message.get("context")).get("quoted_id"))
        if choice is not None or replied_to:
            meta["reply_to"] = {"id": choice}
        meta.update(
            compact(
                {
                    "timestamp": message.get("timestamp")
                    if isinstance(message.get("timestamp"), int)
                    else None,
                    "source": text(message.get("source"), 64),
                }
            )
        )
        if is_group:
            meta["sender"] = compact(
                {"id": sender, "name": text(message.get("from_name"), NAME_MAX)}
            )
            name = text(message.get("chat_name"), NAME_MAX)
        else:
            name = text(message.get("from_name"), NAME_MAX) or text(
                message.get("chat_name"), NAME_MAX
            )
        return InboundMessage(
            external_id=message_id,
            contact_id=chat_id,
            contact_name=name,
            content=content,
            meta_data=meta,
            replied_to=replied_to,
        )

    def contact_address(self, to: str, credentials: dict[str, Any]) -> str:
        """A person's chat id, `<digits>@s.whatsapp.net`, as the webhooks give it (a chat id
        with its `@…` suffix is taken as written)."""
        to = to.strip()
        if "@" in to:
            if ident(to) != to or any(char.isspace() for char in to):
                raise ValueError("a WHAPI chat id (`14155550100@s.whatsapp.net`) or a phone number")
            return to
        return f"{phone_digits(to)}@s.whatsapp.net"

    def acknowledge(self) -> Response:
        return json_ack()

    # --- outbound ------------------------------------------------------------------------------

    async def send(self, http: httpx2.AsyncClient, context: OutboundContext) -> str | None:
        token = _token(context.credentials)
        base = context.api_base_url(DEFAULT_API_BASE)
        to = context.chat.external_id
        content = context.message.content
        rich = outbound_rich(context.message.meta_data)
        if rich is not None:
            interactive = {"to": to, **render_rich(content, rich)}
            return await self._post(http, f"{base}/messages/interactive", token, interactive)
        media = outbound_media(context.message.meta_data)
        kinds = [_outbound_kind(item) for item in media]
        as_caption = (
            bool(content)
            and len(media) == 1
            and len(content) <= CAPTION_LIMIT
            and kinds[0] in CAPTIONED
        )
        calls: list[tuple[str, dict[str, Any]]] = []
        if content and not as_caption:
            calls.append(("text", {"to": to, "body": content}))
        for item, kind in zip(media, kinds, strict=True):
            body: dict[str, Any] = {"to": to, "media": _media_ref(item, context.public_url)}
            if as_caption:
                body["caption"] = content
            if kind == "document":
                filename = item.get("filename") or item.get("file_name")
                if isinstance(filename, str) and filename:
                    body["filename"] = filename
            calls.append((kind, body))
        if not calls:
            raise SendError("Nothing to send: no content and no media", transient=False)
        first: str | None = None
        for kind, body in calls:
            message_id = await self._post(http, f"{base}/messages/{kind}", token, body)
            first = first or message_id
        return first

    def check_reaction(self, emoji: str) -> str | None:
        return None

    async def send_reaction(
        self, http: httpx2.AsyncClient, context: OutboundContext, emoji: str
    ) -> None:
        """`PUT /messages/{id}/reaction {emoji}`; `DELETE` on the same path removes ours."""
        token = _token(context.credentials)
        base = context.api_base_url(DEFAULT_API_BASE)
        url = f"{base}/messages/{quote(str(context.message.external_id), safe='')}/reaction"
        try:
            response = await http.request(
                "PUT" if emoji else "DELETE",
                url,
                json={"emoji": emoji} if emoji else None,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=20,
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        if not response.is_success:
            raise _whapi_error(response, response_json(response))

    async def _post(
        self, http: httpx2.AsyncClient, url: str, token: str, body: dict[str, Any]
    ) -> str | None:
        try:
            response = await http.post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=20,
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        answer = response_json(response)
        if not response.is_success:
            raise _whapi_error(response, answer)
        if answer.get("sent") is False:
            raise SendError(
                text(answer.get("message")) or "WHAPI did not send the message",
                transient=False,
                status_code=response.status_code,
            )
        return ident(obj(answer.get("message")).get("id")) or ident(answer.get("id"))

    # --- media ---------------------------------------------------------------------------------

    async def open_media(
        self, http: httpx2.AsyncClient, context: ChannelContext, media_id: str
    ) -> MediaDownload:
        token = _token(context.credentials)
        url = f"{context.api_base_url(DEFAULT_API_BASE)}/media/{quote(media_id, safe='')}"
        try:
            response = await http.send(
                http.build_request(
                    "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=60
                ),
                stream=True,
                follow_redirects=False,
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        if not response.is_success:
            await response.aclose()
            raise SendError(
                f"media download failed with HTTP {response.status_code}",
                transient=response.status_code >= 500,
                status_code=response.status_code,
            )
        content_type = response.headers.get("content-type", "application/octet-stream")
        return MediaDownload(response=response, content_type=content_type)

    # --- typing --------------------------------------------------------------------------------

    # The presence lasts `delay` seconds: one call.
    typing_renew_seconds: float | None = None

    async def send_typing(self, http: httpx2.AsyncClient, context: ChatContext) -> None:
        """`PUT /presences/{ChatID} {"presence": "typing", "delay": 5}`."""
        token = _token(context.credentials)
        base = context.api_base_url(DEFAULT_API_BASE)
        url = f"{base}/presences/{quote(context.chat_external_id, safe='')}"
        try:
            response = await http.put(
                url,
                json={"presence": "typing", "delay": 5},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=20,
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        if not response.is_success:
            raise _whapi_error(response, response_json(response))


# --- helpers ------------------------------------------------------------------------------------


def render_rich(content: str, rich: Rich) -> dict[str, Any]:
    """`POST /messages/interactive`: quick-reply buttons, or a list (`action.list`)."""
    if rich.buttons is not None:
        buttons = [{"type": "quick_reply", "title": b.title, "id": b.id} for b in rich.buttons]
        return {"type": "button", "body": {"text": content}, "action": {"buttons": buttons}}
    if rich.list is not None:
        sections = [
            {
                "title": section.title,
                "rows": [row.model_dump(exclude_none=True) for row in section.rows],
            }
            for section in rich.list.sections
        ]
        menu = {"label": rich.list.button, "sections": sections}
        return {"type": "list", "body": {"text": content}, "action": {"list": menu}}
    raise SendError("Templates cannot be sent through WHAPI", transient=False)


def _token(credentials: dict[str, Any]) -> str:
    token = credentials.get("token")
    if not isinstance(token, str) or not token:
        raise SendError("The channel has no token", transient=False)
    return token


def _media_item(request: WebhookRequest, body: dict[str, Any], kind: str) -> dict[str, Any] | None:
    link = text(body.get("link"), 4096)
    media_id = text(body.get("id"), 255)
    if link and not link.startswith(("https://", "http://")):
        link = None
    if not link and not media_id:
        return None
    filename = text(body.get("file_name"), 255) or text(body.get("filename"), 255)
    mime = text(body.get("mime_type"), 255)
    if not mime or "/" not in mime:
        mime = guess_type(filename, MEDIA_TYPES[kind])
    return compact(
        {
            "url": link or media_proxy_url(request, str(media_id)),
            "content_type": mime.split(";")[0].strip(),
            "kind": kind,
            "media_id": media_id,
            "filename": filename,
            "file_size": body.get("file_size") if isinstance(body.get("file_size"), int) else None,
        }
    )


def _choice_id(value: str | None) -> str | None:
    """Our button or row id: WHAPI prefixes it (`ButtonsV3:yes`, `ListV3:row-1`)."""
    if value:
        for prefix in CHOICE_PREFIXES:
            if value.startswith(prefix):
                return value[len(prefix) :] or None
    return value


def _reaction(message: dict[str, Any]) -> ReactionUpdate | None:
    """`{"type": "action", "action": {"type": "reaction", "target": <message id>, "emoji"}}`
    from a contact; an empty emoji removes the reaction. Other actions (edits, deletions)
    and our own reactions echoed back are ignored."""
    action = obj(message.get("action"))
    if action.get("type") != "reaction" or message.get("from_me") in (True, "true"):
        return None
    target = ident(action.get("target"))
    sender = ident(message.get("from"))
    chat_id = ident(message.get("chat_id"))
    if target is None or (sender or chat_id) is None:
        return None
    if chat_id and chat_id.endswith(IGNORED_SUFFIXES):
        return None
    who = sender or chat_id
    return ReactionUpdate(
        target_external_id=target,
        contact_id=str(who),
        emoji=text(action.get("emoji"), 64),
        at=epoch(message.get("timestamp")),
    )


def _status(status: dict[str, Any]) -> StatusUpdate | None:
    message_id = ident(status.get("id"))
    value = status.get("status")
    mapped = STATUS_MAP.get(value) if isinstance(value, str) else None
    if message_id is None or mapped is None:
        return None
    error = None
    if mapped == DeliveryStatus.FAILED:
        errors = objs(status.get("errors"))
        first = errors[0] if errors else status
        error = compact(
            {
                "status": value,
                "code": _error_code(first.get("code")),
                "detail": text(first.get("message"))
                or text(first.get("reason"))
                or text(first.get("error"))
                or "failed",
            }
        )
    return StatusUpdate(message_id, mapped, error)


def _error_code(code: Any) -> int | str | None:
    """A platform error code as given (a number, or cleaned text: it is stored)."""
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return text(code, 64)


def _whapi_error(response: httpx2.Response, answer: dict[str, Any]) -> SendError:
    """WHAPI errors: `{"error": {"code", "message", "details"}}` (shapes vary)."""
    error = obj(answer.get("error")) or answer
    code = error.get("code")
    if not isinstance(code, int | str) or isinstance(code, bool):
        code = response.status_code
    message = (
        text(error.get("message"))
        or text(answer.get("error"))
        or response.text[:500]
        or response.reason_phrase
    )
    details = text(error.get("details"))
    if details and details != message:
        message = f"{message}: {details}"
    transient = response.status_code == 429 or response.status_code >= 500
    return SendError(message, transient=transient, code=code, status_code=response.status_code)


def _outbound_kind(item: dict[str, Any]) -> str:
    kind = item.get("kind")
    if kind == "short":
        return "video"
    if isinstance(kind, str) and kind in SEND_KINDS:
        return kind
    content_type = str(item.get("content_type") or "").lower()
    if content_type == "image/gif":
        return "gif"
    if content_type == "image/webp":
        return "sticker"
    if content_type.startswith("image/"):
        return "image"
    if content_type.startswith("video/"):
        return "video"
    if content_type.startswith("audio/ogg"):
        return "voice"
    if content_type.startswith("audio/"):
        return "audio"
    return "document"


def _media_ref(item: dict[str, Any], public_url: str) -> str:
    """A URL WHAPI downloads itself, or a WHAPI media id (e.g. forwarding what a contact sent:
    the hub's own media proxy needs a bearer token WHAPI does not have)."""
    url = item.get("url")
    media_id = item.get("media_id")
    if isinstance(url, str) and not url.startswith(f"{public_url}/channels/"):
        return url
    if isinstance(media_id, str) and media_id:
        return media_id
    return str(url)
