"""`/auth/agents`: the AI services the hub delivers conversations to, and their tokens (admin)."""

from __future__ import annotations

from fastapi import APIRouter, status

from agenthub.agents import service
from agenthub.agents.schemas import (
    AgentCreate,
    AgentCreated,
    AgentOut,
    AgentSaved,
    AgentUpdate,
    DeliveryProbeOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
)
from agenthub.agents.test_delivery import send_test_delivery
from agenthub.auth.router import Limit, Offset
from agenthub.deps import AdminUser, HubDep, SessionDep
from agenthub.rotation import AgentSecretRotated, SecretRotation, rotate_agent_secret

router = APIRouter(prefix="/auth/agents", tags=["agents"])


@router.get("", response_model=list[AgentOut])
async def list_agents(
    _: AdminUser, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> object:
    """All agents, oldest first."""
    return await service.list_agents(session, limit, offset)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AgentCreated)
async def create_agent(
    data: AgentCreate, _: AdminUser, session: SessionDep, hub: HubDep
) -> AgentCreated:
    """Register an agent. The answer carries its API `token` and `webhook_secret`, once.

    A name another agent already has (ignoring case) is allowed; the answer's `warnings` then
    says so: `["another agent is named 'Sales' (agt_…)"]`, one entry per such agent.
    """
    agent, token, webhook_secret = await service.create_agent(session, hub, data)
    return AgentCreated.model_validate(
        {
            **AgentOut.model_validate(agent).model_dump(),
            "warnings": await service.name_warnings(session, agent.name, agent.id),
            "token": token,
            "webhook_secret": webhook_secret,
        }
    )


@router.get("/{agent_id}", response_model=AgentOut)
async def get_agent(agent_id: str, _: AdminUser, session: SessionDep) -> object:
    """One agent (its secret is never shown again)."""
    return await service.get_agent(session, agent_id)


@router.post("/{agent_id}/test-delivery", response_model=DeliveryProbeOut)
async def test_delivery(agent_id: str, _: AdminUser, session: SessionDep, hub: HubDep) -> object:
    """POST a sample conversation to the agent's webhook now, signed like a real delivery
    (with `"test": true` and no `reply_url`), and report its answer. Nothing is stored or
    retried, and no contact is involved: an agent that fails it answers 200 here, with
    `ok: false` and the reason."""
    agent = await service.get_agent(session, agent_id)
    # The read is over: no transaction stays open while the agent takes its time.
    session.expunge(agent)
    await session.rollback()
    return await send_test_delivery(hub, agent)


@router.post("/{agent_id}/webhook-secret", response_model=AgentSecretRotated)
async def rotate_webhook_secret(
    agent_id: str,
    _: AdminUser,
    session: SessionDep,
    hub: HubDep,
    data: SecretRotation | None = None,
) -> object:
    """A new webhook secret for the agent, shown once. For `grace_hours` (default 24, 0 to
    168) deliveries carry two signatures, `v1,<new> v1,<old>`, so the agent can switch to the
    new secret at its own pace; a Standard Webhooks library accepts either."""
    agent = await service.get_agent(session, agent_id)
    grace = (data or SecretRotation()).grace_hours
    return await rotate_agent_secret(session, hub, agent, grace)


@router.patch("/{agent_id}", response_model=AgentSaved)
async def update_agent(
    agent_id: str, data: AgentUpdate, _: AdminUser, session: SessionDep, hub: HubDep
) -> AgentSaved:
    """Change an agent. `is_active: false` cuts off its tokens and deliveries at once.

    A rename to a name another agent has (ignoring case) is made, and the answer's `warnings`
    says so: `["another agent is named 'Sales' (agt_…)"]`. Other changes warn of nothing.
    """
    agent = await service.get_agent(session, agent_id)
    old_name = agent.name
    await service.update_agent(session, hub, agent, data)
    renamed = agent.name != old_name
    warnings = await service.name_warnings(session, agent.name, agent.id) if renamed else []
    return AgentSaved.model_validate(
        {**AgentOut.model_validate(agent).model_dump(), "warnings": warnings}
    )


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(agent_id: str, _: AdminUser, session: SessionDep) -> None:
    """Delete an agent, its tokens and its chat links."""
    await service.delete_agent(session, await service.get_agent(session, agent_id))


@router.post("/{agent_id}/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
async def create_token(
    agent_id: str, _: AdminUser, session: SessionDep, data: TokenCreate | None = None
) -> TokenCreated:
    """A new API token for the agent (shown once)."""
    agent = await service.get_agent(session, agent_id)
    raw, token = await service.create_token(session, agent, data or TokenCreate())
    return TokenCreated.model_validate(
        {**TokenOut.model_validate(token).model_dump(), "token": raw}
    )


@router.get("/{agent_id}/tokens", response_model=list[TokenOut])
async def list_tokens(agent_id: str, _: AdminUser, session: SessionDep) -> object:
    """The agent's tokens: ids and metadata, never the tokens themselves."""
    return await service.list_tokens(session, await service.get_agent(session, agent_id))


@router.delete("/{agent_id}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(agent_id: str, token_id: str, _: AdminUser, session: SessionDep) -> None:
    """Revoke one of the agent's tokens; it stops working at once."""
    await service.revoke_token(session, await service.get_agent(session, agent_id), token_id)
