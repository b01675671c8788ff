"""Hub → agent delivery: the buffer, batching, signed POSTs, retries and replies (docs/agents.md).

The lifecycle of a contact message for one agent:
1. The inbound transaction (`webhooks/service.py: store_contact_messages`) sets the link's
   `due_at`.
2. `create_due_deliveries` turns a due buffer into one `AgentDelivery` holding the message ids
   after the link's `delivered_seq` — unless a delivery for that (chat, agent) is still pending,
   which keeps deliveries sequential and in order.
3. `claim_due_attempts` leases due deliveries for `AGENTHUB_DELIVERY_LEASE_SECONDS`, which the
   process running the attempt keeps renewing until its outcome is recorded (`leases.py`);
   `attempt_delivery` POSTs outside any transaction and records the outcome only if the
   delivery is still on this attempt, so a reply is stored once.
   Of an agent the health breaker holds (`health.py`), only one probe at a time is claimed.
4. A failed delivery may be run again (`replay.py`). While a (chat, agent) has several pending
   deliveries, only one is due; the others wait, with no next attempt time, and the next one
   in creation order is made due when it ends (`_START_NEXT`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Integer,
    Table,
    Text,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub import metrics, transports
from agenthub.chats.handling import record_event, refresh_handled_by, set_needs_human
from agenthub.delivery import events, health
from agenthub.delivery.payload import DeliveryTarget, PreparedDelivery, build_payload
from agenthub.delivery.replies import apply_agent_reply
from agenthub.delivery.timing import backoff_delay, retry_after_delay
from agenthub.delivery.webhook_call import Outcome
from agenthub.hub import Hub
from agenthub.models import (
    ActorType,
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    Channel,
    Chat,
    ChatAgentLink,
    ChatEventKind,
    DeliveryAttempt,
    Message,
    NeedsHumanReason,
    SenderType,
)
from agenthub.models.delivery import AttemptTrigger
from agenthub.uow import commit

log = logging.getLogger(__name__)


LINKS = cast(Table, ChatAgentLink.__table__)
DELIVERIES = cast(Table, AgentDelivery.__table__)
ATTEMPTS = cast(Table, DeliveryAttempt.__table__)
AGENTS = cast(Table, Agent.__table__)
CHATS = cast(Table, Chat.__table__)
CHANNELS = cast(Table, Channel.__table__)
MESSAGES = cast(Table, Message.__table__)
PENDING = str(AgentDeliveryStatus.PENDING)
SCHEDULED = str(AttemptTrigger.SCHEDULED)

# The statements of the hot path are Core and built once (with bind parameters): building
# and hashing a statement per call cost more than running it. Bound values are named `b_…`.


def _pending_delivery_exists() -> Any:
    return (
        select(DELIVERIES.c.id)
        .where(
            DELIVERIES.c.chat_id == LINKS.c.chat_id,
            DELIVERIES.c.agent_id == LINKS.c.agent_id,
            DELIVERIES.c.status == PENDING,
        )
        .exists()
    )


_DUE_LINKS = (
    select(LINKS.c.id, LINKS.c.chat_id, LINKS.c.agent_id, LINKS.c.delivered_seq)
    .select_from(LINKS.join(AGENTS, AGENTS.c.id == LINKS.c.agent_id))
    .where(
        LINKS.c.due_at <= bindparam("b_now"),
        LINKS.c.active.is_(True),
        AGENTS.c.is_active.is_(True),
        ~_pending_delivery_exists(),
    )
    .order_by(LINKS.c.due_at)
    .limit(bindparam("b_limit", type_=Integer()))
    .with_for_update(of=LINKS, skip_locked=True)
)
_WAITING_MESSAGES = (
    select(MESSAGES.c.id, MESSAGES.c.seq)
    .where(
        MESSAGES.c.chat_id == bindparam("b_chat_id"),
        MESSAGES.c.sender_type == str(SenderType.CONTACT),
        MESSAGES.c.seq > bindparam("b_seq"),
    )
    .order_by(MESSAGES.c.seq)
)
_EMPTIED = {"waiting_since": None, "last_arrival_at": None, "due_at": None}
_EMPTY_BUFFER = update(LINKS).where(LINKS.c.id == bindparam("b_id")).values(**_EMPTIED)
_BATCH_BUFFER = (
    update(LINKS)
    .where(LINKS.c.id == bindparam("b_id"))
    .values(**_EMPTIED, delivered_seq=bindparam("b_seq", type_=Integer()))
)
_NEW_DELIVERY = insert(DELIVERIES)


async def create_due_deliveries(session: AsyncSession, now: datetime, limit: int = 200) -> int:
    """Turn every due buffer (with no delivery in flight for its chat+agent) into a delivery."""
    links = await session.execute(_DUE_LINKS, {"b_now": now, "b_limit": limit})
    created = 0
    for link in links.all():
        created += await _batch_waiting_messages(session, link, now)
    return created


async def _batch_waiting_messages(session: AsyncSession, link: Any, now: datetime) -> int:
    rows = (
        await session.execute(
            _WAITING_MESSAGES, {"b_chat_id": link.chat_id, "b_seq": link.delivered_seq}
        )
    ).all()
    if not rows:
        await session.execute(_EMPTY_BUFFER, {"b_id": link.id})
        return 0
    await session.execute(_BATCH_BUFFER, {"b_id": link.id, "b_seq": rows[-1].seq})
    await session.execute(
        _NEW_DELIVERY,
        {
            "chat_id": link.chat_id,
            "agent_id": link.agent_id,
            "message_ids": [row.id for row in rows],
            "next_attempt_at": now,
        },
    )
    return 1


@dataclass(frozen=True)
class ClaimedAttempt:
    delivery_id: str
    attempt_number: int
    # What the attempt needs to build its payload, read along with the claim.
    target: DeliveryTarget | None = field(default=None, compare=False, repr=False)
    # `manual` or `recover`: the attempt an admin asked for, which gets no backoff retries.
    trigger: str = SCHEDULED
    # The one attempt an unavailable agent gets per probe interval (`health.py`).
    probe: bool = False


_DUE_ATTEMPTS = (
    select(
        DELIVERIES.c.id,
        DELIVERIES.c.attempt_count,
        DELIVERIES.c.message_ids,
        DELIVERIES.c.retry_trigger,
        AGENTS.c.id.label("agent_id"),
        AGENTS.c.name.label("agent_name"),
        AGENTS.c.webhook_url,
        AGENTS.c.webhook_secret_encrypted,
        AGENTS.c.previous_webhook_secret_encrypted,
        AGENTS.c.previous_webhook_secret_until,
        AGENTS.c.timeout_seconds,
        AGENTS.c.history_msg_count,
        AGENTS.c.recent_msg_window_minutes,
        AGENTS.c.health_state,
        AGENTS.c.typing_while_working,
        AGENTS.c.transport,
        AGENTS.c.transport_settings,
        AGENTS.c.transport_secret_encrypted,
        LINKS.c.continuation,
        CHATS.c.id.label("chat_id"),
        CHATS.c.name.label("chat_name"),
        CHATS.c.external_id.label("chat_external_id"),
        CHANNELS.c.id.label("channel_id"),
        CHANNELS.c.platform,
        LINKS.c.active.label("link_active"),
    )
    .select_from(
        DELIVERIES.join(AGENTS, AGENTS.c.id == DELIVERIES.c.agent_id)
        .join(CHATS, CHATS.c.id == DELIVERIES.c.chat_id)
        .join(CHANNELS, CHANNELS.c.id == CHATS.c.channel_id)
        .outerjoin(
            LINKS,
            (LINKS.c.chat_id == DELIVERIES.c.chat_id) & (LINKS.c.agent_id == DELIVERIES.c.agent_id),
        )
    )
    .where(
        DELIVERIES.c.status == PENDING,
        DELIVERIES.c.next_attempt_at <= bindparam("b_now"),
        or_(DELIVERIES.c.locked_until.is_(None), DELIVERIES.c.locked_until <= bindparam("b_now")),
        health.claimable(),
    )
    .order_by(DELIVERIES.c.next_attempt_at)
    .limit(bindparam("b_limit", type_=Integer()))
    .with_for_update(of=DELIVERIES, skip_locked=True)
)
_CLAIM = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("b_id"))
    .values(
        attempt_count=bindparam("b_attempt", type_=Integer()),
        locked_until=bindparam("b_until", type_=DELIVERIES.c.locked_until.type),
    )
)


_CANCEL = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("b_id"))
    .values(
        status=str(AgentDeliveryStatus.CANCELLED),
        completed_at=bindparam("b_now", type_=DELIVERIES.c.completed_at.type),
        next_attempt_at=None,
        locked_until=None,
        last_error="cancelled: the agent was paused in this chat while an attempt was lost",
    )
)


async def claim_due_attempts(
    session: AsyncSession,
    now: datetime,
    *,
    lease: timedelta,
    limit: int = 50,
) -> list[ClaimedAttempt]:
    """Lease due deliveries for one attempt each, for `lease` (the heartbeat of the process
    that runs the attempt renews it: `leases.py`); a crashed attempt's lease simply runs out.
    Of an unavailable agent's, only its probe."""
    rows = (await session.execute(_DUE_ATTEMPTS, {"b_now": now, "b_limit": limit})).all()
    paused = [row.id for row in rows if not row.link_active]
    if paused:
        # An attempt lost in flight (its worker died) when the link was paused or removed:
        # pausing left it alone because it was leased; now that the lease ran out, it ends.
        await session.execute(
            _CANCEL, [{"b_id": delivery_id, "b_now": now} for delivery_id in paused]
        )
        rows = [row for row in rows if row.link_active]
    rows, probes = await health.take_probes(session, rows, now, lease)
    if not rows:
        return []
    await session.execute(
        _CLAIM,
        [
            {
                "b_id": row.id,
                "b_attempt": row.attempt_count + 1,
                "b_until": now + lease,
            }
            for row in rows
        ],
    )
    return [
        ClaimedAttempt(
            row.id,
            row.attempt_count + 1,
            _target(row),
            row.retry_trigger or SCHEDULED,
            probe=row.id in probes,
        )
        for row in rows
    ]


