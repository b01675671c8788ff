"""The operator web console: server-rendered pages and htmx fragments.

Thin on purpose: every query and permission check is the API's own (`operators.inbox`,
`operators.timeline`, `operators.takeover`, `chats.service`, `access`), so a MEMBER sees
here exactly what the API shows it. Pages authenticate with the `agenthub_session` cookie;
a GET without a valid one redirects to the login form. The routes that change something use
`deps.get_principal`, which requires the hub's own `Origin` for cookie-authenticated requests.

One page, three panes: the inbox list, the open chat, its side panel (`console/panel.py`).
`/console` opens none, `/console/chats/{id}` opens one; a click on a row loads the chat's
fragment into the middle pane (htmx, `hx-push-url`), the side panel and the list's selection
swapped in out of band. See docs/console.md.

Marking a chat read is a write, and a GET runs in a read-only transaction: the chat page does
not mark anything itself; `console.js` calls `POST /chats/{id}/read` (the API route) when the
page opens and when new contact messages arrive while it is open.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.access import get_readable_channel, get_readable_chat
from agenthub.auth import service as auth_service
from agenthub.auth.router import log_in, login_input
from agenthub.auth.throttle import TooManyAttempts
from agenthub.chats import service as chat_service
from agenthub.chats.handling import refresh_handled_by
from agenthub.chats.schemas import ChatAgentCreate, ChatUpdate, MessageCreate
from agenthub.chats.service import post_message
from agenthub.console import panel
from agenthub.console.web import (
    form_fields,
    fragment_unauthorized,
    names_by_id,
    readable_channels,
    render,
    signed_in,
    to_login,
)
from agenthub.delivery.events import access_changed, chat_updated, publish_after_commit
from agenthub.deps import (
    CurrentPrincipal,
    CurrentUser,
    HubDep,
    Principal,
    SessionDep,
)
from agenthub.errors import DomainError, InvalidInput, Unauthorized
from agenthub.hub import Hub
from agenthub.models import Agent, Channel, Chat, ChatEvent, Note, User
from agenthub.models import Message as ChatMessage
from agenthub.operators import inbox, takeover, timeline
from agenthub.operators.schemas import NoteIn, NoteOut
from agenthub.sessions import (
    clear_session_cookie,
    ensure_sign_in_origin,
    set_session_cookie,
)

VIEWS = [
    (inbox.InboxView.ALL, "All"),
    (inbox.InboxView.NEEDS_HUMAN, "Needs human"),
    (inbox.InboxView.MINE, "Mine"),
    (inbox.InboxView.UNASSIGNED, "Unassigned"),
    (inbox.InboxView.AGENT, "Agent"),
]
PAGE_SIZE = 50

router = APIRouter(include_in_schema=False)


# --- pages -----------------------------------------------------------------------------------


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


@router.get("/console/login")
async def login_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    if await signed_in(request, hub, session) is not None:
        return RedirectResponse("/console", status_code=303)
    return render("login.html", page="login")


@router.post("/console/login")
async def login_submit(request: Request, hub: HubDep, session: SessionDep) -> Response:
    """The form's POST: the throttle and token of `POST /auth/session`, then the inbox."""
    ensure_sign_in_origin(request, hub.settings)
    username = ""
    try:
        data = await login_input(request)
        username = data.username
        raw, _token, _user = await log_in(request, data, session, hub, kind="session")
    except TooManyAttempts as exc:
        response = render(
            "login.html",
            429,
            page="login",
            username=username,
            error="Too many failed sign-ins. Try again in a few minutes.",
        )
        response.headers.update(exc.headers or {})
        return response
    except Unauthorized:
        return render(
            "login.html", 401, page="login", username=username, error="Wrong username or password."
        )
    except DomainError as exc:
        return render(
            "login.html",
            exc.status_code,
            page="login",
            username=username,
            error="Enter a username and a password.",
        )
    redirect = RedirectResponse("/console", status_code=303)
    set_session_cookie(redirect, raw, hub.settings)
    return redirect


