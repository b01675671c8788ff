"""`whatsapp_cloud`: Meta's WhatsApp Cloud API (Graph API webhooks and `/messages`).

- `GET` on the webhook URL is Meta's verification handshake: `hub.mode=subscribe` and a
  `hub.verify_token` equal to the channel's `verify_token` → 200 with `hub.challenge` as plain
  text; anything else → 403.
- `POST`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>`. A payload
  batches `entry[].changes[].value` objects with `messages` (stored, deduped on the `wamid`)
  and `statuses` (sent/delivered/read/failed; on failure an error whose `code` is
  `window_closed` for Meta's 131047, else `platform_error`, with Meta's code and text).
  Button and list replies (and template quick replies) carry `meta_data.reply_to`; a
  `reaction` is not a message but a `ReactionUpdate` of the message reacted to. Changes
  addressed to another `phone_number_id` than the channel's (one Meta app may serve several
  numbers) are ignored.
- Media arrive as ids; `meta_data.media[].url` points at the hub's proxy
  (`/channels/{channel_id}/media/{media_id}`), which fetches them with the access token.
- Outbound: `POST {base}/{version}/{phone_number_id}/messages` with `Authorization: Bearer`,
  text (split at 4096 characters) and media by link. The Graph API version is the setting
  `AGENTHUB_WHATSAPP_GRAPH_VERSION`.
- Templates: `GET {base}/{version}/{waba_id}/message_templates` (the `waba_id` credential),
  following `paging.next`; a template's readable body is its `BODY` component's text.
- A contact's address is its WhatsApp id: the phone number's digits, country code first.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx2
from fastapi import Response
from fastapi.responses import PlainTextResponse

from agenthub.models import DeliveryStatus
from agenthub.platforms.base import (
    Capabilities,
    ChannelContext,
    ChatContext,
    Inbound,
    InboundMessage,
    MediaDownload,
    MissingCredential,
    OutboundContext,
    ReactionUpdate,
    SendError,
    StatusUpdate,
    TemplateInfo,
    WebhookRequest,
)
from agenthub.platforms.common import (
    META_TEXT_MAX,
    NAME_MAX,
    TEXT_MAX,
    compact,
    epoch,
    ident,
    json_ack,
    load_json,
    log,
    media_proxy_url,
    network_error,
    number,
    obj,
    objs,
    outbound_media,
    outbound_rich,
    phone_digits,
    read_pages,
    response_json,
    safe_parse,
    secret_matches,
    split_text,
    text,
)
from agenthub.rich import Rich

DEFAULT_API_BASE = "https://graph.facebook.com"
SIGNATURE_HEADER = "x-hub-signature-256"
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024

STATUS_MAP = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}
MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
CAPTIONED = {"image", "video", "document"}
# A status callback's error code for "more than 24 hours since the contact's last message".
WINDOW_CLOSED_CODE = 131047
# Graph error codes worth retrying: rate limits, throttling and Meta's own transient failures.
TRANSIENT_CODES = {1, 2, 4, 17, 341, 80007, 130429, 131000, 131016, 131048, 131056, 133004}


def signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value Meta sends for `body`."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WhatsAppCloudAdapter:
    name = "whatsapp_cloud"
    reply_window: timedelta | None = timedelta(hours=24)
    capabilities = Capabilities(
        buttons=3,
        list_rows=10,
        templates=True,
        typing=True,
        reactions=True,
        media=True,
        max_text_length=TEXT_LIMIT,
    )
    # Graph error codes meaning "outside the 24 h window" (a send's 4xx or a status callback).
    window_closed_codes = frozenset({"131047"})

    # --- inbound -------------------------------------------------------------------------------

    def verify(self, request: WebhookRequest, credentials: dict[str, Any]) -> bool:
        secret = credentials.get("app_secret")
        given = request.headers.get(SIGNATURE_HEADER)
        if not isinstance(secret, str) or not secret or not given:
            return False
        return secret_matches(given.strip().lower(), signature(secret, request.body))

    def handshake(self, request: WebhookRequest, credentials: dict[str, Any]) -> Response | None:
        challenge = request.query.get("hub.challenge")
        token = request.query.get("hub.verify_token")
        if (
            request.query.get("hub.mode") == "subscribe"
            and secret_matches(token, credentials.get("verify_token"))
            and challenge
            and len(challenge) <= 1024
        ):
            return PlainTextResponse(challenge, headers={"X-Content-Type-Options": "nosniff"})
        return None

    def parse(self, request: WebhookRequest) -> Inbound:
        return safe_parse(self.name, lambda: self._parse(request, None))

    def parse_for_channel(self, request: WebhookRequest, credentials: dict[str, Any]) -> Inbound:
        phone_number_id = ident(credentials.get("phone_number_id"))
        return safe_parse(self.name, lambda: self._parse(request, phone_number_id))

    def _parse(self, request: WebhookRequest, phone_number_id: str | None) -> Inbound:
        payload = obj(load_json(request.body))
        inbound = Inbound()
        if payload.get("object") != "whatsapp_business_account":
            return inbound
        for entry in objs(payload.get("entry")):
            for change in objs(entry.get("changes")):
                if change.get("field") != "messages":
                    continue
                value = obj(change.get("value"))
                addressed_to = ident(obj(value.get("metadata")).get("phone_number_id"))
                if phone_number_id and addressed_to and addressed_to != phone_number_id:
                    log.info(
                        "whatsapp_cloud: change for phone_number_id %s ignored (channel is %s)",
                        addressed_to,
                        phone_number_id,
                    )
                    continue
                names = _contact_names(value.get("contacts"))
                for message in objs(value.get("messages")):
                    if message.get("type") == "reaction":
                        if reaction := _reaction(message):
                            inbound.reactions.append(reaction)
                    elif parsed := self._message(request, message, names):
                        inbound.messages.append(parsed)
                for status in objs(value.get("statuses")):
                    if update := _status(status):
                        inbound.statuses.append(update)
        return inbound

    def _message(
        self, request: WebhookRequest, message: dict[str, Any], names: dict[str, str]
    ) -> InboundMessage | None:
        wamid = ident(message.get("id"))
        # `from` is the sender's WhatsApp id; username-only users carry a BSUID instead.
        contact = ident(message.get("from")) or ident(message.get("from_user_id"))
        kind = message.get("type")
        if wamid is None or contact is None or not isinstance(kind, str):
            return None
        body = obj(message.get(kind))
        content = ""
        meta: dict[str, Any] = {"type": kind}
        choice: str | None = None  # the id of the button or list row chosen
        if kind == "text":
            content = text(body.get("body"), TEXT_MAX) or ""
            if not content:
                return None
        elif kind in MEDIA_TYPES:
            media_id = text(body.get("id"), 255)
            if not media_id:
                return None
            content = text(body.get("caption"), TEXT_MAX) or ""
            meta["media"] = [
                compact(
                    {
                        "url": media_proxy_url(request, media_id),
                        "content_type": _mime(body.get("mime_type"), kind),
                        "kind": "voice" if body.get("voice") is True else kind,
                        "media_id": media_id,
                        "filename": text(body.get("filename"), 255),
                        "sha256": text(body.get("sha256"), 128),
                    }
                )
            ]
        elif kind == "location":
            latitude, longitude = number(body.get("latitude")), number(body.get("longitude"))
            if latitude is None or longitude is None:
                return None
            meta["location"] = compact(
                {
                    "latitude": latitude,
                    "longitude": longitude,
                    "name": text(body.get("name")),
                    "address": text(body.get("address")),
                    "url": text(body.get("url")),
                }
            )
        elif kind == "contacts":
            cards = [_card(card) for card in objs(message.get("contacts"))[:20]]
            meta["contacts"] = [card for card in cards if card]
            if not meta["contacts"]:
                return None
        elif kind == "interactive":
            reply = _interactive(body)
            if reply is None:
                return None
            content = reply.get("title") or reply.get("body") or ""
            meta["interactive"] = reply
            if reply["type"] != "nfm_reply":
                choice = reply.get("id") or reply.get("title")
        elif kind == "button":
            content = text(body.get("text"), TEXT_MAX) or ""
            meta["button"] = compact(
                {"text": content or None, "payload": text(body.get("payload"))}
            )
            if not content:
                return None
            choice = meta["button"].get("payload") or content[:META_TEXT_MAX]
        else:
            # reaction, order, system, unsupported, unknown, …: acknowledged and ignored.
            return None
        context = obj(message.get("context"))
        # `context.id`: the message answered (ours, for a choice) or quoted.
        replied_to = ident(context.get("id"))
        if choice is not None or replied_to:
            meta["reply_to"] = {"id": choice}
        meta.update(
            compact(
                {
                    "forwarded": context.get("forwarded") is True or None,
                    "timestamp": text(message.get("timestamp"), 32),
                }
            )
        )
        return InboundMessage(
            external_id=wamid,
            contact_id=contact,
            contact_name=names.get(contact),
            content=content,
            meta_data=meta,
            replied_to=replied_to,
        )

    def acknowledge(self) -> Response:
        return json_ack()

    # --- outbound ------------------------------------------------------------------------------

    async def send(self, http: httpx2.AsyncClient, context: OutboundContext) -> str | None:
        token, url = _messages_endpoint(context)
        to = context.chat.external_id
        content = context.message.content
        rich = outbound_rich(context.message.meta_data)
        if rich is not None:
            body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}
            return await self._post(http, url, token, body | render_rich(content, rich))
        media = outbound_media(context.message.meta_data)
        kinds = [_outbound_kind(item) for item in media]
        as_caption = (
            bool(content)
            and len(media) == 1
            and len(content) <= CAPTION_LIMIT
            and kinds[0] in CAPTIONED
        )
        bodies: list[dict[str, Any]] = []
        if content and not as_caption:
            bodies += [
                {"type": "text", "text": {"body": piece, "preview_url": False}}
                for piece in split_text(content, TEXT_LIMIT)
            ]
        for item, kind in zip(media, kinds, strict=True):
            media_object = _media_ref(item, context.public_url)
            if as_caption:
                media_object["caption"] = content
            if kind == "document" and isinstance(item.get("filename"), str):
                media_object["filename"] = item["filename"]
            bodies.append({"type": kind, kind: media_object})
        if not bodies:
            raise SendError("Nothing to send: no content and no media", transient=False)
        first: str | None = None
        for body in bodies:
            wamid = await self._post(
                http,
                url,
                token,
                {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to} | body,
            )
            first = first or wamid
        return first

    def check_rich(
        self, content: str, rich: dict[str, Any]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        template = rich.get("template")
        if template is not None and not template.get("language"):
            return [(("template", "language"), "required on whatsapp_cloud (e.g. en_US)")]
        return []

    def check_reaction(self, emoji: str) -> str | None:
        return None

    async def send_reaction(
        self, http: httpx2.AsyncClient, context: OutboundContext, emoji: str
    ) -> None:
        """`type: reaction` on the target's wamid; `""` removes ours."""
        token, url = _messages_endpoint(context)
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": context.chat.external_id,
            "type": "reaction",
            "reaction": {"message_id": context.message.external_id, "emoji": emoji},
        }
        await self._post(http, url, token, body)

    async def _post(
        self, http: httpx2.AsyncClient, url: str, token: str, body: dict[str, Any]
    ) -> str | None:
        try:
            response = await http.post(
                url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=20
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        answer = response_json(response)
        if not response.is_success:
            raise _graph_error(response, answer)
        messages = objs(answer.get("messages"))
        return ident(messages[0].get("id")) if messages else None

    # --- media ---------------------------------------------------------------------------------

    async def open_media(
        self, http: httpx2.AsyncClient, context: ChannelContext, media_id: str
    ) -> MediaDownload:
        """`GET /{version}/{media_id}` gives a short-lived URL, itself fetched with the token."""
        token, _ = _credentials(context.credentials)
        version = context.settings.whatsapp_graph_version
        base = context.api_base_url(DEFAULT_API_BASE)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            response = await http.get(
                f"{base}/{version}/{quote(media_id, safe='')}", headers=headers, timeout=20
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        info = response_json(response)
        if not response.is_success:
            raise _graph_error(response, info)
        url = info.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise SendError("Meta gave no media URL", transient=False, status_code=404)
        try:
            download = await http.send(
                http.build_request("GET", url, headers=headers, timeout=60),
                stream=True,
                follow_redirects=False,
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        if not download.is_success:
            await download.aclose()
            raise SendError(
                f"media download failed with HTTP {download.status_code}",
                transient=download.status_code >= 500,
                status_code=download.status_code,
            )
        content_type = text(info.get("mime_type"), 255) or str(
            download.headers.get("content-type", "application/octet-stream")
        )
        return MediaDownload(response=download, content_type=content_type)

    # --- templates and contact addresses -------------------------------------------------------

    async def list_templates(
        self, http: httpx2.AsyncClient, context: ChannelContext
    ) -> list[TemplateInfo]:
        """`GET /{version}/{waba_id}/message_templates`, every page (`paging.next`, on the
        same host only: it gets the access token)."""
        token = context.credentials.get("access_token")
        waba_id = context.credentials.get("waba_id")
        if not isinstance(waba_id, str) or not waba_id:
            raise MissingCredential(
                "waba_id",
                "The channel has no waba_id credential (the WhatsApp Business Account id): "
                "set it with PATCH /channels/{id} to list its templates",
            )
        if not isinstance(token, str) or not token:
            raise MissingCredential("access_token", "The channel has no access_token")
        version = context.settings.whatsapp_graph_version
        base = context.api_base_url(DEFAULT_API_BASE)
        first = (
            f"{base}/{version}/{quote(waba_id, safe='')}/message_templates"
            "?fields=name,language,status,category,components&limit=100"
        )

        async def fetch(url: str) -> dict[str, Any]:
            try:
                response = await http.get(
                    url, headers={"Authorization": f"Bearer {token}"}, timeout=20
                )
            except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
                raise network_error(exc, redact=token) from None
            page = response_json(response)
            if not response.is_success:
                raise _graph_error(response, page)
            return page

        pages = await read_pages(first, fetch, lambda page: obj(page.get("paging")).get("next"))
        return [t for page in pages for t in map(_template, objs(page.get("data"))) if t]

    def contact_address(self, to: str, credentials: dict[str, Any]) -> str:
        """The WhatsApp id Meta's webhooks carry in `from`: the number's digits."""
        return phone_digits(to)

    # --- typing and read receipts --------------------------------------------------------------

    # One call: the indicator lasts until our reply or 25 s.
    typing_renew_seconds: float | None = None

    async def send_typing(self, http: httpx2.AsyncClient, context: ChatContext) -> None:
        """Read + typing on the chat's last inbound message (nothing without one)."""
        if context.last_inbound_id:
            await self._status_read(http, context, {"typing_indicator": {"type": "text"}})

    async def mark_read(self, http: httpx2.AsyncClient, context: ChatContext) -> None:
        """`status: read` on the chat's last inbound message (earlier ones follow)."""
        if context.last_inbound_id:
            await self._status_read(http, context, {})

    async def _status_read(
        self, http: httpx2.AsyncClient, context: ChatContext, extra: dict[str, Any]
    ) -> None:
        token, url = _messages_endpoint(context)
        body = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": context.last_inbound_id,
            **extra,
        }
        await self._post(http, url, token, body)


# --- helpers ------------------------------------------------------------------------------------


def render_rich(content: str, rich: Rich) -> dict[str, Any]:
    """The `type` and its object for a message with buttons, a list or a template (added to
    `messaging_product`, `recipient_type` and `to`)."""
    if rich.template is not None:
        template: dict[str, Any] = {
            "name": rich.template.name,
            "language": {"code": rich.template.language},
        }
        parameters = rich.template.parameters
        if isinstance(parameters, list):
            values = [{"type": "text", "text": value} for value in parameters]
        else:
            values = [
                {"type": "text", "parameter_name": name, "text": value}
                for name, value in parameters.items()
            ]
        if values:  # a template without variables takes no components
            template["components"] = [{"type": "body", "parameters": values}]
        return {"type": "template", "template": template}
    if rich.buttons is not None:
        buttons = [{"type": "reply", "reply": {"id": b.id, "title": b.title}} for b in rich.buttons]
        interactive = {"type": "button", "body": {"text": content}, "action": {"buttons": buttons}}
        return {"type": "interactive", "interactive": interactive}
    assert rich.list is not None
    sections = [
        {
            "title": section.title,
            "rows": [row.model_dump(exclude_none=True) for row in section.rows],
        }
        for section in rich.list.sections
    ]
    action = {"button": rich.list.button, "sections": sections}
    return {
        "type": "interactive",
        "interactive": {"type": "list", "body": {"text": content}, "action": action},
    }


def _messages_endpoint(context: OutboundContext | ChatContext) -> tuple[str, str]:
    """The access token and the Graph `/{phone_number_id}/messages` URL every send goes to."""
    token, phone_number_id = _credentials(context.credentials)
    version = context.settings.whatsapp_graph_version
    base = context.api_base_url(DEFAULT_API_BASE)
    return token, f"{base}/{version}/{quote(phone_number_id, safe='')}/messages"


def _credentials(credentials: dict[str, Any]) -> tuple[str, str]:
    token, phone_number_id = credentials.get("access_token"), credentials.get("phone_number_id")
    if not isinstance(token, str) or not token or not isinstance(phone_number_id, str):
        raise SendError("The channel has no access_token or phone_number_id", transient=False)
    return token, phone_number_id


def _graph_error(response: httpx2.Response, answer: dict[str, Any]) -> SendError:
    """Graph API errors: `{"error": {"message", "type", "code", "error_subcode",
    "error_data": {"details"}, "fbtrace_id"}}`."""
    error = obj(answer.get("error"))
    code = error.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        code = None
    message = text(error.get("message")) or response.text[:500] or response.reason_phrase
    details = text(obj(error.get("error_data")).get("details"))
    if details and details != message:
        message = f"{message}: {details}"
    transient = (
        response.status_code == 429 or response.status_code >= 500 or code in TRANSIENT_CODES
    )
    return SendError(message, transient=transient, code=code, status_code=response.status_code)


def _template(item: dict[str, Any]) -> TemplateInfo | None:
    """One `message_templates` entry: `{name, language, status, category, components: [{type:
    BODY, text}, …]}`."""
    name = text(item.get("name"), 512)
    if name is None:
        return None
    body = next(
        (
            text(component.get("text"), TEXT_MAX)
            for component in objs(item.get("components"))
            if str(component.get("type", "")).upper() == "BODY"
        ),
        None,
    )
    return TemplateInfo(
        name=name,
        language=text(item.get("language"), 64),
        status=text(item.get("status"), 64),
        category=text(item.get("category"), 64),
        body=body,
    )


def _contact_names(contacts: Any) -> dict[str, str]:
    names: dict[str, str] = {}
    for contact in objs(contacts):
        name = text(obj(contact.get("profile")).get("name"), NAME_MAX)
        for key in ("wa_id", "user_id"):
            if name and (contact_id := ident(contact.get(key))):
                names[contact_id] = name
    return names


def _status(status: dict[str, Any]) -> StatusUpdate | None:
    wamid = ident(status.get("id"))
    value = status.get("status")
    mapped = STATUS_MAP.get(value) if isinstance(value, str) else None
    if wamid is None or mapped is None:
        return None
    error = None
    errors = objs(status.get("errors"))
    if errors:
        first = errors[0]
        code = first.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = None
        title = text(first.get("title")) or text(first.get("message"))
        details = text(obj(first.get("error_data")).get("details"))
        message = f"{title}: {details}" if title and details and details != title else None
        error = {
            "code": "window_closed" if code == WINDOW_CLOSED_CODE else "platform_error",
            "platform_code": code,
            "message": message or title or details or "failed",
        } | compact(
            {
                "title": text(first.get("title")),
                "detail": text(first.get("message")) or details,
                "details": details,
            }
        )
    elif mapped == DeliveryStatus.FAILED:
        error = {
            "code": "platform_error",
            "platform_code": None,
            "message": "failed (no reason given)",
            "detail": "failed (no reason given)",
        }
    return StatusUpdate(wamid, mapped, error)


def _reaction(message: dict[str, Any]) -> ReactionUpdate | None:
    """`{"type": "reaction", "reaction": {"message_id": <target wamid>, "emoji"}}`; no emoji
    (or "") removes the contact's reaction."""
    body = obj(message.get("reaction"))
    target = ident(body.get("message_id"))
    contact = ident(message.get("from")) or ident(message.get("from_user_id"))
    if target is None or contact is None:
        return None
    return ReactionUpdate(
        target_external_id=target,
        contact_id=contact,
        emoji=text(body.get("emoji"), 64),
        at=epoch(message.get("timestamp")),
    )


def _mime(value: Any, kind: str) -> str:
    mime = text(value, 255)
    if mime and "/" in mime:
        return mime.split(";")[0].strip()
    return {
        "image": "image/jpeg",
        "audio": "audio/ogg",
        "video": "video/mp4",
        "sticker": "image/webp",
    }.get(kind, "application/octet-stream")


def _card(card: dict[str, Any]) -> dict[str, Any] | None:
    name = text(obj(card.get("name")).get("formatted_name"), NAME_MAX)
    phones = [
        compact({"phone": text(phone.get("phone"), 64), "wa_id": ident(phone.get("wa_id"))})
        for phone in objs(card.get("phones"))[:10]
    ]
    phones = [phone for phone in phones if phone]
    if not name and not phones:
        return None
    return compact({"name": name, "phones": phones or None})


def _interactive(body: dict[str, Any]) -> dict[str, Any] | None:
    kind = body.get("type")
    if kind in ("button_reply", "list_reply"):
        reply = obj(body.get(kind))
        reply_id, title = text(reply.get("id")), text(reply.get("title"), TEXT_MAX)
        if not reply_id and not title:
            return None
        return compact(
            {
                "type": kind,
                "id": reply_id,
                "title": title,
                "description": text(reply.get("description")),
            }
        )
    if kind == "nfm_reply":  # a WhatsApp Flow's answer
        reply = obj(body.get(kind))
        return compact(
            {
                "type": kind,
                "name": text(reply.get("name")),
                "body": text(reply.get("body"), TEXT_MAX),
                "response_json": text(reply.get("response_json"), 16_384),
            }
        )
    return None


def _outbound_kind(item: dict[str, Any]) -> str:
    kind = item.get("kind")
    if kind == "voice":
        return "audio"
    if isinstance(kind, str) and kind in MEDIA_TYPES:
        return kind
    content_type = str(item.get("content_type") or "").lower()
    for prefix in ("image", "audio", "video"):
        if content_type.startswith(prefix + "/"):
            return prefix
    return "document"


def _media_ref(item: dict[str, Any], public_url: str) -> dict[str, Any]:
    """Meta fetches a `link` itself; a media id it already has goes as `id` (the hub's own
    media proxy needs a bearer token Meta does not have)."""
    url = item.get("url")
    media_id = item.get("media_id")
    if isinstance(url, str) and not url.startswith(f"{public_url}/channels/"):
        return {"link": url}
    if isinstance(media_id, str) and media_id:
        return {"id": media_id}
    return {"link": str(url)}