def _target(row: Any) -> DeliveryTarget:
    return DeliveryTarget(
        delivery_id=row.id,
        message_ids=list(row.message_ids),
        agent_id=row.agent_id,
        agent_name=row.agent_name,
        webhook_url=row.webhook_url,
        webhook_secret_encrypted=row.webhook_secret_encrypted,
        previous_webhook_secret_encrypted=row.previous_webhook_secret_encrypted,
        previous_webhook_secret_until=row.previous_webhook_secret_until,
        timeout_seconds=row.timeout_seconds,
        history_msg_count=row.history_msg_count,
        recent_msg_window_minutes=row.recent_msg_window_minutes,
        chat_id=row.chat_id,
        chat_name=row.chat_name,
        chat_external_id=row.chat_external_id,
        channel_id=row.channel_id,
        platform=row.platform,
        typing_while_working=bool(row.typing_while_working),
        transport=row.transport or "webhook",
        transport_settings=row.transport_settings,
        transport_secret_encrypted=row.transport_secret_encrypted,
        continuation=row.continuation,
    )


async def prepare_attempts(
    session: AsyncSession, hub: Hub, claims: list[ClaimedAttempt]
) -> list[tuple[ClaimedAttempt, PreparedDelivery]]:
    """The payloads of just-claimed attempts, built in the claiming transaction."""
    return [
        (claim, await build_payload(session, hub, claim.target))
        for claim in claims
        if claim.target is not None
    ]


