"""The platform adapter interface: verify, parse inbound, send outbound, answer the webhook.

One module per platform implements `PlatformAdapter`; the registry in `__init__` finds it by
name. Nothing outside `platforms/` knows any platform's wire format.

Some platforms need more than the four required methods. Those extras are optional
capabilities, each a small protocol the generic code checks with `isinstance`:

- `WebhookHandshake`: answers a `GET` on the webhook URL (WhatsApp Cloud's `hub.challenge`);
- `ChannelParser`: parses with the channel's credentials at hand (WhatsApp Cloud drops
  messages addressed to another phone number of the same Meta app);
- `WebhookRegistrar`: registers the hub's webhook URL at the platform (Telegram `setWebhook`);
- `FollowUpCaller`: makes the platform calls a webhook asks for once it is stored
  (`Inbound.follow_ups`: Telegram's `answerCallbackQuery` for a button tap);
- `MediaSource`: downloads a media file the platform only gives out by id and with the
  channel's credentials (Telegram `getFile`, WhatsApp Cloud media ids, WHAPI media ids), so
  the stored `meta_data.media[].url` can point at the hub instead of leaking a token.
- `RichRules`: refuses rich content (buttons, lists, templates) the platform cannot take
  beyond the channel-neutral limits of `rich.py` (Telegram's 64-byte `callback_data`);
- `ReactionSender`: sends (or removes) our reaction to a message.
- `TypingIndicator`: shows "typing…" in a chat (Telegram `sendChatAction`, renewed; WhatsApp
  Cloud's and Twilio's indicator on the last inbound message; WHAPI presence; the `api`
  callback);
- `ReadReceipts`: marks the chat's last inbound message read (WhatsApp Cloud);
- `TemplateLister`: reads the channel's message templates from the platform (WhatsApp Cloud's
  `message_templates`, Twilio's Content API);
- `ContactAddressing`: turns an address a user typed (a phone number) into the contact id
  the platform's inbound parser stores as the chat's `external_id`, so that a conversation
  the hub starts and the contact's answers share one chat.

Every adapter also declares its `reply_window` (how long after the contact's last message
free-form messages may go out; None: no such rule) and its `capabilities` (what the agent
payload's `chat.capabilities` tells agents).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import cache, cached_property
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import parse_qs, urlsplit

import httpx2
from fastapi import Response

from agenthub.models import Channel, Chat, DeliveryStatus, Message
from agenthub.settings import Settings, get_settings


@dataclass(frozen=True)
class WebhookRequest:
    """What the platform sent, as the adapter needs it (raw body kept for signatures)."""

    method: str
    url: str  # the public URL the platform called: AGENTHUB_PUBLIC_URL + path + query
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    body: bytes

    @cached_property
    def form(self) -> dict[str, list[str]]:
        """The body as an `application/x-www-form-urlencoded` form (parsed once: the signature
        check and the parser both need it); empty if it is not one."""
        try:
            return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return {}

    @property
    def hub_url(self) -> str:
        """The hub's public base URL (`AGENTHUB_PUBLIC_URL`): `url` up to `/webhooks/`."""
        head = self.url.split("?", 1)[0]
        index = head.rfind("/webhooks/")
        return head[:index] if index >= 0 else head.rstrip("/")

    @property
    def channel_id(self) -> str:
        """The channel id in `…/webhooks/{platform}/{channel_id}[/status]` ("" if absent)."""
        path = urlsplit(self.url).path
        index = path.rfind("/webhooks/")
        parts = path[index + len("/webhooks/") :].split("/") if index >= 0 else []
        return parts[1] if len(parts) > 1 else ""


@dataclass(frozen=True)
class InboundMessage:
    external_id: str  # the platform's message id (dedupe key)
    contact_id: str  # the contact's address on the platform (the chat's external_id)
    content: str
    contact_name: str | None = None
    meta_data: dict[str, Any] = field(default_factory=dict)
    # The platform id of the message this one answers (a button or list choice, a quoted
    # reply). The parser puts `meta_data.reply_to = {"id": <choice id or None>}`; the store
    # path adds `message_id`, the hub id of that message in the channel (None if unknown).
    replied_to: str | None = None


@dataclass(frozen=True)
class StatusUpdate:
    external_id: str
    status: DeliveryStatus
    # On failure: `{"code": "window_closed" | "platform_error", "platform_code", "message",
    # …}` (the platform's own fields may follow).
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReactionUpdate:
    """A contact's reaction to a stored message: not a message of its own. It replaces that
    contact's previous reaction on the target; `emoji` None removes it."""

    target_external_id: str  # the platform id of the message reacted to
    contact_id: str  # who reacted: the contact's (or group member's) platform id
    emoji: str | None
    at: datetime | None = None  # the platform's time, if it gave one


@dataclass(frozen=True)
class FollowUp:
    """A platform call to make once the webhook's content is stored, in the background and
    best effort (Telegram's `answerCallbackQuery`); made by the adapter's `FollowUpCaller`."""

    method: str
    params: dict[str, Any]


