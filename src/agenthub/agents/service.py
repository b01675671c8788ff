"""Agents and their API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.agents.schemas import AgentCreate, AgentUpdate, TokenCreate
from agenthub.audit import service as audit
from agenthub.chats.handling import refresh_handled_by
from agenthub.errors import InvalidInput, NotFound
from agenthub.hub import Hub
from agenthub.models import Agent, ApiToken, Chat, ChatAgentLink, utcnow
from agenthub.netguard import ensure_public_url
from agenthub.security import hash_token, new_token, new_webhook_secret


async def create_agent(
    session: AsyncSession, hub: Hub, data: AgentCreate
) -> tuple[Agent, str, str]:
    """Returns the agent, its first API token and its webhook secret (both shown once)."""
    values = data.model_dump(mode="json", exclude={"a2a", "openai"})
    agent = Agent(**values)
    await _check_urls(hub, data)
    _apply_transport(hub, agent, data.transport, data)
    webhook_secret = new_webhook_secret()
    agent.webhook_secret_encrypted = hub.secrets.encrypt(webhook_secret)
    session.add(agent)
    await session.flush()
    audit.record(session, "agent.created", ("agent", agent.id), {"name": agent.name})
    raw_token, _ = await create_token(session, agent, TokenCreate(name="default"))
    return agent, raw_token, webhook_secret


async def name_warnings(session: AsyncSession, name: str, agent_id: str) -> list[str]:
    """A warning per other agent with this name, ignoring case: allowed, but operators and
    agents (which see `agent.name`) could not tell them apart."""
    # Compared in Python: `lower()` differs between SQLite (ASCII only) and PostgreSQL, and
    # agents are few (an admin registers each).
    wanted = name.casefold()
    others = await session.execute(
        select(Agent.id, Agent.name)
        .where(Agent.id != agent_id)
        .order_by(Agent.created_at, Agent.id)
    )
    return [
        f"another agent is named {other_name!r} ({other_id})"
        for other_id, other_name in others
        if other_name.casefold() == wanted
    ]


async def list_agents(session: AsyncSession, limit: int, offset: int) -> list[Agent]:
    query = select(Agent).order_by(Agent.created_at, Agent.id).limit(limit).offset(offset)
    return list(await session.scalars(query))


async def get_agent(session: AsyncSession, agent_id: str) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFound("Agent not found")
    return agent


async def update_agent(session: AsyncSession, hub: Hub, agent: Agent, data: AgentUpdate) -> Agent:
    changes = {
        k: v
        for k, v in data.model_dump(
            mode="json", exclude_unset=True, exclude={"a2a", "openai"}
        ).items()
        if v is not None
    }
    await _check_urls(hub, data)
    transport = changes.pop("transport", agent.transport)
    if transport != agent.transport or data.a2a is not None or data.openai is not None:
        _apply_transport(hub, agent, transport, data)
        changes["transport"] = transport
    if agent.transport == "webhook" and not (changes.get("webhook_url") or agent.webhook_url):
        raise InvalidInput.at(
            ("body", "webhook_url"), "missing", "webhook_url is required for the webhook transport"
        )
    if changes.get("is_active") is True and not agent.is_active:
        await _resume_from_now(session, agent)
    activation_changes = "is_active" in changes and changes["is_active"] != agent.is_active
    for field, value in changes.items():
        setattr(agent, field, value)
    await session.flush()
    audit.record(session, "agent.updated", ("agent", agent.id), {"fields": sorted(changes)})
    if activation_changes:
        await refresh_handled_by(session, _chats_of(agent.id))
    return agent


async def _check_urls(hub: Hub, data: AgentCreate | AgentUpdate) -> None:
    """Every URL the agent will be called at must be public (unless private URLs are allowed)."""
    urls = [data.webhook_url]
    if data.a2a is not None:
        urls.append(data.a2a.url)
    if data.openai is not None:
        urls.append(data.openai.base_url)
    for url in urls:
        if url is not None:
            await ensure_public_url(str(url), allow_private=hub.settings.private_agent_urls_allowed)


def _apply_transport(
    hub: Hub, agent: Agent, transport: str, data: AgentCreate | AgentUpdate
) -> None:
    """Store the transport's settings, its secret encrypted apart (write-only): a secret left
    out of an update keeps the stored one, if the transport stays the same."""
    kept = agent.transport_secret_encrypted if agent.transport == transport else None
    if transport == "webhook":
        agent.transport = transport
        agent.transport_settings = agent.transport_secret_encrypted = None
        return
    given = data.a2a if transport == "a2a" else data.openai
    if given is None:
        if agent.transport != transport:
            raise InvalidInput.at(
                ("body", transport), "missing", f"required for the {transport} transport"
            )
        return
    settings = given.model_dump(mode="json")
    if transport == "a2a":
        auth = settings.get("auth")
        secret = auth.pop("token", None) if auth else None
        if auth is not None and secret is None and kept is None:
            raise InvalidInput.at(("body", "a2a", "auth", "token"), "missing", "required")
    else:
        secret = settings.pop("api_key", None)
        if secret is None and kept is None:
            raise InvalidInput.at(("body", "openai", "api_key"), "missing", "required")
    agent.transport = transport
    agent.transport_settings = settings
    if secret is not None:
        agent.transport_secret_encrypted = hub.secrets.encrypt(secret)
    elif transport == "a2a" and settings.get("auth") is None:
        agent.transport_secret_encrypted = None
    else:
        agent.transport_secret_encrypted = kept


def _chats_of(agent_id: str) -> Select[Any]:
    return select(ChatAgentLink.chat_id).where(ChatAgentLink.agent_id == agent_id)


async def _resume_from_now(session: AsyncSession, agent: Agent) -> None:
    """A re-activated agent starts with the next contact message of each chat, as a resumed
    chat link does: what was said while it was off comes as history, not as new messages."""
    await session.execute(
        update(ChatAgentLink)
        .where(ChatAgentLink.agent_id == agent.id)
        .values(
            delivered_seq=select(Chat.message_seq)
            .where(Chat.id == ChatAgentLink.chat_id)
            .scalar_subquery(),
            waiting_since=None,
            last_arrival_at=None,
            due_at=None,
        )
    )


async def delete_agent(session: AsyncSession, agent: Agent) -> None:
    chat_ids = list(await session.scalars(_chats_of(agent.id)))
    await session.delete(agent)
    await session.flush()
    audit.record(session, "agent.deleted", ("agent", agent.id), {"name": agent.name})
    await refresh_handled_by(session, select(Chat.id).where(Chat.id.in_(chat_ids)))


async def create_token(
    session: AsyncSession, agent: Agent, data: TokenCreate
) -> tuple[str, ApiToken]:
    raw = new_token()
    expires_at = utcnow() + timedelta(days=data.expires_in_days) if data.expires_in_days else None
    token = ApiToken(
        token_hash=hash_token(raw), agent_id=agent.id, name=data.name, expires_at=expires_at
    )
    session.add(token)
    await session.flush()
    audit.record(session, "agent.token.created", ("token", token.id), {"agent_id": agent.id})
    return raw, token


async def list_tokens(session: AsyncSession, agent: Agent) -> list[ApiToken]:
    query = select(ApiToken).where(ApiToken.agent_id == agent.id).order_by(ApiToken.created_at)
    return list(await session.scalars(query))


async def revoke_token(session: AsyncSession, agent: Agent, token_id: str) -> None:
    token = await session.scalar(
        select(ApiToken).where(ApiToken.id == token_id, ApiToken.agent_id == agent.id)
    )
    if token is None:
        raise NotFound("Token not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    await session.flush()
    audit.record(session, "agent.token.revoked", ("token", token.id), {"agent_id": agent.id})