async def attempt_delivery(hub: Hub, claim: ClaimedAttempt, prepared: PreparedDelivery) -> None:
    """POST one attempt to the agent and record what happened; the process's heartbeat keeps
    the attempt's lease until then."""
    heartbeat = hub.lease_heartbeat
    heartbeat.hold(claim)
    try:
        await _attempt(hub, claim, prepared)
    finally:
        # Recorded (or lost: the lease runs out and the delivery is attempted again).
        heartbeat.release(claim)


async def _attempt(hub: Hub, claim: ClaimedAttempt, prepared: PreparedDelivery) -> None:
    target = prepared.target
    # Before the POST, awaited: the in-process bus only queues it, Redis takes one round trip,
    # and it must reach dashboards before the `agent_done` the outcome raises.
    await hub.events.publish(
        events.agent_working(target.channel_id, target.chat_id, target.agent_id, claim.delivery_id)
    )
    # Best effort, in the background: never delays the POST.
    typing = hub.typing.start(target.chat_id) if target.typing_while_working else None
    try:
        secret = target.transport_secret_encrypted
        outcome = await transports.run(
            hub,
            prepared,
            settings=target.transport_settings,
            secret=hub.secrets.decrypt(secret) if secret else None,
            continuation=target.continuation,
        )
        async with hub.db.session() as session:
            await record_outcome(
                session, hub, claim, outcome, first_message_at=prepared.first_message_at
            )
            await commit(session)  # then the events and wake-ups it raised go out
    finally:
        if typing is not None:  # the attempt is over: no more renewals
            hub.typing.stop(target.chat_id, typing)


