"""A test delivery: one signed POST of a sample conversation to an agent's webhook, now.

What an admin runs after creating an agent, to see that its URL answers and checks the
signature, before any contact writes. The body has the shape of a real delivery (the agent's
code needs no special case) with `"test": true`, a made-up chat and no `reply_url`; it is
signed with the agent's own webhook secret, goes through the same address check, and its
answer is only reported back: nothing is stored, sent to a contact, or retried.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx2

from agenthub.delivery.payload import sign_headers
from agenthub.errors import BadRequest
from agenthub.hub import Hub
from agenthub.ids import new_id
from agenthub.models import Agent, utcnow
from agenthub.netguard import ensure_public_url
from agenthub.rotation import agent_secrets

EXCERPT_BYTES = 2048


@dataclass(frozen=True)
class DeliveryProbe:
    webhook_id: str
    status_code: int | None
    duration_ms: float
    error: str | None
    response_excerpt: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


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
    secrets = agent_secrets(hub, agent)
    started = time.perf_counter()

    def result(status: int | None, error: str | None, excerpt: str = "") -> DeliveryProbe:
        ms = round((time.perf_counter() - started) * 1000, 1)
        return DeliveryProbe(webhook_id, status, ms, error, excerpt)

    try:
        await ensure_public_url(
            agent.webhook_url, allow_private=hub.settings.private_agent_urls_allowed
        )
        async with hub.http.stream(
            "POST",
            agent.webhook_url,
            content=body,
            headers=sign_headers(secrets, webhook_id, body),
            timeout=agent.timeout_seconds,
        ) as response:
            excerpt = await _excerpt(response)
    except BadRequest as exc:  # the URL points inside the network, or does not resolve
        return result(None, exc.detail)
    except httpx2.TimeoutException:
        return result(None, f"timeout after {agent.timeout_seconds:g}s")
    except (httpx2.HTTPError, OSError) as exc:
        return result(None, f"{type(exc).__name__}: {exc}"[:500])
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return result(response.status_code, error, excerpt)


async def _excerpt(response: httpx2.Response) -> str:
    """The start of the answer, and no more of it read: an agent can answer anything."""
    taken = bytearray()
    async for chunk in response.aiter_bytes():
        taken.extend(chunk)
        if len(taken) >= EXCERPT_BYTES:
            break
    return bytes(taken[:EXCERPT_BYTES]).decode("utf-8", errors="replace")
