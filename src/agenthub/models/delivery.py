from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.ids import new_id
from agenthub.models.base import Base, utcnow


class AgentDeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Dropped before its next attempt because the agent's link was paused (an operator took
    # over): its messages were answered by a person, and stay in the agent's history.
    CANCELLED = "cancelled"


class AttemptTrigger(StrEnum):
    """What started an attempt: the hub's own schedule (the first try and its backoff
    retries), an admin's retry of a failed delivery, or a recover of an agent's failures."""

    SCHEDULED = "scheduled"
    MANUAL = "manual"
    RECOVER = "recover"
    PROBE = "probe"  # the one attempt an unavailable agent gets (`delivery/health.py`)


class AgentDelivery(Base):
    """One batch of a chat's contact messages for one agent, retried until it succeeds or fails."""

    __tablename__ = "agent_deliveries"
    __table_args__ = (Index("ix_agent_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("dlv"))
    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=AgentDeliveryStatus.PENDING)
    message_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    # Held while an attempt is in flight; a crashed worker's lease simply runs out.
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    # Set by a retry or a recover (`manual`, `recover`) until the attempt it asked for is
    # recorded: that attempt carries it, and it gets no backoff retries of its own.
    retry_trigger: Mapped[str | None] = mapped_column(String(16))


class OutboundStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class OutboundSend(Base):
    """A USER or AGENT message waiting to be sent to the contact's platform (the outbox)."""

    __tablename__ = "outbound_sends"
    __table_args__ = (Index("ix_outbound_sends_due", "status", "next_attempt_at"),)

    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), default=OutboundStatus.PENDING)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryAttempt(Base):
    """One HTTP try of an agent delivery: what happened, how long it took."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("agent_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt_number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(
        String(16), default=AttemptTrigger.SCHEDULED, server_default=AttemptTrigger.SCHEDULED.value
    )
    # `timeout`, `connect`, `dns`, `tls`, `http_status`, `too_large`, `refused_address`,
    # `protocol` (`delivery/webhook_call.py`); None when it succeeded.
    error_kind: Mapped[str | None] = mapped_column(String(24))
    # The first 4 KiB of the answer, and the address the hub connected to.
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    remote_address: Mapped[str | None] = mapped_column(String(64))
