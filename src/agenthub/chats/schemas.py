from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, computed_field

from agenthub.models import DeliveryStatus, HandledBy, NeedsHumanReason, SenderType
from agenthub.schemas import JsonObject, Out, Schema

MAX_CONTENT = 32_768


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


class MessagePage(Out):
    messages: list[MessageOut]
    has_more: bool


class MessageCreate(Schema):
    content: Annotated[str, StringConstraints(max_length=MAX_CONTENT)]
    meta_data: JsonObject = Field(default_factory=dict)


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
