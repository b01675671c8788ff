"""Request and response bodies of the operator endpoints (inbox, takeover, notes, timeline)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from agenthub.chats.schemas import ChatOut, MessageOut
from agenthub.models import Platform
from agenthub.schemas import Out, Schema

MAX_NOTE = 8192


class ChannelSummary(Out):
    id: str
    name: str
    platform: Platform


class InboxChatOut(ChatOut):
    channel: ChannelSummary


class InboxPageOut(Out):
    chats: list[InboxChatOut]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class InboxCountsOut(Out):
    all: int
    needs_human: int
    mine: int
    unassigned: int
    agent: int
    unread: int = Field(description="Chats with unread contact messages for the caller")


class HandbackIn(Schema):
    agent_ids: list[Annotated[str, StringConstraints(max_length=16)]] | None = Field(
        default=None,
        max_length=50,
        description="Resume these agents (linking them when needed) instead of the ones the "
        "takeover paused",
    )


class ReadIn(Schema):
    message_id: Annotated[str, StringConstraints(max_length=16)] | None = Field(
        default=None, description="Read up to this message (default: the newest)"
    )


class ReadOut(Out):
    chat_id: str
    unread_count: int


NoteContent = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NOTE)
]


class NoteIn(Schema):
    content: NoteContent


class NoteOut(Out):
    id: str
    chat_id: str
    user_id: str | None
    content: str
    created_at: datetime


class Actor(Out):
    type: Literal["user", "agent", "system"]
    id: str | None


class EventOut(Out):
    kind: Literal["event"] = "event"
    id: str
    timestamp: datetime
    event: str
    actor: Actor
    detail: dict[str, Any]


class MessageItem(Out):
    kind: Literal["message"] = "message"
    id: str
    timestamp: datetime
    message: MessageOut


class NoteItem(Out):
    kind: Literal["note"] = "note"
    id: str
    timestamp: datetime
    note: NoteOut


TimelineItem = Annotated[MessageItem | NoteItem | EventOut, Field(discriminator="kind")]


class TimelinePageOut(Out):
    items: list[TimelineItem]
    has_more: bool
