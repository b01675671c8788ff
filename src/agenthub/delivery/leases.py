"""Delivery leases, renewed by a heartbeat while their attempts are in flight.

`claim_due_attempts` leases a delivery for `AGENTHUB_DELIVERY_LEASE_SECONDS` (5 s), whatever
the agent's timeout. While the attempt runs, the process running it keeps the lease: one
`LeaseHeartbeat` per Hub (so per process, in-process runner or Celery pool process alike)
renews the leases of all the attempts it has in flight in one UPDATE every third of the lease,
and stops renewing an attempt once its outcome is recorded. A process that dies (`kill -9`)
stops renewing, so its deliveries are claimed again, with the same webhook-id, within a lease
of its death rather than after the agent's timeout.

The renewal only touches a delivery that is still pending on that same attempt and still
leased: a lease that ran out and was taken by a newer attempt is never extended (the older
attempt's outcome is then dropped by `record_outcome`'s conditional UPDATE), and a recorded
outcome (which clears the lease) is not leased again. Rows another transaction holds (an
outcome being recorded) are skipped, not waited for: the lease has two beats to spare.

An unavailable agent's probe also holds the agent's `next_probe_at` (`health.take_probes`),
which is renewed the same way, in a second statement run only while a probe is in flight.

The heartbeat is an asyncio task that exists only while attempts are in flight, so an idle
process costs nothing. A renewal that fails (the database away) is logged and tried again at
the next beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.models import Agent, AgentDelivery, AgentDeliveryStatus
from agenthub.models.agent import AgentHealth

if TYPE_CHECKING:
    from agenthub.delivery.agents import ClaimedAttempt
    from agenthub.hub import Hub

log = logging.getLogger(__name__)

DELIVERIES = cast(Table, AgentDelivery.__table__)
AGENTS = cast(Table, Agent.__table__)
PENDING = str(AgentDeliveryStatus.PENDING)
_AT = DELIVERIES.c.locked_until.type


def _still_held(param: str) -> list[Any]:
    """The deliveries of the bound (delivery id, attempt number) pairs that are still pending
    on that attempt, with their lease held."""
    return [
        tuple_(DELIVERIES.c.id, DELIVERIES.c.attempt_count).in_(bindparam(param, expanding=True)),
        DELIVERIES.c.status == PENDING,
        DELIVERIES.c.locked_until.is_not(None),
    ]


_RENEWABLE = select(DELIVERIES.c.id).where(*_still_held("b_held")).with_for_update(skip_locked=True)
RENEW = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id.in_(_RENEWABLE), *_still_held("b_held"))
    .values(locked_until=bindparam("b_until", type_=_AT))
)
_PROBING = (
    select(AGENTS.c.id)
    .where(
        AGENTS.c.id.in_(select(DELIVERIES.c.agent_id).where(*_still_held("b_probes"))),
        AGENTS.c.health_state == AgentHealth.UNAVAILABLE.value,
        # Only ever later: a probe recorded meanwhile set the next one (usually further off).
        AGENTS.c.next_probe_at < bindparam("b_until", type_=_AT),
    )
    .with_for_update(skip_locked=True)
)
RENEW_PROBES = (
    update(AGENTS)
    .where(
        AGENTS.c.id.in_(_PROBING),
        AGENTS.c.health_state == AgentHealth.UNAVAILABLE.value,
        AGENTS.c.next_probe_at < bindparam("b_until", type_=_AT),
    )
    .values(next_probe_at=bindparam("b_until", type_=_AT))
)


async def renew_leases(
    session: AsyncSession,
    held: list[tuple[str, int]],
    until: datetime,
    *,
    probes: list[tuple[str, int]] | None = None,
) -> int:
    """Extend to `until` the leases of the (delivery id, attempt number) pairs given that
    their attempt still holds, in one statement (and, for probes in flight, their agents'
    `next_probe_at`, in a second); returns how many leases were renewed."""
    if not held:
        return 0
    result = await session.execute(RENEW, {"b_held": held, "b_until": until})
    if probes:
        await session.execute(RENEW_PROBES, {"b_probes": probes, "b_until": until})
    return int(getattr(result, "rowcount", 0) or 0)


class LeaseHeartbeat:
    """Keeps the leases of one process's attempts in flight (`hold` when an attempt starts,
    `release` once its outcome is recorded or lost)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._held: dict[str, tuple[int, bool]] = {}  # delivery id -> (attempt number, probe)
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.beats = 0  # renewal statements run (tests)

    @property
    def lease(self) -> timedelta:
        return self._hub.settings.delivery_lease

    @property
    def interval(self) -> float:
        return self.lease.total_seconds() / 3

    @property
    def in_flight(self) -> int:
        return len(self._held)

    def hold(self, claim: ClaimedAttempt) -> None:
        self._held[claim.delivery_id] = (claim.attempt_number, claim.probe)
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = self._hub.spawn(self._beat())

    def release(self, claim: ClaimedAttempt) -> None:
        held = self._held.get(claim.delivery_id)
        if held is not None and held[0] == claim.attempt_number:
            del self._held[claim.delivery_id]
        if not self._held:
            self._idle.set()  # the heartbeat ends now, not at its next beat

    async def _beat(self) -> None:
        while self._held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.interval)
            if not self._held:
                return
            await self.renew()

    async def renew(self) -> None:
        """One beat: renew every lease held, now. Never raises."""
        held = [(delivery_id, n) for delivery_id, (n, _) in self._held.items()]
        probes = [(delivery_id, n) for delivery_id, (n, probe) in self._held.items() if probe]
        try:
            # A renewal that takes longer than the lease is of no use: give up on this beat.
            async with asyncio.timeout(self.lease.total_seconds()):
                async with self._hub.db.transaction() as session:
                    until = self._hub.clock() + self.lease
                    await renew_leases(session, held, until, probes=probes)
            self.beats += 1
        except Exception as exc:
            log.warning(
                "could not renew the leases of %d attempt(s) in flight (%s: %s); "
                "trying again in %.1f s",
                len(held),
                type(exc).__name__,
                exc,
                self.interval,
            )
