from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AnyHttpUrl, BeforeValidator, Field, PlainSerializer

from agenthub.schemas import Name, Out, Schema

# Stored and returned as a plain string; validated as an absolute http(s) URL on the way in.
HttpUrl = Annotated[
    AnyHttpUrl,
    BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v),
    PlainSerializer(str, return_type=str),
    Field(max_length=2048),
]

BufferSeconds = Annotated[float, Field(ge=0, le=3600)]
MaxBufferSeconds = Annotated[float, Field(ge=0, le=86_400)]
HistoryCount = Annotated[int, Field(ge=0, le=1000)]
WindowMinutes = Annotated[int, Field(ge=1, le=525_600)]
TimeoutSeconds = Annotated[float, Field(gt=0, le=120)]


class AgentCreate(Schema):
    name: Name
    webhook_url: HttpUrl
    is_active: bool = True
    buffer_time_seconds: BufferSeconds = 3
    max_buffer_seconds: MaxBufferSeconds = 30
    history_msg_count: HistoryCount = 40
    recent_msg_window_minutes: WindowMinutes = 1440
    activate_for_new_conversation: bool = True
    timeout_seconds: TimeoutSeconds = 10


class AgentUpdate(Schema):
    name: Name | None = None
    webhook_url: HttpUrl | None = None
    is_active: bool | None = None
    buffer_time_seconds: BufferSeconds | None = None
    max_buffer_seconds: MaxBufferSeconds | None = None
    history_msg_count: HistoryCount | None = None
    recent_msg_window_minutes: WindowMinutes | None = None
    activate_for_new_conversation: bool | None = None
    timeout_seconds: TimeoutSeconds | None = None


class AgentOut(Out):
    id: str
    name: str
    webhook_url: str
    is_active: bool
    buffer_time_seconds: float
    max_buffer_seconds: float
    history_msg_count: int
    recent_msg_window_minutes: int
    activate_for_new_conversation: bool
    timeout_seconds: float
    created_at: datetime


class AgentCreated(AgentOut):
    """Shown once: the agent's API token and its `whsec_…` webhook signing secret."""

    token: str
    webhook_secret: str


class TokenCreate(Schema):
    name: Name | None = None
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenOut(Out):
    id: str
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    """Shown once."""

    token: str
