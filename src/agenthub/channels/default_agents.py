"""Which agents a channel's new chats get: the channel's `default_agent_ids` when it has a
list (those of them that are active), else every active agent with
`activate_for_new_conversation`.

The lists live in `channel_default_agents` (one row per agent, with its position) and the
channel's `default_agents_listed` flag tells "no list" from an empty one. Foreign keys delete a
deleted agent's rows, so reads never meet an unknown id and the rule needs no clean-up.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from sqlalchemy import and_, bindparam, delete, insert, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.errors import InvalidInput, Location
from agenthub.ids import new_id
from agenthub.models import Agent, Base, Channel, ChannelDefaultAgent, ChatAgentLink

CHANNELS = Base.metadata.tables[Channel.__tablename__]
AGENTS = Base.metadata.tables[Agent.__tablename__]
DEFAULTS = Base.metadata.tables[ChannelDefaultAgent.__tablename__]
LINKS = Base.metadata.tables[ChatAgentLink.__tablename__]

# Built once (the inbound hot path runs it for every batch that creates a chat): each channel's
# agents for new chats, in list order for listed channels.
AGENTS_FOR_NEW_CHATS = (
    select(CHANNELS.c.id.label("channel_id"), AGENTS.c.id.label("agent_id"))
    .select_from(CHANNELS)
    .join(AGENTS, AGENTS.c.is_active.is_(True))
    .outerjoin(
        DEFAULTS,
        and_(DEFAULTS.c.channel_id == CHANNELS.c.id, DEFAULTS.c.agent_id == AGENTS.c.id),
    )
    .where(
        CHANNELS.c.id.in_(bindparam("channel_ids", expanding=True)),
        or_(
            and_(CHANNELS.c.default_agents_listed.is_(True), DEFAULTS.c.agent_id.is_not(None)),
            and_(
                CHANNELS.c.default_agents_listed.is_(False),
                AGENTS.c.activate_for_new_conversation.is_(True),
            ),
        ),
    )
    .order_by(CHANNELS.c.id, DEFAULTS.c.position, AGENTS.c.created_at, AGENTS.c.id)
)
INSERT_LINKS = insert(LINKS)


def link_default_agents(conn: Connection, now: datetime, chats: Mapping[str, str]) -> set[str]:
    """Link new chats (chat id → channel id) to their channels' agents for new chats: two
    statements for any number of chats, none when there are none. Returns the ids of the
    chats that got at least one agent."""
    if not chats:
        return set()
    agents: dict[str, list[str]] = {}
    for channel_id, agent_id in conn.execute(
        AGENTS_FOR_NEW_CHATS, {"channel_ids": sorted(set(chats.values()))}
    ):
        agents.setdefault(channel_id, []).append(agent_id)
    links = [
        {
            "id": new_id("cag"),
            "chat_id": chat_id,
            "agent_id": agent_id,
            "active": True,
            "created_at": now,
            "delivered_seq": 0,
        }
        for chat_id, channel_id in chats.items()
        for agent_id in agents.get(channel_id, ())
    ]
    # Ids come from `new_id` (Python's `secrets`), so the rows are built here rather than by
    # an INSERT … SELECT: SQL on both backends has no such random source.
    if links:
        conn.execute(INSERT_LINKS, links)
    return {str(link["chat_id"]) for link in links}


# --- the lists, for the channels API --------------------------------------------------------------


async def lists_of(session: AsyncSession, channels: Collection[Channel]) -> dict[str, list[str]]:
    """The lists of the listed channels among `channels` (one query for them all)."""
    listed = [channel.id for channel in channels if channel.default_agents_listed]
    if not listed:
        return {}
    rows = await session.execute(
        select(ChannelDefaultAgent.channel_id, ChannelDefaultAgent.agent_id)
        .where(ChannelDefaultAgent.channel_id.in_(listed))
        .order_by(ChannelDefaultAgent.channel_id, ChannelDefaultAgent.position)
    )
    lists: dict[str, list[str]] = {channel_id: [] for channel_id in listed}
    for channel_id, agent_id in rows:
        lists[channel_id].append(agent_id)
    return lists


async def set_list(
    session: AsyncSession, channel: Channel, agent_ids: Sequence[str] | None, loc: Location
) -> None:
    """Give the channel a list (duplicates dropped, order kept) or, with None, the hub-wide
    rule. Unknown ids are a 422 located at their place in the request (`loc` + index)."""
    wanted = None if agent_ids is None else await known_agent_ids(session, agent_ids, loc)
    if channel.default_agents_listed:
        await session.execute(
            delete(ChannelDefaultAgent).where(ChannelDefaultAgent.channel_id == channel.id)
        )
    channel.default_agents_listed = wanted is not None
    session.add_all(
        ChannelDefaultAgent(channel_id=channel.id, agent_id=agent_id, position=position)
        for position, agent_id in enumerate(wanted or ())
    )
    await session.flush()


_AGENT_ID = re.compile(r"agt_[A-Za-z0-9]{10}")


async def known_agent_ids(
    session: AsyncSession, agent_ids: Sequence[str], loc: Location
) -> list[str]:
    unique = list(dict.fromkeys(agent_ids))
    # Only well-formed ids reach the query: anything else cannot exist (and PostgreSQL would
    # refuse a NUL character in a parameter instead of finding nothing).
    plausible = [agent_id for agent_id in unique if _AGENT_ID.fullmatch(agent_id)]
    found = set(
        await session.scalars(select(Agent.id).where(Agent.id.in_(plausible))) if plausible else ()
    )
    unknown = [agent_id for agent_id in unique if agent_id not in found]
    if unknown:
        raise InvalidInput(
            [
                {
                    "type": "unknown_agent",
                    "loc": [*loc, agent_ids.index(agent_id)],
                    "msg": f"No agent has the id {agent_id!r}",
                }
                for agent_id in unknown
            ]
        )
    return unique