@dataclass
class Inbound:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    reactions: list[ReactionUpdate] = field(default_factory=list)
    follow_ups: list[FollowUp] = field(default_factory=list)


@dataclass(frozen=True)
class OutboundContext:
    message: Message
    chat: Chat
    channel: Channel
    credentials: dict[str, Any]
    public_url: str
    # The hub's settings (e.g. `whatsapp_graph_version`). Defaults to the process settings,
    # which are the serving app's own (`create_app()` reads the same `get_settings()`).
    settings: Settings = field(default_factory=get_settings)

    def api_base_url(self, default: str) -> str:
        return str(self.channel.config.get("api_base_url") or default).rstrip("/")


@dataclass(frozen=True)
class ChannelContext:
    """A channel with its decrypted credentials, for calls that are not a message send."""

    channel: Channel
    credentials: dict[str, Any]
    public_url: str
    settings: Settings

    @property
    def webhook_url(self) -> str:
        return f"{self.public_url}/webhooks/{self.channel.platform}/{self.channel.id}"

    def api_base_url(self, default: str) -> str:
        return str(self.channel.config.get("api_base_url") or default).rstrip("/")


@dataclass
class MediaDownload:
    """An open, streaming response from the platform with the file's bytes.

    The caller streams `response` to its client and closes it (`await response.aclose()`).
    """

    response: httpx2.Response
    content_type: str
    filename: str | None = None


class SendError(Exception):
    """A platform refused or failed a send; `transient` ones are retried."""

    def __init__(
        self,
        detail: str,
        *,
        transient: bool,
        code: str | int | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.code = code
        self.status_code = status_code

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "status_code": self.status_code, "detail": self.detail[:500]}


def send_error_from_response(
    response: httpx2.Response, code: Any = None, detail: str | None = None
) -> SendError:
    transient = response.status_code == 429 or response.status_code >= 500
    return SendError(
        detail or response.text[:500],
        transient=transient,
        code=code,
        status_code=response.status_code,
    )


@dataclass(frozen=True)
class Capabilities:
    """What a channel can show, as agents read it in `chat.capabilities`."""

    buttons: int  # reply buttons per message (0: none)
    list_rows: int  # rows of a list, all sections together (0: no lists)
    templates: bool
    typing: bool
    reactions: bool
    media: bool
    max_text_length: int
    # How buttons and lists reach the contact ("native", "numbered_text", "pass_through").
    rendering: str = "native"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PlatformAdapter(Protocol):
    name: str
    # Free-form messages may go out until this long after the contact's last message (None:
    # whenever). Templates are the way to write outside it.
    reply_window: timedelta | None
    capabilities: Capabilities

    def verify(self, request: WebhookRequest, credentials: dict[str, Any]) -> bool:
        """Is this request really from the platform (signature / secret check)?"""
        ...

    def parse(self, request: WebhookRequest) -> Inbound:
        """Messages and status updates in the request; unknown content yields nothing."""
        ...

    def acknowledge(self) -> Response:
        """The answer the platform expects for an accepted webhook."""
        ...

    async def send(self, http: httpx2.AsyncClient, context: OutboundContext) -> str | None:
        """Send one USER/AGENT message; returns the platform's message id."""
        ...


# --- optional capabilities ----------------------------------------------------------------------


@runtime_checkable
class WebhookHandshake(Protocol):
    def handshake(self, request: WebhookRequest, credentials: dict[str, Any]) -> Response | None:
        """Answer a `GET` on the webhook URL; None when it is not a valid handshake (403)."""
        ...


@runtime_checkable
class ChannelParser(Protocol):
    def parse_for_channel(self, request: WebhookRequest, credentials: dict[str, Any]) -> Inbound:
        """Like `parse`, with the channel's credentials (to drop what is not for it)."""
        ...


@runtime_checkable
class WebhookRegistrar(Protocol):
    async def register_webhook(self, http: httpx2.AsyncClient, context: ChannelContext) -> None:
        """Point the platform at `context.webhook_url`; raises `SendError` when refused."""
        ...


@runtime_checkable
class MediaSource(Protocol):
    async def open_media(
        self, http: httpx2.AsyncClient, context: ChannelContext, media_id: str
    ) -> MediaDownload:
        """Start downloading one media file by its platform id; raises `SendError`
        (status_code 404 when the platform does not know it)."""
        ...


@runtime_checkable
class FollowUpCaller(Protocol):
    async def follow_up(
        self, http: httpx2.AsyncClient, context: ChannelContext, call: FollowUp
    ) -> None:
        """Make one `FollowUp` call; may raise (the caller logs and moves on)."""
        ...


