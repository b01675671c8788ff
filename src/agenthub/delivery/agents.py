"""Hub → agent delivery: the buffer, batching, signed POSTs, retries and replies (contract §5).

The lifecycle of a contact message for one agent:
1. `buffer_contact_message` (inside the inbound transaction) sets the link's `due_at`.
2. `create_due_deliveries` turns a due buffer into one `AgentDelivery` holding the message ids
   after the link's `delivered_seq` — unless a delivery for that (chat, agent) is still pending,
   which keeps deliveries sequential and in order.
3. `claim_due_attempts` leases due deliveries; `attempt_delivery` POSTs outside any transaction
   and records the outcome only if its lease is still the current one, so a reply is stored once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx2
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.delivery import events
from agenthub.delivery.payload import build_payload, sign_headers
from agenthub.delivery.replies import apply_agent_reply
from agenthub.delivery.timing import backoff_delay, buffer_due_at, retry_after_delay
from agenthub.hub import Hub
from agenthub.models import (
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    Chat,
    ChatAgentLink,
    DeliveryAttempt,
    Message,
    SenderType,
)
from agenthub.netguard import ensure_public_url
from agenthub.uow import commit

log = logging.getLogger(__name__)
LEASE_MARGIN = timedelta(seconds=30)


async def buffer_contact_message(session: AsyncSession, chat: Chat, arrived_at: datetime) -> bool:
    """Add a just-stored contact message to the buffer of each active agent of the chat."""
    rows = await session.execute(
        select(ChatAgentLink, Agent)
        .join(Agent, Agent.id == ChatAgentLink.agent_id)
        .where(
            ChatAgentLink.chat_id == chat.id,
            ChatAgentLink.active.is_(True),
            Agent.is_active.is_(True),
        )
    )
    buffered = False
    for link, agent in rows:
        link.waiting_since = link.waiting_since or arrived_at
        link.last_arrival_at = arrived_at
        link.due_at = buffer_due_at(
            link.waiting_since, arrived_at, agent.buffer_time_seconds, agent.max_buffer_seconds
        )
        buffered = True
    return buffered


def _pending_delivery_exists() -> Any:
    return (
        select(AgentDelivery.id)
        .where(
            AgentDelivery.chat_id == ChatAgentLink.chat_id,
            AgentDelivery.agent_id == ChatAgentLink.agent_id,
            AgentDelivery.status == AgentDeliveryStatus.PENDING,
        )
        .exists()
    )


async def create_due_deliveries(session: AsyncSession, now: datetime, limit: int = 200) -> int:
    """Turn every due buffer (with no delivery in flight for its chat+agent) into a delivery."""
    links = await session.scalars(
        select(ChatAgentLink)
        .join(Agent, Agent.id == ChatAgentLink.agent_id)
        .where(
            ChatAgentLink.due_at <= now,
            ChatAgentLink.active.is_(True),
            Agent.is_active.is_(True),
            ~_pending_delivery_exists(),
        )
        .order_by(ChatAgentLink.due_at)
        .limit(limit)
        .with_for_update(of=ChatAgentLink, skip_locked=True)
    )
    created = 0
    for link in links.all():
        created += await _batch_waiting_messages(session, link, now)
    return created


async def _batch_waiting_messages(session: AsyncSession, link: ChatAgentLink, now: datetime) -> int:
    rows = (
        await session.execute(
            select(Message.id, Message.seq)
            .where(
                Message.chat_id == link.chat_id,
                Message.sender_type == SenderType.CONTACT,
                Message.seq > link.delivered_seq,
            )
            .order_by(Message.seq)
        )
    ).all()
    link.waiting_since = link.last_arrival_at = link.due_at = None
    if not rows:
        return 0
    link.delivered_seq = rows[-1].seq
    session.add(
        AgentDelivery(
            chat_id=link.chat_id,
            agent_id=link.agent_id,
            message_ids=[row.id for row in rows],
            next_attempt_at=now,
        )
    )
    return 1


@dataclass(frozen=True)
class ClaimedAttempt:
    delivery_id: str
    attempt_number: int


async def claim_due_attempts(
    session: AsyncSession, now: datetime, limit: int = 50
) -> list[ClaimedAttempt]:
    """Lease due deliveries for one attempt each; a crashed attempt's lease simply expires."""
    rows = await session.execute(
        select(AgentDelivery, Agent.timeout_seconds)
        .join(Agent, Agent.id == AgentDelivery.agent_id)
        .where(
            AgentDelivery.status == AgentDeliveryStatus.PENDING,
            AgentDelivery.next_attempt_at <= now,
            or_(AgentDelivery.locked_until.is_(None), AgentDelivery.locked_until <= now),
        )
        .order_by(AgentDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=AgentDelivery, skip_locked=True)
    )
    claimed = []
    for delivery, timeout_seconds in rows:
        delivery.attempt_count += 1
        delivery.locked_until = now + timedelta(seconds=timeout_seconds) + LEASE_MARGIN
        claimed.append(ClaimedAttempt(delivery.id, delivery.attempt_count))
    return claimed


