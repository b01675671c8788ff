"""One pass over all due work, shared by every job runtime: batch due buffers, start due
agent deliveries and outbound sends, and tell the runner when to look again."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import update

from agenthub.delivery.agents import (
    attempt_delivery,
    claim_due_attempts,
    create_due_deliveries,
    next_due_time,
)
from agenthub.delivery.outbound import claim_due_sends, next_send_time, send_one
from agenthub.hub import Hub
from agenthub.models import AgentDelivery, OutboundSend


async def run_due_work(hub: Hub, now: datetime, *, wait: bool = False) -> datetime | None:
    """One pass. In-process, the HTTP calls run on as background tasks (`wait=False`) so the
    runner can start the next pass at once; a Celery task waits for them (`wait=True`)."""
    async with hub.db.transaction() as session:
        await create_due_deliveries(session, now)
        attempts = await claim_due_attempts(session, now)
        sends = await claim_due_sends(session, now)
    work = [attempt_delivery(hub, a) for a in attempts] + [send_one(hub, s) for s in sends]
    if wait:
        await asyncio.gather(*work)
    else:
        for job in work:
            hub.spawn(job)
    async with hub.db.session(read_only=True) as session:
        times = [t for t in (await next_due_time(session), await next_send_time(session)) if t]
    return min(times) if times else None


async def release_leases(hub: Hub) -> None:
    """In-process mode only: this process is the only worker, so any lease left in the
    database belongs to a previous run that died (e.g. `kill -9`) — resume its work now."""
    async with hub.db.transaction() as session:
        await session.execute(update(AgentDelivery).values(locked_until=None))
        await session.execute(update(OutboundSend).values(locked_until=None))
