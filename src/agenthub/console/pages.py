"""The operator console's pages and the fragments they refetch (GET: read-only).

One page, three panes: the inbox list, the open chat, its side panel (`console/panel.py`).
`/console` opens none, `/console/chats/{id}` opens one; a click on a row loads the chat's
fragment into the middle pane (htmx, `hx-push-url`), the side panel and the list's selection
swapped in out of band. Pages authenticate with the `agenthub_session` cookie; a GET without
a valid one redirects to the login form (a fragment answers 401, see `console/web.py`). See
docs/console.md.

Marking a chat read is a write, and a GET runs in a read-only transaction: the chat page does
not mark anything itself; `console.js` calls `POST /chats/{id}/read` (the API route) when the
page opens and when new contact messages arrive while it is open.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.access import get_readable_chat
from agenthub.auth import service as auth_service
from agenthub.auth.router import log_in, login_input
from agenthub.auth.throttle import TooManyAttempts
from agenthub.console import panel, views
from agenthub.console.web import (
    FragmentPrincipal,
    readable_channels,
    render,
    signed_in,
    to_login,
)
from agenthub.delivery.events import access_changed, publish_after_commit
from agenthub.deps import CurrentPrincipal, HubDep, Principal, SessionDep
from agenthub.errors import DomainError, Unauthorized
from agenthub.hub import Hub
from agenthub.models import Chat
from agenthub.operators import inbox
from agenthub.sessions import clear_session_cookie, ensure_sign_in_origin, set_session_cookie

router = APIRouter(include_in_schema=False)

ViewParam = Query(inbox.InboxView.ALL)
QParam = Query(None, max_length=200)
ChannelParam = Query(None, max_length=16)
SelectedParam = Query(None, max_length=16)
LimitParam = Query(views.PAGE_SIZE, ge=1, le=views.MAX_INBOX_ROWS)
ItemParam = Query(None, max_length=16)


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


@router.get("/console")
async def inbox_page(
    request: Request,
    hub: HubDep,
    session: SessionDep,
    view: inbox.InboxView = ViewParam,
    q: str | None = QParam,
    channel_id: str | None = ChannelParam,
) -> Response:
    newest = await newest_event_id(hub)
    principal = await signed_in(request, hub, session)
    if principal is None:
        return to_login()
    return await _console_page(session, principal, None, view, q, channel_id, newest)


async def _console_page(
    session: AsyncSession,
    principal: Principal,
    chat: Chat | None,
    view: inbox.InboxView,
    q: str | None,
    channel_id: str | None,
    last_event_id: int,
) -> Response:
    """The three panes: the inbox list, the open chat (or "Pick a chat"), its side panel."""
    context = await views.inbox_context(
        session, principal, view, q, channel_id, chat.id if chat else None
    )
    chat_context: dict[str, Any] = {"chat": None}
    if chat is not None:
        chat_context = await views.open_chat_context(session, principal, chat)
    return render(
        "inbox.html",
        page="chat" if chat is not None else "inbox",
        last_event_id=last_event_id,
        user=principal.user,
        channels=await readable_channels(session, principal),
        **context,
        **chat_context,
    )


@router.get("/console/fragments/inbox")
async def inbox_fragment(
    principal: FragmentPrincipal,
    session: SessionDep,
    view: inbox.InboxView = ViewParam,
    q: str | None = QParam,
    channel_id: str | None = ChannelParam,
    selected: str | None = SelectedParam,
    limit: int = LimitParam,
) -> Response:
    """The list; `limit` grows with "Show more chats" (the tabs' counts are console.js's)."""
    context = await views.inbox_context(session, principal, view, q, channel_id, selected, limit)
    return render("_inbox_list.html", oob=True, **context)


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
    newest = await newest_event_id(hub)
    principal = await signed_in(request, hub, session)
    if principal is None:
        return to_login()
    chat = await get_readable_chat(session, principal, chat_id)
    return await _console_page(session, principal, chat, view, q, channel_id, newest)


async def newest_event_id(hub: Hub) -> int:
    """The newest live event now, taken before the page reads anything: its WebSocket starts
    from there (`data-last-event-id`), so what happens between the page's reads and the
    socket opening is replayed to it, not lost."""
    _, newest = await hub.events.since(None)
    return newest


@router.get("/console/fragments/chats/{chat_id}")
async def chat_fragment(
    chat_id: str, principal: FragmentPrincipal, session: SessionDep
) -> Response:
    """The chat for the centre pane, with its side panel and the list's selection swapped in
    out of band. `chat-opened` (the chat's id) fires on the clicked row, and bubbles to
    the body; then the list refetches, to highlight the row."""
    chat = await get_readable_chat(session, principal, chat_id)
    response = render(
        "_chat_fragment.html", **await views.open_chat_context(session, principal, chat)
    )
    response.headers["HX-Trigger"] = json.dumps({"chat-opened": chat.id})
    response.headers["HX-Trigger-After-Swap"] = "inbox-refresh"
    return response


@router.get("/console/fragments/chats/{chat_id}/panel")
async def panel_fragment(
    chat_id: str, principal: FragmentPrincipal, session: SessionDep
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    return render("_side_panel.html", **await panel.panel_context(session, principal, chat))


@router.get("/console/fragments/chats/{chat_id}/timeline")
async def timeline_fragment(
    chat_id: str,
    principal: FragmentPrincipal,
    session: SessionDep,
    since: str | None = ItemParam,
) -> Response:
    """The timeline again (live changes): from `since`, the oldest item the page shows, on."""
    chat = await get_readable_chat(session, principal, chat_id)
    context = await views.timeline_context(session, chat, since=since or None)
    return render("_timeline.html", **context)


@router.get("/console/fragments/chats/{chat_id}/timeline/older")
async def older_timeline_fragment(
    chat_id: str,
    principal: FragmentPrincipal,
    session: SessionDep,
    before: str = Query(max_length=16),
) -> Response:
    """Scrolling back: the page older than `before`, put at the top of the list."""
    chat = await get_readable_chat(session, principal, chat_id)
    context = await views.timeline_context(session, chat, before=before)
    return render("_timeline_page_older.html", **context)


@router.get("/console/fragments/chats/{chat_id}/composer-notice")
async def composer_notice_fragment(
    chat_id: str, principal: FragmentPrincipal, session: SessionDep
) -> Response:
    """Above the composer: whether an agent handles the chat (then it offers Take over)."""
    chat = await get_readable_chat(session, principal, chat_id)
    return render("_composer_notice.html", chat=chat)


@router.get("/console/fragments/chats/{chat_id}/header")
async def header_fragment(
    chat_id: str, principal: FragmentPrincipal, session: SessionDep
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    return render("_chat_header.html", chat=chat, **await views.chat_header_context(session, chat))
