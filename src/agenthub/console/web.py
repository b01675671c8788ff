"""What every console page shares: the templates, the security headers, and the helpers that
sign a page's caller in from the session cookie and render an answer."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agenthub.access import scope_channels
from agenthub.deps import HubDep, Principal, SessionDep, authenticate
from agenthub.errors import InvalidInput, Unauthorized
from agenthub.hub import Hub
from agenthub.models import Channel
from agenthub.sessions import (
    SESSION_COOKIE,
)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
LOGIN_PATH = "/console/login"

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else ""


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%H:%M:%S") if moment is not None else ""


templates.filters["hm"] = _time
templates.filters["hms"] = _clock
templates.globals["HANDLED_BY"] = {
    "waiting": "Needs human",
    "agent": "Agent",
    "human": "Human",
    "none": "No agent",
}
# The timeline's system events (then "by <who>", unless the hub itself did it).
templates.globals["EVENT_LABELS"] = {
    "takeover": "Taken over",
    "handback": "Handed back",
    "assigned": "Assigned",
    "unassigned": "Unassigned",
    "handoff": "Handed off to a human",
    "delivery_failed": "Delivery to the agent failed",
    "agent_linked": "Agent linked",
    "agent_paused": "Agent paused",
    "agent_resumed": "Agent resumed",
    "agent_unlinked": "Agent unlinked",
}
# Attempts the hub's own schedule did not start (the delivery trace).
templates.globals["TRIGGER_LABELS"] = {
    "manual": "retried by hand",
    "recover": "recovered",
    "probe": "probe: the agent is unavailable",
}
# A message to the contact: pending, then sent, then delivered or read (✓ as chat apps show it).
templates.globals["STATUS_LABELS"] = {
    "PENDING": "sending…",
    "SENT": "sent ✓",
    "DELIVERED": "delivered ✓✓",
    "READ": "read ✓✓",
    "FAILED": "not sent",
}


# --- security headers ------------------------------------------------------------------------

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class ConsoleHeadersMiddleware:
    """The console's headers on every response under `/console` (and the `/` redirect):
    a CSP that allows only the hub's own scripts, styles and sockets, no sniffing, and no
    Referer leaving the hub. Other paths pass straight through.

    Console responses are also gzipped for browsers that accept it (a list of 50 chats is
    ~48 KB of HTML, ~7 KB compressed). Compression can leak a secret shown in a page to an
    attacker who can inject text into the same page and measure its size (BREACH); here a
    request from another site carries no session (`SameSite=Strict`), so no such page is
    theirs to request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.compressed = GZipMiddleware(app, minimum_size=1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/" or path == "/console" or path.startswith("/console/")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.compressed(scope, receive, send_with_headers)


# --- helpers ---------------------------------------------------------------------------------


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code)


async def signed_in(request: Request, hub: Hub, session: AsyncSession) -> Principal | None:
    """The user of the session cookie, or None (no cookie, revoked, expired, deactivated)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        principal = await authenticate(hub, session, cookie)
    except Unauthorized:
        return None
    if principal.user is None:
        return None
    return replace(principal, from_cookie=True)


def to_login() -> RedirectResponse:
    return RedirectResponse(LOGIN_PATH, status_code=303)


class SignedOut(Unauthorized):
    """A fragment asked for without a valid session: 401 with `HX-Redirect`, which htmx
    follows even on an error status, so the page goes to the login form."""

    headers = {"HX-Redirect": LOGIN_PATH}

    def default_detail(self) -> str:
        return "Sign in again"


async def fragment_principal(request: Request, hub: HubDep, session: SessionDep) -> Principal:
    """The signed-in user of a fragment request (every fragment but the pages themselves)."""
    principal = await signed_in(request, hub, session)
    if principal is None:
        raise SignedOut
    return principal


FragmentPrincipal = Annotated[Principal, Depends(fragment_principal)]


async def form_fields(request: Request) -> dict[str, str]:
    """A urlencoded form (what htmx and HTML forms POST), without python-multipart."""
    try:
        pairs = parse_qsl(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=10,
        )
    except ValueError:
        raise InvalidInput.at(("body",), "value_error", "Not a valid UTF-8 form") from None
    return dict(pairs)


async def names_by_id(
    session: AsyncSession, model: Any, ids: set[str], field: str
) -> dict[str, str]:
    if not ids:
        return {}
    rows = await session.execute(select(model.id, getattr(model, field)).where(model.id.in_(ids)))
    return {row_id: name for row_id, name in rows.all()}


async def readable_channels(session: AsyncSession, principal: Principal) -> list[Channel]:
    query = scope_channels(select(Channel), principal).order_by(Channel.name, Channel.id)
    return list(await session.scalars(query))
