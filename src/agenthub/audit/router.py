"""`GET /audit` (admin): the audit trail, newest first, with filters and a cursor."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field
from sqlalchemy import bindparam, select, tuple_

from agenthub.cursors import decode_cursor, encode_cursor
from agenthub.deps import AdminUser, SessionDep
from agenthub.models import AuditEvent
from agenthub.openapi_errors import error_responses
from agenthub.schemas import Out

router = APIRouter(tags=["audit"])


class AuditParty(Out):
    type: str | None
    id: str | None


class AuditEventOut(Out):
    id: str
    at: datetime
    actor: AuditParty
    action: str
    target: AuditParty
    ip: str | None
    request_id: str | None
    outcome: str = Field(description="`allowed`, or `denied` for a refused attempt")
    detail: dict[str, Any]


class AuditPage(Out):
    events: list[AuditEventOut]
    next_cursor: str | None = Field(description="for the next (older) page; null at the end")


Filter = Annotated[str | None, Query(max_length=64)]
_BELOW_CURSOR = tuple_(AuditEvent.at, AuditEvent.id) < tuple_(
    bindparam("b_cursor_at", type_=AuditEvent.at.type), bindparam("b_cursor_id")
)


@router.get("/audit", response_model=AuditPage, responses=error_responses(400))
async def list_audit_events(
    _: AdminUser,
    session: SessionDep,
    actor_id: Filter = None,
    action: Filter = None,
    target_id: Filter = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    """Who changed what, and what was refused (failed logins, denied admin actions), newest
    first. Filters combine: `actor_id`, `action` (e.g. `login.failed`), `target_id`, `since`
    (an ISO 8601 time with a zone). Page with `cursor=<next_cursor>`. The trail is
    append-only: no call changes or deletes it."""
    query = select(AuditEvent)
    for column, value in (
        (AuditEvent.actor_id, actor_id),
        (AuditEvent.action, action),
        (AuditEvent.target_id, target_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    params: dict[str, Any] = {}
    if cursor is not None:
        params["b_cursor_at"], params["b_cursor_id"] = decode_cursor(cursor, "the audit trail")
        query = query.where(_BELOW_CURSOR)
    query = query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query, params))
    page, more = rows[:limit], len(rows) > limit
    return AuditPage(
        events=[_out(event) for event in page],
        next_cursor=encode_cursor(page[-1].at, page[-1].id) if more else None,
    )


def _out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=event.id,
        at=event.at,
        actor=AuditParty(type=event.actor_type, id=event.actor_id),
        action=event.action,
        target=AuditParty(type=event.target_type, id=event.target_id),
        ip=event.ip,
        request_id=event.request_id,
        outcome=event.outcome,
        detail=event.detail,
    )