def _link_due_at() -> Any:
    """For RETURNING: the due time of the delivery's (chat, agent) buffer, set when messages
    arrived in flight. The delivery's columns are spelled out with their table: RETURNING
    renders columns unqualified, and inside the subquery a bare `chat_id` is the link's."""
    delivery = DELIVERIES.name
    return (
        select(LINKS.c.due_at)
        .where(
            LINKS.c.chat_id == literal_column(f"{delivery}.chat_id"),
            LINKS.c.agent_id == literal_column(f"{delivery}.agent_id"),
        )
        .scalar_subquery()
    )


_AT = DELIVERIES.c.completed_at.type
_OUTCOME_VALUES: dict[str, dict[str, Any]] = {
    "succeeded": {
        "status": str(AgentDeliveryStatus.SUCCEEDED),
        "completed_at": bindparam("b_now", type_=_AT),
        "last_error": None,
    },
    "retry": {
        "last_error": bindparam("b_error", type_=Text()),
        "next_attempt_at": bindparam("b_next", type_=_AT),
    },
    "failed": {
        "status": str(AgentDeliveryStatus.FAILED),
        "completed_at": bindparam("b_now", type_=_AT),
        "last_error": bindparam("b_error", type_=Text()),
    },
    "cancelled": {
        "status": str(AgentDeliveryStatus.CANCELLED),
        "completed_at": bindparam("b_now", type_=_AT),
        "next_attempt_at": None,
        "last_error": bindparam("b_error", type_=Text()),
    },
}
# Only the attempt that holds the delivery records its outcome: (kind, on SQLite) → UPDATE.
_RECORD = {
    (kind, sqlite): update(DELIVERIES)
    .where(
        DELIVERIES.c.id == bindparam("b_id"),
        DELIVERIES.c.status == PENDING,
        DELIVERIES.c.attempt_count == bindparam("b_attempt"),
    )
    .values(locked_until=None, retry_trigger=None, **values)
    .returning(
        DELIVERIES.c.chat_id,
        DELIVERIES.c.agent_id,
        *([_link_due_at().label("link_due_at")] if sqlite else []),
    )
    for kind, values in _OUTCOME_VALUES.items()
    for sqlite in (True, False)
}
_NEW_ATTEMPT = insert(ATTEMPTS)
_LOCKED_LINK_DUE_AT = (
    select(LINKS.c.due_at)
    .where(LINKS.c.chat_id == bindparam("b_chat_id"), LINKS.c.agent_id == bindparam("b_agent_id"))
    .with_for_update()
)
_SET_CONTINUATION = (
    update(LINKS)
    .where(LINKS.c.chat_id == bindparam("b_chat_id"), LINKS.c.agent_id == bindparam("b_agent_id"))
    .values(continuation=bindparam("b_continuation", type_=Text()))
)
# For the metrics: an attempt cancelled by a pause had failed.
_ATTEMPT_OUTCOMES = {
    "succeeded": "success",
    "retry": "retry",
    "failed": "failed",
    "cancelled": "failed",
}


