"""The agent health breaker (`delivery/health.py`, docs/agents.md "When the agent is down").

A real loopback agent dies (answers 503) and comes back, on both job runtimes and both
databases: after the threshold it is unavailable, it gets at most one request per probe
interval whatever the number of chats waiting, chats that wait too long are handed to a human
once, and when it is back every message goes once and in order. Then a property test drives
the real handlers with a fake clock against a small model of the rules.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select, text

from agenthub.agents.schemas import AgentOut
from agenthub.app import start_runtime
from agenthub.delivery.agents import (
    ClaimedAttempt,
    claim_due_attempts,
    create_due_deliveries,
    record_outcome,
)
from agenthub.delivery.engine import next_work_time
from agenthub.delivery.health import attempts_toward_limit
from agenthub.delivery.webhook_call import Outcome
from agenthub.hub import Hub
from agenthub.models import (
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    Base,
    Channel,
    Chat,
    ChatEvent,
    DeliveryAttempt,
    Message,
    SenderType,
)
from agenthub.platforms.base import InboundMessage
from agenthub.settings import Settings
from agenthub.webhooks.service import store_contact_message
from tests.agent_server import FakeAgent, Request, eventually, reply, respond
from tests.conftest import Caller, _empty_tables
from tests.factories import make_agent, make_channel
from tests.hypothesis_budget import examples
from tests.procs import SECRET_KEY, RedisServer, WorkerProcess, hub_env, scratch_database
from tests.scheduler import BASE, FakeClock, scheduler_hub

pytestmark = pytest.mark.anyio

THRESHOLD = 3
PROBE = 0.2  # seconds between probes
HANDOFF = 0.4  # seconds a chat may wait for the unavailable agent
CHATS = 3
# What both runtimes run with (the Celery worker gets them through its environment).
FAST = {
    "agent_failure_threshold": THRESHOLD,
    "agent_probe_seconds": PROBE,
    "agent_unavailable_handoff_seconds": HANDOFF,
    "delivery_backoff_base_seconds": 0.02,
    "delivery_max_attempts": 50,
    "job_sweep_seconds": 0.1,
}


# --- a real agent that dies and comes back -------------------------------------------------


@asynccontextmanager
async def in_process_hub(settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub.from_settings(settings.model_copy(update=FAST))
    await start_runtime(hub)
    try:
        yield hub
    finally:
        await _empty_tables(hub)
        await hub.close()


async def test_an_agent_that_dies_is_probed_handed_off_and_caught_up_in_process(
    settings: Settings, agent: FakeAgent
) -> None:
    async with in_process_hub(settings) as hub:
        await _outage(hub, agent)


@pytest.fixture(scope="module")
def celery_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A scratch PostgreSQL database, a Redis and one `agenthub worker` with the fast breaker
    settings: (database URL, Redis URL)."""
    with scratch_database() as url:
        redis = RedisServer(tmp_path_factory.mktemp("redis"))
        redis.start()
        env = hub_env(url, redis.url(), **FAST)
        worker = WorkerProcess("worker", env, tmp_path_factory.mktemp("worker"), concurrency=2)
        try:
            worker.start()
            yield url, redis.url()
        finally:
            worker.stop()
            redis.stop()
            print(worker.log_text()[-3000:])  # shown when the test fails


@pytest.mark.multiprocess
async def test_an_agent_that_dies_is_probed_handed_off_and_caught_up_on_celery(
    celery_world: tuple[str, str], agent: FakeAgent, tmp_path: Path
) -> None:
    database_url, redis_url = celery_world
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key=SECRET_KEY,
        allow_private_agent_urls=True,
        db_pool_size=2,
        _env_file=None,  # type: ignore[call-arg]
    ).model_copy(update=FAST)
    hub = Hub.from_settings(settings)
    try:
        await _truncate(hub)
        await start_runtime(hub)
        await _outage(hub, agent)
    finally:
        await hub.close()


