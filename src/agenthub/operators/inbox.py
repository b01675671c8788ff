"""One inbox across channels: the views, their counts and cursor paging, all in SQL.

Each view is a range of one index of `chats` (see the model), newest activity first, and a
page is a keyset seek from the cursor: a deep page costs what the first one does. The counts
are one pass over the covering index `ix_chats_inbox_counts` plus one over the reader's
caught-up read markers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, and_, bindparam, case, exists, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub import cursors
from agenthub.access import readable_channel_ids, scope_chats
from agenthub.chats.service import chat_filters
from agenthub.deps import Principal
from agenthub.models import Channel, ChannelMember, Chat, ChatRead, HandledBy


class InboxView(StrEnum):
    ALL = "all"
    NEEDS_HUMAN = "needs_human"
    MINE = "mine"  # assigned to the caller
    UNASSIGNED = "unassigned"  # no assigned user, whoever else handles the chat
    AGENT = "agent"  # handled_by == "agent"


@dataclass(frozen=True)
class InboxRow:
    chat: Chat
    channel: Channel
    read_contact_count: int


@dataclass(frozen=True)
class InboxPage:
    rows: list[InboxRow]
    has_more: bool
    next_cursor: str | None


def _view_filter(view: InboxView, user_id: str) -> Any:
    return {
        InboxView.ALL: None,
        InboxView.NEEDS_HUMAN: Chat.handled_by == HandledBy.WAITING.value,
        InboxView.MINE: Chat.assigned_user_id == user_id,
        InboxView.UNASSIGNED: Chat.assigned_user_id.is_(None),
        InboxView.AGENT: Chat.handled_by == HandledBy.AGENT.value,
    }[view]


def encode_cursor(chat: Chat) -> str:
    return cursors.encode_cursor(chat.activity_at, chat.id)


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (activity_at, id) a page continues after; anything else is a 422."""
    return cursors.decode_cursor(cursor, "this inbox")


_AFTER_CURSOR = tuple_(Chat.activity_at, Chat.id) < tuple_(
    bindparam("b_cursor_at", type_=Chat.activity_at.type), bindparam("b_cursor_id")
)


async def inbox_page(
    session: AsyncSession,
    principal: Principal,
    *,
    view: InboxView,
    channel_id: str | None,
    q: str | None,
    limit: int,
    cursor: str | None,
) -> InboxPage:
    assert principal.user is not None
    user_id = principal.user.id
    query: Any = (
        select(Chat, Channel, ChatRead.read_contact_count)
        .join(Channel, Channel.id == Chat.channel_id)
        .outerjoin(ChatRead, and_(ChatRead.chat_id == Chat.id, ChatRead.user_id == user_id))
    )
    query = _narrowed(_scoped_page(query, principal), view, user_id, channel_id, q)
    params: dict[str, Any] = {}
    if cursor is not None:
        params["b_cursor_at"], params["b_cursor_id"] = decode_cursor(cursor)
        query = query.where(_AFTER_CURSOR)
    query = query.order_by(Chat.activity_at.desc(), Chat.id.desc()).limit(limit + 1)
    result = await session.execute(query, params)
    rows = [InboxRow(chat, channel, count or 0) for chat, channel, count in result.all()]
    has_more = len(rows) > limit
    rows = rows[:limit]
    return InboxPage(rows, has_more, encode_cursor(rows[-1].chat) if has_more else None)


def _scoped_page(query: Select[Any], principal: Principal) -> Select[Any]:
    """A member's chats as a correlated EXISTS, not `channel_id IN (subquery)`: SQLite (no
    statistics) plans the IN as one range per channel over a channel_id index, reads every
    chat of the member's channels and sorts them before the LIMIT; with EXISTS it walks the
    view's index in order and stops at the end of the page. PostgreSQL plans both the same."""
    if principal.user is None or principal.is_admin:
        return scope_chats(query, principal)
    member = exists().where(
        ChannelMember.user_id == principal.user.id, ChannelMember.channel_id == Chat.channel_id
    )
    return query.where(member)


def _narrowed(
    query: Select[Any], view: InboxView, user_id: str, channel_id: str | None, q: str | None
) -> Select[Any]:
    condition = _view_filter(view, user_id)
    if condition is not None:
        query = query.where(condition)
    if channel_id is not None:
        query = query.where(Chat.channel_id == channel_id)
    return chat_filters(query, assigned=None, assigned_user_id=None, q=q)


async def inbox_counts(
    session: AsyncSession, principal: Principal, channel_id: str | None
) -> dict[str, int]:
    """The size of every view, and how many chats have unread contact messages."""
    assert principal.user is not None
    user_id = principal.user.id

    def total(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    views: Any = select(
        func.count(),
        total(Chat.handled_by == HandledBy.WAITING.value),
        total(Chat.assigned_user_id == user_id),
        total(Chat.assigned_user_id.is_(None)),
        total(Chat.handled_by == HandledBy.AGENT.value),
        total(Chat.contact_message_count > 0),
    ).select_from(Chat)
    views = scope_chats(views, principal)
    if channel_id is not None:
        views = views.where(Chat.channel_id == channel_id)
    every, waiting, mine, unassigned, agent, with_contact = (await session.execute(views)).one()
    return {
        "all": every,
        "needs_human": waiting,
        "mine": mine,
        "unassigned": unassigned,
        "agent": agent,
        "unread": with_contact - await _caught_up(session, principal, channel_id),
    }


async def _caught_up(session: AsyncSession, principal: Principal, channel_id: str | None) -> int:
    """The reader's chats with every contact message read (each counted once in `unread`'s
    "chats with contact messages", so unread chats = those - these)."""
    assert principal.user is not None
    query = select(func.count()).where(
        ChatRead.user_id == principal.user.id, ChatRead.caught_up.is_(True)
    )
    readable = readable_channel_ids(principal)
    if readable is not None:
        query = query.where(ChatRead.channel_id.in_(readable))
    if channel_id is not None:
        query = query.where(ChatRead.channel_id == channel_id)
    return int(await session.scalar(query) or 0)
