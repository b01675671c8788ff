"""The canned responses page: create, edit inline, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.console.admin.common import (
    BASE,
    LIST_LIMIT,
    admin_user,
    back,
    form_pairs,
    invalid,
    refused,
    user_by_id,
)
from agenthub.console.web import render
from agenthub.deps import AdminUser, HubDep, SessionDep
from agenthub.errors import DomainError
from agenthub.models import CannedResponse
from agenthub.operators.canned import service as canned_service
from agenthub.operators.canned.schemas import CannedResponseCreate, CannedResponseUpdate

router = APIRouter(include_in_schema=False)


async def _canned_page(
    session: AsyncSession, user_id: str, status_code: int = 200, **extra: Any
) -> Response:
    canned = await canned_service.list_canned_responses(session, None, LIST_LIMIT, 0)
    return render(
        "admin_canned.html",
        status_code,
        page="admin-canned",
        user=await user_by_id(session, user_id),
        canned=canned,
        **extra,
    )


@router.get(f"{BASE}/canned")
async def canned_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    user = await admin_user(request, hub, session)
    if isinstance(user, Response):
        return user
    return await _canned_page(session, user.id)


def _canned_values(form: dict[str, str]) -> dict[str, str]:
    return {k: form[k] for k in ("shortcut", "content") if k in form}


@router.post(f"{BASE}/canned")
async def create_canned(request: Request, user: AdminUser, session: SessionDep) -> Response:
    user_id = user.id
    values = _canned_values(dict(await form_pairs(request)))
    try:
        try:
            data = CannedResponseCreate.model_validate(values)
        except ValidationError as exc:
            raise invalid(exc) from None
        await canned_service.create_canned_response(session, user, data)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _canned_page(session, user_id, status_code, errors=errors, values=values)
    return back("canned")


@router.post(f"{BASE}/canned/{{canned_id}}")
async def update_canned(
    canned_id: str, request: Request, user: AdminUser, session: SessionDep
) -> Response:
    user_id = user.id
    values = _canned_values(dict(await form_pairs(request)))
    try:
        try:
            data = CannedResponseUpdate.model_validate(values)
        except ValidationError as exc:
            raise invalid(exc) from None
        canned: CannedResponse = await canned_service.get_canned_response(session, canned_id)
        await canned_service.update_canned_response(session, canned, data)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _canned_page(
            session, user_id, status_code, errors=errors, editing=canned_id, edit_values=values
        )
    return back("canned")


@router.post(f"{BASE}/canned/{{canned_id}}/delete")
async def delete_canned(canned_id: str, user: AdminUser, session: SessionDep) -> Response:
    user_id = user.id
    try:
        canned = await canned_service.get_canned_response(session, canned_id)
        await canned_service.delete_canned_response(session, canned)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _canned_page(session, user_id, status_code, errors=errors)
    return back("canned")
