"""Chats, their messages and their agent links."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, nulls_last, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.access import scope_chats
from agenthub.audit import service as audit
from agenthub.chats.handling import (
    clear_needs_human,
    next_position,
    record_event,
    refresh_handled_by,
)
from agenthub.chats.reads import mark_unread_for_readers, read_counts
from agenthub.chats.schemas import (
    ChatOut,
    ChatUpdate,
    DeliveryAttemptOut,
    DeliveryOut,
    MessageCreate,
    chat_window,
)
from agenthub.delivery import events
from agenthub.deps import Principal
from agenthub.errors import BadRequest, Conflict, DomainError, InvalidInput, NotFound
from agenthub.hub import Hub
from agenthub.models import (
    ActorType,
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    ChannelMember,
    Chat,
    ChatAgentLink,
    ChatEventKind,
    DeliveryAttempt,
    DeliveryStatus,
    Message,
    SenderType,
    User,
    utcnow,
)
from agenthub.rich import RICH_KEYS

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


async def present_chats(
    session: AsyncSession, principal: Principal, chats: list[Chat]
) -> list[ChatOut]:
    """The chats as the caller sees them: with its own unread counts (one query)."""
    user_id = principal.user.id if principal.user is not None else None
    counts = await read_counts(session, user_id, (chat.id for chat in chats))
    return [ChatOut.of(chat, counts.get(chat.id, 0)) for chat in chats]


async def present_chat(session: AsyncSession, principal: Principal, chat: Chat) -> ChatOut:
    return (await present_chats(session, principal, [chat]))[0]


async def update_chat(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat, data: ChatUpdate
) -> Chat:
    changes = data.model_dump(exclude_unset=True)
    if "assigned_user_id" in changes:
        await assign(session, hub, principal, chat, changes["assigned_user_id"])
    if changes.get("name") is not None:
        chat.name = changes["name"]
    if changes.get("needs_human") is False:
        clear_needs_human(chat)
    await refresh_handled_by(session, [chat])
    return chat


async def assign(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat, user_id: str | None
) -> None:
    """Assign the chat to a user (None: to nobody), with its timeline event."""
    if user_id == chat.assigned_user_id:
        return
    if user_id is not None:
        await _ensure_may_be_assigned(session, chat, user_id)
    chat.assigned_user_id = user_id
    kind = ChatEventKind.ASSIGNED if user_id is not None else ChatEventKind.UNASSIGNED
    await record_event(session, chat, kind, **actor_of(principal), at=hub.clock(), user_id=user_id)


def actor_of(principal: Principal) -> dict[str, Any]:
    kind = ActorType.AGENT if principal.agent is not None else ActorType.USER
    return {"actor_type": kind, "actor_id": principal.id}


async def _ensure_may_be_assigned(session: AsyncSession, chat: Chat, user_id: str) -> None:
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise BadRequest("assigned_user_id is not an active user")
    if not user.is_admin and await session.get(ChannelMember, (chat.channel_id, user.id)) is None:
        raise BadRequest("That user has no access to this chat's channel")


async def delete_chat(session: AsyncSession, chat: Chat) -> None:
    await session.delete(chat)
    await session.flush()
    audit.record(session, "chat.deleted", ("chat", chat.id), {"channel_id": chat.channel_id})


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
    error: dict[str, Any] | None = None,
) -> Message:
    """Append a message to the chat, next in its order, and refresh the chat's summary
    (its position comes from `handling.next_position`: concurrent writers never share one)."""
    now = at or utcnow()
    contact = sender_type == SenderType.CONTACT
    summary: dict[str, Any] = {"last_contact_message_at": now} if contact else {}
    seq = await next_position(
        session,
        chat,
        contact=contact,
        last_message=content[:PREVIEW_CHARS],
        last_message_ts=now,
        last_sender_type=str(sender_type),
        activity_at=now,
        **summary,
    )
    if contact:
        await mark_unread_for_readers(session, [chat.id])
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
        error=error,
    )
    session.add(message)
    return message


def window_closed(chat: Chat, now: datetime) -> dict[str, Any] | None:
    """The `window_closed` error when the chat's reply window is closed at `now`, else None
    (open, or a platform without a window)."""
    window = chat_window(chat.platform, chat.last_contact_message_at, now)
    if window is None or window.open:
        return None
    if window.closes_at is None:
        text = "The contact has not written yet: only a template can start this conversation"
    else:
        text = (
            "The contact's last message is more than 24 hours old: the platform only takes "
            "a template now"
        )
    return {
        "code": "window_closed",
        "message": text,
        "closes_at": window.model_dump(mode="json")["closes_at"],  # as chat answers show it
    }


def check_rich(platform: str, content: str, rich: dict[str, Any], prefix: tuple[str, ...]) -> None:
    """422 (naming the field) when the platform cannot take this rich content."""
    from agenthub.platforms import get_adapter
    from agenthub.platforms.base import RichRules

    if not rich:
        return
    adapter = get_adapter(platform)
    caps = adapter.capabilities
    faults: list[tuple[tuple[str | int, ...], str]] = []
    if "template" in rich and not caps.templates:
        faults.append((("template",), f"templates are not supported on {platform} channels"))
    if len(rich.get("buttons") or []) > caps.buttons:
        faults.append((("buttons",), f"at most {caps.buttons} buttons on {platform} channels"))
    if "list" in rich:
        rows = sum(len(section["rows"]) for section in rich["list"]["sections"])
        if rows > caps.list_rows:
            faults.append((("list",), f"at most {caps.list_rows} rows on {platform} channels"))
    if not faults and isinstance(adapter, RichRules):
        faults = adapter.check_rich(content, rich)
    if faults:
        raise InvalidInput(
            [{"type": "value_error", "loc": [*prefix, *loc], "msg": msg} for loc, msg in faults]
        )


async def post_message(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat, data: MessageCreate
) -> Message:
    """A USER or AGENT message, queued (PENDING) for the platform."""
    from agenthub.delivery.outbound import queue_outbound

    sender_type = SenderType.AGENT if principal.agent is not None else SenderType.USER
    taken = [key for key in RICH_KEYS if key in data.meta_data]
    if taken:
        raise InvalidInput.at(
            ("body", "meta_data", taken[0]),
            "value_error",
            f"meta_data.{taken[0]} is set from the top-level `{taken[0]}` field",
        )
    rich = data.rich
    content = data.content
    if data.template is not None and not content:
        content = data.template.readable()
    assert content is not None  # MessageCreate requires it without a template
    check_rich(str(chat.platform), content, rich, ("body",))
    now = hub.clock()
    if data.template is None and (closed := window_closed(chat, now)) is not None:
        raise Conflict(closed)
    message = await add_message(
        session,
        chat,
        content=content,
        sender_type=sender_type,
        sender_id=principal.id,
        meta_data={**data.meta_data, **rich},
        at=now,
    )
    await queue_outbound(session, hub, message)
    return message


async def list_links(session: AsyncSession, chat: Chat) -> list[ChatAgentLink]:
    query = select(ChatAgentLink).where(ChatAgentLink.chat_id == chat.id)
    return list(await session.scalars(query.order_by(ChatAgentLink.created_at)))


async def link_agent(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat, agent_id: str
) -> ChatAgentLink:
    if await session.get(Agent, agent_id) is None:
        raise NotFound("Agent not found")
    existing = await session.scalar(
        select(ChatAgentLink.id).where(
            ChatAgentLink.chat_id == chat.id, ChatAgentLink.agent_id == agent_id
        )
    )
    if existing is not None:
        raise Conflict("Agent is already linked to this chat")
    link = await add_link(session, chat, agent_id)
    await record_event(
        session,
        chat,
        ChatEventKind.AGENT_LINKED,
        **actor_of(principal),
        at=hub.clock(),
        agent_id=agent_id,
    )
    await refresh_handled_by(session, [chat])
    return link


async def add_link(session: AsyncSession, chat: Chat, agent_id: str) -> ChatAgentLink:
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


async def lock_for_link_change(session: AsyncSession, chat: Chat) -> list[ChatAgentLink]:
    """Lock what a change of the chat's agent links touches, in the order every writer takes
    them — the chat's pending deliveries, the chat, its links — so two writers (an operator
    and an attempt recording its outcome, say) never wait on each other in a cycle
    (PostgreSQL; SQLite serialises writers). Returns the links, freshly read."""
    await session.execute(
        select(AgentDelivery.id)
        .where(
            AgentDelivery.chat_id == chat.id,
            AgentDelivery.status == AgentDeliveryStatus.PENDING,
        )
        # The order a retry (`delivery/replay.py`) and an outcome locks a pair's deliveries
        # in: the due one first, then those waiting behind it, oldest first.
        .order_by(
            AgentDelivery.next_attempt_at.is_(None), AgentDelivery.created_at, AgentDelivery.id
        )
        .with_for_update()
    )
    await session.refresh(chat, with_for_update={"key_share": True})
    links = await session.scalars(
        select(ChatAgentLink)
        .where(ChatAgentLink.chat_id == chat.id)
        .order_by(ChatAgentLink.created_at, ChatAgentLink.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(links)


async def set_link_active(
    session: AsyncSession,
    hub: Hub,
    principal: Principal,
    chat: Chat,
    link: ChatAgentLink,
    active: bool,
) -> ChatAgentLink:
    """Pause or resume an agent in the chat (by hand: a takeover no longer holds it)."""
    await lock_for_link_change(session, chat)
    link.paused_by_takeover = False
    if active == link.active:
        return link
    if active:
        resume_link(chat, link)
    else:
        await pause_link(session, hub, link)
    kind = ChatEventKind.AGENT_RESUMED if active else ChatEventKind.AGENT_PAUSED
    await record_event(
        session, chat, kind, **actor_of(principal), at=hub.clock(), agent_id=link.agent_id
    )
    await refresh_handled_by(session, [chat])
    return link


def resume_link(chat: Chat, link: ChatAgentLink) -> None:
    """A paused agent does not get what was said while it was paused as new messages: it
    resumes with the next contact message (the rest is in its history)."""
    link.active = True
    link.delivered_seq = chat.message_seq
    link.waiting_since = link.last_arrival_at = link.due_at = None


async def pause_link(session: AsyncSession, hub: Hub, link: ChatAgentLink) -> None:
    """Stop deliveries to this agent in this chat. An attempt in flight finishes (its reply
    answers what the contact said before); a delivery waiting for its next attempt is
    cancelled, so nothing starts while the link is paused."""
    link.active = False
    link.waiting_since = link.last_arrival_at = link.due_at = None
    now = hub.clock()
    await session.execute(
        update(AgentDelivery)
        .where(
            AgentDelivery.chat_id == link.chat_id,
            AgentDelivery.agent_id == link.agent_id,
            AgentDelivery.status == AgentDeliveryStatus.PENDING,
            or_(AgentDelivery.locked_until.is_(None), AgentDelivery.locked_until <= now),
        )
        .values(
            status=AgentDeliveryStatus.CANCELLED,
            completed_at=now,
            next_attempt_at=None,
            last_error="cancelled: the agent was paused in this chat",
        )
        .execution_options(synchronize_session=False)
    )
    await session.flush()


async def unlink_agent(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat, link: ChatAgentLink
) -> None:
    await lock_for_link_change(session, chat)
    await pause_link(session, hub, link)
    await session.delete(link)
    await record_event(
        session,
        chat,
        ChatEventKind.AGENT_UNLINKED,
        **actor_of(principal),
        at=hub.clock(),
        agent_id=link.agent_id,
    )
    await refresh_handled_by(session, [chat])


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
    return [delivery_out(d, attempts[d.id]) for d in deliveries]


def delivery_out(delivery: AgentDelivery, attempts: list[DeliveryAttemptOut]) -> DeliveryOut:
    """A delivery as the trace shows it (`GET /chats/{id}/deliveries`), with its attempts."""
    columns = AgentDelivery.__table__.columns
    values = {column.key: getattr(delivery, column.key) for column in columns}
    return DeliveryOut.model_validate({**values, "attempts": attempts})


class PlatformUnavailable(DomainError):
    status_code = 502


async def react(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat, message_id: str, emoji: str
) -> Message:
    """Send our reaction to one of the chat's messages (`""` removes ours) and record it in the
    message's `meta_data.reactions` (`[{emoji, by, at}]`, one entry per reactor)."""
    from agenthub.chats.resend import get_message
    from agenthub.delivery.outbound import outbound_context
    from agenthub.platforms import SendError, get_adapter
    from agenthub.platforms.base import ReactionSender
    from agenthub.reactions import with_reaction

    message = await get_message(session, chat, message_id)
    platform = str(chat.platform)
    adapter = get_adapter(platform)
    if not isinstance(adapter, ReactionSender) or not adapter.capabilities.reactions:
        raise InvalidInput.at(
            ("body", "emoji"), "value_error", f"reactions are not supported on {platform} channels"
        )
    if emoji and (why := adapter.check_reaction(emoji)) is not None:
        raise InvalidInput.at(("body", "emoji"), "value_error", why)
    if not message.external_id and platform != "api":
        raise Conflict("The message has no platform id yet (not sent, or sent without one)")
    context = await outbound_context(session, hub, message.id)
    assert context is not None
    try:
        await adapter.send_reaction(hub.http, context, emoji)
    except SendError as exc:
        raise PlatformUnavailable(f"{platform} refused the reaction: {exc.detail}") from None
    message = await session.get_one(
        Message, message.id, with_for_update=True, populate_existing=True
    )
    reactions = with_reaction(message.meta_data.get("reactions"), principal.id, emoji, hub.clock())
    message.meta_data = {**message.meta_data, "reactions": reactions}
    await session.flush()
    events.publish_after_commit(session, hub, events.message_updated(message))
    return message