@router.post("/console/logout")
async def logout(principal: CurrentPrincipal, session: SessionDep, hub: HubDep) -> Response:
    await auth_service.logout(session, principal)
    publish_after_commit(session, hub, access_changed(principal.id))
    response = to_login()
    clear_session_cookie(response, hub.settings)
    return response


async def _inbox_context(
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


ViewParam = Query(inbox.InboxView.ALL)
QParam = Query(None, max_length=200)
ChannelParam = Query(None, max_length=16)
SelectedParam = Query(None, max_length=16)


@router.get("/console")
async def inbox_page(
    request: Request,
    hub: HubDep,
    session: SessionDep,
    view: inbox.InboxView = ViewParam,
    q: str | None = QParam,
    channel_id: str | None = ChannelParam,
) -> Response:
    principal = await signed_in(request, hub, session)
    if principal is None:
        return to_login()
    return await _console_page(session, principal, None, view, q, channel_id)


async def _console_page(
    session: AsyncSession,
    principal: Principal,
    chat: Chat | None,
    view: inbox.InboxView,
    q: str | None,
    channel_id: str | None,
) -> Response:
    """The three panes: the inbox list, the open chat (or "Pick a chat"), its side panel."""
    context = await _inbox_context(
        session, principal, view, q, channel_id, chat.id if chat else None
    )
    chat_context: dict[str, Any] = {"chat": None}
    if chat is not None:
        chat_context = await _open_chat_context(session, principal, chat)
    return render(
        "inbox.html",
        page="chat" if chat is not None else "inbox",
        user=principal.user,
        channels=await readable_channels(session, principal),
        **context,
        **chat_context,
    )


@router.get("/console/fragments/inbox")
async def inbox_fragment(
    request: Request,
    hub: HubDep,
    session: SessionDep,
    view: inbox.InboxView = ViewParam,
    q: str | None = QParam,
    channel_id: str | None = ChannelParam,
    selected: str | None = SelectedParam,
) -> Response:
    principal = await signed_in(request, hub, session)
    if principal is None:
        return fragment_unauthorized()
    context = await _inbox_context(session, principal, view, q, channel_id, selected)
    return render("_inbox_list.html", oob=True, **context)


async def _timeline_context(session: AsyncSession, chat: Chat) -> dict[str, Any]:
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
        "items": [_item(kind, row) for kind, row in items],
        "timeline_has_more": page.has_more,
        "users": await names_by_id(session, User, user_ids, "username"),
        "agents": await names_by_id(session, Agent, agent_ids, "name"),
    }


def _item(kind: str, row: ChatMessage | Note | ChatEvent) -> dict[str, Any]:
    return {"kind": kind, "row": row, "at": timeline.item_timestamp(kind, row)}


async def _open_chat_context(
    session: AsyncSession, principal: Principal, chat: Chat
) -> dict[str, Any]:
    """The centre pane's chat (header, timeline) and its side panel."""
    return {
        **await _chat_header_context(session, chat),
        **await _timeline_context(session, chat),
        **await panel.panel_context(session, principal, chat),
    }


async def _chat_header_context(session: AsyncSession, chat: Chat) -> dict[str, Any]:
    channel = await session.get(Channel, chat.channel_id)
    assigned = chat.assigned_user_id
    users = await names_by_id(session, User, {assigned} if assigned else set(), "username")
    return {"channel": channel, "assignee": users.get(assigned or "")}


@router.get("/console/chats/{chat_id}")
async def chat_page(
    chat_id: str,
    request: Request,
    hub: HubDep,
    session: SessionDep,
    view: inbox.InboxView = ViewParam,
    q: str | None = QParam,
    channel_id: str | None = ChannelParam,
) -> Response:
    """The console with this chat open (a reload, or a shared link)."""
    principal = await signed_in(request, hub, session)
    if principal is None:
        return to_login()
    chat = await get_readable_chat(session, principal, chat_id)
    return await _console_page(session, principal, chat, view, q, channel_id)


