"""`telegram`: Bot API webhooks (JSON `Update`s), the secret-token header, and Bot API sends.

- Inbound: `X-Telegram-Bot-Api-Secret-Token` must equal the channel's `secret_token` (the
  value given to `setWebhook`). `message` updates are stored; a `callback_query` (a tap on
  one of our inline buttons) becomes a contact message with `meta_data.reply_to` and is
  answered with `answerCallbackQuery` once stored (`follow_up`); a `message_reaction` updates
  the message reacted to. Edits, channel posts and every other update are acknowledged and
  ignored.
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

import zlib
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx2
from fastapi import Response

from agenthub.platforms.base import (
    Capabilities,
    ChannelContext,
    ChatContext,
    FollowUp,
    Inbound,
    InboundMessage,
    MediaDownload,
    OutboundContext,
    PartialReply,
    ReactionUpdate,
    SendError,
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
    response_json,
    safe_parse,
    secret_matches,
    split_text,
    text,
)
from agenthub.rich import Rich

DEFAULT_API_BASE = "https://api.telegram.org"
SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header name
TEXT_LIMIT = 4096
CALLBACK_DATA_MAX = 64  # bytes of UTF-8
TOO_LONG_FOR_CALLBACK_DATA = "at most 64 bytes (UTF-8) on telegram channels (callback_data)"
# ReactionTypeEmoji: the only emoji a bot may react with.
REACTION_EMOJI = frozenset(
    (
        "❤",
        "👍",
        "👎",
        "🔥",
        "🥰",
        "👏",
        "😁",
        "🤔",
        "🤯",
        "😱",
        "🤬",
        "😢",
        "🎉",
        "🤩",
        "🤮",
        "💩",
        "🙏",
        "👌",
        "🕊",
        "🤡",
        "🥱",
        "🥴",
        "😍",
        "🐳",
        "❤\u200d🔥",
        "🌚",
        "🌭",
        "💯",
        "🤣",
        "⚡",
        "🍌",
        "🏆",
        "💔",
        "🤨",
        "😐",
        "🍓",
        "🍾",
        "💋",
        "🖕",
        "😈",
        "😴",
        "😭",
        "🤓",
        "👻",
        "👨\u200d💻",
        "👀",
        "🎃",
        "🙈",
        "😇",
        "😨",
        "🤝",
        "✍",
        "🤗",
        "🫡",
        "🎅",
        "🎄",
        "☃",
        "💅",
        "🤪",
        "🗿",
        "🆒",
        "💘",
        "🙉",
        "🦄",
        "😘",
        "💊",
        "🙊",
        "😎",
        "👾",
        "🤷\u200d♂",
        "🤷",
        "🤷\u200d♀",
        "😡",
    )
)
CAPTION_LIMIT = 1024
# The updates the hub asks for in setWebhook (others would be ignored anyway). Telegram sends
# `message_reaction` only when asked for by name.
ALLOWED_UPDATES = ["message", "callback_query", "message_reaction"]

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
    reply_window: timedelta | None = None
    # Buttons are an inline keyboard (a list: one button per row), so the neutral limits apply.
    capabilities = Capabilities(
        buttons=3,
        list_rows=10,
        templates=False,
        typing=True,
        reactions=True,
        media=True,
        max_text_length=TEXT_LIMIT,
    )
    window_closed_codes: frozenset[str] = frozenset()

    # --- inbound -------------------------------------------------------------------------------

    def verify(self, request: WebhookRequest, credentials: dict[str, Any]) -> bool:
        return secret_matches(request.headers.get(SECRET_HEADER), credentials.get("secret_token"))

    def parse(self, request: WebhookRequest) -> Inbound:
        return safe_parse(self.name, lambda: self._parse(request))

    def _parse(self, request: WebhookRequest) -> Inbound:
        update = obj(load_json(request.body))
        message = update.get("message")
        if isinstance(update.get("callback_query"), dict):
            return _callback_query(update["callback_query"], update.get("update_id"))
        if isinstance(update.get("message_reaction"), dict):
            reaction = _reaction(update["message_reaction"])
            return Inbound(reactions=[reaction] if reaction else [])
        if not isinstance(message, dict):
            # edited_message, channel_post, my_chat_member, …: ignored.
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

    def contact_address(self, to: str, credentials: dict[str, Any]) -> str:
        """The chat's numeric id (`123456789`; groups are negative), as updates carry it.
        A bot can only write to someone who has started it."""
        to = to.strip()
        digits = to[1:] if to.startswith("-") else to
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 20):
            raise ValueError("a Telegram chat id (digits, e.g. 123456789)")
        return to

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
        rich = outbound_rich(context.message.meta_data)
        if rich is not None:
            keyboard = {"chat_id": chat_id, **render_rich(content, rich)}
            result = await self._call(http, base, token, "sendMessage", keyboard)
            message_id = ident(obj(result).get("message_id"))
            return f"{context.chat.external_id}:{message_id}" if message_id else None
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

    def check_rich(
        self, content: str, rich: dict[str, Any]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """`callback_data` (the choice's id) is 1-64 bytes of UTF-8."""
        faults: list[tuple[tuple[str | int, ...], str]] = []
        for n, button in enumerate(rich.get("buttons") or []):
            if len(button["id"].encode()) > CALLBACK_DATA_MAX:
                faults.append((("buttons", n, "id"), TOO_LONG_FOR_CALLBACK_DATA))
        for s, section in enumerate((rich.get("list") or {}).get("sections") or []):
            for r, row in enumerate(section["rows"]):
                if len(row["id"].encode()) > CALLBACK_DATA_MAX:
                    faults.append(
                        (("list", "sections", s, "rows", r, "id"), TOO_LONG_FOR_CALLBACK_DATA)
                    )
        return faults

    def check_reaction(self, emoji: str) -> str | None:
        if emoji and _reaction_emoji(emoji) not in REACTION_EMOJI:
            return "not one of the emoji Telegram allows as a reaction (ReactionTypeEmoji)"
        return None

    async def send_reaction(
        self, http: httpx2.AsyncClient, context: OutboundContext, emoji: str
    ) -> None:
        """`setMessageReaction`; an empty `reaction` removes ours (one per bot and message)."""
        token = _token(context.credentials)
        chat_part, _, message_part = str(context.message.external_id).rpartition(":")
        chat_id: int | str = chat_part or context.chat.external_id
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)
        if not message_part.isdigit():
            raise SendError("The message has no Telegram message id", transient=False)
        reaction = [{"type": "emoji", "emoji": _reaction_emoji(emoji)}] if emoji else []
        payload = {"chat_id": chat_id, "message_id": int(message_part), "reaction": reaction}
        await self._call(
            http, context.api_base_url(DEFAULT_API_BASE), token, "setMessageReaction", payload
        )

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

    # --- webhook registration, follow-ups and media -----------------------------------------

    async def follow_up(
        self, http: httpx2.AsyncClient, context: ChannelContext, call: FollowUp
    ) -> None:
        """`answerCallbackQuery` for a tap, which stops the client's progress indicator."""
        token = _token(context.credentials)
        await self._call(
            http, context.api_base_url(DEFAULT_API_BASE), token, call.method, call.params
        )

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

    # --- typing --------------------------------------------------------------------------------

    # `sendChatAction` shows for about 5 s (or until our next message): send it again every 4 s.
    typing_renew_seconds: float | None = 4.0

    async def send_typing(self, http: httpx2.AsyncClient, context: ChatContext) -> None:
        """`sendChatAction {chat_id, action: "typing"}`."""
        token = _token(context.credentials)
        chat_id: int | str = context.chat_external_id
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)
        await self._call(
            http,
            context.api_base_url(DEFAULT_API_BASE),
            token,
            "sendChatAction",
            {"chat_id": chat_id, "action": "typing"},
        )

    # --- streamed replies ----------------------------------------------------------------------

    def shows_partials(self, config: dict[str, Any]) -> bool:
        return bool(config.get("stream_drafts"))

    async def send_partial(
        self, http: httpx2.AsyncClient, context: ChatContext, partial: PartialReply
    ) -> None:
        """`sendMessageDraft {chat_id, draft_id, text}`: one draft per delivery, updated."""
        chat_id: int | str = context.chat_external_id
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)
        draft = {
            "chat_id": chat_id,
            "draft_id": draft_id(partial.delivery_id),
            "text": partial.text,
        }
        token = _token(context.credentials)
        await self._call(
            http, context.api_base_url(DEFAULT_API_BASE), token, "sendMessageDraft", draft
        )


