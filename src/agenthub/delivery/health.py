"""The agent health breaker (docs/agents.md, "When the agent is down").

Failed attempts in a row across an agent's chats are counted on the agent (a success resets
the count; cancelled and dropped outcomes count for nothing). At
`AGENTHUB_AGENT_FAILURE_THRESHOLD` the agent is `unavailable`, and then:

- The claim query takes none of its deliveries but one: its oldest due delivery, once
  `next_probe_at` has come (`claimable`). The probe is won with a conditional UPDATE of the
  agent row (`take_probes`), so two workers never probe the same agent at once. Until the
  probe is recorded the next one waits for its lease (which the heartbeat of the process
  running the probe renews, `leases.py`, along with `next_probe_at`); then it is due
  `AGENTHUB_AGENT_PROBE_SECONDS` after the probe started. The next-due-time query counts the
  probe time, not the waiting deliveries, so a runner does not spin on them.
- A probe is an attempt of its delivery (same webhook-id, counted in `attempt_count`, which
  stays the lease's token), but a failed one is always retried, due again at once, and does
  not use up the delivery's attempts: it is logged with `trigger: "probe"`, and those
  attempts are left out of the max-attempts count and the backoff.
- At each failed probe, chats whose delivery has waited (since it was made, or since the agent
  became unavailable) longer than `AGENTHUB_AGENT_UNAVAILABLE_HANDOFF_SECONDS` get
  `needs_human` (`agent_unavailable`), once per chat and outage: a `handoff` event of the
  system on the chat's timeline, at or after `health_since`, records that it was done.
- The first success makes the agent healthy: its waiting deliveries are due again at once
  (each (chat, agent) still one at a time: the claim query's rules are unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.handling import record_event, refresh_handled_by, set_needs_human
from agenthub.delivery import events
from agenthub.hub import Hub
from agenthub.models import (
    ActorType,
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    Chat,
    ChatEvent,
    ChatEventKind,
    DeliveryAttempt,
    NeedsHumanReason,
)
from agenthub.models.agent import AgentHealth
from agenthub.models.delivery import AttemptTrigger

AGENTS = cast(Table, Agent.__table__)
DELIVERIES = cast(Table, AgentDelivery.__table__)
ATTEMPTS = cast(Table, DeliveryAttempt.__table__)
EVENTS = cast(Table, ChatEvent.__table__)
PENDING = str(AgentDeliveryStatus.PENDING)
HEALTHY = AgentHealth.HEALTHY.value
UNAVAILABLE = AgentHealth.UNAVAILABLE.value
_AT = AGENTS.c.next_probe_at.type


def _oldest_due_of_agent() -> Any:
    oldest = DELIVERIES.alias("oldest")
    return (
        select(oldest.c.id)
        .where(
            oldest.c.agent_id == AGENTS.c.id,
            oldest.c.status == PENDING,
            oldest.c.next_attempt_at <= bindparam("b_now"),
            or_(oldest.c.locked_until.is_(None), oldest.c.locked_until <= bindparam("b_now")),
        )
        .order_by(oldest.c.created_at, oldest.c.id)
        .limit(1)
        .scalar_subquery()
    )


def claimable() -> Any:
    """For the claim query (joined with the agent): every due delivery of a healthy agent; of
    an unavailable one's, only its oldest due delivery, once its probe is due. The cheap test
    first: SQLite evaluates OR left to right and skips the subquery for healthy agents."""
    return or_(
        AGENTS.c.health_state == HEALTHY,
        and_(
            AGENTS.c.next_probe_at <= bindparam("b_now"),
            DELIVERIES.c.id == _oldest_due_of_agent(),
        ),
    )


def probe_due() -> Any:
    """A select of `at`: when an unavailable agent can next be probed — its probe time, or
    later, when its earliest delivery falls due (a retry's time, or an attempt's lease)."""
    ready = func.coalesce(DELIVERIES.c.locked_until, DELIVERIES.c.next_attempt_at)
    later = case((ready > AGENTS.c.next_probe_at, ready), else_=AGENTS.c.next_probe_at)
    return (
        select(func.min(later).label("at"))
        .select_from(DELIVERIES.join(AGENTS, AGENTS.c.id == DELIVERIES.c.agent_id))
        .where(
            DELIVERIES.c.status == PENDING,
            AGENTS.c.health_state == UNAVAILABLE,
            ready.is_not(None),
        )
    )


def of_healthy_agent() -> Any:
    """For the next-due-time query: the delivery's agent is not held by the breaker."""
    return (
        ~select(AGENTS.c.id)
        .where(AGENTS.c.id == DELIVERIES.c.agent_id, AGENTS.c.health_state == UNAVAILABLE)
        .exists()
    )


