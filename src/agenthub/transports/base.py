"""What every agent transport shares: the call it gets, the events it yields.

A transport turns one claimed delivery into a stream of events: `Partial`s (the reply so far,
while the agent streams) and, last, one `Outcome` (`delivery/webhook_call.py`): succeeded with
the answer in the webhook's own shape (`{"replies": [...], "handoff": ..., "handoff_reason":
...}`), or failed, retryable or not, with an `error_kind` for the attempt log. Everything else
(the buffer, the claim and its lease, the attempt log, retries, the exactly-once recording,
the breaker) is the delivery engine's, the same whatever the transport.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

from agenthub.delivery.payload import PreparedDelivery
from agenthub.delivery.webhook_call import Outcome
from agenthub.hub import Hub


@dataclass(frozen=True)
class Partial:
    """The reply so far (the whole text, not a delta)."""

    text: str


TransportEvent = Partial | Outcome


@dataclass
class AgentCall:
    """One attempt of one delivery, as a transport gets it."""

    prepared: PreparedDelivery
    # The transport's settings (non-secret) and its decrypted secret (API key, bearer token).
    settings: dict[str, Any]
    secret: str | None
    # The transport's handle kept for the chat by the previous delivery (an A2A task id).
    continuation: str | None = None

    @property
    def target(self) -> Any:
        return self.prepared.target

    @cached_property
    def document(self) -> dict[str, Any]:
        """The delivery body an agent's webhook gets, as a dict: the chat, the history, the
        new message ids (the other transports render it in their own protocol)."""
        return dict(json.loads(self.prepared.body))

    def new_messages(self) -> list[dict[str, Any]]:
        new = set(self.document["new_message_ids"])
        return [m for m in self.document["messages"] if m["id"] in new]


class Transport(Protocol):
    name: ClassVar[str]

    def deliver(self, hub: Hub, call: AgentCall) -> AsyncIterator[TransportEvent]:
        """Partials, then exactly one Outcome, last."""
        ...


MAX_IDS_IN_HEADER = 50


def hub_headers(call: AgentCall) -> dict[str, str]:
    """The hub's ids on a request in another protocol than the webhook's, for the agent's
    logs, proxies and idempotency: the delivery id is the same on every retry."""
    target = call.target
    return {
        "agenthub-delivery-id": target.delivery_id,
        "agenthub-chat-id": target.chat_id,
        "agenthub-agent-id": target.agent_id,
        "agenthub-message-ids": ",".join(target.message_ids[:MAX_IDS_IN_HEADER]),
    }


def answer(
    replies: list[Any], *, handoff: bool = False, handoff_reason: str | None = None
) -> dict[str, Any]:
    """An answer in the webhook's shape, which `delivery/replies.py` applies."""
    body: dict[str, Any] = {"replies": replies}
    if handoff:
        body["handoff"] = True
        if handoff_reason:
            body["handoff_reason"] = handoff_reason
    return body


async def within(
    deadline: float, events: AsyncIterator[TransportEvent]
) -> AsyncIterator[TransportEvent]:
    """`events` until `deadline` (`time.perf_counter()`), then TimeoutError: the agent's time
    limit is for its whole answer, not for each read. Only the waits are timed, never the
    consumer's work between events (a timeout there would cancel the consumer instead)."""
    loop = asyncio.get_running_loop()
    while True:
        async with asyncio.timeout_at(loop.time() + deadline - time.perf_counter()):
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
        yield event