async def record_outcome(
    session: AsyncSession,
    hub: Hub,
    claim: ClaimedAttempt,
    outcome: Outcome,
    *,
    first_message_at: datetime | None = None,
) -> None:
    """Record an attempt's outcome — only if the delivery is still on this attempt (one
    conditional UPDATE: a newer attempt owns it once our lease ran out, so our result is
    dropped). Wakes the runner only when this makes work due that it did not know about."""
    now = hub.clock()
    params: dict[str, Any] = {"b_id": claim.delivery_id, "b_attempt": claim.attempt_number}
    retry_at = None if outcome.succeeded else await _retry_at(session, hub, claim, outcome)
    if outcome.succeeded:
        kind = "succeeded"
        params["b_now"] = now
    elif retry_at is not None:
        kind = "retry"
        params["b_error"] = outcome.error
        params["b_next"] = retry_at
    else:
        kind = "failed"
        params["b_now"] = now
        params["b_error"] = outcome.error or "failed"
    if kind != "succeeded" and not await _link_still_active(session, claim):
        # Paused meanwhile (an operator took the chat over): no retry starts, and no failure
        # calls for a human, who is already there.
        kind = "cancelled"
        params["b_now"] = now
        params["b_error"] = f"cancelled: the agent was paused in this chat ({outcome.error})"
    sqlite = session.get_bind().dialect.name == "sqlite"
    row = (await session.execute(_RECORD[kind, sqlite], params)).first()
    if row is None:
        return  # a newer attempt owns this delivery now (our lease ran out): drop our result
    metrics.agent_attempt(_ATTEMPT_OUTCOMES[kind], outcome.latency_ms)
    await session.execute(
        _NEW_ATTEMPT,
        {
            "delivery_id": claim.delivery_id,
            "attempt_number": claim.attempt_number,
            "started_at": now - timedelta(milliseconds=outcome.latency_ms),
            "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
            "error": outcome.error,
            "error_kind": outcome.error_kind,
            "response_excerpt": outcome.excerpt,
            "remote_address": outcome.remote_address,
            # A probe of an unavailable agent says so: it does not use up the delivery's attempts.
            "trigger": AttemptTrigger.PROBE if claim.probe else claim.trigger,
        },
    )
    if kind == "succeeded":
        await apply_agent_reply(session, hub, row.chat_id, row.agent_id, outcome.body)
        # After the reply (which locks the chat): the link comes after its chat in the order
        # every writer locks them, the inbound path included; the other way round deadlocked.
        kept = claim.target.continuation if claim.target is not None else None
        if outcome.sets_continuation and (claim.target is None or outcome.continuation != kept):
            await session.execute(
                _SET_CONTINUATION,
                {
                    "b_chat_id": row.chat_id,
                    "b_agent_id": row.agent_id,
                    "b_continuation": outcome.continuation,
                },
            )
        metrics.contact_to_agent(first_message_at, now)
    elif kind == "failed":
        await _give_up(session, hub, claim.delivery_id, row.chat_id)
    started_next = kind != "retry" and await _start_next(session, row, now)
    if kind == "retry" or started_next or await _messages_waiting(session, row, sqlite):
        # A retry, the next delivery waiting behind this one, or messages that arrived in
        # flight (the runner left them alone while this delivery was pending): the runner must
        # look again. Otherwise nothing new is due.
        events.wake_after_commit(session, hub)
    await health.record_attempt(
        session,
        hub,
        row.agent_id,
        succeeded=kind == "succeeded",
        counted=kind != "cancelled",
        probe=claim.probe,
        error=outcome.error,
        started_at=now - timedelta(milliseconds=outcome.latency_ms),
    )
    # Last, so dashboards see the reply (or the failure) before the agent stops "working".
    await _announce_done(session, hub, claim, row, kind)


