"""What the console's pages and fragments show: the context each template is rendered with.

Thin on purpose: every query and permission check is the API's own (`operators.inbox`,
`operators.timeline`, `chats.service`, `access`), so a MEMBER sees here exactly what the API
shows it. The routes are in `console/pages.py` (what is read) and `console/actions.py`
(what changes something).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.access import get_readable_channel
from agenthub.console import panel
from agenthub.console.web import names_by_id
from agenthub.deps import Principal
from agenthub.models import Agent, Channel, Chat, ChatEvent, Note, User
from agenthub.models import Message as ChatMessage
from agenthub.operators import inbox, timeline

VIEWS = [
    (inbox.InboxView.ALL, "All"),
    (inbox.InboxView.NEEDS_HUMAN, "Needs human"),
    (inbox.InboxView.MINE, "Mine"),
    (inbox.InboxView.UNASSIGNED, "Unassigned"),
    (inbox.InboxView.AGENT, "Agent"),
]
PAGE_SIZE = 50


async def inbox_context(
    session: AsyncSession,
    principal: Principal,
    view: inbox.InboxView,
    q: str | None,
    channel_id: str | None,
    selected: str | None = None,
) -> dict[str, Any]:
    q = q or None
    channel_id = channel_id or None
    if channel_id is not None:
        await get_readable_channel(session, principal, channel_id)
    page = await inbox.inbox_page(
        session, principal, view=view, channel_id=channel_id, q=q, limit=PAGE_SIZE, cursor=None
    )
    assigned = {row.chat.assigned_user_id for row in page.rows if row.chat.assigned_user_id}
    users = await names_by_id(session, User, assigned, "username")
    rows = [
        {
            "chat": row.chat,
            "channel": row.channel,
            "unread": max(0, row.chat.contact_message_count - row.read_contact_count),
            "assignee": users.get(row.chat.assigned_user_id or ""),
        }
        for row in page.rows
    ]
    return {
        "view": view.value,
        "q": q or "",
        "channel_id": channel_id or "",
        "rows": rows,
        "has_more": page.has_more,
        "counts": await inbox.inbox_counts(session, principal, channel_id),
        "views": VIEWS,
        "selected": selected or "",
        "list_path": f"/console/chats/{selected}" if selected else "/console",
    }


async def timeline_context(session: AsyncSession, chat: Chat) -> dict[str, Any]:
    page = await timeline.timeline_page(session, chat, limit=PAGE_SIZE, before=None)
    items = list(reversed(page.items))  # oldest first, the newest at the bottom
    user_ids: set[str] = set()
    agent_ids: set[str] = set()
    for kind, row in items:
        if kind == "message" and row.sender_id:
            if row.sender_type == "USER":
                user_ids.add(row.sender_id)
            elif row.sender_type == "AGENT":
                agent_ids.add(row.sender_id)
        elif kind == "note" and row.user_id:
            user_ids.add(row.user_id)
        elif kind == "event" and row.actor_id:
            (user_ids if row.actor_type == "user" else agent_ids).add(row.actor_id)
    return {
        "chat": chat,
        "items": [item(kind, row) for kind, row in items],
        "timeline_has_more": page.has_more,
        "users": await names_by_id(session, User, user_ids, "username"),
        "agents": await names_by_id(session, Agent, agent_ids, "name"),
    }


def item(kind: str, row: ChatMessage | Note | ChatEvent) -> dict[str, Any]:
    return {"kind": kind, "row": row, "at": timeline.item_timestamp(kind, row)}


async def open_chat_context(
    session: AsyncSession, principal: Principal, chat: Chat
) -> dict[str, Any]:
    """The centre pane's chat (header, timeline) and its side panel."""
    return {
        **await chat_header_context(session, chat),
        **await timeline_context(session, chat),
        **await panel.panel_context(session, principal, chat),
    }


async def chat_header_context(session: AsyncSession, chat: Chat) -> dict[str, Any]:
    channel = await session.get(Channel, chat.channel_id)
    assigned = chat.assigned_user_id
    users = await names_by_id(session, User, {assigned} if assigned else set(), "username")
    return {"channel": channel, "assignee": users.get(assigned or "")}
