"""What the admin pages share: the admin check of a page, the form, and how a refusal is shown."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.console.web import render, signed_in, to_login
from agenthub.errors import DomainError, InvalidInput
from agenthub.hub import Hub
from agenthub.models import User
from agenthub.uow import rollback

BASE = "/console/admin"
LIST_LIMIT = 500


async def admin_user(request: Request, hub: Hub, session: AsyncSession) -> User | Response:
    """The signed-in admin of a GET, or the answer instead (login form, or 403)."""
    principal = await signed_in(request, hub, session)
    if principal is None or principal.user is None:
        return to_login()
    if not principal.user.is_admin:
        return render("admin_forbidden.html", 403, page="admin-forbidden", user=principal.user)
    return principal.user


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """A urlencoded form as pairs (checkbox groups repeat a name)."""
    try:
        return parse_qsl(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=1000,
        )
    except ValueError:
        raise InvalidInput.at(("body",), "value_error", "Not a valid UTF-8 form") from None


def messages(detail: Any) -> list[str]:
    """A service's or a schema's refusal as lines for the page (never the submitted values)."""
    if isinstance(detail, list):
        lines = []
        for error in detail:
            loc = [str(part) for part in error.get("loc", []) if part != "body"]
            lines.append(f"{'.'.join(loc)}: {error.get('msg')}" if loc else str(error.get("msg")))
        return lines
    return [str(detail)]


def invalid(exc: ValidationError) -> InvalidInput:
    return InvalidInput.within((), exc)


def back(path: str) -> RedirectResponse:
    return RedirectResponse(f"{BASE}/{path}", status_code=303)


async def refused(session: AsyncSession, exc: DomainError) -> tuple[int, list[str]]:
    """Undo what the refused change flushed; the page is then rendered from what is stored."""
    await rollback(session)
    return exc.status_code, messages(exc.detail)


async def user_by_id(session: AsyncSession, user_id: str) -> User:
    # After a rollback the caller's object is expired: `get` loads it again.
    user = await session.get(User, user_id)
    assert user is not None
    return user