async def _truncate(hub: Hub) -> None:
    names = ", ".join(table.name for table in Base.metadata.sorted_tables)
    async with hub.db.transaction() as session:
        await session.execute(text(f"TRUNCATE {names} CASCADE"))


async def contact_writes(hub: Hub, channel: Channel, chat: int, sent: int) -> int:
    """The contact of chat number `chat` writes message number `sent`; the next number."""
    inbound = InboundMessage(
        external_id=f"ext-{sent}",
        contact_id=f"+1555000{chat:04d}",
        contact_name=None,
        content=f"message {sent}",
        meta_data={},
    )
    async with hub.db.transaction() as session:
        assert await store_contact_message(session, hub, channel, inbound)
    return sent + 1


@dataclass
class Outage:
    hub: Hub
    agent: FakeAgent
    channel: Channel
    agent_id: str = ""
    sent: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, chat: int) -> None:
        self.sent = await contact_writes(self.hub, self.channel, chat, self.sent)

    async def health(self) -> dict[str, Any]:
        async with self.hub.db.session(read_only=True) as session:
            agent = await session.get(Agent, self.agent_id)
            return dict(AgentOut.model_validate(agent).model_dump(mode="json")["health"])

    async def chats(self) -> list[Chat]:
        async with self.hub.db.session(read_only=True) as session:
            return list(await session.scalars(select(Chat).order_by(Chat.external_id)))

    async def listen(self) -> None:
        async with self.hub.events.subscribe() as stream:
            async for published in stream:
                self.events.append(published)


async def _outage(hub: Hub, agent: FakeAgent) -> None:
    dead = True
    agent.handler = lambda request: respond(503) if dead else reply("back")
    world = Outage(hub, agent, await make_channel(hub))
    world.agent_id = (await make_agent(hub, webhook_url=agent.url, buffer_time_seconds=0))[0].id
    listener = asyncio.create_task(world.listen())
    await asyncio.sleep(0.1)  # subscribed (Redis: the subscription is set up)
    try:
        for chat in range(CHATS):
            await world.send(chat)

        async def unavailable() -> bool:
            return bool((await world.health())["state"] == "unavailable")

        await eventually(unavailable, timeout=10, message="the agent never became unavailable")
        tripped = time.monotonic()
        health = await world.health()
        assert health["since"] is not None and health["last_error"].startswith("HTTP 503")
        for chat in range(CHATS):  # more messages: they wait behind the pending deliveries
            await world.send(chat)

        async def handed_off() -> bool:
            chats = await world.chats()
            return all(c.needs_human_reason == "agent_unavailable" for c in chats)

        await eventually(handed_off, timeout=10, message="no chat was handed to a human")
        await asyncio.sleep(1.5 * PROBE)  # another probe: nobody is handed off twice
        # Attempts claimed just before the agent tripped may start just after it: left out.
        window = [r for r in agent.requests if r.started_at > tripped + PROBE / 2]
        _assert_one_at_a_time(window)
        elapsed = time.monotonic() - tripped
        assert len(window) <= elapsed / PROBE + 1, (len(window), elapsed)
        await _assert_handed_off_once(hub)

        dead = False
        await eventually(lambda: _caught_up(world), timeout=10, message="messages left behind")
        assert (await world.health())["state"] == "healthy"
        assert agent.overlaps == []
        await eventually(lambda: _health_events(world) == ["unavailable", "healthy"], timeout=5)
    finally:
        listener.cancel()


def _assert_one_at_a_time(window: list[Request]) -> None:
    """Probes never overlap, and each starts a probe interval after the one before."""
    for before, after in itertools.pairwise(window):
        assert before.finished_at is not None and before.finished_at <= after.started_at
        assert after.started_at - before.started_at >= PROBE * 0.9, (before, after)


