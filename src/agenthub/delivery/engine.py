"""One pass over all due work, shared by every job runtime: batch due buffers, start due
agent deliveries and outbound sends, and tell the runner when to look again.

A pass is one write transaction (a unit of work has a large fixed cost, so it also builds the
claimed attempts' payloads and reads the next due time) and, in the usual case, a handful of
Core statements."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.delivery.agents import (
    attempt_delivery,
    buffer_due,
    claim_due_attempts,
    create_due_deliveries,
    delivery_due,
    prepare_attempts,
)
from agenthub.delivery.outbound import claim_due_sends, send_due, send_one
from agenthub.hub import Hub
from agenthub.maintenance import purge_attempt_excerpts
from agenthub.models import AgentDelivery, OutboundSend

# At most this much per pass (each pass is one transaction); a full pass wakes the runner.
BUFFERS_PER_PASS = 200
ATTEMPTS_PER_PASS = 50
SENDS_PER_PASS = 50


async def run_due_work(hub: Hub, now: datetime, *, wait: bool = False) -> datetime | None:
    """One pass. In-process, the HTTP calls run on as background tasks (`wait=False`) so the
    runner can start the next pass at once; a Celery task waits for them (`wait=True`).

    The next due time is read in the same transaction, before the calls finish. An outcome
    that makes something due sooner (a retry, messages that arrived in flight, a reply to
    send) wakes the runner itself. In-process, the leases just taken count (should a call
    never record its outcome, its work resumes when the lease runs out); with `wait=True`
    they do not: the calls are over when this returns. Either way, each attempt's lease is
    renewed by the process's heartbeat while it runs (`leases.py`)."""
    await purge_now_and_then(hub, now)
    async with hub.db.transaction() as session:
        created = await create_due_deliveries(session, now, limit=BUFFERS_PER_PASS)
        claims = await claim_due_attempts(
            session, now, lease=hub.settings.delivery_lease, limit=ATTEMPTS_PER_PASS
        )
        attempts = await prepare_attempts(session, hub, claims)
        sends = await claim_due_sends(session, now, limit=SENDS_PER_PASS)
        next_due = await next_work_time(
            session,
            except_deliveries=[c.delivery_id for c, _ in attempts] if wait else None,
            except_sends=[s.message_id for s in sends] if wait else None,
        )
    if (
        created >= BUFFERS_PER_PASS
        or len(claims) >= ATTEMPTS_PER_PASS
        or len(sends) >= SENDS_PER_PASS
    ):
        # A full pass may have left work that was already due: look again at once. (Work due
        # at `now` that a pass leaves is otherwise being handled: rows another pass holds.)
        hub.jobs.wake()
    work = [attempt_delivery(hub, c, p) for c, p in attempts] + [send_one(hub, s) for s in sends]
    if wait:
        await asyncio.gather(*work)
    else:
        for job in work:
            hub.spawn(job)
    return next_due


_NEXT_WORK = select(buffer_due(), delivery_due(), send_due())
_NEXT_WORK_EXCEPT = select(buffer_due(), delivery_due(except_ids=True), send_due(except_ids=True))


async def next_work_time(
    session: AsyncSession,
    *,
    except_deliveries: list[str] | None = None,
    except_sends: list[str] | None = None,
) -> datetime | None:
    """The earliest moment any buffer, delivery or send falls due, in one statement
    (leaving out the deliveries and sends given)."""
    if except_deliveries is None and except_sends is None:
        row = (await session.execute(_NEXT_WORK)).one()
    else:
        params = {
            "b_except_deliveries": except_deliveries or [],
            "b_except_sends": except_sends or [],
        }
        row = (await session.execute(_NEXT_WORK_EXCEPT, params)).one()
    times: list[datetime] = [t for t in row if t is not None]
    return min(times) if times else None


PURGE_EVERY = timedelta(hours=1)


async def purge_now_and_then(hub: Hub, now: datetime) -> None:
    """At most once an hour per process: drop attempt excerpts past their retention
    (`AGENTHUB_ATTEMPT_RETENTION_DAYS`). Its own short transaction, off the pass's."""
    last = hub.excerpts_purged_at
    if last is not None and now - last < PURGE_EVERY:
        return
    hub.excerpts_purged_at = now
    async with hub.db.transaction() as session:
        await purge_attempt_excerpts(session, now, hub.settings.attempt_retention_days)


async def release_leases(hub: Hub) -> None:
    """In-process mode only: this process is the only worker, so any lease left in the
    database belongs to a previous run that died (e.g. `kill -9`) — resume its work now."""
    async with hub.db.transaction() as session:
        await session.execute(update(AgentDelivery).values(locked_until=None))
        await session.execute(update(OutboundSend).values(locked_until=None))