@runtime_checkable
class RichRules(Protocol):
    def check_rich(
        self, content: str, rich: dict[str, Any]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """The faults of this rich content on this platform, each at its location in the
        request body (`("buttons", 0, "id")`) with a message; empty when it can be sent.
        `rich` holds the validated `buttons`, `list` or `template` as JSON."""
        ...


@runtime_checkable
class ReactionSender(Protocol):
    def check_reaction(self, emoji: str) -> str | None:
        """Why this emoji cannot be sent on the platform, or None."""
        ...

    async def send_reaction(
        self, http: httpx2.AsyncClient, context: OutboundContext, emoji: str
    ) -> None:
        """React to `context.message` (which has its platform id) with `emoji`; `""` removes
        our reaction. Raises `SendError` when refused."""
        ...


@cache
def _is_channel_parser(adapter_type: type) -> bool:
    # A runtime protocol check walks the protocol's members each time: once per class is enough.
    return issubclass(adapter_type, ChannelParser)


def parse_inbound(
    adapter: PlatformAdapter, request: WebhookRequest, credentials: dict[str, Any]
) -> Inbound:
    """`parse_for_channel` when the adapter has it, else `parse`."""
    if _is_channel_parser(type(adapter)):
        return cast(ChannelParser, adapter).parse_for_channel(request, credentials)
    return adapter.parse(request)


# --- typing and read receipts (best effort: `typing_indicator.py` calls these) -------------------


@dataclass(frozen=True)
class ChatContext(ChannelContext):
    """A channel with its credentials and one of its chats, for calls about the chat that
    are not a message send (typing, read receipts)."""

    chat: Chat | None = None
    # The platform id of the chat's newest CONTACT message (None: there is none).
    last_inbound_id: str | None = None

    @property
    def chat_external_id(self) -> str:
        return self.chat.external_id if self.chat is not None else ""


@runtime_checkable
class TypingIndicator(Protocol):
    # Send again this often while typing lasts (Telegram's action fades after ~5 s); None:
    # one call lasts until our reply or the platform's own limit.
    typing_renew_seconds: float | None

    async def send_typing(self, http: httpx2.AsyncClient, context: ChatContext) -> None:
        """Show "typing…" in `context.chat`; nothing when the platform needs an inbound
        message and there is none. Raises `SendError` (the caller logs it, never retries)."""
        ...


@runtime_checkable
class ReadReceipts(Protocol):
    async def mark_read(self, http: httpx2.AsyncClient, context: ChatContext) -> None:
        """Mark `context.last_inbound_id` (and the messages before it) read on the platform.
        Raises `SendError`."""
        ...


# --- templates and contact addresses -------------------------------------------------------------


@dataclass(frozen=True)
class TemplateInfo:
    """One message template as the platform lists it (`GET /channels/{id}/templates`)."""

    name: str  # what `template.name` takes when sending (Twilio: the Content SID)
    language: str | None
    status: str | None  # as the platform spells it (Cloud `APPROVED`, Twilio `approved`)
    category: str | None
    body: str | None  # the readable body text, placeholders kept (`Hi {{1}}`)


class MissingCredential(Exception):
    """The channel lacks a credential this call needs (`name`), e.g. WhatsApp Cloud's
    `waba_id` for listing templates."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name
        self.detail = detail


@runtime_checkable
class TemplateLister(Protocol):
    async def list_templates(
        self, http: httpx2.AsyncClient, context: ChannelContext
    ) -> list[TemplateInfo]:
        """Every template of the channel's account, read now (following the platform's
        pages up to a cap). Raises `MissingCredential`, or `SendError` when the platform
        refuses or cannot be reached."""
        ...


@runtime_checkable
class ContactAddressing(Protocol):
    def contact_address(self, to: str, credentials: dict[str, Any]) -> str:
        """The chat `external_id` the inbound parser would store for the contact at `to`;
        raises `ValueError` (its message says what is expected) when `to` cannot be one."""
        ...


def same_origin(url: str, base: str) -> bool:
    """Is `url` on the scheme, host and port of `base`? A platform's "next page" link is only
    followed (with the channel's credentials) when it is."""
    try:
        one, other = urlsplit(url), urlsplit(base)
        return (one.scheme, one.hostname, one.port) == (other.scheme, other.hostname, other.port)
    except ValueError:
        return False


# --- streamed replies -----------------------------------------------------------------------------


@runtime_checkable
class PartialReplies(Protocol):
    """Shows an agent's reply while it forms (an `api` channel's `message.partial` callback, a
    Telegram draft), when the channel's config asks for it."""

    def shows_partials(self, config: dict[str, Any]) -> bool:
        """Whether this channel's config turns it on."""
        ...

    async def send_partial(
        self,
        http: httpx2.AsyncClient,
        context: ChatContext,
        partial: PartialReply,
    ) -> None:
        """Show the reply so far. Raises `SendError` (logged by the caller, never retried)."""
        ...


@dataclass(frozen=True)
class PartialReply:
    agent_id: str
    delivery_id: str
    text: str  # the whole reply so far
