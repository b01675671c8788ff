"""Delivery leases renewed by heartbeat (`agenthub/delivery/leases.py`).

- An agent slower than the lease (but within its timeout) gets one attempt: the heartbeat of
  the process running it keeps its lease, so no other pass takes the delivery meanwhile.
- The renewal statement extends only leases still held by the attempt that renews them:
  never a newer attempt's, never one whose outcome is recorded; the same for a probe's hold on
  its agent.
- The heartbeat rides out a failing database (a warning, then the next beat), and exists only
  while attempts are in flight.

A worker SIGKILLed mid-delivery is retried within about a lease of the kill, not after the
agent's timeout: tests/test_multiprocess.py (agent timeout 30 s, lease 3 s).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx2
import pytest
from sqlalchemy import select

from agenthub.delivery import leases
from agenthub.delivery.agents import (
    ClaimedAttempt,
    claim_due_attempts,
    record_outcome,
)
from agenthub.delivery.leases import LeaseHeartbeat, renew_leases
from agenthub.delivery.webhook_call import Outcome
from agenthub.hub import Hub
from agenthub.models import Agent, AgentDelivery
from agenthub.models.agent import AgentHealth
from agenthub.settings import Settings
from agenthub.uow import commit
from tests.agent_server import FakeAgent, eventually, reply
from tests.conftest import Caller
from tests.factories import make_agent, make_channel, make_chat, make_delivery
from tests.scheduler import scheduler_hub
from tests.test_agent_delivery import World, make_world

pytestmark = pytest.mark.anyio

LEASE_SECONDS = 1.2  # beats every 0.4 s: room for a loaded machine (0.8 s lost a beat in CI)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"delivery_lease_seconds": LEASE_SECONDS, "job_sweep_seconds": 0.05}
    )


# --- in-process: an agent slower than the lease ---------------------------------------------


async def test_an_agent_slower_than_the_lease_gets_one_attempt_and_its_reply_is_stored_once(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, agent: FakeAgent
) -> None:
    """The agent answers after 2.5 leases (within its 5 s timeout) while the runner sweeps every
    50 ms: the lease is renewed meanwhile, so exactly one attempt is made."""
    world = await make_world(client, admin, agent, timeout_seconds=5)
    agent.script.append(reply("a slow answer", delay=2.5 * LEASE_SECONDS))
    await world.send("hello")
    chat_id = await eventually(lambda: _chat_with_a_delivery(world), timeout=5)
    heartbeat = hub.lease_heartbeat
    await eventually(lambda: heartbeat.in_flight == 1, timeout=5)
    deliveries = await eventually(lambda: world.settled(chat_id), timeout=10)

    assert [d["status"] for d in deliveries] == ["succeeded"]
    assert deliveries[0]["attempt_count"] == 1
    assert len(agent.requests) == 1 and agent.overlaps == []
    assert await world.agent_texts(chat_id) == ["a slow answer"]
    assert heartbeat.beats >= 2  # renewed while the agent thought
    # Nothing in flight: the heartbeat is gone (no statement, no task).
    assert heartbeat.in_flight == 0
    await eventually(lambda: heartbeat._task is None or heartbeat._task.done(), timeout=2)


async def _chat_with_a_delivery(world: World) -> str | None:
    chat_id = await world.chat_id()
    return chat_id if await world.deliveries(chat_id) else None


# --- the renewal statement ------------------------------------------------------------------


@pytest.fixture
async def bare_hub(settings: Settings) -> AsyncIterator[Hub]:
    """No job runner: the test claims and records attempts itself, on a clock it moves."""
    async with scheduler_hub(settings, delivery_lease_seconds=5) as hub:
        yield hub


async def _claim(hub: Hub) -> list[ClaimedAttempt]:
    async with hub.db.transaction() as session:
        return await claim_due_attempts(session, hub.clock(), lease=hub.settings.delivery_lease)


async def _renew(hub: Hub, held: list[ClaimedAttempt], until_in: float) -> int:
    pairs = [(c.delivery_id, c.attempt_number) for c in held]
    probes = [(c.delivery_id, c.attempt_number) for c in held if c.probe]
    async with hub.db.transaction() as session:
        until = hub.clock() + timedelta(seconds=until_in)
        return await renew_leases(session, pairs, until, probes=probes)


async def _lease_of(hub: Hub, delivery_id: str) -> object:
    async with hub.db.session(read_only=True) as session:
        return await session.scalar(
            select(AgentDelivery.locked_until).where(AgentDelivery.id == delivery_id)
        )


async def _next_probe_of(hub: Hub, agent_id: str) -> object:
    async with hub.db.session(read_only=True) as session:
        return await session.scalar(select(Agent.next_probe_at).where(Agent.id == agent_id))


async def test_the_renewal_never_extends_a_lease_a_newer_attempt_holds(bare_hub: Hub) -> None:
    hub, clock = bare_hub, bare_hub.clock
    channel = await make_channel(hub)
    bot, _ = await make_agent(hub, buffer_time_seconds=0, timeout_seconds=30)
    chat = await make_chat(hub, channel, messages=1, agents=(bot,))
    delivery_id = await make_delivery(hub, chat.id, bot.id, "pending", next_attempt_at=clock())

    (first,) = await _claim(hub)
    assert first.attempt_number == 1
    assert await _lease_of(hub, delivery_id) == clock() + timedelta(seconds=5)
    assert await _renew(hub, [first], 5) == 1  # still its own: renewed
    clock.now += timedelta(seconds=4)  # type: ignore[attr-defined]
    assert await _renew(hub, [first], 5) == 1
    assert await _lease_of(hub, delivery_id) == clock() + timedelta(seconds=5)

    # Its process stops renewing (it died): the lease runs out and a newer attempt takes it.
    clock.now += timedelta(seconds=6)  # type: ignore[attr-defined]
    (second,) = await _claim(hub)
    assert (second.delivery_id, second.attempt_number) == (delivery_id, 2)
    newer_lease = await _lease_of(hub, delivery_id)
    # The first attempt's heartbeat (a process that was only stalled) renews: nothing changes.
    assert await _renew(hub, [first], 60) == 0
    assert await _lease_of(hub, delivery_id) == newer_lease
    # Both in one statement: only the current attempt's lease moves.
    assert await _renew(hub, [first, second], 7) == 1
    assert await _lease_of(hub, delivery_id) == clock() + timedelta(seconds=7)

    # A recorded outcome (here a retry: the delivery stays pending on attempt 2) ends the
    # lease, and a late beat does not bring it back.
    async with hub.db.session() as session:
        await record_outcome(session, hub, second, Outcome(503, 5.0, error="HTTP 503"))
        await commit(session)
    assert await _lease_of(hub, delivery_id) is None
    assert await _renew(hub, [second], 5) == 0
    assert await _lease_of(hub, delivery_id) is None


async def test_a_probe_in_flight_holds_its_agent_and_stops_once_recorded(bare_hub: Hub) -> None:
    hub, clock = bare_hub, bare_hub.clock
    channel = await make_channel(hub)
    bot, _ = await make_agent(
        hub,
        buffer_time_seconds=0,
        timeout_seconds=30,
        health_state=AgentHealth.UNAVAILABLE.value,
        health_since=clock(),
        next_probe_at=clock(),
    )
    chat = await make_chat(hub, channel, messages=1, agents=(bot,))
    await make_delivery(hub, chat.id, bot.id, "pending", next_attempt_at=clock())
    (probe,) = await _claim(hub)
    assert probe.probe
    assert await _next_probe_of(hub, bot.id) == clock() + timedelta(seconds=5)
    clock.now += timedelta(seconds=3)  # type: ignore[attr-defined]
    assert await _renew(hub, [probe], 5) == 1
    assert await _next_probe_of(hub, bot.id) == clock() + timedelta(seconds=5)

    async with hub.db.session() as session:
        await record_outcome(session, hub, probe, Outcome(503, 5.0, error="HTTP 503"))
        await commit(session)
    recorded = await _next_probe_of(hub, bot.id)  # set by the failed probe
    assert await _renew(hub, [probe], 1) == 0
    assert await _next_probe_of(hub, bot.id) == recorded


# --- the heartbeat itself -------------------------------------------------------------------


async def test_the_heartbeat_survives_a_failing_database_and_stops_when_idle(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with scheduler_hub(settings, delivery_lease_seconds=0.3) as hub:
        heartbeat = LeaseHeartbeat(hub)
        assert heartbeat._task is None  # nothing in flight: nothing runs
        calls: list[int] = []
        real = leases.renew_leases

        async def flaky(*args: object, **kwargs: object) -> int:
            calls.append(1)
            if len(calls) == 1:
                raise ConnectionError("the database went away")
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(leases, "renew_leases", flaky)
        claim = ClaimedAttempt("no-such-delivery", 1)
        with caplog.at_level(logging.WARNING, logger="agenthub.delivery.leases"):
            heartbeat.hold(claim)
            await eventually(lambda: heartbeat.beats >= 1, timeout=5, interval=0.02)
        assert len(calls) >= 2  # the failed beat, then a good one
        assert "could not renew the leases of 1 attempt" in caplog.text
        assert "the database went away" in caplog.text

        heartbeat.release(claim)
        task = heartbeat._task
        assert task is not None
        await asyncio.wait_for(task, 1)  # ends at once, not at its next beat
        beats = heartbeat.beats
        await asyncio.sleep(0.15)
        assert heartbeat.beats == beats