def draft_id(delivery_id: str) -> int:
    """A delivery's draft: the same non-zero 31-bit number on every update and retry."""
    return zlib.crc32(delivery_id.encode()) & 0x7FFFFFFF or 1


# --- helpers ------------------------------------------------------------------------------------


def _callback_query(query: dict[str, Any], update_id: Any) -> Inbound:
    """A tap on one of our inline keyboard buttons: a contact message with the button's label
    (looked up in the keyboard of the message tapped, which Telegram sends back) and
    `reply_to.id` = its `callback_data`; always answered with `answerCallbackQuery`."""
    query_id = ident(query.get("id"))
    if query_id is None:
        return Inbound()
    answer = FollowUp("answerCallbackQuery", {"callback_query_id": query_id})
    message = obj(query.get("message"))
    chat = obj(message.get("chat"))
    chat_id = ident(chat.get("id"))
    data = text(query.get("data"), 64 * 4)
    if chat_id is None or data is None or chat.get("type") == "channel":
        return Inbound(follow_ups=[answer])  # a game, an inline-mode message: nothing to store
    label = _button_label(message.get("reply_markup"), query.get("data"))
    message_id = _int(message.get("message_id"))
    meta: dict[str, Any] = {
        "type": "callback_query",
        "reply_to": {"id": data},
    } | compact(
        {
            "update_id": update_id if isinstance(update_id, int) else None,
            "callback_query_id": query_id,
            "chat_type": text(chat.get("type"), 32),
        }
    )
    if chat.get("type") in ("group", "supergroup") and (sender := _user(query.get("from"))):
        meta["sender"] = sender
    parsed = InboundMessage(
        external_id=f"{chat_id}:callback:{query_id}"[:255],
        contact_id=chat_id,
        contact_name=_chat_name(chat),
        content=label or data,
        meta_data=meta,
        # Our sent messages are stored as "{chat_id}:{message_id}".
        replied_to=f"{chat_id}:{message_id}" if message_id is not None else None,
    )
    return Inbound(messages=[parsed], follow_ups=[answer])