@dataclass
class Outcome:
    status_code: int | None
    latency_ms: float
    error: str | None = None
    body: Any = None
    retry_after: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        code = self.status_code
        return code is None or code == 429 or code >= 500


async def attempt_delivery(hub: Hub, claim: ClaimedAttempt) -> None:
    """POST one attempt to the agent and record what happened."""
    async with hub.db.session(read_only=True) as session:
        prepared = await build_payload(session, hub, claim.delivery_id)
    if prepared is None:
        return
    outcome = await _post(hub, prepared.agent, prepared.body, claim.delivery_id, prepared.secret)
    async with hub.db.session() as session:
        await record_outcome(session, hub, claim, outcome)
        await commit(session)  # then the events and wake-ups it raised go out


async def _post(hub: Hub, agent: Agent, body: bytes, delivery_id: str, secret: str) -> Outcome:
    started = time.perf_counter()
    try:
        await ensure_public_url(
            agent.webhook_url, allow_private=hub.settings.private_agent_urls_allowed
        )
        response = await hub.http.post(
            agent.webhook_url,
            content=body,
            headers=sign_headers(secret, delivery_id, body),
            timeout=agent.timeout_seconds,
        )
    except httpx2.TimeoutException:
        return Outcome(None, _ms(started), error=f"timeout after {agent.timeout_seconds:g}s")
    except (httpx2.HTTPError, OSError, Exception) as exc:
        return Outcome(None, _ms(started), error=f"{type(exc).__name__}: {exc}"[:500])
    latency = _ms(started)
    parsed: Any = None
    if 200 <= response.status_code < 300 and response.content:
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
    error = (
        None
        if 200 <= response.status_code < 300
        else f"HTTP {response.status_code}: {response.text[:200]}"
    )
    return Outcome(
        response.status_code, latency, error, parsed, response.headers.get("retry-after")
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def record_outcome(
    session: AsyncSession, hub: Hub, claim: ClaimedAttempt, outcome: Outcome
) -> None:
    delivery = await session.scalar(
        select(AgentDelivery).where(AgentDelivery.id == claim.delivery_id).with_for_update()
    )
    if (
        delivery is None
        or delivery.status != AgentDeliveryStatus.PENDING
        or delivery.attempt_count != claim.attempt_number
    ):
        return  # a newer attempt owns this delivery now (our lease ran out): drop our result
    now = hub.clock()
    session.add(
        DeliveryAttempt(
            delivery_id=delivery.id,
            attempt_number=claim.attempt_number,
            started_at=now - timedelta(milliseconds=outcome.latency_ms),
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
        )
    )
    delivery.locked_until = None
    if outcome.succeeded:
        delivery.status = AgentDeliveryStatus.SUCCEEDED
        delivery.completed_at = now
        delivery.last_error = None
        await apply_agent_reply(session, hub, delivery, outcome.body)
    elif outcome.retryable and delivery.attempt_count < hub.settings.delivery_max_attempts:
        delivery.last_error = outcome.error
        delay = backoff_delay(delivery.attempt_count, hub.settings.delivery_backoff_base_seconds)
        delivery.next_attempt_at = now + max(
            delay, retry_after_delay(outcome.retry_after, now) or delay
        )
    else:
        await _give_up(session, hub, delivery, outcome.error or "failed", now)
    events.wake_after_commit(session, hub)


async def _give_up(
    session: AsyncSession, hub: Hub, delivery: AgentDelivery, error: str, now: datetime
) -> None:
    delivery.status = AgentDeliveryStatus.FAILED
    delivery.completed_at = now
    delivery.last_error = error
    chat = await session.get(Chat, delivery.chat_id)
    assert chat is not None
    chat.needs_human = True
    await session.flush()
    events.publish_after_commit(session, hub, events.delivery_failed(chat, delivery))
    events.publish_after_commit(session, hub, events.chat_updated(chat))


async def next_due_time(session: AsyncSession) -> datetime | None:
    """The earliest moment any buffer or delivery falls due (for the runner's sleep)."""
    buffered = await session.scalar(
        select(func.min(ChatAgentLink.due_at)).where(
            ChatAgentLink.active.is_(True), ~_pending_delivery_exists()
        )
    )
    retry = await session.scalar(
        select(
            func.min(func.coalesce(AgentDelivery.locked_until, AgentDelivery.next_attempt_at))
        ).where(AgentDelivery.status == AgentDeliveryStatus.PENDING)
    )
    candidates = [t for t in (buffered, retry) if t is not None]
    return min(candidates) if candidates else None
