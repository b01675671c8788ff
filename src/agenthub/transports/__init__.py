"""Agent transports: how one delivery reaches an agent (`webhook`, `a2a`, `openai`).

`run` drives the agent's transport for one attempt: partial replies go to the delivery's
`PartialReplyStream` as they come, and the last event, the `Outcome`, is what the delivery
engine records. A transport is one module here plus its settings in `agents/schemas.py`.
"""

from __future__ import annotations

from typing import Any, cast

from agenthub.delivery.partials import PartialReplyStream
from agenthub.delivery.payload import PreparedDelivery
from agenthub.delivery.webhook_call import Outcome
from agenthub.hub import Hub
from agenthub.transports.base import AgentCall, Partial, Transport


def transport_named(name: str) -> Transport:
    """The transport of that name (imported when first used: `a2a` and `openai` bring their
    clients along)."""
    if name == "openai":
        from agenthub.transports.openai import OpenAITransport

        return OpenAITransport()
    if name == "a2a":
        from agenthub.transports.a2a import A2ATransport

        return cast(Transport, A2ATransport())
    from agenthub.transports.webhook import WebhookTransport

    return WebhookTransport()


TRANSPORTS = ("webhook", "a2a", "openai")


async def run(
    hub: Hub,
    prepared: PreparedDelivery,
    *,
    settings: dict[str, Any] | None = None,
    secret: str | None = None,
    continuation: str | None = None,
    show_partials: bool = True,
) -> Outcome:
    """One attempt through the delivery's transport: its outcome, partials shown meanwhile
    (unless not `show_partials`: a test delivery, whose chat is made up)."""
    target = prepared.target
    transport = transport_named(target.transport)
    call = AgentCall(prepared, settings or {}, secret, continuation)
    partials = PartialReplyStream(hub, target)
    outcome: Outcome | None = None
    try:
        async for event in transport.deliver(hub, call):
            if isinstance(event, Partial):
                if show_partials:
                    partials.update(event.text)
            else:
                outcome = event
    finally:
        await partials.close()
    if outcome is None:  # a transport that ended without saying how: a bug, retried
        return Outcome(None, 0.0, error="the transport gave no outcome", error_kind="protocol")
    return outcome
