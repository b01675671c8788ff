"""Private notes, and the timeline: a chat's messages, notes and events merged, newest first.

The three share the chat's position sequence (`chats.handling.next_position`), so the merge is
exact and paging is a seek below one position: `before` is the id of the oldest item seen.
Notes live in their own table and are read only here, which is how they stay away from
platforms, agent payloads and `GET /chats/{id}/messages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.handling import next_position
from agenthub.errors import InvalidInput
from agenthub.hub import Hub
from agenthub.models import Chat, ChatEvent, Message, Note

_TABLES: dict[str, Any] = {"message": Message, "note": Note, "event": ChatEvent}


async def add_note(session: AsyncSession, hub: Hub, user_id: str, chat: Chat, content: str) -> Note:
    note = Note(
        chat_id=chat.id,
        seq=await next_position(session, chat),
        user_id=user_id,
        content=content,
        created_at=hub.clock(),
    )
    session.add(note)
    await session.flush()
    return note


@dataclass(frozen=True)
class TimelinePage:
    items: list[tuple[str, Any]]  # (kind, row), newest first
    has_more: bool


async def timeline_page(
    session: AsyncSession,
    chat: Chat,
    *,
    limit: int,
    before: str | None,
    since: str | None = None,
) -> TimelinePage:
    """One page: the positions first (one UNION over three indexed ranges), then the rows.

    `before`: only items older than that one. `since`: only that item and newer ones (what a
    page showing from that item on needs to refresh itself; `has_more` then says that more
    than `limit` of them exist, and the newest `limit` are returned).
    """
    below = await _position_of(session, chat, before, "before") if before is not None else None
    from_ = await _position_of(session, chat, since, "since") if since is not None else None
    ranges = []
    for kind, table in _TABLES.items():
        query = select(table.seq.label("seq"), table.id.label("id"), literal(kind).label("kind"))
        query = query.where(table.chat_id == chat.id)
        if below is not None:
            query = query.where(table.seq < below)
        if from_ is not None:
            query = query.where(table.seq >= from_)
        ranges.append(query.order_by(table.seq.desc()).limit(limit + 1))
    merged = union_all(*(r.subquery().select() for r in ranges)).subquery()
    picked = (
        await session.execute(
            select(merged.c.id, merged.c.kind).order_by(merged.c.seq.desc()).limit(limit + 1)
        )
    ).all()
    has_more = len(picked) > limit
    picked = picked[:limit]
    rows = await _load(session, picked)
    return TimelinePage([(kind, rows[item_id]) for item_id, kind in picked], has_more)


async def _load(session: AsyncSession, picked: Sequence[Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for kind, table in _TABLES.items():
        ids = [item_id for item_id, item_kind in picked if item_kind == kind]
        if ids:
            for row in await session.scalars(select(table).where(table.id.in_(ids))):
                rows[row.id] = row
    return rows


async def _position_of(session: AsyncSession, chat: Chat, item_id: str, param: str) -> int:
    table = _TABLES.get(_kind_of(item_id))
    seq = None
    if table is not None:
        seq = await session.scalar(
            select(table.seq).where(table.chat_id == chat.id, table.id == item_id)
        )
    if seq is None:
        raise InvalidInput.at(
            ("query", param), "unknown_item", f"`{param}` is not an item of this chat's timeline"
        )
    return int(seq)


def _kind_of(item_id: str) -> str:
    return {"msg": "message", "nte": "note", "evt": "event"}.get(item_id.split("_", 1)[0], "")


def item_timestamp(kind: str, row: Any) -> datetime:
    moment: datetime = row.timestamp if kind == "message" else row.created_at
    return moment
