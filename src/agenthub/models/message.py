from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.ids import new_id
from agenthub.models.base import Base, utcnow


class SenderType(StrEnum):
    CONTACT = "CONTACT"
    USER = "USER"
    AGENT = "AGENT"


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    READ = "READ"
    FAILED = "FAILED"


class DeliveryRank(IntEnum):
    """Statuses only move forward: a late `SENT` callback never overwrites `READ`.

    FAILED ranks with DELIVERED: a send can fail after SENT, but not after it was delivered.
    """

    PENDING = 0
    SENT = 1
    DELIVERED = 2
    FAILED = 2
    READ = 3


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # Platforms retry: the same platform message id is stored once per channel.
        UniqueConstraint("channel_id", "external_id"),
        Index("ix_messages_chat_seq", "chat_id", "seq"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("msg"))
    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    # Position in the chat (1, 2, 3, …): exact order for history, pagination and delivery.
    seq: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text, default="")
    sender_type: Mapped[str] = mapped_column(String(16))
    sender_id: Mapped[str | None] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255))
    delivery_status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)
    meta_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Why the message could not be sent (`{code, platform_code, message}`), or None.
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
