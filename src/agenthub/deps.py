"""Typed dependencies shared by every router: the hub, the request's session and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.audit import service as audit
from agenthub.db import READ_ONLY
from agenthub.errors import Forbidden, Unauthorized
from agenthub.hub import Hub
from agenthub.models import Agent, ApiToken, User, utcnow
from agenthub.security import hash_token
from agenthub.sessions import SAFE_METHODS, SESSION_COOKIE, public_origin, same_origin
from agenthub.uow import commit, rollback

# Writing `last_used_at` on every request would turn each read into a write; a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hub_of(request: Request) -> Hub:
    """The process's Hub (webhook routes take it directly: a dependency costs each request)."""
    hub: Hub = request.app.state.hub
    return hub


async def get_hub(request: Request) -> Hub:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop on every request.
    return hub_of(request)


HubDep = Annotated[Hub, Depends(get_hub)]


async def get_session(request: Request, hub: HubDep) -> AsyncIterator[AsyncSession]:
    """The request's transaction: read-only for GET, committed before the response is sent."""
    async with unit_of_work(hub, read_only=request.method in ("GET", "HEAD")) as session:
        yield session


@asynccontextmanager
async def unit_of_work(hub: Hub, *, read_only: bool) -> AsyncIterator[AsyncSession]:
    """A request's transaction outside a route too (the MCP tools, `mcp_server.py`): committed
    on success, with its after-commit work (events, wake-ups); rolled back on any error, the
    audit trail's refusals kept either way."""
    async with hub.db.session(read_only=read_only) as session:
        try:
            yield session
        except BaseException:
            await rollback(session)
            await _write_refusals(hub, session, read_only)
            raise
        if read_only:
            if session.in_transaction():
                await session.rollback()
            await _write_refusals(hub, session, read_only)
        else:
            refused = audit.refused_events(session)
            session.add_all(refused)  # with the request's changes
            if refused or session.in_transaction():
                await commit(session)


async def _write_refusals(hub: Hub, session: AsyncSession, read_only: bool) -> None:
    """The audit events of what the request was refused, kept though its transaction is not:
    in a new transaction of the same session (the one SQLite write connection it holds), or,
    for a read-only request, in a short write transaction of its own."""
    refused = audit.refused_events(session)
    if not refused:
        return
    if read_only:
        async with hub.db.transaction() as write:
            write.add_all(refused)
        return
    session.add_all(refused)
    await commit(session)


# scope="function": commit before the response goes out, so a failed commit is never a 200.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

_bearer = HTTPBearer(
    auto_error=False, description="A user token from /auth/login or an agent token"
)
_session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    scheme_name="SessionCookie",
    auto_error=False,
    description="The browser session from POST /auth/session (used when there is no bearer "
    "token). Requests other than GET, HEAD and OPTIONS made with it need an `Origin` header "
    "equal to the origin of the hub's public URL (else 403).",
)


@dataclass(frozen=True)
class Principal:
    """Whoever holds the bearer token (or the session cookie): a user or an agent."""

    token: ApiToken
    user: User | None = None
    agent: Agent | None = None
    from_cookie: bool = False  # authenticated by the `agenthub_session` cookie

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.is_admin

    @property
    def id(self) -> str:
        owner = self.user or self.agent
        assert owner is not None
        return owner.id


async def authenticate(hub: Hub, session: AsyncSession, raw_token: str) -> Principal:
    """Resolve a bearer token to its active owner; anything else is 401."""
    token = await session.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_token(raw_token))
    )
    now = utcnow()
    if token is None or token.revoked_at is not None:
        raise Unauthorized("Invalid or revoked token")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthorized("Token expired")
    principal = await _load_owner(session, token)
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        if session.info.get(READ_ONLY):
            await _touch_last_used(hub, token.id)
        else:
            token.last_used_at = now
    return principal


async def _touch_last_used(hub: Hub, token_id: str) -> None:
    # Its own short write, so GET requests keep their read-only transaction. (A write
    # session already holds SQLite's write lock: a second writer here would wait on it.)
    async with hub.db.transaction() as session:
        await session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow())
        )


async def _load_owner(session: AsyncSession, token: ApiToken) -> Principal:
    if token.user_id is not None:
        user = await session.get(User, token.user_id)
        if user is None or not user.is_active:
            raise Unauthorized("User is deactivated")
        return Principal(token=token, user=user)
    agent = await session.get(Agent, token.agent_id) if token.agent_id else None
    if agent is None or not agent.is_active:
        raise Unauthorized("Agent is deactivated")
    return Principal(token=token, agent=agent)


async def get_principal(
    request: Request,
    hub: HubDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_session_cookie)],
) -> Principal:
    """The bearer token when there is one; else the session cookie, whose state-changing
    requests must come from the public URL's origin (`sessions.py`)."""
    if credentials is not None:
        principal = await authenticate(hub, session, credentials.credentials)
        _set_audit_actor(request, principal)
        return principal
    if not cookie:
        raise Unauthorized("Missing bearer token")
    principal = await authenticate(hub, session, cookie)
    if principal.user is None:  # the cookie only ever holds a user's token
        raise Unauthorized("Invalid or revoked token")
    _set_audit_actor(request, principal)
    if request.method not in SAFE_METHODS and not same_origin(request, hub.settings):
        raise Forbidden(
            "A request authenticated by the session cookie needs an Origin header equal to "
            f"this hub's public origin ({public_origin(hub.settings)}, from AGENTHUB_PUBLIC_URL)"
        )
    return replace(principal, from_cookie=True)


def _set_audit_actor(request: Request, principal: Principal) -> None:
    """Whom the audit trail names for what this request changes (`audit/service.py`)."""
    audit.set_actor(request, "user" if principal.user is not None else "agent", principal.id)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_current_user(principal: CurrentPrincipal) -> User:
    if principal.user is None:
        raise Forbidden("This endpoint is for users, not agents")
    return principal.user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin_user(
    principal: CurrentPrincipal, request: Request, session: SessionDep
) -> User:
    """An admin, or 403; every refusal goes to the audit trail (`get_session` writes it,
    though the request's own transaction is rolled back)."""
    user = principal.user
    if user is None or not user.is_admin:
        audit.record_denied(session, request)
        if user is None:
            raise Forbidden("This endpoint is for users, not agents")
        raise Forbidden("Admin role required")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
