"""Inbound: store platform messages once, creating each chat on first contact, linking the
channel's agents for new chats (`channels/default_agents.py`) and filling their buffers.

Written for batches: the intake (`webhooks/intake.py`) hands over every message that arrived
while the previous transaction was committing, and this stores them all with a fixed number of
set-based statements (one lookup of already-stored ids, one of the chats, one insert of the
messages, …) whatever the batch size. A batch of one is the plain case. Messages that answer
another (a button or list choice, a quoted reply) cost one lookup more, of the hub ids of the
messages answered, for the batch; the others none.

Contact reactions are not messages: `apply_reactions` updates the target's
`meta_data.reactions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from agenthub.channels.default_agents import link_default_agents
from agenthub.chats.reads import CLEAR_CAUGHT_UP
from agenthub.chats.service import PREVIEW_CHARS
from agenthub.delivery import events
from agenthub.delivery.timing import buffer_due_at
from agenthub.hub import Hub
from agenthub.ids import new_id
from agenthub.models import (
    Agent,
    Base,
    Channel,
    Chat,
    ChatAgentLink,
    DeliveryStatus,
    HandledBy,
    Message,
    SenderType,
)
from agenthub.platforms.base import InboundMessage, ReactionUpdate
from agenthub.reactions import with_reaction

# The tables themselves: set-based Core statements, no ORM unit of work on this hot path.
CHATS = Base.metadata.tables[Chat.__tablename__]
LINKS = Base.metadata.tables[ChatAgentLink.__tablename__]
MESSAGES = Base.metadata.tables[Message.__tablename__]
AGENTS = Base.metadata.tables[Agent.__tablename__]


def _any_of(column: Any, name: str) -> Any:
    return column.in_(bindparam(name, expanding=True))


# Built once: the statements below run for every batch, and building a statement costs more
# than executing it. `IN` lists of plain values match a superset of the wanted (channel,
# contact) pairs when a batch spans several channels; callers keep the exact pairs.
STORED_IDS = select(MESSAGES.c.channel_id, MESSAGES.c.external_id).where(
    _any_of(MESSAGES.c.channel_id, "channel_ids"), _any_of(MESSAGES.c.external_id, "external_ids")
)
# The hub ids of the messages that arriving ones answer (a choice, a quoted reply).
REPLIED_TO = select(MESSAGES.c.channel_id, MESSAGES.c.external_id, MESSAGES.c.id).where(
    _any_of(MESSAGES.c.channel_id, "channel_ids"), _any_of(MESSAGES.c.external_id, "external_ids")
)
LOCKED_CHATS = (
    select(
        CHATS.c.id,
        CHATS.c.channel_id,
        CHATS.c.external_id,
        CHATS.c.name,
        CHATS.c.message_seq,
        CHATS.c.contact_message_count,
    )
    .where(_any_of(CHATS.c.channel_id, "channel_ids"), _any_of(CHATS.c.external_id, "contacts"))
    .order_by(CHATS.c.id)
    # NO KEY UPDATE (PostgreSQL): still one writer per chat, but the foreign-key checks of
    # rows that only reference the chat (the job runner inserting an agent delivery while it
    # holds the chat's agent link) pass, so they cannot deadlock with this transaction.
    .with_for_update(key_share=True)
)
INSERT_MESSAGES = insert(MESSAGES)
MARK_HANDLED_BY_AGENT = (
    update(CHATS).where(_any_of(CHATS.c.id, "chat_ids")).values(handled_by=HandledBy.AGENT.value)
)
UPDATE_CHAT_SUMMARIES = (
    update(CHATS)
    .where(CHATS.c.id == bindparam("chat_id"))
    .values(
        message_seq=bindparam("new_seq"),
        contact_message_count=bindparam("new_contact_count"),
        last_message=bindparam("preview"),
        last_message_ts=bindparam("preview_ts"),
        activity_at=bindparam("preview_ts"),
        last_sender_type=bindparam("preview_sender"),
        name=bindparam("new_name"),
        # A platform's reply window (WhatsApp's 24 h) runs from the contact's last message.
        last_contact_message_at=bindparam("preview_ts"),
    )
)
BUFFERING_LINKS = (
    select(
        LINKS.c.id,
        LINKS.c.chat_id,
        LINKS.c.waiting_since,
        AGENTS.c.buffer_time_seconds,
        AGENTS.c.max_buffer_seconds,
    )
    .join(AGENTS, AGENTS.c.id == LINKS.c.agent_id)
    .where(
        _any_of(LINKS.c.chat_id, "chat_ids"),
        LINKS.c.active.is_(True),
        AGENTS.c.is_active.is_(True),
    )
)
UPDATE_BUFFERS = (
    update(LINKS)
    .where(LINKS.c.id == bindparam("link_id"))
    .values(
        waiting_since=bindparam("since"), last_arrival_at=bindparam("last"), due_at=bindparam("due")
    )
)

ChatKey = tuple[str, str]  # (channel_id, contact external_id)


@dataclass(frozen=True)
class Arrival:
    """One contact message as a platform delivered it, and when the hub received it."""

    channel_id: str
    message: InboundMessage
    received_at: datetime

    @property
    def chat_key(self) -> ChatKey:
        return (self.channel_id, self.message.contact_id)


async def store_contact_message(
    session: AsyncSession, hub: Hub, channel: Channel, inbound: InboundMessage
) -> Message | None:
    """Store one contact message unless the platform already delivered it (returns None then)."""
    arrival = Arrival(channel.id, inbound, hub.clock())
    row = (await store_contact_messages(session, hub, [arrival]))[0]
    return None if row is None else Message(**row)


async def store_contact_messages(
    session: AsyncSession, hub: Hub, arrivals: Sequence[Arrival]
) -> list[dict[str, Any] | None]:
    """Store each arrival unless its platform id is already stored; returns the stored rows
    (None in place of a duplicate).

    Messages of one chat get consecutive sequence numbers in the order given. The chats are
    locked (PostgreSQL: `FOR NO KEY UPDATE`; SQLite: the write transaction) while their
    sequence numbers are handed out, so concurrent writers never reuse a position.
    """
    arrivals = [_storable(arrival) for arrival in arrivals]
    # One greenlet for all the statements, on the session's connection: Core, no ORM layer.
    stored, created, buffered = await session.run_sync(_store, hub.clock, arrivals)
    for row in stored.values():
        events.publish_after_commit(session, hub, events.new_message(row))
    for chat in created:
        events.publish_after_commit(session, hub, events.chat_updated(_chat(chat), new=True))
    if buffered:
        events.wake_after_commit(session, hub)
    return [stored.get(id(arrival)) for arrival in arrivals]


Stored = tuple[dict[int, dict[str, Any]], list[dict[str, Any]], bool]


def _store(session: Session, clock: Callable[[], datetime], arrivals: list[Arrival]) -> Stored:
    """The statements of `store_contact_messages`: the stored rows by `id()` of their arrival,
    the rows of the chats created, and whether any agent buffer was filled."""
    conn = session.connection()
    fresh = _not_yet_stored(conn, arrivals)
    if not fresh:
        return {}, [], False
    chats, created = _chats_for(conn, clock, fresh)
    stored = _insert_messages(conn, chats, fresh, _replied_to(conn, fresh))
    buffered = _fill_buffers(conn, list(stored.values()))
    return stored, [chats[key] for key in created], buffered


def _storable(arrival: Arrival) -> Arrival:
    """Without NUL characters, which PostgreSQL text cannot hold: a platform message that
    carries one is stored without it rather than refused (and lost)."""
    message = arrival.message
    texts = (message.external_id, message.contact_id, message.content, message.contact_name)
    if not any(text and "\x00" in text for text in texts):
        return arrival
    clean = replace(
        message,
        external_id=message.external_id.replace("\x00", ""),
        contact_id=message.contact_id.replace("\x00", ""),
        content=message.content.replace("\x00", ""),
        contact_name=message.contact_name and message.contact_name.replace("\x00", ""),
    )
    return replace(arrival, message=clean)


def _not_yet_stored(conn: Connection, arrivals: Sequence[Arrival]) -> list[Arrival]:
    """The arrivals whose platform id is new: not in the database, nor earlier in this batch
    (a platform retry racing its original)."""
    stored = {
        (row.channel_id, row.external_id)
        for row in conn.execute(
            STORED_IDS,
            {
                "channel_ids": sorted({a.channel_id for a in arrivals}),
                "external_ids": sorted({a.message.external_id for a in arrivals}),
            },
        )
    }
    fresh = []
    for arrival in arrivals:
        key = (arrival.channel_id, arrival.message.external_id)
        if key not in stored:
            stored.add(key)
            fresh.append(arrival)
    return fresh


def _replied_to(conn: Connection, arrivals: Sequence[Arrival]) -> dict[tuple[str, str], str]:
    """The hub ids of the messages the arrivals answer, by (channel, platform id): one query,
    and none when no arrival answers one."""
    wanted = {(a.channel_id, a.message.replied_to) for a in arrivals if a.message.replied_to}
    if not wanted:
        return {}
    rows = conn.execute(
        REPLIED_TO,
        {
            "channel_ids": sorted({channel_id for channel_id, _ in wanted}),
            "external_ids": sorted({external_id for _, external_id in wanted}),
        },
    )
    return {
        (channel_id, external_id): message_id
        for channel_id, external_id, message_id in rows
        if (channel_id, external_id) in wanted
    }


def _meta_data(arrival: Arrival, replied_to: dict[tuple[str, str], str]) -> dict[str, Any]:
    """The message's meta_data, its `reply_to` (set by the parser) completed with the hub id
    of the message answered (None when the hub does not have it)."""
    meta = arrival.message.meta_data or {}
    reply_to = meta.get("reply_to")
    if not isinstance(reply_to, dict):
        return meta
    key = (arrival.channel_id, arrival.message.replied_to or "")
    return {**meta, "reply_to": {**reply_to, "message_id": replied_to.get(key)}}


def _chats_for(
    conn: Connection, clock: Callable[[], datetime], arrivals: list[Arrival]
) -> tuple[dict[ChatKey, dict[str, Any]], list[ChatKey]]:
    """Each arrival's chat row, locked, creating the missing chats (and linking their default
    agents); and the keys of the chats created."""
    keys = sorted({arrival.chat_key for arrival in arrivals})
    chats = _locked_chats(conn, keys)
    missing = [key for key in keys if key not in chats]
    if not missing:
        return chats, []
    names: dict[ChatKey, str | None] = {}
    for arrival in arrivals:
        names.setdefault(arrival.chat_key, arrival.message.contact_name)
    proposed = {key: new_id("cht") for key in missing}
    created_at = clock()
    _insert_chats_if_absent(conn, proposed, names, created_at)
    chats.update(_locked_chats(conn, missing))
    created = [key for key in missing if chats[key]["id"] == proposed[key]]
    with_agents = link_default_agents(
        conn, created_at, {chats[key]["id"]: key[0] for key in created}
    )
    if with_agents:
        conn.execute(MARK_HANDLED_BY_AGENT, {"chat_ids": sorted(with_agents)})
    for key in created:  # the rest of a new chat's row, for its `chat_updated` event
        chats[key].update(
            created_at=created_at,
            activity_at=created_at,
            needs_human=False,
            needs_human_reason=None,
            needs_human_since=None,
            assigned_user_id=None,
            handled_by=(HandledBy.AGENT if chats[key]["id"] in with_agents else HandledBy.NONE),
        )
    return chats, created


def _locked_chats(conn: Connection, keys: list[ChatKey]) -> dict[ChatKey, dict[str, Any]]:
    wanted = set(keys)
    result = conn.execute(
        LOCKED_CHATS,
        {
            "channel_ids": sorted({channel_id for channel_id, _ in keys}),
            "contacts": sorted({contact for _, contact in keys}),
        },
    )
    return {
        (channel_id, contact): {
            "id": chat_id,
            "channel_id": channel_id,
            "external_id": contact,
            "name": name,
            "message_seq": seq,
            "contact_message_count": contact_count,
        }
        for chat_id, channel_id, contact, name, seq, contact_count in result
        if (channel_id, contact) in wanted
    }


def _insert_chats_if_absent(
    conn: Connection,
    proposed: dict[ChatKey, str],
    names: dict[ChatKey, str | None],
    now: datetime,
) -> None:
    """Insert-if-absent: concurrent first messages of one contact create one chat. Sorted, so
    two transactions inserting the same new chats cannot wait on each other in a cycle."""
    insert_for = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    conn.execute(
        insert_for(CHATS)
        .values(
            [
                {
                    "id": chat_id,
                    "channel_id": channel_id,
                    "external_id": contact_id,
                    "name": names[(channel_id, contact_id)],
                    "needs_human": False,
                    "handled_by": HandledBy.NONE.value,
                    "message_seq": 0,
                    "contact_message_count": 0,
                    "activity_at": now,
                    "created_at": now,
                }
                for (channel_id, contact_id), chat_id in sorted(proposed.items())
            ]
        )
        .on_conflict_do_nothing(index_elements=["channel_id", "external_id"])
    )


def _insert_messages(
    conn: Connection,
    chats: dict[ChatKey, dict[str, Any]],
    arrivals: list[Arrival],
    replied_to: dict[tuple[str, str], str],
) -> dict[int, dict[str, Any]]:
    """Insert the messages, next in their chats' order, and refresh each chat's summary.
    Returns the rows by `id()` of their arrival."""
    stored: dict[int, dict[str, Any]] = {}
    touched: dict[ChatKey, dict[str, Any]] = {}
    for arrival in arrivals:
        chat = touched[arrival.chat_key] = chats[arrival.chat_key]
        inbound = arrival.message
        chat["message_seq"] += 1
        chat["contact_message_count"] += 1
        chat["last_message"] = inbound.content[:PREVIEW_CHARS]
        chat["last_message_ts"] = arrival.received_at
        chat["last_sender_type"] = SenderType.CONTACT.value
        chat["last_contact_message_at"] = arrival.received_at
        chat["name"] = chat["name"] or inbound.contact_name
        stored[id(arrival)] = {
            "id": new_id("msg"),
            "chat_id": chat["id"],
            "channel_id": arrival.channel_id,
            "seq": chat["message_seq"],
            "content": inbound.content,
            "sender_type": SenderType.CONTACT.value,
            "sender_id": inbound.contact_id,
            "external_id": inbound.external_id,
            "delivery_status": DeliveryStatus.DELIVERED.value,
            "timestamp": arrival.received_at,
            "meta_data": _meta_data(arrival, replied_to),
        }
    conn.execute(INSERT_MESSAGES, list(stored.values()))
    conn.execute(
        UPDATE_CHAT_SUMMARIES,
        [
            {
                "chat_id": chat["id"],
                "new_seq": chat["message_seq"],
                "new_contact_count": chat["contact_message_count"],
                "preview": chat["last_message"],
                "preview_ts": chat["last_message_ts"],
                "preview_sender": chat["last_sender_type"],
                "new_name": chat["name"],
            }
            for chat in touched.values()
        ],
    )
    conn.execute(CLEAR_CAUGHT_UP, {"b_chat_ids": sorted(chat["id"] for chat in touched.values())})
    return stored


def _fill_buffers(conn: Connection, messages: list[dict[str, Any]]) -> bool:
    """Add the new messages to the buffer of each active agent of their chats: the buffer
    falls due when the chat has been quiet long enough, or at its cap."""
    arrivals: dict[str, list[datetime]] = {}
    for message in messages:
        arrivals.setdefault(message["chat_id"], []).append(message["timestamp"])
    links = (conn.execute(BUFFERING_LINKS, {"chat_ids": sorted(arrivals)})).all()
    if not links:
        return False
    conn.execute(UPDATE_BUFFERS, [_buffered(link, arrivals[link.chat_id]) for link in links])
    return True


def _buffered(link: Any, arrived: list[datetime]) -> dict[str, Any]:
    since = link.waiting_since or arrived[0]
    last = arrived[-1]
    due = buffer_due_at(since, last, link.buffer_time_seconds, link.max_buffer_seconds)
    return {"link_id": link.id, "since": since, "last": last, "due": due}


def _chat(row: dict[str, Any]) -> Chat:
    """A detached Chat carrying the row's values (for the `chat_updated` event)."""
    return Chat(**{column.key: row[column.key] for column in CHATS.columns})


