"""What operators add to a chat: read markers, private notes, timeline events, canned answers."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.ids import new_id
from agenthub.models.base import Base, utcnow


class ChatRead(Base):
    """How far one user has read one chat.

    `read_contact_count` is how many CONTACT messages the chat had up to the mark, so a
    chat's unread count is `chat.contact_message_count - read_contact_count`. `caught_up`
    says the chat has contact messages and all of them are read; new ones clear it (in the
    inbound transaction), so the inbox counts unread chats from an index, not row by row.
    """

    __tablename__ = "chat_reads"
    __table_args__ = (
        Index("ix_chat_reads_counts", "user_id", "caught_up", "channel_id"),
        Index("ix_chat_reads_chat_id", "chat_id", "caught_up"),
    )

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    chat_id: Mapped[str] = mapped_column(
        ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True
    )
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    read_seq: Mapped[int] = mapped_column(Integer, default=0)
    read_contact_count: Mapped[int] = mapped_column(Integer, default=0)
    caught_up: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    read_at: Mapped[datetime] = mapped_column(default=utcnow)


class Note(Base):
    """A private note on a chat: for operators only, never sent to a contact or an agent."""

    __tablename__ = "notes"
    __table_args__ = (Index("ix_notes_chat_seq", "chat_id", "seq"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("nte"))
    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"))
    # The note's place in the chat's timeline (shared with messages and events).
    seq: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatEventKind(StrEnum):
    TAKEOVER = "takeover"
    HANDBACK = "handback"
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    HANDOFF = "handoff"
    DELIVERY_FAILED = "delivery_failed"
    AGENT_LINKED = "agent_linked"
    AGENT_PAUSED = "agent_paused"
    AGENT_RESUMED = "agent_resumed"
    AGENT_UNLINKED = "agent_unlinked"


class ActorType(StrEnum):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


class ChatEvent(Base):
    """Something that happened to a chat, for its timeline: who did what, and when."""

    __tablename__ = "chat_events"
    __table_args__ = (Index("ix_chat_events_chat_seq", "chat_id", "seq"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("evt"))
    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(32))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CannedResponse(Base):
    """A ready answer operators insert with `/shortcut`."""

    __tablename__ = "canned_responses"

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("cnd"))
    shortcut: Mapped[str] = mapped_column(String(32), unique=True)
    content: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
