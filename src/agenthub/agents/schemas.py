from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BeforeValidator, Field, PlainSerializer, model_validator

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


# One description per field, shown in OpenAPI on the create, update and answer schemas.
DESCRIPTIONS = {
    "name": "Shown to operators and sent to the agent in each delivery (`agent.name`). Two "
    "agents may share a name; the answer then carries a warning.",
    "webhook_url": "Where the hub POSTs deliveries (signed with the agent's `webhook_secret`).",
    "is_active": "An inactive agent gets no deliveries and its tokens stop working at once.",
    "buffer_time_seconds": "Debounce: deliver once no contact message has arrived in a chat for "
    "this long after the last one.",
    "max_buffer_seconds": "Cap on the debounce: deliver at the latest once the oldest waiting "
    "message has waited this long.",
    "history_msg_count": "At most this many messages of the conversation in each delivery.",
    "recent_msg_window_minutes": "Only messages from this many last minutes go into a delivery's "
    "history (the new ones always do).",
    "activate_for_new_conversation": "Linked to every new chat of channels without their own "
    "`default_agent_ids`.",
    "timeout_seconds": "How long the hub waits for the agent's answer to a delivery before "
    "retrying it.",
    "typing_while_working": 'Show "typing…" in the chat on the platform while one of its '
    "deliveries is in flight (as `POST /chats/{id}/typing` does: at most 25 s, and it stops "
    "when the reply goes out or the attempt ends).",
}


def described(name: str, default: Any = None) -> Any:
    return Field(default=default, description=DESCRIPTIONS[name])


class AgentCreate(Schema):
    name: Name = Field(description=DESCRIPTIONS["name"])
    webhook_url: HttpUrl = Field(description=DESCRIPTIONS["webhook_url"])
    is_active: bool = described("is_active", True)
    buffer_time_seconds: BufferSeconds = described("buffer_time_seconds", 3)
    max_buffer_seconds: MaxBufferSeconds = described("max_buffer_seconds", 30)
    history_msg_count: HistoryCount = described("history_msg_count", 40)
    recent_msg_window_minutes: WindowMinutes = described("recent_msg_window_minutes", 1440)
    activate_for_new_conversation: bool = described("activate_for_new_conversation", True)
    timeout_seconds: TimeoutSeconds = described("timeout_seconds", 10)
    typing_while_working: bool = described("typing_while_working", False)


class AgentUpdate(Schema):
    """Fields given replace the stored ones."""

    name: Name | None = described("name")
    webhook_url: HttpUrl | None = described("webhook_url")
    is_active: bool | None = described("is_active")
    buffer_time_seconds: BufferSeconds | None = described("buffer_time_seconds")
    max_buffer_seconds: MaxBufferSeconds | None = described("max_buffer_seconds")
    history_msg_count: HistoryCount | None = described("history_msg_count")
    recent_msg_window_minutes: WindowMinutes | None = described("recent_msg_window_minutes")
    activate_for_new_conversation: bool | None = described("activate_for_new_conversation")
    timeout_seconds: TimeoutSeconds | None = described("timeout_seconds")
    typing_while_working: bool | None = described("typing_while_working")


class AgentHealthOut(Out):
    """The delivery breaker's view of the agent (docs/agents.md, "When the agent is down")."""

    state: Literal["healthy", "unavailable"] = Field(
        description="`unavailable` after failed deliveries in a row "
        "(`AGENTHUB_AGENT_FAILURE_THRESHOLD`): it then gets one probe at a time until one succeeds"
    )
    since: datetime | None = Field(description="when it entered this state; null: always healthy")
    last_error: str | None = Field(description="the error of its latest failed attempt")


class AgentOut(Out):
    id: str
    name: str = Field(description=DESCRIPTIONS["name"])
    webhook_url: str = Field(description=DESCRIPTIONS["webhook_url"])
    is_active: bool = Field(description=DESCRIPTIONS["is_active"])
    buffer_time_seconds: float = Field(description=DESCRIPTIONS["buffer_time_seconds"])
    max_buffer_seconds: float = Field(description=DESCRIPTIONS["max_buffer_seconds"])
    history_msg_count: int = Field(description=DESCRIPTIONS["history_msg_count"])
    recent_msg_window_minutes: int = Field(description=DESCRIPTIONS["recent_msg_window_minutes"])
    activate_for_new_conversation: bool = Field(
        description=DESCRIPTIONS["activate_for_new_conversation"]
    )
    timeout_seconds: float = Field(description=DESCRIPTIONS["timeout_seconds"])
    typing_while_working: bool = Field(description=DESCRIPTIONS["typing_while_working"])
    created_at: datetime
    health: AgentHealthOut

    @model_validator(mode="before")
    @classmethod
    def _health_of_agent(cls, data: Any) -> Any:
        """From an `Agent` row: its health columns, gathered into `health`."""
        if isinstance(data, dict) or not hasattr(data, "health_state"):
            return data
        fields = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        health = {
            "state": data.health_state,
            "since": data.health_since,
            "last_error": data.health_last_error,
        }
        return {**fields, "health": health}


WARNINGS = (
    "Things the request did that may not be what was meant; the change was made anyway. Today: "
    "`another agent is named '<name>' (<agent id>)`, one per other agent with the same name "
    "(ignoring case)."
)


class AgentSaved(AgentOut):
    """An agent as created or changed, with warnings about the change."""

    warnings: list[str] = Field(default_factory=list, description=WARNINGS)


class AgentCreated(AgentSaved):
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


class DeliveryProbeOut(Out):
    """What the agent answered a test delivery (`POST /auth/agents/{id}/test-delivery`)."""

    ok: bool = Field(description="the agent answered 2xx")
    webhook_id: str = Field(description="the `webhook-id` it was signed with (`tst_…`)")
    status_code: int | None = Field(description="its HTTP status; null when none came")
    duration_ms: float
    error: str | None = Field(description="why it failed: HTTP status, timeout, refused URL")
    error_kind: str | None = Field(description="as in the attempt log (`timeout`, `connect`, …)")
    response_excerpt: str = Field(description="the start of its answer (at most 4 KiB)")