@router.get("/console/fragments/chats/{chat_id}")
async def chat_fragment(
    chat_id: str, request: Request, hub: HubDep, session: SessionDep
) -> Response:
    """The chat for the centre pane, with its side panel and the list's selection swapped in
    out of band. `chat-opened` (the chat's id) fires on the clicked row, and bubbles to
    the body; then the list refetches, to highlight the row."""
    principal = await signed_in(request, hub, session)
    if principal is None:
        return fragment_unauthorized()
    chat = await get_readable_chat(session, principal, chat_id)
    response = render("_chat_fragment.html", **await _open_chat_context(session, principal, chat))
    response.headers["HX-Trigger"] = json.dumps({"chat-opened": chat.id})
    response.headers["HX-Trigger-After-Swap"] = "inbox-refresh"
    return response


@router.get("/console/fragments/chats/{chat_id}/panel")
async def panel_fragment(
    chat_id: str, request: Request, hub: HubDep, session: SessionDep
) -> Response:
    principal = await signed_in(request, hub, session)
    if principal is None:
        return fragment_unauthorized()
    chat = await get_readable_chat(session, principal, chat_id)
    return render("_side_panel.html", **await panel.panel_context(session, principal, chat))


@router.get("/console/fragments/chats/{chat_id}/timeline")
async def timeline_fragment(
    chat_id: str, request: Request, hub: HubDep, session: SessionDep
) -> Response:
    principal = await signed_in(request, hub, session)
    if principal is None:
        return fragment_unauthorized()
    chat = await get_readable_chat(session, principal, chat_id)
    return render("_timeline.html", **await _timeline_context(session, chat))


@router.get("/console/fragments/chats/{chat_id}/header")
async def header_fragment(
    chat_id: str, request: Request, hub: HubDep, session: SessionDep
) -> Response:
    principal = await signed_in(request, hub, session)
    if principal is None:
        return fragment_unauthorized()
    chat = await get_readable_chat(session, principal, chat_id)
    return render("_chat_header.html", chat=chat, **await _chat_header_context(session, chat))


# --- changes (cookie + same Origin, through get_principal) -----------------------------------


