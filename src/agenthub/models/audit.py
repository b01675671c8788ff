from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.ids import new_id
from agenthub.models.base import Base, utcnow


class AuditOutcome(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"


class AuditEvent(Base):
    """Who did what to what, when and from where: append-only (`agenthub/audit.py`).

    A change's event is written in the change's own transaction, so one is never without the
    other; a refused attempt (a denied admin action, a failed login) in a transaction of its
    own. `detail` never holds a secret: names of the fields changed, not their values."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at", "id"),
        Index("ix_audit_events_actor", "actor_id", "at"),
        Index("ix_audit_events_action", "action", "at"),
        Index("ix_audit_events_target", "target_id", "at"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("aud"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(16))  # user, agent, anonymous, hub
    actor_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(48))
    target_type: Mapped[str | None] = mapped_column(String(24))
    target_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(8), default=AuditOutcome.ALLOWED)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
