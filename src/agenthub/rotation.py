"""Rotating a signing secret without breaking the other side: a grace period with two keys.

An agent's webhook secret signs what the hub POSTs to it; an `api` channel's secret signs both
ways (the client's inbound webhooks, the hub's callbacks). A rotation makes a new secret and
keeps the one it replaces for `grace_hours` (0 to 168, default 24): meanwhile the hub signs with
both (Standard Webhooks' `v1,<new> v1,<old>`: a receiver accepts a message when any signature
checks), and an `api` channel accepts inbound webhooks signed with either. After the grace the
old one is simply ignored; grace 0 drops it at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.audit import service as audit
from agenthub.errors import BadRequest
from agenthub.hub import Hub
from agenthub.models import Agent, Channel, Platform
from agenthub.schemas import Out, Schema
from agenthub.security import new_webhook_secret

DEFAULT_GRACE_HOURS = 24
MAX_GRACE_HOURS = 168
# In an `api` channel's (encrypted) credentials; keys starting with "_" are never listed.
PREVIOUS_SECRET = "_previous_secret"  # noqa: S105 - a key name
PREVIOUS_SECRET_UNTIL = "_previous_secret_until"  # noqa: S105 - a key name


class SecretRotation(Schema):
    grace_hours: int = Field(
        default=DEFAULT_GRACE_HOURS,
        ge=0,
        le=MAX_GRACE_HOURS,
        description="how long the old secret keeps working (0: not at all)",
    )


class AgentSecretRotated(Out):
    """Shown once."""

    webhook_secret: str
    previous_valid_until: datetime | None = Field(
        description="until when deliveries also carry the old secret's signature"
    )


class ChannelSecretRotated(Out):
    """Shown once."""

    secret: str
    previous_valid_until: datetime | None = Field(
        description="until when the old secret is accepted and still signs callbacks"
    )


def secrets_in_force(
    current: str, previous: str | None, until: datetime | None, now: datetime
) -> list[str]:
    """The secrets that sign (and, inbound, may verify) now: the current one first."""
    if previous and until is not None and now < until:
        return [current, previous]
    return [current]


async def rotate_agent_secret(
    session: AsyncSession, hub: Hub, agent: Agent, grace_hours: int
) -> AgentSecretRotated:
    secret = new_webhook_secret()
    until = _grace_end(hub, grace_hours)
    agent.previous_webhook_secret_encrypted = agent.webhook_secret_encrypted if until else None
    agent.previous_webhook_secret_until = until
    agent.webhook_secret_encrypted = hub.secrets.encrypt(secret)
    await session.flush()
    audit.record(session, "agent.secret.rotated", ("agent", agent.id), {"grace_hours": grace_hours})
    return AgentSecretRotated(webhook_secret=secret, previous_valid_until=until)


def agent_secrets(hub: Hub, agent: Agent) -> list[str]:
    previous = agent.previous_webhook_secret_encrypted
    return secrets_in_force(
        hub.secrets.decrypt(agent.webhook_secret_encrypted),
        hub.secrets.decrypt(previous) if previous else None,
        agent.previous_webhook_secret_until,
        hub.clock(),
    )


async def rotate_channel_secret(
    session: AsyncSession, hub: Hub, channel: Channel, grace_hours: int
) -> ChannelSecretRotated:
    if channel.platform != Platform.API:
        raise BadRequest(
            f"Only api channels have a signing secret the hub makes; a {channel.platform} "
            "channel's credentials are the platform's (change them with PATCH /channels/{id})"
        )
    credentials: dict[str, Any] = hub.secrets.decrypt_json(channel.credentials_encrypted)
    secret = new_webhook_secret()
    until = _grace_end(hub, grace_hours)
    credentials.pop(PREVIOUS_SECRET, None)
    credentials.pop(PREVIOUS_SECRET_UNTIL, None)
    if until is not None and credentials.get("secret"):
        credentials[PREVIOUS_SECRET] = credentials["secret"]
        credentials[PREVIOUS_SECRET_UNTIL] = until.isoformat()
    credentials["secret"] = secret
    channel.credentials_encrypted = hub.secrets.encrypt_json(credentials)
    await session.flush()
    audit.record(
        session, "channel.secret.rotated", ("channel", channel.id), {"grace_hours": grace_hours}
    )
    return ChannelSecretRotated(secret=secret, previous_valid_until=until)


def channel_secrets(credentials: dict[str, Any], now: datetime) -> list[str]:
    """An `api` channel's secrets in force, from its decrypted credentials."""
    current = credentials.get("secret")
    if not current:
        return []
    until = credentials.get(PREVIOUS_SECRET_UNTIL)
    moment = datetime.fromisoformat(until) if isinstance(until, str) else None
    return secrets_in_force(str(current), credentials.get(PREVIOUS_SECRET), moment, now)


def _grace_end(hub: Hub, grace_hours: int) -> datetime | None:
    return hub.clock() + timedelta(hours=grace_hours) if grace_hours > 0 else None
