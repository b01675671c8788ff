"""A test delivery: one signed POST of a sample conversation to an agent's webhook, now.

What an admin runs after creating an agent, to see that its URL answers and checks the
signature, before any contact writes. The body has the shape of a real delivery (the agent's
code needs no special case) with `"test": true`, a made-up chat and no `reply_url`; it is
signed with the agent's own webhook secret, goes through the same address check, and its
answer is only reported back: nothing is stored, sent to a contact, or retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agenthub import transports
from agenthub.delivery.payload import DeliveryTarget, PreparedDelivery, sign_headers
from agenthub.delivery.webhook_call import Outcome, post_to_agent
from agenthub.hub import Hub
from agenthub.ids import new_id
from agenthub.models import Agent, utcnow
from agenthub.rotation import agent_secrets


@dataclass(frozen=True)
class DeliveryProbe:
    webhook_id: str
    status_code: int | None
    duration_ms: float
    error: str | None
    error_kind: str | None
    response_excerpt: str

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.status_code is not None


def sample_body(agent: Agent, webhook_id: str) -> bytes:
    now = utcnow().isoformat().replace("+00:00", "Z")
    body = {
        "event": "chat.messages",
        "test": True,
        "delivery_id": webhook_id,
        "agent": {"id": agent.id, "name": agent.name},
        "chat": {
            "id": "cht_test000000",
            "name": "Test contact",
            "external_id": "test-contact",
            "channel_id": "chn_test000000",
            "platform": "api",
        },
        "messages": [
            {
                "id": "msg_test000000",
                "content": "Hello! This is a test delivery from Agent Hub.",
                "sender": "contact",
                "sender_type": "CONTACT",
                "timestamp": now,
                "meta_data": {},
            }
        ],
        "new_message_ids": ["msg_test000000"],
        "reply_url": None,
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def send_test_delivery(hub: Hub, agent: Agent) -> DeliveryProbe:
    webhook_id = new_id("tst")
    body = sample_body(agent, webhook_id)
    if agent.transport == "webhook" and agent.webhook_url:
        headers = sign_headers(agent_secrets(hub, agent), webhook_id, body)
        # The delivery engine's own call: the same address check, limits and error kinds.
        outcome = await post_to_agent(hub, agent.webhook_url, body, headers, agent.timeout_seconds)
    else:
        outcome = await _through_transport(hub, agent, webhook_id, body)
    error = outcome.error
    if outcome.error_kind == "http_status":
        error = f"HTTP {outcome.status_code}"  # its body is the excerpt
    return DeliveryProbe(
        webhook_id=webhook_id,
        status_code=outcome.status_code,
        duration_ms=outcome.latency_ms,
        error=error,
        error_kind=outcome.error_kind,
        response_excerpt=outcome.excerpt or "",
    )


async def _through_transport(hub: Hub, agent: Agent, webhook_id: str, body: bytes) -> Outcome:
    """The sample conversation through the agent's A2A or OpenAI-compatible transport."""
    document = json.loads(body)
    chat = document["chat"]
    target = DeliveryTarget(
        delivery_id=webhook_id,
        message_ids=list(document["new_message_ids"]),
        agent_id=agent.id,
        agent_name=agent.name,
        webhook_url=agent.webhook_url,
        webhook_secret_encrypted=agent.webhook_secret_encrypted,
        previous_webhook_secret_encrypted=None,
        previous_webhook_secret_until=None,
        timeout_seconds=agent.timeout_seconds,
        history_msg_count=agent.history_msg_count,
        recent_msg_window_minutes=agent.recent_msg_window_minutes,
        chat_id=chat["id"],
        chat_name=chat["name"],
        chat_external_id=chat["external_id"],
        channel_id=chat["channel_id"],
        platform=chat["platform"],
        transport=agent.transport,
    )
    secret = agent.transport_secret_encrypted
    return await transports.run(
        hub,
        PreparedDelivery(target, body),
        settings=agent.transport_settings,
        secret=hub.secrets.decrypt(secret) if secret else None,
        show_partials=False,
    )
