"""What the console's pages and fragments show: the context each template is rendered with.

Thin on purpose: every query and permission check is the API's own (`operators.inbox`,
`operators.timeline`, `chats.service`, `access`), so a MEMBER sees here exactly what the API
shows it. The routes are in `console/pages.py` (what is read) and `console/actions.py`
(what changes something).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.access import get_readable_channel
from agenthub.console import panel
from agenthub.console.web import names_by_id
from agenthub.deps import Principal
from agenthub.models import (
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    Channel,
    Chat,
    ChatEvent,
    DeliveryStatus,
    Note,
    User,
    utcnow,
)
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
# "Show more chats" grows the list by a page up to this; past it, search or filter.
MAX_INBOX_ROWS = 500


async def inbox_context(
    session: AsyncSession,
    principal: Principal,
    view: inbox.InboxView,
    q: str | None,
    channel_id: str | None,
    selected: str | None = None,
    limit: int = PAGE_SIZE,
) -> dict[str, Any]:
    q = q or None
    limit = max(1, min(limit, MAX_INBOX_ROWS))
    channel_id = channel_id or None
    if channel_id is not None:
        await get_readable_channel(session, principal, channel_id)
    page = await inbox.inbox_page(
        session, principal, view=view, channel_id=channel_id, q=q, limit=limit, cursor=None
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
        # The tabs' counts are not here: each is a pass over the chats (17 ms at 100,000 on
        # SQLite, more than the page itself), so console.js fetches them (`/inbox/counts`) once
        # for the page and once per burst of changes, beside the title's unread count.
        "views": VIEWS,
        "selected": selected or "",
        "list_path": f"/console/chats/{selected}" if selected else "/console",
        "limit": limit,
        "page_size": PAGE_SIZE,
        "max_limit": MAX_INBOX_ROWS,
    }


# More than this many items since the oldest one shown: a refresh starts over from the newest.
REFRESH_LIMIT = 500


async def timeline_context(
    session: AsyncSession, chat: Chat, *, before: str | None = None, since: str | None = None
) -> dict[str, Any]:
    """The timeline, oldest first: the newest page; or the page older than `before` (scrolling
    back); or everything from `since` on (a live refresh keeps what was scrolled back to)."""
    if since is not None:
        page = await timeline.timeline_page(
            session, chat, limit=REFRESH_LIMIT, before=None, since=since
        )
        if page.has_more:
            since = None
    if since is None:
        page = await timeline.timeline_page(session, chat, limit=PAGE_SIZE, before=before)
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
        # From `since` on, everything is there down to the oldest item shown before.
        "timeline_has_more": page.has_more if since is None else _older_exists(items),
        "users": await names_by_id(session, User, user_ids, "username"),
        "agents": await names_by_id(session, Agent, agent_ids, "name"),
    }


def _older_exists(items: list[tuple[str, Any]]) -> bool:
    """After a refresh from `since`: whether anything is older than its first item (the chat's
    first position is 1)."""
    return bool(items) and int(items[0][1].seq) > 1


def item(kind: str, row: ChatMessage | Note | ChatEvent) -> dict[str, Any]:
    shown: dict[str, Any] = {"kind": kind, "row": row, "at": timeline.item_timestamp(kind, row)}
    if isinstance(row, ChatMessage):
        shown["media"] = media_of(row)
        shown["failure"] = failure_of(row)
    return shown


_PROXY_PATH = re.compile(r"^https?://[^/?#]+(/channels/(chn_[A-Za-z0-9]+)/media/[^/?#]+)$")


def media_of(message: ChatMessage) -> list[dict[str, str | None]]:
    """`meta_data.media` as the timeline shows it. A file behind the hub's media proxy for the
    message's own channel is fetched from this origin (the page's policy allows no other);
    any other http(s) URL becomes a link that leaves the console; anything else is a name
    only (a `javascript:` URL in a contact's message must never become a link)."""
    shown = []
    for entry in message.meta_data.get("media") or []:
        if not isinstance(entry, dict):
            continue
        url = str(entry.get("url") or "")
        content_type = str(entry.get("content_type") or "")
        name = entry.get("filename") or entry.get("file_name")
        proxied = _PROXY_PATH.match(url)
        src = proxied.group(1) if proxied and proxied.group(2) == message.channel_id else None
        link = url if src is None and url.startswith(("https://", "http://")) else None
        kind = content_type.split("/", 1)[0] if src and content_type else "file"
        shown.append(
            {
                "kind": kind if kind in ("image", "audio", "video") else "file",
                "src": src,
                "link": link,
                "name": str(name) if name else None,
                "content_type": content_type or None,
            }
        )
    return shown


def failure_of(message: ChatMessage) -> str | None:
    """Why a message to the contact failed, in a line (`meta_data.error`, from the platform)."""
    if message.delivery_status != DeliveryStatus.FAILED or message.sender_type == "CONTACT":
        return None
    error = message.meta_data.get("error")
    if not isinstance(error, dict):
        return "The platform did not take the message."
    detail = error.get("detail") or error.get("message") or error.get("code")
    status = error.get("status_code")
    reason = str(detail) if detail else "The platform refused the message."
    return f"{reason} (HTTP {status})" if status else reason


async def open_chat_context(
    session: AsyncSession, principal: Principal, chat: Chat
) -> dict[str, Any]:
    """The centre pane's chat (header, timeline) and its side panel."""
    return {
        **await chat_header_context(session, chat),
        **await timeline_context(session, chat),
        **await panel.panel_context(session, principal, chat),
        "agent_working": await agent_working(session, chat),
    }


async def agent_working(session: AsyncSession, chat: Chat) -> bool:
    """Whether an attempt to one of the chat's agents is in flight (its lease is held): the
    page opens showing "Agent is working…", which the live events then keep current."""
    in_flight = select(AgentDelivery.id).where(
        AgentDelivery.chat_id == chat.id,
        AgentDelivery.status == AgentDeliveryStatus.PENDING,
        AgentDelivery.locked_until > utcnow(),
    )
    return await session.scalar(in_flight.limit(1)) is not None


async def chat_header_context(session: AsyncSession, chat: Chat) -> dict[str, Any]:
    channel = await session.get(Channel, chat.channel_id)
    assigned = chat.assigned_user_id
    users = await names_by_id(session, User, {assigned} if assigned else set(), "username")
    return {"channel": channel, "assignee": users.get(assigned or "")}
