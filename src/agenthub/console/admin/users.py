"""The users page: creation, roles, deactivation, and each member's channel grants."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.auth import service as auth_service
from agenthub.auth.schemas import UserCreate, UserUpdate
from agenthub.channels import service as channels_service
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
from agenthub.delivery.events import access_changed, publish_after_commit
from agenthub.deps import AdminUser, HubDep, SessionDep
from agenthub.errors import DomainError
from agenthub.hub import Hub
from agenthub.models import Channel, ChannelMember, Role, User

router = APIRouter(include_in_schema=False)


async def _users_page(
    session: AsyncSession, user_id: str, status_code: int = 200, **extra: Any
) -> Response:
    users = await auth_service.list_users(session, LIST_LIMIT, 0)
    channels = list(await session.scalars(select(Channel).order_by(Channel.name, Channel.id)))
    grants: dict[str, set[str]] = {}
    for member_id, channel_id in await session.execute(
        select(ChannelMember.user_id, ChannelMember.channel_id)
    ):
        grants.setdefault(member_id, set()).add(channel_id)
    return render(
        "admin_users.html",
        status_code,
        page="admin-users",
        user=await user_by_id(session, user_id),
        users=users,
        channels=channels,
        grants=grants,
        roles=[role.value for role in Role],
        **extra,
    )


@router.get(f"{BASE}/users")
async def users_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    user = await admin_user(request, hub, session)
    if isinstance(user, Response):
        return user
    return await _users_page(session, user.id)


@router.post(f"{BASE}/users")
async def create_user(request: Request, user: AdminUser, session: SessionDep) -> Response:
    user_id = user.id
    form = dict(await form_pairs(request))
    values = {k: form.get(k, "") for k in ("username", "password", "role")}
    try:
        try:
            data = UserCreate.model_validate(values)
        except ValidationError as exc:
            raise invalid(exc) from None
        await auth_service.create_user(session, data)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        keep = {"username": values["username"], "role": values["role"]}
        return await _users_page(session, user_id, status_code, errors=errors, values=keep)
    return back("users")


async def _update_user(
    session: AsyncSession, hub: Hub, caller: User, target_id: str, values: dict[str, Any]
) -> Response:
    caller_id = caller.id
    try:
        try:
            data = UserUpdate.model_validate(values)
        except ValidationError as exc:
            raise invalid(exc) from None
        target = await auth_service.get_user(session, target_id)
        await auth_service.update_user(session, caller, target, data)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _users_page(session, caller_id, status_code, errors=errors)
    publish_after_commit(session, hub, access_changed(target_id))
    return back("users")


@router.post(f"{BASE}/users/{{user_id}}/role")
async def set_user_role(
    user_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    form = dict(await form_pairs(request))
    return await _update_user(session, hub, user, user_id, {"role": form.get("role", "")})


@router.post(f"{BASE}/users/{{user_id}}/active")
async def set_user_active(
    user_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    form = dict(await form_pairs(request))
    active = form.get("is_active") == "true"
    return await _update_user(session, hub, user, user_id, {"is_active": active})


@router.post(f"{BASE}/users/{{user_id}}/channels")
async def set_user_channels(
    user_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    """The checked channels are granted, the others revoked (`add_member`, `remove_member`)."""
    caller_id = user.id
    wanted = {value for name, value in await form_pairs(request) if name == "channel_id"}
    try:
        target = await auth_service.get_user(session, user_id)
        current = set(
            await session.scalars(
                select(ChannelMember.channel_id).where(ChannelMember.user_id == target.id)
            )
        )
        for channel_id in sorted(wanted - current):
            channel = await channels_service.get_channel(session, channel_id)
            await channels_service.add_member(session, channel, target.id)
        for channel_id in sorted(current - wanted):
            channel = await channels_service.get_channel(session, channel_id)
            await channels_service.remove_member(session, channel, target.id)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _users_page(session, caller_id, status_code, errors=errors)
    if wanted != current:
        publish_after_commit(session, hub, access_changed(user_id))
    return back("users")