def _button_label(markup: Any, data: Any) -> str | None:
    rows = obj(markup).get("inline_keyboard")
    for row in rows if isinstance(rows, list) else []:
        for button in objs(row):
            if button.get("callback_data") == data:
                return text(button.get("text"), TEXT_MAX)
    return None


def _reaction(update: dict[str, Any]) -> ReactionUpdate | None:
    """`message_reaction`: the user's reactions before and after. A bot may see several per
    user; the hub keeps one: the newly added emoji (else the first one left), or none."""
    chat_id = ident(obj(update.get("chat")).get("id"))
    message_id = _int(update.get("message_id"))
    who = ident(obj(update.get("user")).get("id")) or ident(obj(update.get("actor_chat")).get("id"))
    if chat_id is None or message_id is None or who is None:
        return None
    old = [e for e in map(_emoji, objs(update.get("old_reaction"))) if e]
    new = [e for e in map(_emoji, objs(update.get("new_reaction"))) if e]
    added = [emoji for emoji in new if emoji not in old]
    kept = added or new
    emoji = kept[0] if kept else None
    return ReactionUpdate(
        target_external_id=f"{chat_id}:{message_id}",
        contact_id=who,
        emoji=emoji,
        at=epoch(update.get("date")),
    )


def _emoji(reaction: dict[str, Any]) -> str | None:
    if reaction.get("type") == "emoji":
        return text(reaction.get("emoji"), 64)
    if reaction.get("type") == "paid":
        return "⭐"
    return None  # custom emoji: shown by id only in Telegram's clients


def render_rich(content: str, rich: Rich) -> dict[str, Any]:
    """`text` and an inline keyboard (`callback_data` = the choice's id): buttons on one row,
    a list's rows one per keyboard row."""
    if rich.buttons is not None:
        keyboard = [[{"text": b.title, "callback_data": b.id} for b in rich.buttons]]
    elif rich.list is not None:
        keyboard = [
            [{"text": row.title, "callback_data": row.id}]
            for section in rich.list.sections
            for row in section.rows
        ]
    else:
        raise SendError("Templates cannot be sent on Telegram", transient=False)
    return {"text": content, "reply_markup": {"inline_keyboard": keyboard}}


def _reaction_emoji(emoji: str) -> str:
    """Telegram's spelling: without the emoji presentation selector ("❤", not "❤️")."""
    return emoji.replace("\ufe0f", "")


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
