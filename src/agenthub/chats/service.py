"""Chats, their messages and their agent links."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, nulls_last, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from agenthub.access import scope_chats
from agenthub.chats.schemas import ChatUpdate, DeliveryAttemptOut, DeliveryOut, MessageCreate
from agenthub.deps import Principal
from agenthub.errors import BadRequest, Conflict, NotFound
from agenthub.hub import Hub
from agenthub.models import (
    Agent,
    AgentDelivery,
    ChannelMember,
    Chat,
    ChatAgentLink,
    DeliveryAttempt,
    DeliveryStatus,
    Message,
    SenderType,
    User,
    utcnow,
)

PREVIEW_CHARS = 100


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def chat_filters(
    query: Select[Any],
    *,
    assigned: bool | None,
    assigned_user_id: str | None,
    q: str | None,
) -> Select[Any]:
    if assigned is not None:
        condition = Chat.assigned_user_id.is_not(None)
        query = query.where(condition if assigned else ~condition)
    if assigned_user_id is not None:
        query = query.where(Chat.assigned_user_id == assigned_user_id)
    if q:
        pattern = f"%{_escape_like(q.lower())}%"
        query = query.where(
            or_(
                func.lower(Chat.name).like(pattern, escape="\\"),
                func.lower(Chat.external_id).like(pattern, escape="\\"),
            )
        )
    return query


async def list_chats(
    session: AsyncSession,
    principal: Principal,
    channel_id: str,
    *,
    limit: int,
    offset: int,
    **filters: Any,
) -> tuple[list[Chat], int]:
    """One page of a channel's chats, newest activity first, and the total count (both in SQL)."""
    base = chat_filters(
        scope_chats(select(Chat), principal).where(Chat.channel_id == channel_id), **filters
    )
    total = await session.scalar(select(func.count()).select_from(base.subquery()))
    page = (
        base.order_by(nulls_last(Chat.last_message_ts.desc()), Chat.created_at.desc(), Chat.id)
        .limit(limit)
        .offset(offset)
    )
    return list(await session.scalars(page)), int(total or 0)


async def update_chat(session: AsyncSession, chat: Chat, data: ChatUpdate) -> Chat:
    changes = data.model_dump(exclude_unset=True)
    if "assigned_user_id" in changes:
        if (user_id := changes["assigned_user_id"]) is not None:
            await _ensure_may_be_assigned(session, chat, user_id)
        chat.assigned_user_id = user_id
    if changes.get("name") is not None:
        chat.name = changes["name"]
    if changes.get("needs_human") is not None:
        chat.needs_human = changes["needs_human"]
    await session.flush()
    return chat


async def _ensure_may_be_assigned(session: AsyncSession, chat: Chat, user_id: str) -> None:
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise BadRequest("assigned_user_id is not an active user")
    if not user.is_admin and await session.get(ChannelMember, (chat.channel_id, user.id)) is None:
        raise BadRequest("That user has no access to this chat's channel")


async def delete_chat(session: AsyncSession, chat: Chat) -> None:
    await session.delete(chat)
    await session.flush()