_WIN_PROBE = (
    update(AGENTS)
    .where(
        AGENTS.c.id == bindparam("b_id"),
        AGENTS.c.health_state == UNAVAILABLE,
        AGENTS.c.next_probe_at <= bindparam("b_now"),
    )
    .values(next_probe_at=bindparam("b_next", type_=_AT))
)


async def take_probes(
    session: AsyncSession, rows: Sequence[Any], now: datetime, lease: timedelta
) -> tuple[list[Any], set[str]]:
    """Of the claim query's rows, those to attempt, and which of them are probes. A probe row
    is kept only if this transaction moved its agent's probe time on (on PostgreSQL another
    worker may have just done so: then the row is left alone). Until the probe is recorded,
    the next one waits for its lease to run out (renewed while the probe is in flight, by
    `leases.LeaseHeartbeat`): one probe at a time, even a lost one."""
    kept, probes = [], set()
    for row in rows:
        if row.health_state == HEALTHY:
            kept.append(row)
            continue
        lease_end = now + lease
        won = await session.execute(
            _WIN_PROBE, {"b_id": row.agent_id, "b_now": now, "b_next": lease_end}
        )
        if getattr(won, "rowcount", 0):
            kept.append(row)
            probes.add(row.id)
    return kept, probes


_PROBES_MADE = select(func.count()).where(
    ATTEMPTS.c.delivery_id == bindparam("b_id"),
    ATTEMPTS.c.trigger == AttemptTrigger.PROBE.value,
    ATTEMPTS.c.error.is_not(None),
)


async def attempts_toward_limit(session: AsyncSession, delivery_id: str, attempt: int) -> int:
    """The delivery's attempts so far that count toward `AGENTHUB_DELIVERY_MAX_ATTEMPTS` and
    its backoff: all but its failed probes."""
    if attempt == 1:
        return 1
    probes = await session.scalar(_PROBES_MADE, {"b_id": delivery_id})
    return attempt - int(probes or 0)


# A success: the count starts again, and an unavailable agent is healthy from now. The UPDATE
# matches nothing for a healthy agent with no failures (the usual case: no row lock taken).
_SUCCEEDED = (
    update(AGENTS)
    .where(
        AGENTS.c.id == bindparam("b_id"),
        or_(AGENTS.c.consecutive_failures > 0, AGENTS.c.health_state != HEALTHY),
    )
    .values(
        consecutive_failures=0,
        health_state=HEALTHY,
        health_since=case(
            (AGENTS.c.health_state != HEALTHY, bindparam("b_now", type_=_AT)),
            else_=AGENTS.c.health_since,
        ),
        next_probe_at=None,
    )
    .returning(AGENTS.c.health_since)
)
_FAILED = (
    update(AGENTS)
    .where(AGENTS.c.id == bindparam("b_id"))
    .values(
        consecutive_failures=AGENTS.c.consecutive_failures + 1,
        health_last_error=bindparam("b_error"),
    )
    .returning(AGENTS.c.consecutive_failures, AGENTS.c.health_state)
)
_TRIP = (
    update(AGENTS)
    .where(AGENTS.c.id == bindparam("b_id"), AGENTS.c.health_state == HEALTHY)
    .values(
        health_state=UNAVAILABLE,
        health_since=bindparam("b_now", type_=_AT),
        next_probe_at=bindparam("b_next", type_=_AT),
    )
)
_PROBE_FAILED = (
    update(AGENTS)
    .where(AGENTS.c.id == bindparam("b_id"), AGENTS.c.health_state == UNAVAILABLE)
    .values(next_probe_at=bindparam("b_next", type_=_AT))
)
# Back: its deliveries held in a backoff are due now (each pair's one due delivery only).
# Rows a pass holds are skipped, not waited for: that pass may be waiting for this agent row.
_IN_BACKOFF = (
    select(DELIVERIES.c.id)
    .where(
        DELIVERIES.c.agent_id == bindparam("b_id"),
        DELIVERIES.c.status == PENDING,
        DELIVERIES.c.next_attempt_at > bindparam("b_now"),
        DELIVERIES.c.locked_until.is_(None),
    )
    .with_for_update(skip_locked=True)
)
_RELEASE_WAITING = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id.in_(_IN_BACKOFF))
    .values(next_attempt_at=bindparam("b_now", type_=_AT))
)


