"""Who handles a chat, why it needs a human, and the system events of its timeline.

`handled_by` is stored on the chat (the inbox filters and counts by it through an index) and
recomputed by `refresh_handled_by` after anything that changes its inputs: `needs_human`, an
agent link, an agent's activation, or the assignment. The rule, in order: `waiting` when
`needs_human` is set; `agent` when an active agent has an active link; `human` when a user is
assigned; else `none`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, exists, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from agenthub.models import (
    ActorType,
    Agent,
    Chat,
    ChatAgentLink,
    ChatEvent,
    ChatEventKind,
    HandledBy,
    NeedsHumanReason,
)


def _has_working_agent() -> Any:
    return exists().where(
        ChatAgentLink.chat_id == Chat.id,
        ChatAgentLink.active.is_(True),
        Agent.id == ChatAgentLink.agent_id,
        Agent.is_active.is_(True),
    )


def handled_by_expression() -> Any:
    """The rule as SQL, evaluated on the chat row."""
    return case(
        (Chat.needs_human.is_(True), HandledBy.WAITING.value),
        (_has_working_agent(), HandledBy.AGENT.value),
        (Chat.assigned_user_id.is_not(None), HandledBy.HUMAN.value),
        else_=HandledBy.NONE.value,
    )


async def refresh_handled_by(session: AsyncSession, chats: Sequence[Chat] | Select[Any]) -> None:
    """Recompute `handled_by` for these chats (objects, or a select of chat ids) in one
    statement, and set it on the objects given."""
    await session.flush()
    ids: Any = [chat.id for chat in chats] if isinstance(chats, Sequence) else chats
    if isinstance(ids, list) and not ids:
        return
    rows = await session.execute(
        update(Chat)
        .where(Chat.id.in_(ids))
        .values(handled_by=handled_by_expression())
        .returning(Chat.id, Chat.handled_by)
        .execution_options(synchronize_session=False)
    )
    values = {key: value for key, value in rows.all()}
    if isinstance(chats, Sequence):
        for chat in chats:
            set_committed_value(chat, "handled_by", values.get(chat.id, chat.handled_by))


def set_needs_human(chat: Chat, reason: NeedsHumanReason, now: datetime) -> None:
    """Flag the chat for a person; the first reason (and its time) stays until it is cleared."""
    if not chat.needs_human:
        chat.needs_human_reason = reason.value
        chat.needs_human_since = now
    chat.needs_human = True


def clear_needs_human(chat: Chat) -> None:
    chat.needs_human = False
    chat.needs_human_reason = None
    chat.needs_human_since = None


async def next_position(
    session: AsyncSession, chat: Chat, *, contact: bool = False, **summary: Any
) -> int:
    """The chat's next timeline position (shared by messages, notes and events), taken with one
    atomic `UPDATE … RETURNING` so concurrent writers never get the same one. `contact` counts
    a CONTACT message; `summary` sets other chat columns in the same statement."""
    values: dict[str, Any] = {"message_seq": Chat.message_seq + 1, **summary}
    if contact:
        values["contact_message_count"] = Chat.contact_message_count + 1
    row = (
        await session.execute(
            update(Chat)
            .where(Chat.id == chat.id)
            .values(**values)
            .returning(Chat.message_seq, Chat.contact_message_count)
            .execution_options(synchronize_session=False)
        )
    ).one()
    seq, contact_count = row
    for key, value in {
        **summary,
        "message_seq": seq,
        "contact_message_count": contact_count,
    }.items():
        set_committed_value(chat, key, value)
    return int(seq)


async def record_event(
    session: AsyncSession,
    chat: Chat,
    event: ChatEventKind,
    *,
    actor_type: ActorType,
    actor_id: str | None,
    at: datetime,
    **detail: Any,
) -> ChatEvent:
    """Add a system event to the chat's timeline."""
    row = ChatEvent(
        chat_id=chat.id,
        seq=await next_position(session, chat),
        event=event.value,
        actor_type=actor_type.value,
        actor_id=actor_id,
        detail=detail,
        created_at=at,
    )
    session.add(row)
    return row
