from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    StringConstraints,
    computed_field,
    model_validator,
)

from agenthub.models import DeliveryStatus, HandledBy, NeedsHumanReason, SenderType, utcnow
from agenthub.rich import BUTTONS_BODY_MAX, LIST_BODY_MAX, Buttons, ListMenu, Template
from agenthub.schemas import JsonObject, Out, Schema

MAX_CONTENT = 32_768


class ChatWindow(Out):
    """The platform's reply window (WhatsApp's 24 h after the contact's last message)."""

    open: bool = Field(description="Free-form messages may be sent now")
    closes_at: datetime | None = Field(
        description="24 h after the contact's last message (null: the contact never wrote)"
    )


def chat_window(
    platform: str | None, last_contact_at: datetime | None, now: datetime | None = None
) -> ChatWindow | None:
    """The window of a chat on `platform` whose contact last wrote at `last_contact_at`;
    None when the platform has no window rule."""
    length = reply_window_of(platform)
    if length is None:
        return None
    if last_contact_at is None:
        return ChatWindow(open=False, closes_at=None)
    closes_at = last_contact_at + length
    return ChatWindow(open=(now or utcnow()) < closes_at, closes_at=closes_at)


def reply_window_of(platform: str | None) -> timedelta | None:
    from agenthub.platforms import _ADAPTERS

    adapter = _ADAPTERS.get(platform) if platform else None
    return adapter.reply_window if adapter is not None else None


class ChatOut(Out):
    id: str
    channel_id: str
    external_id: str
    name: str | None
    assigned_user_id: str | None
    last_message: str | None
    last_message_ts: datetime | None
    last_sender_type: SenderType | None
    needs_human: bool
    needs_human_reason: NeedsHumanReason | None
    needs_human_since: datetime | None
    handled_by: HandledBy
    unread_count: int = Field(
        default=0, description="The caller's unread CONTACT messages in this chat"
    )
    created_at: datetime
    window: ChatWindow | None = Field(
        default=None,
        description="WhatsApp's customer-service window; null on platforms without one",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _with_window(cls, data: Any, handler: ModelWrapValidatorHandler[ChatOut]) -> ChatOut:
        out = handler(data)
        if not isinstance(data, dict | BaseModel):  # a chat row: the window is derived, now
            # What is loaded only (`__dict__`): reading an expired attribute would be IO here.
            loaded = getattr(data, "__dict__", {})
            out.window = chat_window(loaded.get("platform"), loaded.get("last_contact_message_at"))
        return out

    @classmethod
    def of(cls, chat: Any, read_contact_count: int = 0) -> ChatOut:
        """The answer for a reader who has read `read_contact_count` contact messages."""
        out = cls.model_validate(chat)
        out.unread_count = max(0, chat.contact_message_count - read_contact_count)
        return out


class ChatPage(Out):
    chats: list[ChatOut]
    total_count: int
    has_more: bool


class ChatUpdate(Schema):
    assigned_user_id: str | None = Field(default=None, max_length=16, description="null unassigns")
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)] | None = None
    needs_human: Literal[False] | None = Field(
        default=None, description="`false` clears it once a human has helped"
    )


class MessageError(Out):
    code: Literal["window_closed", "platform_error"]
    platform_code: str | int | None = None
    message: str | None = None


class MessageOut(Out):
    id: str
    chat_id: str
    content: str
    sender_type: SenderType
    sender_id: str | None
    external_id: str | None
    delivery_status: DeliveryStatus
    timestamp: datetime
    meta_data: dict[str, Any]
    error: MessageError | None = Field(
        default=None, description="Why the message could not be sent (FAILED), else null"
    )


class ConversationOut(Out):
    chat: ChatOut
    message: MessageOut


class MessagePage(Out):
    messages: list[MessageOut]
    has_more: bool


