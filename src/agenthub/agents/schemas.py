from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

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


DESCRIPTIONS.update(
    {
        "transport": "How deliveries reach the agent: `webhook` (signed POSTs to `webhook_url`), "
        "`a2a` (an A2A 1.0 agent, settings in `a2a`) or `openai` (an OpenAI-compatible Chat "
        "Completions or Responses endpoint, settings in `openai`).",
        "a2a": "For `transport: a2a`: the agent's URL (its card is read from "
        "`/.well-known/agent-card.json` on that origin) and how to authenticate. The token is "
        "write-only: answers leave it out.",
        "openai": "For `transport: openai`: the server's base URL (up to `/v1`), the model, the "
        "API and a system prompt. The API key is write-only: answers leave it out.",
    }
)
Secret = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
HeaderName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$")
]


class A2AAuth(Schema):
    scheme: Literal["bearer", "api_key"] = Field(
        description="`bearer`: `Authorization: Bearer <token>`; `api_key`: the token in `header`"
    )
    header: HeaderName | None = Field(
        default=None, description="for `api_key`: the header (default `X-API-Key`)"
    )
    token: Secret | None = Field(
        default=None, description="write-only; on an update, left out keeps the stored one"
    )


class A2ASettings(Schema):
    url: HttpUrl = Field(description="the agent's A2A URL (its JSON-RPC endpoint without a card)")
    auth: A2AAuth | None = None


class OpenAISettings(Schema):
    base_url: HttpUrl = Field(description="e.g. `https://api.openai.com/v1`, `http://llm:8080/v1`")
    api_key: Secret | None = Field(
        default=None,
        description="write-only; required when the agent is created (any text for a server "
        "that takes none); on an update, left out keeps the stored one",
    )
    model: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    api: Literal["chat_completions", "responses"] = "chat_completions"
    system_prompt: Annotated[str, StringConstraints(max_length=20_000)] | None = None


Transport = Literal["webhook", "a2a", "openai"]


class A2AOut(Out):
    url: str
    auth: dict[str, Any] | None = Field(description="`{scheme, header}`; the token is not shown")


class OpenAIOut(Out):
    base_url: str
    model: str
    api: str
    system_prompt: str | None


def described(name: str, default: Any = None) -> Any:
    return Field(default=default, description=DESCRIPTIONS[name])


class AgentCreate(Schema):
    name: Name = Field(description=DESCRIPTIONS["name"])
    transport: Transport = described("transport", "webhook")
    webhook_url: HttpUrl | None = described("webhook_url")
    a2a: A2ASettings | None = described("a2a")
    openai: OpenAISettings | None = described("openai")
    is_active: bool = described("is_active", True)
    buffer_time_seconds: BufferSeconds = described("buffer_time_seconds", 3)
    max_buffer_seconds: MaxBufferSeconds = described("max_buffer_seconds", 30)
    history_msg_count: HistoryCount = described("history_msg_count", 40)
    recent_msg_window_minutes: WindowMinutes = described("recent_msg_window_minutes", 1440)
    activate_for_new_conversation: bool = described("activate_for_new_conversation", True)
    timeout_seconds: TimeoutSeconds = described("timeout_seconds", 10)
    typing_while_working: bool = described("typing_while_working", False)

    @model_validator(mode="after")
    def _settings_of_transport(self) -> AgentCreate:
        if self.transport == "webhook" and self.webhook_url is None:
            raise ValueError("webhook_url is required for the webhook transport")
        if self.transport == "a2a" and self.a2a is None:
            raise ValueError("a2a settings are required for the a2a transport")
        if self.transport == "openai":
            if self.openai is None:
                raise ValueError("openai settings are required for the openai transport")
            if self.openai.api_key is None:
                raise ValueError("openai.api_key is required")
        auth = self.a2a.auth if self.a2a is not None else None
        if auth is not None and auth.token is None:
            raise ValueError("a2a.auth.token is required")
        return self


class AgentUpdate(Schema):
    """Fields given replace the stored ones."""

    name: Name | None = described("name")
    transport: Transport | None = described("transport")
    webhook_url: HttpUrl | None = described("webhook_url")
    a2a: A2ASettings | None = described("a2a")
    openai: OpenAISettings | None = described("openai")
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
    transport: str = Field(description=DESCRIPTIONS["transport"])
    webhook_url: str | None = Field(description=DESCRIPTIONS["webhook_url"])
    a2a: A2AOut | None = Field(default=None, description=DESCRIPTIONS["a2a"])
    openai: OpenAIOut | None = Field(default=None, description=DESCRIPTIONS["openai"])
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
        transport = getattr(data, "transport", None) or "webhook"
        fields["transport"] = transport
        if transport in ("a2a", "openai"):
            fields[transport] = dict(getattr(data, "transport_settings", None) or {})
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
