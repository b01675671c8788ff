from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.ids import new_id
from agenthub.models.base import Base, utcnow


class AgentHealth(StrEnum):
    HEALTHY = "healthy"
    UNAVAILABLE = "unavailable"


class Agent(Base):
    """An external AI service the hub delivers conversations to."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("agt"))
    name: Mapped[str] = mapped_column(String(200))
    # How deliveries reach it (`transports/`): `webhook` (signed POSTs to `webhook_url`), `a2a`
    # or `openai` (their settings in `transport_settings`, the one secret encrypted apart).
    transport: Mapped[str] = mapped_column(String(16), default="webhook", server_default="webhook")
    transport_settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    transport_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    # The `whsec_…` signing key, encrypted with the hub's secret key.
    webhook_secret_encrypted: Mapped[str] = mapped_column(Text)
    # After a rotation, the secret it replaced: deliveries carry both signatures until then.
    previous_webhook_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_webhook_secret_until: Mapped[datetime | None]
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    buffer_time_seconds: Mapped[float] = mapped_column(Float, default=3.0)
    max_buffer_seconds: Mapped[float] = mapped_column(Float, default=30.0)
    history_msg_count: Mapped[int] = mapped_column(Integer, default=40)
    recent_msg_window_minutes: Mapped[int] = mapped_column(Integer, default=1440)
    activate_for_new_conversation: Mapped[bool] = mapped_column(Boolean, default=True)
    timeout_seconds: Mapped[float] = mapped_column(Float, default=10.0)
    # Show typing in the chat while one of its deliveries is in flight (`typing_indicator.py`).
    typing_while_working: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Its health (the delivery breaker): failed attempts in a row across its chats; past the
    # threshold it is `unavailable` (since `health_since`) and gets one probe at a time, the
    # next at `next_probe_at`, until an attempt succeeds.
    health_state: Mapped[str] = mapped_column(
        String(16), default=AgentHealth.HEALTHY, server_default=AgentHealth.HEALTHY.value
    )
    health_since: Mapped[datetime | None]
    health_last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_probe_at: Mapped[datetime | None]
