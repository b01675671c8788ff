"""`telegram`: Bot API webhooks (JSON `Update`s), the secret-token header, and Bot API sends.

- Inbound: `X-Telegram-Bot-Api-Secret-Token` must equal the channel's `secret_token` (the
  value given to `setWebhook`). Only `message` updates are stored; edits, channel posts,
  callback queries and every other update are acknowledged and ignored.
- Chats are keyed by Telegram's chat id (a private chat's id is the user's id; a group's is
  the group's), messages by `"{chat_id}:{message_id}"`. A re-sent update (same `update_id`)
  carries the same message, so that key dedupes it too; `update_id` is kept in `meta_data`.
- Media keep their `file_id` and point `url` at the hub's proxy
  (`/channels/{channel_id}/media/{file_id}`), which resolves the file through `getFile` when
  asked: the bot token, part of Telegram's file URLs, never reaches a dashboard or agent.
- Outbound: `sendMessage` (split at 4096 characters) and `sendPhoto`/`sendDocument`/… for
  media, at `config.api_base_url` (a local Bot API server works the same).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx2
from fastapi import Response

from agenthub.platforms.base import (
    ChannelContext,
    Inbound,
    InboundMessage,
    MediaDownload,
    OutboundContext,
    SendError,
    WebhookRequest,
)
from agenthub.platforms.common import (
    NAME_MAX,
    TEXT_MAX,
    compact,
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
    response_json,
    safe_parse,
    secret_matches,
    split_text,
    text,
)

DEFAULT_API_BASE = "https://api.telegram.org"
SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header name
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
# The updates the hub asks for in setWebhook (others would be ignored anyway).
ALLOWED_UPDATES = ["message"]

# Message fields holding one file, in the order they are looked for (an animation message
# also carries `document`, so `animation` comes first), with a default content type.
FILE_KINDS: tuple[tuple[str, str], ...] = (
    ("animation", "video/mp4"),
    ("voice", "audio/ogg"),
    ("video_note", "video/mp4"),
    ("audio", "audio/mpeg"),
    ("video", "video/mp4"),
    ("sticker", "image/webp"),
    ("document", "application/octet-stream"),
)

# Outbound: media kind → (Bot API method, parameter holding the file).
SEND_METHODS = {
    "photo": ("sendPhoto", "photo"),
    "animation": ("sendAnimation", "animation"),
    "voice": ("sendVoice", "voice"),
    "audio": ("sendAudio", "audio"),
    "video": ("sendVideo", "video"),
    "video_note": ("sendVideoNote", "video_note"),
    "sticker": ("sendSticker", "sticker"),
    "document": ("sendDocument", "document"),
}
NO_CAPTION = {"sticker", "video_note"}


class TelegramAdapter:
    name = "telegram"

    # --- inbound -------------------------------------------------------------------------------

    def verify(self, request: WebhookRequest, credentials: dict[str, Any]) -> bool:
        return secret_matches(request.headers.get(SECRET_HEADER), credentials.get("secret_token"))

    def parse(self, request: WebhookRequest) -> Inbound:
        return safe_parse(self.name, lambda: self._parse(request))

    def _parse(self, request: WebhookRequest) -> Inbound:
        update = obj(load_json(request.body))
        message = update.get("message")
        if not isinstance(message, dict):
            # edited_message, channel_post, callback_query, my_chat_member, …: ignored.
            return Inbound()
        parsed = self._message(request, message, update.get("update_id"))
        return Inbound(messages=[parsed] if parsed else [])

    def _message(
        self, request: WebhookRequest, message: dict[str, Any], update_id: Any
    ) -> InboundMessage | None:
        chat = obj(message.get("chat"))
        chat_id = ident(chat.get("id"))
        message_id = ident(message.get("message_id"))
        if chat_id is None or message_id is None or chat.get("type") == "channel":
            return None
        content = text(message.get("text"), TEXT_MAX) or text(message.get("caption"), TEXT_MAX)
        meta: dict[str, Any] = {}
        kind = "text" if text(message.get("text"), TEXT_MAX) else None
        if media := self._media(request, message):
            kind = str(media[0]["kind"])
            meta["media"] = media
        if location := _location(message):
            kind = kind or ("venue" if "venue" in location else "location")
            meta["location"] = location
        if contact := _contact(message.get("contact")):
            kind = kind or "contact"
            meta["contact"] = contact
        if kind is None:
            # Service messages (members joined, pinned, …), polls, dice, games: ignored.
            return None
        meta["type"] = kind
        meta.update(
            compact(
                {
                    "update_id": update_id if isinstance(update_id, int) else None,
                    "message_id": _int(message.get("message_id")),
                    "chat_type": text(chat.get("type"), 32),
                    "message_thread_id": _int(message.get("message_thread_id")),
                    "media_group_id": text(message.get("media_group_id"), 64),
                    "reply_to_message_id": _int(
                        obj(message.get("reply_to_message")).get("message_id")
                    ),
                }
            )
        )
        if chat.get("type") in ("group", "supergroup") and (sender := _user(message.get("from"))):
            meta["sender"] = sender
        return InboundMessage(
            external_id=f"{chat_id}:{message_id}"[:255],
            contact_id=chat_id,
            contact_name=_chat_name(chat),
            content=content or "",
            meta_data=meta,
        )

    def _media(self, request: WebhookRequest, message: dict[str, Any]) -> list[dict[str, Any]]:
        photos = [p for p in objs(message.get("photo")) if text(p.get("file_id"), 512)]
        if photos:
            # Sizes come smallest first; keep the largest.
            largest = max(
                photos, key=lambda p: (number(p.get("width")) or 0) * (number(p.get("height")) or 0)
            )
            item = self._file(request, largest, "photo", "image/jpeg")
            return [item] if item else []
        for kind, default_type in FILE_KINDS:
            value = message.get(kind)
            if isinstance(value, dict):
                if kind == "sticker":
                    default_type = (
                        "video/webm"
                        if value.get("is_video") is True
                        else "application/x-tgsticker"
                        if value.get("is_animated") is True
                        else default_type
                    )
                item = self._file(request, value, kind, default_type)
                if item:
                    return [item]
        return []

    def _file(
        self, request: WebhookRequest, value: dict[str, Any], kind: str, default_type: str
    ) -> dict[str, Any] | None:
        file_id = text(value.get("file_id"), 512)
        if not file_id:
            return None
        file_name = text(value.get("file_name"), 255)
        mime_type = text(value.get("mime_type"), 255)
        if not mime_type or "/" not in mime_type or kind == "sticker":
            mime_type = guess_type(file_name, default_type) if kind == "document" else default_type
        return compact(
            {
                "url": media_proxy_url(request, file_id),
                "content_type": mime_type,
                "kind": kind,
                "file_id": file_id,
                "file_unique_id": text(value.get("file_unique_id"), 255),
                "file_name": file_name,
                "file_size": _int(value.get("file_size")),
                "duration": _int(value.get("duration")),
                "width": _int(value.get("width")),
                "height": _int(value.get("height")),
            }
        )

    def acknowledge(self) -> Response:
        return json_ack()

    # --- outbound ------------------------------------------------------------------------------

    async def send(self, http: httpx2.AsyncClient, context: OutboundContext) -> str | None:
        token = _token(context.credentials)
        base = context.api_base_url(DEFAULT_API_BASE)
        chat_id: int | str = context.chat.external_id
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)
        content = context.message.content
        media = outbound_media(context.message.meta_data)
        kinds = [_outbound_kind(item) for item in media]
        as_caption = (
            bool(content)
            and len(media) == 1
            and len(content) <= CAPTION_LIMIT
            and kinds[0] not in NO_CAPTION
        )
        calls: list[tuple[str, dict[str, Any]]] = []
        if content and not as_caption:
            calls += [
                ("sendMessage", {"chat_id": chat_id, "text": piece})
                for piece in split_text(content, TEXT_LIMIT)
            ]
        for item, kind in zip(media, kinds, strict=True):
            method, parameter = SEND_METHODS[kind]
            payload: dict[str, Any] = {"chat_id": chat_id, parameter: _file_ref(item)}
            if as_caption:
                payload["caption"] = content
            calls.append((method, payload))
        if not calls:
            raise SendError("Nothing to send: no content and no media", transient=False)
        first: str | None = None
        for method, payload in calls:
            result = await self._call(http, base, token, method, payload)
            message_id = ident(obj(result).get("message_id"))
            first = first or message_id
        return f"{context.chat.external_id}:{first}" if first else None

    async def _call(
        self,
        http: httpx2.AsyncClient,
        base: str,
        token: str,
        method: str,
        payload: dict[str, Any],
    ) -> Any:
        """One Bot API call; `result` on `{"ok": true}`, else a SendError with Telegram's
        `error_code` and `description` (429 and 5xx are transient)."""
        try:
            response = await http.post(f"{base}/bot{token}/{method}", json=payload, timeout=20)
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        body = response_json(response)
        if response.is_success and body.get("ok") is True:
            return body.get("result")
        code = body.get("error_code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = response.status_code
        detail = text(body.get("description")) or response.text[:500] or response.reason_phrase
        raise SendError(
            detail.replace(token, "<redacted>"),
            transient=response.status_code == 429 or response.status_code >= 500 or code == 429,
            code=code,
            status_code=response.status_code,
        )

    # --- webhook registration and media -----------------------------------------------------

    async def register_webhook(self, http: httpx2.AsyncClient, context: ChannelContext) -> None:
        """`setWebhook` with the hub's URL and the channel's `secret_token`."""
        token = _token(context.credentials)
        await self._call(
            http,
            context.api_base_url(DEFAULT_API_BASE),
            token,
            "setWebhook",
            {
                "url": context.webhook_url,
                "secret_token": str(context.credentials.get("secret_token") or ""),
                "allowed_updates": ALLOWED_UPDATES,
            },
        )

    async def open_media(
        self, http: httpx2.AsyncClient, context: ChannelContext, media_id: str
    ) -> MediaDownload:
        """`getFile`, then the download from `{base}/file/bot<token>/<file_path>`."""
        token = _token(context.credentials)
        base = context.api_base_url(DEFAULT_API_BASE)
        result = await self._call(http, base, token, "getFile", {"file_id": media_id})
        file_path = text(obj(result).get("file_path"), 4096)
        if not file_path:
            raise SendError("Telegram gave no file_path", transient=False, status_code=404)
        url = f"{base}/file/bot{token}/{quote(file_path.lstrip('/'), safe='/')}"
        try:
            response = await http.send(
                http.build_request("GET", url, timeout=60), stream=True, follow_redirects=False
            )
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise network_error(exc, redact=token) from None
        if not response.is_success:
            await response.aclose()
            raise SendError(
                f"file download failed with HTTP {response.status_code}",
                transient=response.status_code >= 500,
                status_code=response.status_code,
            )
        filename = file_path.rsplit("/", 1)[-1] or None
        header_type = response.headers.get("content-type", "").split(";")[0].strip()
        content_type = guess_type(filename, "")
        if not content_type:
            content_type = header_type or "application/octet-stream"
        return MediaDownload(response=response, content_type=content_type, filename=filename)


# --- helpers ------------------------------------------------------------------------------------


def _token(credentials: dict[str, Any]) -> str:
    token = credentials.get("bot_token")
    if not isinstance(token, str) or not token:
        raise SendError("The channel has no bot_token", transient=False)
    return token


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _user(value: Any) -> dict[str, Any] | None:
    user = obj(value)
    user_id = ident(user.get("id"))
    if user_id is None:
        return None
    name = " ".join(
        part for part in (text(user.get("first_name")), text(user.get("last_name"))) if part
    )
    return compact(
        {
            "id": user_id,
            "name": name[:NAME_MAX] or None,
            "username": text(user.get("username"), 64),
            "is_bot": user.get("is_bot") if isinstance(user.get("is_bot"), bool) else None,
        }
    )


def _chat_name(chat: dict[str, Any]) -> str | None:
    if title := text(chat.get("title"), NAME_MAX):
        return title
    name = " ".join(
        part for part in (text(chat.get("first_name")), text(chat.get("last_name"))) if part
    )
    if name:
        return name[:NAME_MAX]
    username = text(chat.get("username"), 64)
    return f"@{username}" if username else None


def _location(message: dict[str, Any]) -> dict[str, Any] | None:
    venue = obj(message.get("venue"))
    location = obj(message.get("location")) or obj(venue.get("location"))
    latitude, longitude = number(location.get("latitude")), number(location.get("longitude"))
    if latitude is None or longitude is None:
        return None
    result: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    if accuracy := number(location.get("horizontal_accuracy")):
        result["horizontal_accuracy"] = accuracy
    if venue:
        result["venue"] = True
        result.update(
            compact({"name": text(venue.get("title")), "address": text(venue.get("address"))})
        )
    return result


def _contact(value: Any) -> dict[str, Any] | None:
    contact = obj(value)
    phone = text(contact.get("phone_number"), 64)
    if not phone:
        return None
    return compact(
        {
            "phone_number": phone,
            "first_name": text(contact.get("first_name"), NAME_MAX),
            "last_name": text(contact.get("last_name"), NAME_MAX),
            "user_id": _int(contact.get("user_id")),
            "vcard": text(contact.get("vcard")),
        }
    )


def _outbound_kind(item: dict[str, Any]) -> str:
    kind = item.get("kind")
    if isinstance(kind, str) and kind in SEND_METHODS:
        return kind
    content_type = str(item.get("content_type") or "").lower()
    if content_type == "image/gif":
        return "animation"
    if content_type.startswith("image/"):
        return "photo"
    if content_type.startswith("audio/ogg"):
        return "voice"
    if content_type.startswith("audio/"):
        return "audio"
    if content_type.startswith("video/"):
        return "video"
    return "document"


def _file_ref(item: dict[str, Any]) -> str:
    """A file Telegram already has (`file_id`, e.g. forwarding what a contact sent) or a URL
    Telegram downloads itself."""
    file_id = item.get("file_id")
    if isinstance(file_id, str) and file_id:
        return file_id
    return str(item.get("url"))