async def _retry_at(
    session: AsyncSession, hub: Hub, claim: ClaimedAttempt, outcome: Outcome
) -> datetime | None:
    """When a failed attempt is tried again; None: never (the delivery fails)."""
    # An attempt an admin asked for is that one attempt: should it fail, the delivery is
    # failed again at once (and a person told), rather than retried for minutes unseen.
    if not outcome.retryable or claim.trigger != SCHEDULED:
        return None
    now = hub.clock()
    if claim.probe:
        # Due again at once, and not used up: the breaker, not the backoff, says when the
        # unavailable agent is tried next.
        return now
    attempt = await health.attempts_toward_limit(session, claim.delivery_id, claim.attempt_number)
    if attempt >= hub.settings.delivery_max_attempts:
        return None
    delay = backoff_delay(attempt, hub.settings.delivery_backoff_base_seconds)
    return now + max(delay, retry_after_delay(outcome.retry_after, now) or delay)


# The oldest delivery of the (chat, agent) waiting behind the one that just ended. A pair's
# deliveries are made one after another (a new one only once none is pending), so creation
# time is their messages' order. The outer conditions are repeated so that, on PostgreSQL, a
# row changed meanwhile (cancelled by a pause) is checked again once its lock is free.
_NEXT_WAITING = (
    select(DELIVERIES.c.id)
    .where(
        DELIVERIES.c.chat_id == bindparam("b_chat_id"),
        DELIVERIES.c.agent_id == bindparam("b_agent_id"),
        DELIVERIES.c.status == PENDING,
        DELIVERIES.c.next_attempt_at.is_(None),
    )
    .order_by(DELIVERIES.c.created_at, DELIVERIES.c.id)
    .limit(1)
    .scalar_subquery()
)
_START_NEXT = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id == _NEXT_WAITING,
        DELIVERIES.c.status == PENDING,
        DELIVERIES.c.next_attempt_at.is_(None),
    )
    .values(next_attempt_at=bindparam("b_now", type_=_AT))
)


async def _start_next(session: AsyncSession, row: Any, now: datetime) -> bool:
    """Make the next waiting delivery of this (chat, agent) due, if any. A statement of its
    own, after the outcome's UPDATE: on PostgreSQL it then sees a retry that committed while
    that UPDATE waited for the delivery's lock."""
    result = await session.execute(
        _START_NEXT, {"b_chat_id": row.chat_id, "b_agent_id": row.agent_id, "b_now": now}
    )
    return bool(getattr(result, "rowcount", 0))


_LOCKED_DELIVERY = (
    select(DELIVERIES.c.chat_id, DELIVERIES.c.agent_id)
    .where(DELIVERIES.c.id == bindparam("b_id"))
    .with_for_update()
)
_LOCKED_LINK_ACTIVE = (
    select(LINKS.c.active)
    .where(LINKS.c.chat_id == bindparam("b_chat_id"), LINKS.c.agent_id == bindparam("b_agent_id"))
    .with_for_update()
)