class MessageCreate(Schema):
    content: Annotated[str, StringConstraints(max_length=MAX_CONTENT)] | None = Field(
        default=None,
        description="The text; required but with a template (then it defaults to a readable "
        "form of the template)",
    )
    meta_data: JsonObject = Field(default_factory=dict)
    buttons: Buttons | None = Field(
        default=None, description="1-3 reply buttons `{id, title}` under `content`"
    )
    list: ListMenu | None = Field(default=None, description="A list of choices under `content`")
    template: Template | None = Field(
        default=None,
        description="A WhatsApp template (whatsapp_cloud, whatsapp_twilio): allowed while the "
        "reply window is closed",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> MessageCreate:
        given = [k for k in ("buttons", "list", "template") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: at most one of buttons, list, template")
        if self.template is None and self.content is None:
            raise ValueError("content: Field required")
        if (self.buttons is not None or self.list is not None) and not (self.content or "").strip():
            raise ValueError("content: the body text is required with buttons or a list")
        limit = BUTTONS_BODY_MAX if self.buttons is not None else LIST_BODY_MAX
        if given and given[0] != "template" and len(self.content or "") > limit:
            raise ValueError(f"content: at most {limit} characters with {given[0]}")
        if given and isinstance(self.meta_data.get("media"), list) and self.meta_data["media"]:
            raise ValueError(f"meta_data.media: a message with {given[0]} carries no media")
        return self

    @property
    def rich(self) -> dict[str, Any]:
        from agenthub.rich import rich_meta

        return rich_meta(self.buttons, self.list, self.template)


class ConversationCreate(Schema):
    """A conversation the hub starts: the contact at `to`, and the first message."""

    to: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)] = (
        Field(
            description="The contact's address on the platform: a phone number on WhatsApp "
            "channels (`+5511987654321`, normalised as the platform's webhooks give it), the "
            "chat id on Telegram, the `contact_id` on `api` channels"
        )
    )
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)] | None = Field(
        default=None, description="The chat's name, for a new chat (or one without a name)"
    )
    template: Template | None = Field(
        default=None,
        description="The first message on WhatsApp channels (required there: the reply "
        "window of a contact who has not written is closed)",
    )
    content: Annotated[str, StringConstraints(max_length=MAX_CONTENT)] | None = Field(
        default=None, description="The first message's text on other platforms"
    )

    @model_validator(mode="after")
    def _one_message(self) -> ConversationCreate:
        if self.template is not None and self.content is not None:
            raise ValueError("template or content, not both")
        if self.content is not None and not self.content.strip():
            raise ValueError("content: the message is empty")
        return self


class ReactionCreate(Schema):
    emoji: Annotated[str, StringConstraints(max_length=32)] = Field(
        description="One emoji; an empty string removes our reaction"
    )


class ChatAgentOut(Out):
    id: str
    chat_id: str
    agent_id: str
    active: bool
    created_at: datetime


class ChatAgentCreate(Schema):
    agent_id: str = Field(min_length=1, max_length=16)


class ChatAgentUpdate(Schema):
    active: bool


class DeliveryAttemptOut(Out):
    attempt_number: int
    started_at: datetime
    status_code: int | None
    latency_ms: float | None
    error: str | None
    error_kind: str | None = Field(
        description="timeout, connect, dns, tls, http_status, too_large, refused_address, protocol"
    )
    response_excerpt: str | None = Field(description="the first 4 KiB of the agent's answer")
    remote_address: str | None = Field(description="the address the hub connected to")
    # `scheduled` (the hub's own), `manual` (POST /deliveries/{id}/retry) or `recover`.
    trigger: Literal["scheduled", "manual", "recover", "probe"]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_ms(self) -> float | None:
        """How long the attempt took (the same as `latency_ms`)."""
        return self.latency_ms


class DeliveryOut(Out):
    id: str
    chat_id: str
    agent_id: str
    status: str
    message_ids: list[str]
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    completed_at: datetime | None
    attempts: list[DeliveryAttemptOut]
