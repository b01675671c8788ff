"""Running failed agent deliveries again: one, by an admin's retry; or every failure of an agent
in a time window, by a recover once the agent is back (docs/operators.md).

A retried delivery keeps its id, which is the `webhook-id` of all its attempts (so an agent
that did get an earlier one recognises it), and its messages; it becomes pending again. Order
and exactly-once rest on one rule: of the pending deliveries of a (chat, agent), one at most
is due. The others wait with no next attempt time, and the next one in creation order is made
due when an attempt ends (`agents._START_NEXT`). The claim query needs no change for that, and
on PostgreSQL the rule holds through row locks alone: a claim re-checks the row it locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.audit import service as audit
from agenthub.chats.schemas import DeliveryAttemptOut, DeliveryOut
from agenthub.chats.service import delivery_out
from agenthub.delivery import events
from agenthub.errors import Conflict, InvalidInput, NotFound
from agenthub.hub import Hub
from agenthub.models import (
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    ChatAgentLink,
    DeliveryAttempt,
)
from agenthub.models.delivery import AttemptTrigger

MAX_RECOVER_WINDOW = timedelta(days=14)


async def retry_delivery(session: AsyncSession, hub: Hub, delivery_id: str) -> AgentDelivery:
    """Run a failed delivery again, now (or right after the attempt to the same agent in the
    same chat that is in flight)."""
    delivery = await session.get(AgentDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise NotFound("Delivery not found")
    if delivery.status != AgentDeliveryStatus.FAILED:
        raise Conflict(f"Only a failed delivery can be retried; this one is {delivery.status}")
    pair = (delivery.chat_id, delivery.agent_id)
    if not await _requeue(session, hub, pair, [delivery], AttemptTrigger.MANUAL):
        raise Conflict(
            "The agent is paused in this chat, no longer linked to it, or inactive: "
            "resume or link it first"
        )
    events.wake_after_commit(session, hub)
    audit.record(session, "delivery.retried", ("delivery", delivery.id), {"chat_id": pair[0]})
    return delivery


async def recover_agent(
    session: AsyncSession, hub: Hub, agent_id: str, since: datetime, until: datetime | None
) -> int:
    """Retry every failed delivery of the agent created in [since, until) (until: now).
    Deliveries in chats where the agent is paused or unlinked are left failed. Returns how
    many were retried."""
    until = until or hub.clock()
    check_window(since, until)
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFound("Agent not found")
    if not agent.is_active:
        raise Conflict("The agent is inactive: activate it first")
    failed = await session.scalars(
        select(AgentDelivery)
        .where(
            AgentDelivery.agent_id == agent_id,
            AgentDelivery.status == AgentDeliveryStatus.FAILED,
            AgentDelivery.created_at >= since,
            AgentDelivery.created_at < until,
        )
        .order_by(AgentDelivery.chat_id, AgentDelivery.created_at, AgentDelivery.id)
        .with_for_update()
    )
    retried = 0
    for chat_id, group in groupby(list(failed), key=lambda d: d.chat_id):
        deliveries = list(group)
        if await _requeue(session, hub, (chat_id, agent_id), deliveries, AttemptTrigger.RECOVER):
            retried += len(deliveries)
    if retried:
        events.wake_after_commit(session, hub)
    window = {"since": since.isoformat(), "until": until.isoformat(), "deliveries": retried}
    audit.record(session, "agent.recovered", ("agent", agent_id), window)
    return retried


def check_window(since: datetime, until: datetime) -> None:
    if until < since:
        raise InvalidInput.at(("body", "until"), "until_before_since", "`until` is before `since`")
    if until - since > MAX_RECOVER_WINDOW:
        raise InvalidInput.at(
            ("body", "since"),
            "window_too_long",
            f"The window is longer than {MAX_RECOVER_WINDOW.days} days",
        )


async def _requeue(
    session: AsyncSession,
    hub: Hub,
    pair: tuple[str, str],
    deliveries: Sequence[AgentDelivery],
    trigger: AttemptTrigger,
) -> bool:
    """Make failed deliveries of one (chat, agent) pending again, and pick the one due; False
    (nothing changed) when the link is paused or gone, or the agent inactive."""
    # Locks in the order every writer takes them: the pair's pending deliveries (the due one
    # first, as an attempt recording its outcome does), then the link. Read again once the
    # link is held: on PostgreSQL a batch of new messages may have been made meanwhile (a pass
    # makes one holding the link), and none can be made now.
    await _lock_pending(session, pair)
    if not await _link_active(session, pair):
        return False
    pending = await _lock_pending(session, pair)
    for delivery in deliveries:
        delivery.status = AgentDeliveryStatus.PENDING
        delivery.completed_at = None
        delivery.next_attempt_at = None
        delivery.locked_until = None
        delivery.retry_trigger = trigger
    _choose_due([*pending, *deliveries], hub.clock())
    await session.flush()
    return True


def _choose_due(pending: Sequence[AgentDelivery], now: datetime) -> None:
    """The oldest pending delivery of the pair is the one due (now, or at the retry time it
    had); the others wait. Unless an attempt holds the pair: everything waits for its end."""
    if any(delivery.locked_until is not None for delivery in pending):
        return
    # Creation time is the pair's message order: its deliveries are made one after another.
    first = min(pending, key=lambda delivery: (delivery.created_at, delivery.id))
    for delivery in pending:
        if delivery is not first:
            delivery.next_attempt_at = None
    if first.next_attempt_at is None:
        first.next_attempt_at = now


async def _lock_pending(session: AsyncSession, pair: tuple[str, str]) -> list[AgentDelivery]:
    chat_id, agent_id = pair
    rows = await session.scalars(
        select(AgentDelivery)
        .where(
            AgentDelivery.chat_id == chat_id,
            AgentDelivery.agent_id == agent_id,
            AgentDelivery.status == AgentDeliveryStatus.PENDING,
        )
        .order_by(
            AgentDelivery.next_attempt_at.is_(None),
            AgentDelivery.created_at,
            AgentDelivery.id,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def _link_active(session: AsyncSession, pair: tuple[str, str]) -> bool:
    chat_id, agent_id = pair
    row = (
        await session.execute(
            select(ChatAgentLink.active, Agent.is_active)
            .join(Agent, Agent.id == ChatAgentLink.agent_id)
            .where(ChatAgentLink.chat_id == chat_id, ChatAgentLink.agent_id == agent_id)
            .with_for_update(of=ChatAgentLink)
        )
    ).first()
    return row is not None and bool(row.active) and bool(row.is_active)


async def present_delivery(session: AsyncSession, delivery: AgentDelivery) -> DeliveryOut:
    """The delivery as `GET /chats/{id}/deliveries` shows it, with its attempts."""
    attempts = await session.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id == delivery.id)
        .order_by(DeliveryAttempt.attempt_number)
    )
    return delivery_out(delivery, [DeliveryAttemptOut.model_validate(a) for a in attempts])