async def record_attempt(
    session: AsyncSession,
    hub: Hub,
    agent_id: str,
    *,
    succeeded: bool,
    counted: bool,
    probe: bool,
    error: str | None,
    started_at: datetime,
) -> None:
    """Count one recorded attempt of the agent (`counted`: False for a cancelled one). Called
    last by `record_outcome`: the agent row is locked after the delivery and the link."""
    now = hub.clock()
    if succeeded:
        row = (await session.execute(_SUCCEEDED, {"b_id": agent_id, "b_now": now})).first()
        if row is not None and row.health_since == now:
            await session.execute(_RELEASE_WAITING, {"b_id": agent_id, "b_now": now})
            _announce(session, hub, agent_id, HEALTHY, now, None)
            events.wake_after_commit(session, hub)
        return
    if counted:
        row = (await session.execute(_FAILED, {"b_id": agent_id, "b_error": error})).first()
        if row is not None and row.health_state == HEALTHY:
            if row.consecutive_failures >= hub.settings.agent_failure_threshold:
                await _trip(session, hub, agent_id, now, error)
            return
    if probe:
        # The next probe one interval after this one started, and not before it ended.
        next_probe = max(now, started_at + timedelta(seconds=hub.settings.agent_probe_seconds))
        await session.execute(_PROBE_FAILED, {"b_id": agent_id, "b_next": next_probe})
        await hand_off_waiting_chats(session, hub, agent_id, now)
        events.wake_after_commit(session, hub)


async def _trip(
    session: AsyncSession, hub: Hub, agent_id: str, now: datetime, error: str | None
) -> None:
    first_probe = now + timedelta(seconds=hub.settings.agent_probe_seconds)
    tripped = await session.execute(_TRIP, {"b_id": agent_id, "b_now": now, "b_next": first_probe})
    if getattr(tripped, "rowcount", 0):
        _announce(session, hub, agent_id, UNAVAILABLE, now, error)


def _announce(
    session: AsyncSession,
    hub: Hub,
    agent_id: str,
    state: str,
    since: datetime,
    error: str | None,
) -> None:
    event = events.agent_health(agent_id, state, since, error)
    events.publish_after_commit(session, hub, event)


def _handed_off_in_this_outage() -> Any:
    return (
        select(EVENTS.c.id)
        .where(
            EVENTS.c.chat_id == DELIVERIES.c.chat_id,
            EVENTS.c.event == ChatEventKind.HANDOFF.value,
            EVENTS.c.actor_type == ActorType.SYSTEM.value,
            EVENTS.c.created_at >= AGENTS.c.health_since,
        )
        .exists()
    )


_LONG_WAITING_CHATS = (
    select(DELIVERIES.c.chat_id)
    .distinct()
    .select_from(DELIVERIES.join(AGENTS, AGENTS.c.id == DELIVERIES.c.agent_id))
    .where(
        DELIVERIES.c.agent_id == bindparam("b_agent_id"),
        DELIVERIES.c.status == PENDING,
        AGENTS.c.health_state == UNAVAILABLE,
        # Waiting since it was made, or since the agent became unavailable: the later.
        DELIVERIES.c.created_at <= bindparam("b_cutoff"),
        AGENTS.c.health_since <= bindparam("b_cutoff"),
        ~_handed_off_in_this_outage(),
    )
)


async def hand_off_waiting_chats(
    session: AsyncSession, hub: Hub, agent_id: str, now: datetime
) -> None:
    """Flag for a person each chat that has waited too long for the unavailable agent."""
    cutoff = now - timedelta(seconds=hub.settings.agent_unavailable_handoff_seconds)
    chat_ids = await session.scalars(
        _LONG_WAITING_CHATS, {"b_agent_id": agent_id, "b_cutoff": cutoff}
    )
    chats = [chat for chat_id in chat_ids if (chat := await session.get(Chat, chat_id))]
    for chat in chats:
        set_needs_human(chat, NeedsHumanReason.AGENT_UNAVAILABLE, now)
        await record_event(
            session,
            chat,
            ChatEventKind.HANDOFF,
            actor_type=ActorType.SYSTEM,
            actor_id=None,
            at=now,
            agent_id=agent_id,
            reason=NeedsHumanReason.AGENT_UNAVAILABLE.value,
        )
    if chats:
        await refresh_handled_by(session, chats)
    for chat in chats:
        events.publish_after_commit(session, hub, events.chat_updated(chat))
