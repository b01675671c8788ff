"""The audit trail: an append-only record of who changed what, and of what was refused.

A change records its event in its own transaction (`record`): both are kept, or neither.
Refusals (a failed login, a denied admin action) have no change to join, and their request is
rolled back: `record_refused` keeps them on the request's session, and `deps.get_session` writes
them after the rollback.

Who did it comes from the request (`set_actor`, called once the caller is known): its user or
agent, its client address and its request id. Work the hub does by itself has the actor type
`hub`. `detail` never holds a secret: the names of changed fields, never their values.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.logs import REQUEST_ID
from agenthub.models import AuditEvent, AuditOutcome, utcnow


@dataclass(frozen=True)
class Actor:
    type: str  # user, agent, anonymous, hub
    id: str | None = None
    ip: str | None = None
    request_id: str | None = None


HUB = Actor("hub")
_actor: ContextVar[Actor] = ContextVar("audit_actor", default=HUB)


def request_facts(request: Request) -> tuple[str | None, str | None]:
    """The client address (the socket peer: proxy headers are not trusted) and the request
    id its log lines and its `X-Request-ID` answer carry (`logs.RequestIdMiddleware`)."""
    ip = request.client.host if request.client else None
    request_id = REQUEST_ID.get()
    return ip, (request_id[:64] if request_id else None)


def set_actor(request: Request, actor_type: str, actor_id: str | None) -> Actor:
    ip, request_id = request_facts(request)
    actor = Actor(actor_type, actor_id, ip, request_id)
    _actor.set(actor)
    return actor


def current_actor() -> Actor:
    return _actor.get()


def _event(
    actor: Actor,
    action: str,
    target: tuple[str, str | None] | None,
    detail: dict[str, Any] | None,
    outcome: AuditOutcome,
) -> AuditEvent:
    target_type, target_id = target if target is not None else (None, None)
    return AuditEvent(
        at=utcnow(),
        actor_type=actor.type,
        actor_id=actor.id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        ip=actor.ip,
        request_id=actor.request_id,
        outcome=outcome,
        detail=detail or {},
    )


def record(
    session: AsyncSession,
    action: str,
    target: tuple[str, str | None] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """An allowed change, in the change's own transaction (`session`)."""
    session.add(_event(current_actor(), action, target, detail, AuditOutcome.ALLOWED))


_REFUSED = "audit_refused"


def record_refused(
    session: AsyncSession,
    action: str,
    target: tuple[str, str | None] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """A refusal during a request: kept aside on the request's session, and written by
    `deps.get_session` whatever becomes of the request's own transaction (rolled back when
    the refusal is raised). One connection throughout: SQLite has a single writer."""
    event = _event(current_actor(), action, target, detail, AuditOutcome.DENIED)
    session.info.setdefault(_REFUSED, []).append(event)


def refused_events(session: AsyncSession) -> list[AuditEvent]:
    events: list[AuditEvent] = session.info.pop(_REFUSED, [])
    return events


# The action a refused admin request would have been (the others are named by method and path).
ADMIN_ACTIONS = {
    ("POST", "/auth/users"): "user.created",
    ("PATCH", "/auth/users/{user_id}"): "user.updated",
    ("DELETE", "/auth/users/{user_id}"): "user.deleted",
    ("POST", "/auth/agents"): "agent.created",
    ("PATCH", "/auth/agents/{agent_id}"): "agent.updated",
    ("DELETE", "/auth/agents/{agent_id}"): "agent.deleted",
    ("POST", "/auth/agents/{agent_id}/tokens"): "agent.token.created",
    ("DELETE", "/auth/agents/{agent_id}/tokens/{token_id}"): "agent.token.revoked",
    ("POST", "/auth/agents/{agent_id}/webhook-secret"): "agent.secret.rotated",
    ("POST", "/auth/agents/{agent_id}/recover"): "agent.recovered",
    ("POST", "/channels"): "channel.created",
    ("PATCH", "/channels/{channel_id}"): "channel.updated",
    ("DELETE", "/channels/{channel_id}"): "channel.deleted",
    ("POST", "/channels/{channel_id}/secret"): "channel.secret.rotated",
    ("POST", "/channels/{channel_id}/members/{user_id}"): "member.granted",
    ("DELETE", "/channels/{channel_id}/members/{user_id}"): "member.revoked",
    ("POST", "/deliveries/{delivery_id}/retry"): "delivery.retried",
    ("DELETE", "/chats/{chat_id}"): "chat.deleted",
}


def denied_action(request: Request) -> str:
    route = request.scope.get("route")
    path = str(getattr(route, "path", request.url.path))
    return ADMIN_ACTIONS.get((request.method, path), f"{request.method} {path}")


def record_denied(session: AsyncSession, request: Request) -> None:
    """An admin route a non-admin called: what it tried, who, from where."""
    route = request.scope.get("route")
    path = str(getattr(route, "path", request.url.path))
    detail = {"method": request.method, "path": path}
    record_refused(session, denied_action(request), None, detail)
