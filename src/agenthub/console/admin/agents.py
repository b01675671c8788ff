"""The agents page: creation (the token and webhook secret shown once), new tokens, secret
rotation, a test delivery, and switching an agent off and on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub import rotation
from agenthub.agents import service as agents_service
from agenthub.agents.schemas import AgentCreate, AgentUpdate, TokenCreate
from agenthub.agents.test_delivery import send_test_delivery
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
from agenthub.models import Agent
from agenthub.rotation import SecretRotation

router = APIRouter(include_in_schema=False)


async def _agents_page(
    session: AsyncSession, user_id: str, status_code: int = 200, **extra: Any
) -> Response:
    agents = await agents_service.list_agents(session, LIST_LIMIT, 0)
    return render(
        "admin_agents.html",
        status_code,
        page="admin-agents",
        user=await user_by_id(session, user_id),
        agents=agents,
        **extra,
    )


@router.get(f"{BASE}/agents")
async def agents_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    user = await admin_user(request, hub, session)
    if isinstance(user, Response):
        return user
    return await _agents_page(session, user.id)


AGENT_FIELDS = ("name", "webhook_url", "buffer_time_seconds", "timeout_seconds")


@router.post(f"{BASE}/agents")
async def create_agent(
    request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    user_id = user.id
    form = dict(await form_pairs(request))
    values = {k: form[k].strip() for k in AGENT_FIELDS if form.get(k, "").strip()}
    try:
        try:
            data = AgentCreate.model_validate(values)
        except ValidationError as exc:
            raise invalid(exc) from None
        agent, token, webhook_secret = await agents_service.create_agent(session, hub, data)
        warnings = await agents_service.name_warnings(session, agent.name, agent.id)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors, values=form)
    once = {"agent": agent.name, "token": token, "webhook_secret": webhook_secret}
    return await _agents_page(session, user_id, 201, once=once, warnings=warnings)


@router.post(f"{BASE}/agents/{{agent_id}}/token")
async def new_agent_token(agent_id: str, user: AdminUser, session: SessionDep) -> Response:
    user_id = user.id
    try:
        agent = await agents_service.get_agent(session, agent_id)
        raw, _token = await agents_service.create_token(session, agent, TokenCreate(name="console"))
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors)
    return await _agents_page(session, user_id, 201, once={"agent": agent.name, "token": raw})


@router.post(f"{BASE}/agents/{{agent_id}}/webhook-secret")
async def rotate_agent_secret(
    agent_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    """A new webhook secret (`POST /auth/agents/{id}/webhook-secret`), shown once."""
    user_id = user.id
    form = dict(await form_pairs(request))
    try:
        data = SecretRotation.model_validate({"grace_hours": form.get("grace_hours") or 24})
        agent = await agents_service.get_agent(session, agent_id)
        rotated = await rotation.rotate_agent_secret(session, hub, agent, data.grace_hours)
    except ValidationError as exc:
        status_code, errors = await refused(session, invalid(exc))
        return await _agents_page(session, user_id, status_code, errors=errors)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors)
    once = {
        "agent": agent.name,
        "webhook_secret": rotated.webhook_secret,
        "until": rotated.previous_valid_until,
    }
    return await _agents_page(session, user_id, once=once)


@router.post(f"{BASE}/agents/{{agent_id}}/test")
async def test_agent(agent_id: str, user: AdminUser, session: SessionDep, hub: HubDep) -> Response:
    """A test delivery (`POST /auth/agents/{id}/test-delivery`), its answer shown on the page."""
    user_id = user.id
    try:
        agent = await agents_service.get_agent(session, agent_id)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors)
    session.expunge(agent)
    await session.rollback()  # no transaction open while the agent answers
    probe = await send_test_delivery(hub, agent)
    return await _agents_page(session, user_id, probe={"agent": agent.name, "result": probe})


@router.post(f"{BASE}/agents/{{agent_id}}/active")
async def set_agent_active(
    agent_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    user_id = user.id
    form = dict(await form_pairs(request))
    try:
        agent: Agent = await agents_service.get_agent(session, agent_id)
        change = AgentUpdate(is_active=form.get("is_active") == "true")
        await agents_service.update_agent(session, hub, agent, change)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors)
    return back("agents")