async def _link_still_active(session: AsyncSession, claim: ClaimedAttempt) -> bool:
    """On the failure path only: is the delivery's link still active? The delivery, then the
    link, are locked in the order a takeover takes them, so a takeover committing meanwhile
    either sees this attempt's outcome or is seen by it."""
    delivery = (await session.execute(_LOCKED_DELIVERY, {"b_id": claim.delivery_id})).first()
    if delivery is None:
        return True  # deleted meanwhile: the conditional UPDATE finds nothing either
    active = await session.scalar(
        _LOCKED_LINK_ACTIVE, {"b_chat_id": delivery.chat_id, "b_agent_id": delivery.agent_id}
    )
    return bool(active)


async def _announce_done(
    session: AsyncSession, hub: Hub, claim: ClaimedAttempt, row: Any, kind: str
) -> None:
    if claim.target is not None:
        channel_id = claim.target.channel_id
    else:  # a claim made without its target (tests): one lookup, off the hot path
        channel_id = str(
            await session.scalar(select(CHATS.c.channel_id).where(CHATS.c.id == row.chat_id))
        )
    done = events.agent_done(channel_id, row.chat_id, row.agent_id, claim.delivery_id, kind)
    events.publish_after_commit(session, hub, done)


async def _messages_waiting(session: AsyncSession, row: Any, sqlite: bool) -> bool:
    if sqlite:
        # Writers are serialised on SQLite: the buffer as the UPDATE saw it is final.
        return row.link_due_at is not None
    # PostgreSQL: lock the buffer row, so an inbound transaction that is filling it either
    # committed before (we see its due_at) or commits after us (and its own wake-up then finds
    # this delivery finished). A plain read could miss it and leave it to the sweep.
    due_at = await session.scalar(
        _LOCKED_LINK_DUE_AT, {"b_chat_id": row.chat_id, "b_agent_id": row.agent_id}
    )
    return due_at is not None


async def _give_up(session: AsyncSession, hub: Hub, delivery_id: str, chat_id: str) -> None:
    delivery = await session.get(AgentDelivery, delivery_id)
    chat = await session.get(Chat, chat_id)
    assert delivery is not None and chat is not None
    now = hub.clock()
    set_needs_human(chat, NeedsHumanReason.DELIVERY_FAILED, now)
    await record_event(
        session,
        chat,
        ChatEventKind.DELIVERY_FAILED,
        actor_type=ActorType.SYSTEM,
        actor_id=None,
        at=now,
        agent_id=delivery.agent_id,
        delivery_id=delivery.id,
        error=delivery.last_error,
    )
    await refresh_handled_by(session, [chat])
    events.publish_after_commit(session, hub, events.delivery_failed(chat, delivery))
    events.publish_after_commit(session, hub, events.chat_updated(chat))


def buffer_due() -> Any:
    """Scalar subquery: the earliest due buffer with no delivery in flight."""
    return (
        select(func.min(LINKS.c.due_at))
        .where(LINKS.c.active.is_(True), ~_pending_delivery_exists())
        .scalar_subquery()
    )


def delivery_due(*, except_ids: bool = False) -> Any:
    """Scalar subquery: the earliest retry or lease expiry of a pending delivery of a healthy
    agent, or probe of an unavailable one (with `except_ids`: not counting the deliveries in
    the bound list `b_except_deliveries`)."""
    healthy = select(
        func.min(func.coalesce(DELIVERIES.c.locked_until, DELIVERIES.c.next_attempt_at)).label("at")
    ).where(DELIVERIES.c.status == PENDING, health.of_healthy_agent())
    probe = health.probe_due()
    if except_ids:
        left_out = DELIVERIES.c.id.not_in(bindparam("b_except_deliveries", expanding=True))
        healthy = healthy.where(left_out)
        probe = probe.where(left_out)
    both = union_all(healthy, probe).subquery()
    return select(func.min(both.c.at)).scalar_subquery()