async def list_messages(
    session: AsyncSession, chat: Chat, *, limit: int, before: str | None
) -> tuple[list[Message], bool]:
    query = select(Message).where(Message.chat_id == chat.id)
    if before is not None:
        anchor_seq = await session.scalar(
            select(Message.seq).where(Message.chat_id == chat.id, Message.id == before)
        )
        if anchor_seq is None:
            raise BadRequest("`before` is not a message of this chat")
        query = query.where(Message.seq < anchor_seq)
    rows = list(await session.scalars(query.order_by(Message.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


async def add_message(
    session: AsyncSession,
    chat: Chat,
    *,
    content: str,
    sender_type: SenderType,
    sender_id: str | None,
    external_id: str | None = None,
    meta_data: dict[str, Any] | None = None,
    delivery_status: DeliveryStatus = DeliveryStatus.PENDING,
    at: datetime | None = None,
) -> Message:
    """Append a message to the chat, next in its order, and refresh the chat's summary.

    The sequence number comes from one atomic `UPDATE … RETURNING`, so concurrent writers to
    the same chat (webhooks, agents, operators) can never hand out the same position.
    """
    now = at or utcnow()
    summary = {
        "last_message": content[:PREVIEW_CHARS],
        "last_message_ts": now,
        "last_sender_type": str(sender_type),
    }
    seq = await session.scalar(
        update(Chat)
        .where(Chat.id == chat.id)
        .values(message_seq=Chat.message_seq + 1, **summary)
        .returning(Chat.message_seq)
    )
    assert seq is not None
    for key, value in {"message_seq": seq, **summary}.items():
        set_committed_value(chat, key, value)
    message = Message(
        chat_id=chat.id,
        channel_id=chat.channel_id,
        seq=seq,
        content=content,
        sender_type=sender_type,
        sender_id=sender_id,
        external_id=external_id,
        delivery_status=delivery_status,
        timestamp=now,
        meta_data=meta_data or {},
    )
    session.add(message)
    return message


async def post_message(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat, data: MessageCreate
) -> Message:
    """A USER or AGENT message, queued (PENDING) for the platform."""
    from agenthub.delivery.outbound import queue_outbound

    sender_type = SenderType.AGENT if principal.agent is not None else SenderType.USER
    message = await add_message(
        session,
        chat,
        content=data.content,
        sender_type=sender_type,
        sender_id=principal.id,
        meta_data=data.meta_data,
        at=hub.clock(),
    )
    await queue_outbound(session, hub, message)
    return message


async def list_links(session: AsyncSession, chat: Chat) -> list[ChatAgentLink]:
    query = select(ChatAgentLink).where(ChatAgentLink.chat_id == chat.id)
    return list(await session.scalars(query.order_by(ChatAgentLink.created_at)))


async def link_agent(session: AsyncSession, chat: Chat, agent_id: str) -> ChatAgentLink:
    if await session.get(Agent, agent_id) is None:
        raise NotFound("Agent not found")
    existing = await session.scalar(
        select(ChatAgentLink.id).where(
            ChatAgentLink.chat_id == chat.id, ChatAgentLink.agent_id == agent_id
        )
    )
    if existing is not None:
        raise Conflict("Agent is already linked to this chat")
    # A newly linked agent starts with the next contact message (the history comes with it).
    link = ChatAgentLink(
        chat_id=chat.id, agent_id=agent_id, active=True, delivered_seq=chat.message_seq
    )
    session.add(link)
    await session.flush()
    return link


async def get_link(session: AsyncSession, chat: Chat, agent_id: str) -> ChatAgentLink:
    link = await session.scalar(
        select(ChatAgentLink).where(
            ChatAgentLink.chat_id == chat.id, ChatAgentLink.agent_id == agent_id
        )
    )
    if link is None:
        raise NotFound("Agent is not linked to this chat")
    return link


async def set_link_active(
    session: AsyncSession, chat: Chat, link: ChatAgentLink, active: bool
) -> ChatAgentLink:
    if active and not link.active:
        # A paused agent does not get what was said while it was paused: it resumes from now.
        link.delivered_seq = chat.message_seq
    link.active = active
    link.waiting_since = link.last_arrival_at = link.due_at = None
    await session.flush()
    return link


async def unlink_agent(session: AsyncSession, link: ChatAgentLink) -> None:
    await session.delete(link)
    await session.flush()


async def list_deliveries(session: AsyncSession, chat: Chat, limit: int) -> list[DeliveryOut]:
    """The chat's agent deliveries, newest first, each with its attempts (two queries)."""
    deliveries = list(
        await session.scalars(
            select(AgentDelivery)
            .where(AgentDelivery.chat_id == chat.id)
            .order_by(AgentDelivery.created_at.desc(), AgentDelivery.id)
            .limit(limit)
        )
    )
    attempts: dict[str, list[DeliveryAttemptOut]] = {d.id: [] for d in deliveries}
    if deliveries:
        rows = await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(attempts))
            .order_by(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt_number)
        )
        for attempt in rows:
            attempts[attempt.delivery_id].append(DeliveryAttemptOut.model_validate(attempt))
    return [
        DeliveryOut.model_validate({**_columns(d), "attempts": attempts[d.id]}) for d in deliveries
    ]


def _columns(row: AgentDelivery) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in AgentDelivery.__table__.columns}