async def _assert_handed_off_once(hub: Hub) -> None:
    async with hub.db.session(read_only=True) as session:
        handoffs = list(
            await session.scalars(
                select(ChatEvent.chat_id).where(
                    ChatEvent.event == "handoff", ChatEvent.actor_type == "system"
                )
            )
        )
    assert len(handoffs) == CHATS and len(set(handoffs)) == CHATS


async def _caught_up(world: Outage) -> bool:
    """Every contact message reached the agent in a successful delivery, once, in order per
    chat; and the hub recorded every delivery as succeeded."""
    async with world.hub.db.session(read_only=True) as session:
        statuses = set(await session.scalars(select(AgentDelivery.status)))
        messages = (
            await session.execute(
                select(Message.chat_id, Message.id)
                .where(Message.sender_type == SenderType.CONTACT)
                .order_by(Message.chat_id, Message.seq)
            )
        ).all()
    if statuses != {AgentDeliveryStatus.SUCCEEDED}:
        return False
    expected: dict[str, list[str]] = {}
    for chat_id, message_id in messages:
        expected.setdefault(chat_id, []).append(message_id)
    delivered: dict[str, list[str]] = {}
    for request in world.agent.successes:
        delivered.setdefault(request.chat_id or "", []).extend(request.new_message_ids)
    assert all(len(ids) == len(set(ids)) for ids in delivered.values()), delivered
    return delivered == expected


def _health_events(world: Outage) -> list[str]:
    return [
        e["state"]
        for e in world.events
        if e["type"] == "agent_health" and e["agent_id"] == world.agent_id
    ]


# --- the API --------------------------------------------------------------------------------