@router.post("/console/fragments/chats/{chat_id}/compose")
async def compose(
    chat_id: str,
    request: Request,
    user: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    """The composer: a message to the contact, or (with `note` set) a private note. Answers
    the new timeline item."""
    chat = await get_readable_chat(session, principal, chat_id)
    form = await form_fields(request)
    content = form.get("content", "")
    item: ChatMessage | Note
    try:
        if form.get("note"):
            data = NoteIn.model_validate({"content": content})
            item = await timeline.add_note(session, hub, user.id, chat, data.content)
            note = NoteOut.model_validate(item).model_dump(mode="json")
            event = {
                "type": "note_created",
                "channel_id": chat.channel_id,
                "chat_id": chat.id,
                "note": note,
            }
            publish_after_commit(session, hub, event)
            kind = "note"
        else:
            if not content.strip():
                raise InvalidInput.at(("body", "content"), "string_too_short", "Empty message")
            message = MessageCreate.model_validate({"content": content})
            item = await post_message(session, hub, principal, chat, message)
            kind = "message"
    except ValidationError as exc:
        raise InvalidInput.within(("body",), exc) from None
    return render(
        "_timeline_item.html",
        it=_item(kind, item),
        chat=chat,
        users={user.id: user.username},
        agents={},
    )


async def _takeover_or_handback(
    chat_id: str, principal: Principal, session: AsyncSession, hub: Hub, *, take: bool
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    if take:
        await takeover.take_over(session, hub, principal, chat)
    else:
        await takeover.hand_back(session, hub, principal, chat, None)
    publish_after_commit(session, hub, chat_updated(chat))
    response = render("_chat_header.html", chat=chat, **await _chat_header_context(session, chat))
    response.headers["HX-Trigger"] = json.dumps({"panel-refresh": chat.id})
    return response


@router.post("/console/fragments/chats/{chat_id}/takeover")
async def take_over(
    chat_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> Response:
    return await _takeover_or_handback(chat_id, principal, session, hub, take=True)


@router.post("/console/fragments/chats/{chat_id}/handback")
async def hand_back(
    chat_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> Response:
    return await _takeover_or_handback(chat_id, principal, session, hub, take=False)


# --- the side panel's changes: each answers the refreshed panel -------------------------------


async def _panel_changed(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat
) -> Response:
    """After a change: `chat_updated` once the transaction commits, and the refreshed panel
    with the chat's header out of band; the timeline (which shows the change's event)
    refetches."""
    publish_after_commit(session, hub, chat_updated(chat))
    await session.flush()
    context = {
        **await _chat_header_context(session, chat),
        **await panel.panel_context(session, principal, chat),
    }
    response = render("_panel_answer.html", **context)
    response.headers["HX-Trigger"] = json.dumps({"timeline-refresh": chat.id})
    return response


@router.post("/console/fragments/chats/{chat_id}/panel/assign")
async def panel_assign(
    chat_id: str,
    request: Request,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    """Assign the chat (`user_id`; empty: to nobody), as `PATCH /chats/{id}` does."""
    chat = await get_readable_chat(session, principal, chat_id)
    form = await form_fields(request)
    try:
        data = ChatUpdate.model_validate({"assigned_user_id": form.get("user_id") or None})
    except ValidationError as exc:
        raise InvalidInput.within(("body",), exc) from None
    await chat_service.assign(session, hub, principal, chat, data.assigned_user_id)
    await refresh_handled_by(session, [chat])
    return await _panel_changed(session, hub, principal, chat)


@router.post("/console/fragments/chats/{chat_id}/panel/clear-needs-human")
async def panel_clear_needs_human(
    chat_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    await chat_service.update_chat(session, hub, principal, chat, ChatUpdate(needs_human=False))
    return await _panel_changed(session, hub, principal, chat)


@router.post("/console/fragments/chats/{chat_id}/panel/agents")
async def panel_link_agent(
    chat_id: str,
    request: Request,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    form = await form_fields(request)
    try:
        data = ChatAgentCreate.model_validate({"agent_id": form.get("agent_id", "")})
    except ValidationError as exc:
        raise InvalidInput.within(("body",), exc) from None
    await chat_service.link_agent(session, hub, principal, chat, data.agent_id)
    return await _panel_changed(session, hub, principal, chat)


async def _change_link(
    chat_id: str, agent_id: str, principal: Principal, session: AsyncSession, hub: Hub, action: str
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    link = await chat_service.get_link(session, chat, agent_id)
    if action == "unlink":
        await chat_service.unlink_agent(session, hub, principal, chat, link)
    else:
        await chat_service.set_link_active(
            session, hub, principal, chat, link, active=action == "resume"
        )
    return await _panel_changed(session, hub, principal, chat)


@router.post("/console/fragments/chats/{chat_id}/panel/agents/{agent_id}/pause")
async def panel_pause_agent(
    chat_id: str,
    agent_id: str,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    return await _change_link(chat_id, agent_id, principal, session, hub, "pause")


@router.post("/console/fragments/chats/{chat_id}/panel/agents/{agent_id}/resume")
async def panel_resume_agent(
    chat_id: str,
    agent_id: str,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    return await _change_link(chat_id, agent_id, principal, session, hub, "resume")


@router.post("/console/fragments/chats/{chat_id}/panel/agents/{agent_id}/unlink")
async def panel_unlink_agent(
    chat_id: str,
    agent_id: str,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    return await _change_link(chat_id, agent_id, principal, session, hub, "unlink")