# --- reactions ----------------------------------------------------------------------------------


async def apply_reactions(
    session: AsyncSession,
    hub: Hub,
    channel_id: str,
    reactions: Sequence[ReactionUpdate],
    received_at: datetime,
) -> int:
    """A contact's reactions to stored messages of the channel: each replaces that contact's
    reaction in the target's `meta_data.reactions` (`[{emoji, by, at}]`), or removes it, and
    raises `message_updated`. A reaction to a message the hub does not have is ignored.
    Returns how many messages changed."""
    targets = sorted({reaction.target_external_id for reaction in reactions})
    found = await session.scalars(
        select(Message)
        .where(Message.channel_id == channel_id, Message.external_id.in_(targets))
        .order_by(Message.id)
        .with_for_update()
    )
    messages = {message.external_id: message for message in found}
    changed: dict[str, Message] = {}
    for reaction in reactions:
        message = messages.get(reaction.target_external_id)
        if message is None:
            continue
        before = message.meta_data.get("reactions")
        after = with_reaction(
            before, reaction.contact_id, reaction.emoji, reaction.at or received_at
        )
        if after != before:
            message.meta_data = {**message.meta_data, "reactions": after}
            changed[message.id] = message
    if changed:
        await session.flush()
    for message in changed.values():
        events.publish_after_commit(session, hub, events.message_updated(message))
    return len(changed)
