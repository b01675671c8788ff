"""`webhook`: the delivery body, signed (Standard Webhooks), POSTed to the agent's URL; its
2xx JSON answer is the reply (docs/agents.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from agenthub.delivery.payload import sign_headers
from agenthub.delivery.webhook_call import post_to_agent
from agenthub.hub import Hub
from agenthub.rotation import secrets_in_force
from agenthub.transports.base import AgentCall, TransportEvent


class WebhookTransport:
    name: ClassVar[str] = "webhook"

    async def deliver(self, hub: Hub, call: AgentCall) -> AsyncIterator[TransportEvent]:
        target = call.target
        previous = target.previous_webhook_secret_encrypted
        secrets = secrets_in_force(
            hub.secrets.decrypt(target.webhook_secret_encrypted),
            hub.secrets.decrypt(previous) if previous else None,
            target.previous_webhook_secret_until,
            hub.clock(),
        )
        headers = sign_headers(secrets, target.delivery_id, call.prepared.body)
        yield await post_to_agent(
            hub, target.webhook_url, call.prepared.body, headers, target.timeout_seconds
        )
