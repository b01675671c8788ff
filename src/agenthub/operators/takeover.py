"""Taking a chat over from its agents, and handing it back — each one transaction.

Takeover: the chat is assigned to the operator, every active agent link is paused (and
marked `paused_by_takeover`, so the handback knows which), and `needs_human` is cleared. No
new delivery starts while the links are paused (`chats.service.pause_link`); an attempt
already in flight finishes, and its reply is stored and sent.

Handback: the links the takeover paused (or the agents named) are resumed from the chat's
current position, so what the contact said meanwhile reaches them as history, not as new
messages; the assignment is cleared. Repeating either is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.audit import service as audit
from agenthub.channels.default_agents import known_agent_ids
from agenthub.chats.handling import clear_needs_human, record_event, refresh_handled_by
from agenthub.chats.service import (
    actor_of,
    add_link,
    lock_for_link_change,
    pause_link,
    resume_link,
)
from agenthub.deps import Principal
from agenthub.hub import Hub
from agenthub.models import Chat, ChatAgentLink, ChatEventKind


async def take_over(session: AsyncSession, hub: Hub, principal: Principal, chat: Chat) -> Chat:
    assert principal.user is not None
    links = await lock_for_link_change(session, chat)
    paused = []
    for link in links:
        if link.active:
            await pause_link(session, hub, link)
            link.paused_by_takeover = True
            paused.append(link.agent_id)
    if not paused and not chat.needs_human and chat.assigned_user_id == principal.user.id:
        return chat  # already taken over by this operator: nothing to record
    chat.assigned_user_id = principal.user.id
    clear_needs_human(chat)
    await record_event(
        session,
        chat,
        ChatEventKind.TAKEOVER,
        **actor_of(principal),
        at=hub.clock(),
        paused_agent_ids=paused,
    )
    audit.record(session, "chat.takeover", ("chat", chat.id), {"paused_agent_ids": paused})
    await refresh_handled_by(session, [chat])
    return chat


async def hand_back(
    session: AsyncSession,
    hub: Hub,
    principal: Principal,
    chat: Chat,
    agent_ids: Sequence[str] | None,
) -> Chat:
    links = await lock_for_link_change(session, chat)
    if agent_ids is None:
        resumed = [link for link in links if link.paused_by_takeover]
    else:
        resumed = await _links_for(session, chat, links, agent_ids)
    resumed = [link for link in resumed if not link.active]
    if not resumed and chat.assigned_user_id is None:
        return chat  # already handed back: nothing to record
    for link in resumed:
        resume_link(chat, link)
    for link in links:
        link.paused_by_takeover = False
    chat.assigned_user_id = None
    await record_event(
        session,
        chat,
        ChatEventKind.HANDBACK,
        **actor_of(principal),
        at=hub.clock(),
        resumed_agent_ids=[link.agent_id for link in resumed],
    )
    resumed_ids = [link.agent_id for link in resumed]
    audit.record(session, "chat.handback", ("chat", chat.id), {"resumed_agent_ids": resumed_ids})
    await refresh_handled_by(session, [chat])
    return chat


async def _links_for(
    session: AsyncSession, chat: Chat, links: list[ChatAgentLink], agent_ids: Sequence[str]
) -> list[ChatAgentLink]:
    """The links of the agents named, linking those not linked yet; an unknown agent → 422."""
    wanted = await known_agent_ids(session, agent_ids, ("body", "agent_ids"))
    by_agent = {link.agent_id: link for link in links}
    result = []
    for agent_id in wanted:
        link = by_agent.get(agent_id)
        if link is None:
            link = await add_link(session, chat, agent_id)
            link.active = False  # resumed below, like the others
        result.append(link)
    return result
