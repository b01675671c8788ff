from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    select,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column

from agenthub.ids import new_id
from agenthub.models.base import Base, utcnow
from agenthub.models.channel import Channel


class HandledBy(StrEnum):
    """Who answers the contact now, decided in this order (`chats/handling.py`)."""

    WAITING = "waiting"  # needs_human: nobody has picked it up
    AGENT = "agent"  # an active agent has an active link
    HUMAN = "human"  # assigned to a user
    NONE = "none"


class NeedsHumanReason(StrEnum):
    AGENT_HANDOFF = "agent_handoff"
    DELIVERY_FAILED = "delivery_failed"
    AGENT_UNAVAILABLE = "agent_unavailable"
    SEND_FAILED = "send_failed"


# An alias of its own: a query that also selects from `channels` must not correlate with it.
_CHANNELS = cast(Table, Channel.__table__).alias("chat_channel")


class Chat(Base):
    """A conversation with one contact on one channel."""

    __tablename__ = "chats"
    __table_args__ = (
        UniqueConstraint("channel_id", "external_id"),
        Index("ix_chats_channel_activity", "channel_id", "last_message_ts"),
        # The inbox: every view is one of these index ranges, newest activity first. The
        # trailing channel_id lets a member's page test each entry's channel in the index.
        Index("ix_chats_inbox_activity", "activity_at", "id", "channel_id"),
        Index("ix_chats_inbox_channel", "channel_id", "activity_at", "id"),
        Index("ix_chats_inbox_handled_by", "handled_by", "activity_at", "id", "channel_id"),
        Index("ix_chats_inbox_assigned", "assigned_user_id", "activity_at", "id", "channel_id"),
        # The counts: one pass over this index, never over the table.
        Index(
            "ix_chats_inbox_counts",
            "channel_id",
            "handled_by",
            "assigned_user_id",
            "contact_message_count",
        ),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("cht"))
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    assigned_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    last_message: Mapped[str | None] = mapped_column(Text)
    last_message_ts: Mapped[datetime | None]
    last_sender_type: Mapped[str | None] = mapped_column(String(16))
    needs_human: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_human_reason: Mapped[str | None] = mapped_column(String(32))
    needs_human_since: Mapped[datetime | None]
    # Stored, not computed per read: the inbox filters and counts by it through an index.
    # Every change to its inputs calls `chats.handling.refresh_handled_by`.
    handled_by: Mapped[str] = mapped_column(
        String(16), default=HandledBy.NONE, server_default=HandledBy.NONE
    )
    # Highest position handed out in this chat. Messages, notes and timeline events share
    # the sequence, so it orders the timeline exactly (message seqs may have gaps).
    message_seq: Mapped[int] = mapped_column(Integer, default=0)
    # How many CONTACT messages the chat has: unread = this - the reader's count at its mark.
    contact_message_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The inbox's order: the last message's time, or the creation time before any message.
    activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the contact last wrote: a platform's reply window (WhatsApp's 24 h) runs from it.
    last_contact_message_at: Mapped[datetime | None]
    # The channel's platform, read with the chat (a correlated subquery, never stored): the
    # chat's answers carry the platform's reply window, which depends on it.
    platform: Mapped[str | None] = column_property(
        select(_CHANNELS.c.platform)
        .where(_CHANNELS.c.id == channel_id)
        .correlate_except(_CHANNELS)
        .scalar_subquery(),
        # A chat never changes channel: a flush of the chat need not reload it.
        expire_on_flush=False,
    )


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
    # Paused by an operator's takeover: the handback resumes exactly these links.
    paused_by_takeover: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Highest chat message seq already handed to a delivery for this agent.
    delivered_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Arrival of the oldest and of the newest contact message waiting in the buffer.
    waiting_since: Mapped[datetime | None]
    last_arrival_at: Mapped[datetime | None]
    # When the waiting messages become a delivery (None: nothing waiting).
    due_at: Mapped[datetime | None]
    # The agent transport's handle for this chat's next delivery: an A2A task waiting for
    # the contact's input (`transports/a2a.py`).
    continuation: Mapped[str | None] = mapped_column(String(200))
