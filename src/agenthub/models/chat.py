from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.ids import new_id
from agenthub.models.base import Base, utcnow


class Chat(Base):
    """A conversation with one contact on one channel."""

    __tablename__ = "chats"
    __table_args__ = (
        UniqueConstraint("channel_id", "external_id"),
        Index("ix_chats_channel_activity", "channel_id", "last_message_ts"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("cht"))
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    assigned_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    last_message: Mapped[str | None] = mapped_column(Text)
    last_message_ts: Mapped[datetime | None]
    last_sender_type: Mapped[str | None] = mapped_column(String(16))
    needs_human: Mapped[bool] = mapped_column(Boolean, default=False)
    # Highest message sequence number handed out in this chat (orders messages exactly).
    message_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatAgentLink(Base):
    """An agent taking part in a chat; `active=False` pauses deliveries to it.

    It also holds the agent's buffer for the chat: contact messages after `delivered_seq` wait
    here until `due_at` (the debounce), then become one `AgentDelivery`.
    """

    __tablename__ = "chat_agents"
    __table_args__ = (
        UniqueConstraint("chat_id", "agent_id"),
        Index("ix_chat_agents_due_at", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("cag"))
    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Highest chat message seq already handed to a delivery for this agent.
    delivered_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Arrival of the oldest and of the newest contact message waiting in the buffer.
    waiting_since: Mapped[datetime | None]
    last_arrival_at: Mapped[datetime | None]
    # When the waiting messages become a delivery (None: nothing waiting).
    due_at: Mapped[datetime | None]
