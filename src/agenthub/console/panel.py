"""The console's side panel: what the operator sees and may change about the open chat.

Only reads here (the routes in `console/actions.py` make the changes through `chats.service`):
the contact, who handles the chat and why it needs a human, the users it may be assigned to
(exactly those `chats.service.assign` accepts: active admins and active members of the
chat's channel), its agent links with the active agents not linked yet, and, for an admin
only, the delivery trace of `chats.service.list_deliveries`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.service import list_deliveries, list_links
from agenthub.deps import Principal
from agenthub.models import Agent, Channel, ChannelMember, Chat, Role, User

DELIVERY_LIMIT = 20

NEEDS_HUMAN_REASONS = {
    "agent_handoff": "The agent handed the chat off",
    "delivery_failed": "Delivery to the agent failed",
    "agent_unavailable": "No agent is available",
    "send_failed": "A message could not be sent to the contact",
}


async def assignable_users(session: AsyncSession, chat: Chat) -> list[User]:
    """The active users the chat may be assigned to, by username."""
    members = select(ChannelMember.user_id).where(ChannelMember.channel_id == chat.channel_id)
    query = (
        select(User)
        .where(User.is_active, or_(User.role == Role.ADMIN, User.id.in_(members)))
        .order_by(User.username)
    )
    return list(await session.scalars(query))


async def panel_context(session: AsyncSession, principal: Principal, chat: Chat) -> dict[str, Any]:
    channel = await session.get(Channel, chat.channel_id)
    links = await list_links(session, chat)
    linked = {link.agent_id for link in links}
    agents = {
        agent.id: agent
        for agent in await session.scalars(
            select(Agent).where(or_(Agent.is_active, Agent.id.in_(linked))).order_by(Agent.name)
        )
    }
    users = await assignable_users(session, chat)
    assignee = None
    if chat.assigned_user_id is not None:
        assignee = next((u for u in users if u.id == chat.assigned_user_id), None)
        if assignee is None:  # assigned before losing access: still shown, by name
            assignee = await session.get(User, chat.assigned_user_id)
    me = principal.user
    deliveries = await list_deliveries(session, chat, DELIVERY_LIMIT) if principal.is_admin else []
    return {
        "chat": chat,
        "channel": channel,
        "me": me,
        "stale_assignee": assignee if assignee is not None and assignee not in users else None,
        "assignable": [u for u in users if me is None or u.id != me.id],
        "may_assign_me": me is not None and any(u.id == me.id for u in users),
        "reason": NEEDS_HUMAN_REASONS.get(chat.needs_human_reason or "", chat.needs_human_reason),
        "links": [{"link": link, "agent": agents.get(link.agent_id)} for link in links],
        "linkable": [a for a in agents.values() if a.is_active and a.id not in linked],
        "show_deliveries": principal.is_admin,
        "deliveries": deliveries,
        "agent_names": {agent_id: agent.name for agent_id, agent in agents.items()},
    }