@pytest.mark.database_independent
async def test_agents_in_api_answers_carry_their_health(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    created = await client.post(
        "/auth/agents",
        json={"name": "bot", "webhook_url": "http://127.0.0.1:9/"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["health"] == {"state": "healthy", "since": None, "last_error": None}
    since = datetime(2030, 1, 1, 12, 0, 5).astimezone()
    async with hub.db.transaction() as session:
        row = await session.get(Agent, agent["id"])
        assert row is not None
        row.health_state, row.health_since, row.health_last_error = "unavailable", since, "HTTP 503"
    one = (await client.get(f"/auth/agents/{agent['id']}", headers=admin.headers)).json()
    (listed,) = (await client.get("/auth/agents", headers=admin.headers)).json()
    for answer in (one, listed):
        assert answer["health"]["state"] == "unavailable"
        assert answer["health"]["last_error"] == "HTTP 503"
        assert datetime.fromisoformat(answer["health"]["since"]) == since


# --- probes and the max attempts ------------------------------------------------------------


@pytest.mark.database_independent
async def test_failed_probes_do_not_use_up_the_deliverys_attempts(settings: Settings) -> None:
    """Two attempts at most, and the agent trips at its first failure: the probes that follow
    fail too, yet the delivery stays pending until one succeeds."""
    async with scheduler_hub(
        settings, agent_failure_threshold=1, delivery_max_attempts=2, agent_probe_seconds=30
    ) as hub:
        clock = hub.clock
        assert isinstance(clock, FakeClock)
        model = Model(hub, clock, await make_channel(hub), "", [1])
        model.agent_id = (await make_agent(hub, buffer_time_seconds=0))[0].id
        await model.arrive(0)
        await model.run([("tick", 0), ("tick", 5)])  # the first attempt fails: unavailable
        assert (await model.agent()).health_state == "unavailable"
        await model.run([("tick", 31)] * 3)  # two probes fail; a third is in flight
        await model.run([("toggle", 0), ("tick", 1)])  # and succeeds
        async with hub.db.session(read_only=True) as session:
            (delivery,) = await session.scalars(select(AgentDelivery))
            attempts = await session.execute(
                select(DeliveryAttempt.error, DeliveryAttempt.trigger).order_by(
                    DeliveryAttempt.attempt_number
                )
            )
            logged = [tuple(row) for row in attempts]
            toward_limit = await attempts_toward_limit(session, delivery.id, 4)
        assert delivery.status == "succeeded" and delivery.attempt_count == 4
        assert [(error[:8] if error else None, trigger) for error, trigger in logged] == [
            ("HTTP 503", "scheduled"),
            ("HTTP 503", "probe"),
            ("HTTP 503", "probe"),
            (None, "probe"),
        ]
        assert toward_limit == 2  # the first attempt and this one
        assert model.probes == []  # healthy again
        assert (await model.agent()).health_state == "healthy"


# --- a property test against a model of the rules ------------------------------------------

P_THRESHOLD = 2
P_PROBE = timedelta(seconds=30)
# An attempt's lease as the heartbeat keeps it renewed while it runs (no heartbeat runs in the
# model, so it claims with a lease this long): past the agent's 10 s timeout.
LEASE = timedelta(seconds=15)
MAX_FLIGHT_S = 14  # under that lease, as real attempts are (their HTTP timeout is 10 s)
MS = timedelta(milliseconds=1)


@pytest.fixture
async def bare_hub(settings: Settings) -> AsyncIterator[Hub]:
    async with scheduler_hub(
        settings,
        agent_failure_threshold=P_THRESHOLD,
        agent_probe_seconds=P_PROBE.total_seconds(),
        delivery_max_attempts=50,
    ) as hub:
        yield hub


# A step: a contact message in chat 0-2, time passing (attempts ending on the way) and then a
# pass of the runner, or the agent dying or coming back (it starts dead).
arrive = st.tuples(st.just("arrive"), st.integers(0, 2))
tick = st.tuples(st.just("tick"), st.sampled_from([0, 1, 5, 15, 31, 45]))
steps = st.lists(
    st.one_of(arrive, tick, tick, st.tuples(st.just("toggle"), st.just(0))),
    min_size=10,
    max_size=40,
)


@dataclass
class Model:
    hub: Hub
    clock: FakeClock
    channel: Channel
    agent_id: str
    flights: list[int]
    alive: bool = False
    sent: int = 0
    inflight: list[tuple[datetime, int, ClaimedAttempt]] = field(default_factory=list)
    claimed_at: dict[tuple[str, int], datetime] = field(default_factory=dict)
    pairs_in_flight: set[str] = field(default_factory=set)  # chat ids
    probes: list[datetime] = field(default_factory=list)  # claim times, this outage
    claims: int = 0
    delivered: dict[str, list[str]] = field(default_factory=dict)  # chat → message ids

    async def arrive(self, chat: int) -> None:
        self.sent = await contact_writes(self.hub, self.channel, chat, self.sent)

    async def agent(self) -> Agent:
        async with self.hub.db.session(read_only=True) as session:
            agent = await session.get(Agent, self.agent_id)
        assert agent is not None
        return agent

    async def poll(self) -> None:
        now = self.clock.now
        before = await self.agent()
        async with self.hub.db.transaction() as session:
            await create_due_deliveries(session, now)
            claims = await claim_due_attempts(session, now, lease=LEASE)
            delivery_of = {
                d.id: d.chat_id
                for d in await session.scalars(
                    select(AgentDelivery).where(
                        AgentDelivery.id.in_([c.delivery_id for c in claims])
                    )
                )
            }
        if before.health_state == "unavailable":
            # One request at a time, one per interval, none before the first interval is up.
            assert len(claims) <= 1 and all(c.probe for c in claims), claims
            if claims:
                assert before.health_since is not None
                assert now >= before.health_since + P_PROBE
                assert not self.probes or now >= self.probes[-1] + P_PROBE, (self.probes, now)
                assert not any(c.probe for _, _, c in self.inflight)
                self.probes.append(now)
        for claim in claims:
            chat_id = delivery_of[claim.delivery_id]
            assert chat_id not in self.pairs_in_flight, "two deliveries of a pair at once"
            self.pairs_in_flight.add(chat_id)
            flight = self.flights[self.claims % len(self.flights)]
            self.claims += 1
            self.claimed_at[claim.delivery_id, claim.attempt_number] = now
            heapq.heappush(self.inflight, (now + timedelta(seconds=flight), self.claims, claim))

    async def complete_until(self, until: datetime) -> None:
        while self.inflight and self.inflight[0][0] <= until:
            at, _, claim = heapq.heappop(self.inflight)
            self.clock.now = at
            # The POST took the whole flight (the hub reckons when it started from its latency).
            ms = (at - self.claimed_at[claim.delivery_id, claim.attempt_number]) / MS
            outcome = Outcome(200, ms) if self.alive else Outcome(503, ms, error="HTTP 503")
            async with self.hub.db.transaction() as session:
                delivery = await session.get(AgentDelivery, claim.delivery_id)
                assert delivery is not None
                await record_outcome(session, self.hub, claim, outcome)
            self.pairs_in_flight.discard(delivery.chat_id)
            if self.alive:
                self.delivered.setdefault(delivery.chat_id, []).extend(delivery.message_ids)
            if (await self.agent()).health_state == "healthy":
                self.probes.clear()

    async def run(self, ops: list[tuple[str, int]]) -> None:
        for op, arg in ops:
            if op == "arrive":
                await self.arrive(arg)
            elif op == "tick":
                until = self.clock.now + timedelta(seconds=arg)
                await self.complete_until(until)
                self.clock.now = until
                await self.poll()
            else:
                self.alive = not self.alive

    async def drain(self) -> None:
        """The agent is back: poll at the hub's own next due time until all is done."""
        self.alive = True
        for _ in range(200):
            async with self.hub.db.session(read_only=True) as session:
                due = await next_work_time(session)
            ends = [self.inflight[0][0]] if self.inflight else []
            candidates = [t for t in (due, *ends) if t is not None]
            if not candidates:
                return
            at = max(min(candidates), self.clock.now)
            await self.complete_until(at)
            self.clock.now = at
            await self.poll()
        raise AssertionError("the scheduler never settled")


@hsettings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=steps, flights=st.lists(st.integers(0, MAX_FLIGHT_S), min_size=1, max_size=4))
@example(  # three chats fail until the agent trips; two probes fail; it comes back
    ops=[
        *[("arrive", chat) for chat in range(3)],
        *[("tick", 5)] * 3,
        ("arrive", 0),
        *[("tick", 31)] * 3,
        ("toggle", 0),
        ("tick", 31),
    ],
    flights=[1],
)
@pytest.mark.database_independent
async def test_the_breaker_keeps_order_and_exactly_once_and_probes_once_per_interval(
    bare_hub: Hub, ops: list[tuple[str, int]], flights: list[int]
) -> None:
    await _empty_tables(bare_hub)
    clock = bare_hub.clock
    assert isinstance(clock, FakeClock)
    clock.now = BASE
    channel = await make_channel(bare_hub)
    bot, _ = await make_agent(bare_hub, buffer_time_seconds=0, timeout_seconds=10)
    model = Model(bare_hub, clock, channel, bot.id, flights)
    await model.run(ops)
    await model.drain()

    async with bare_hub.db.session(read_only=True) as session:
        statuses = set(await session.scalars(select(AgentDelivery.status)))
        messages = (
            await session.execute(
                select(Message.chat_id, Message.id)
                .where(Message.sender_type == SenderType.CONTACT)
                .order_by(Message.chat_id, Message.seq)
            )
        ).all()
    assert statuses <= {AgentDeliveryStatus.SUCCEEDED}
    expected: dict[str, list[str]] = {}
    for chat_id, message_id in messages:
        expected.setdefault(chat_id, []).append(message_id)
    # Exactly once each, in order per chat: the successful deliveries in the order they ended.
    assert model.delivered == expected
    assert (await model.agent()).health_state == "healthy"
