"""Canned responses: listed for every user, written by admins."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.audit import service as audit
from agenthub.chats.service import _escape_like
from agenthub.errors import Conflict, NotFound
from agenthub.models import CannedResponse, User, utcnow
from agenthub.operators.canned.schemas import CannedResponseCreate, CannedResponseUpdate


def _by_shortcut(session: AsyncSession) -> ColumnElement[str]:
    # Byte order on both databases: PostgreSQL's default collation may sort `-` and `_` by
    # locale rules (or ignore them), SQLite compares bytes.
    column = CannedResponse.shortcut.expression
    return column.collate("C") if session.get_bind().dialect.name == "postgresql" else column


async def list_canned_responses(
    session: AsyncSession, q: str | None, limit: int, offset: int
) -> list[CannedResponse]:
    if q and "\x00" in q:
        # Nothing stored holds NUL (the schemas refuse it), and neither database takes it in a
        # LIKE pattern: PostgreSQL refuses it, SQLite ends the pattern there (matching all).
        return []
    query = select(CannedResponse)
    if q:
        pattern = f"%{_escape_like(q.lower())}%"
        query = query.where(
            or_(
                CannedResponse.shortcut.like(pattern, escape="\\"),  # always lowercase
                func.lower(CannedResponse.content).like(pattern, escape="\\"),
            )
        )
    query = query.order_by(_by_shortcut(session)).limit(limit).offset(offset)
    return list(await session.scalars(query))


async def get_canned_response(session: AsyncSession, canned_response_id: str) -> CannedResponse:
    canned = await session.get(CannedResponse, canned_response_id)
    if canned is None:
        raise NotFound("Canned response not found")
    return canned


async def create_canned_response(
    session: AsyncSession, user: User, data: CannedResponseCreate
) -> CannedResponse:
    await _ensure_shortcut_free(session, data.shortcut)
    now = utcnow()
    canned = CannedResponse(
        shortcut=data.shortcut,
        content=data.content,
        created_by=user.id,
        created_at=now,
        updated_at=now,
    )
    session.add(canned)
    await _flush(session, data.shortcut)
    audit.record(session, "canned.created", ("canned_response", canned.id))
    return canned


async def update_canned_response(
    session: AsyncSession, canned: CannedResponse, data: CannedResponseUpdate
) -> CannedResponse:
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    if not changes:
        return canned
    shortcut = changes.get("shortcut")
    if shortcut is not None and shortcut != canned.shortcut:
        await _ensure_shortcut_free(session, shortcut)
    for field, value in changes.items():
        setattr(canned, field, value)
    canned.updated_at = utcnow()
    await _flush(session, canned.shortcut)
    audit.record(
        session, "canned.updated", ("canned_response", canned.id), {"fields": sorted(changes)}
    )
    return canned


async def delete_canned_response(session: AsyncSession, canned: CannedResponse) -> None:
    await session.delete(canned)
    await session.flush()
    audit.record(session, "canned.deleted", ("canned_response", canned.id))


def _taken(shortcut: str) -> Conflict:
    return Conflict(f"Shortcut {shortcut!r} is taken")


async def _ensure_shortcut_free(session: AsyncSession, shortcut: str) -> None:
    if await session.scalar(select(CannedResponse.id).where(CannedResponse.shortcut == shortcut)):
        raise _taken(shortcut)


async def _flush(session: AsyncSession, shortcut: str) -> None:
    """Flush; a request that raced another to the same shortcut hits the unique constraint."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if "shortcut" in str(exc.orig):
            raise _taken(shortcut) from None
        raise  # anything else: the app's IntegrityError handler answers 409
