"""`/canned-responses`: ready answers operators insert with `/shortcut` (users read, admins
write)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from agenthub.auth.router import Limit, Offset
from agenthub.deps import AdminUser, CurrentUser, SessionDep
from agenthub.openapi_errors import error_responses
from agenthub.operators.canned import service
from agenthub.operators.canned.schemas import (
    CannedResponseCreate,
    CannedResponseOut,
    CannedResponseUpdate,
)

router = APIRouter(prefix="/canned-responses", tags=["canned responses"])


@router.get("", response_model=list[CannedResponseOut])
async def list_canned_responses(
    _: CurrentUser,
    session: SessionDep,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Search shortcut and content (ignoring case)"),
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> object:
    """Every canned response, by shortcut; `q` keeps those whose shortcut or content contains
    it."""
    return await service.list_canned_responses(session, q, limit, offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CannedResponseOut,
    responses=error_responses(409),
)
async def create_canned_response(
    data: CannedResponseCreate, user: AdminUser, session: SessionDep
) -> object:
    """Add a canned response. A shortcut another one has → 409."""
    return await service.create_canned_response(session, user, data)


@router.patch(
    "/{canned_response_id}", response_model=CannedResponseOut, responses=error_responses(409)
)
async def update_canned_response(
    canned_response_id: str, data: CannedResponseUpdate, _: AdminUser, session: SessionDep
) -> object:
    """Change the shortcut, the content or both. A shortcut another one has → 409."""
    canned = await service.get_canned_response(session, canned_response_id)
    return await service.update_canned_response(session, canned, data)


@router.delete("/{canned_response_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_canned_response(
    canned_response_id: str, _: AdminUser, session: SessionDep
) -> None:
    """Delete a canned response."""
    canned = await service.get_canned_response(session, canned_response_id)
    await service.delete_canned_response(session, canned)
