"""Properties of the delivery buffer under a controllable clock, and of the pure
timing rules in `delivery/timing.py`.

The buffer tests drive the real handlers (`store_contact_message`, `create_due_deliveries`,
`claim_due_attempts`, `record_outcome`) against the real database with a fake clock: contact
messages arrive at arbitrary moments in several chats, the scheduler is polled at arbitrary
moments, and each attempt of a delivery stays in flight for a while and then succeeds or fails
(to be retried). Nothing sleeps. A small reference model of the rules says, at every poll,
exactly which deliveries must be created; the database must agree, and at the end every contact
message must have gone to each linked active agent exactly once, in order.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from agenthub.delivery.agents import (
    ClaimedAttempt,
    Outcome,
    claim_due_attempts,
    create_due_deliveries,
    record_outcome,
)
from agenthub.delivery.engine import next_work_time
from agenthub.delivery.timing import (
    MAX_RETRY_AFTER,
    backoff_delay,
    buffer_due_at,
    retry_after_delay,
)
from agenthub.hub import Hub
from agenthub.models import AgentDelivery, AgentDeliveryStatus
from agenthub.platforms.base import InboundMessage
from agenthub.settings import Settings
from agenthub.webhooks.service import store_contact_message
from tests.conftest import _empty_tables
from tests.factories import make_agent, make_channel
from tests.hypothesis_budget import examples
from tests.scheduler import BASE, FakeClock, scheduler_hub

pytestmark = pytest.mark.anyio

MS = timedelta(milliseconds=1)
# Attempts in flight stay under the lease (the model claims for 15 s: the lease as the heartbeat
# keeps it renewed, past the agent's 10 s timeout), as the HTTP timeout guarantees in
# production; from the third attempt on, an attempt always succeeds.
LEASE = timedelta(seconds=15)
MAX_FLIGHT_MS = 14_000
ALWAYS_SUCCEEDS_FROM_ATTEMPT = 3


# --- the world ----------------------------------------------------------------------------


@pytest.fixture
async def bare_hub(settings: Settings) -> AsyncIterator[Hub]:
    """A Hub on the test database with no job runner: the test is the scheduler."""
    async with scheduler_hub(settings, delivery_max_attempts=50) as hub:
        yield hub


# --- scenarios ----------------------------------------------------------------------------

seconds = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0]),
    st.integers(0, 15_000).map(lambda ms: ms / 1000),
)


@dataclass(frozen=True)
class AgentSpec:
    buffer_seconds: float
    max_buffer_seconds: float


@dataclass(frozen=True)
class Scenario:
    agents: list[AgentSpec]
    chats: int
    arrivals: list[tuple[int, int]]  # (ms offset, chat index), sorted
    polls: list[int]  # ms offsets, sorted
    flights: list[tuple[bool, int]]  # per attempt, in claim order: (succeeds, ms in flight)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    agents = draw(
        st.lists(st.builds(AgentSpec, seconds, seconds), min_size=1, max_size=2),
    )
    chats = draw(st.integers(1, 3))
    arrivals = draw(
        st.lists(
            st.tuples(st.integers(0, 40_000), st.integers(0, chats - 1)), min_size=1, max_size=12
        )
    )
    polls = draw(st.lists(st.integers(0, 60_000), max_size=16))
    flights = draw(
        st.lists(
            st.tuples(
                st.booleans(),
                st.one_of(st.just(0), st.integers(0, MAX_FLIGHT_MS)),
            ),
            max_size=8,
        )
    )
    return Scenario(agents, chats, sorted(arrivals), sorted(polls), flights)


# --- the reference model ------------------------------------------------------------------


@dataclass
class Buffer:
    """What the documented rules say about one (chat, agent): messages waiting and one in flight."""

    spec: AgentSpec
    waiting: list[tuple[str, datetime]] = field(default_factory=list)
    pending: str | None = None  # the delivery in flight (created, not yet succeeded)

    @property
    def quiet_at(self) -> datetime:
        return self.waiting[-1][1] + timedelta(seconds=self.spec.buffer_seconds)

    @property
    def cap_at(self) -> datetime:
        return self.waiting[0][1] + timedelta(seconds=self.spec.max_buffer_seconds)

    @property
    def due_at(self) -> datetime:
        return min(self.quiet_at, self.cap_at)


@dataclass
class Simulation:
    hub: Hub
    clock: FakeClock
    scenario: Scenario
    channel: object
    agents: list[tuple[str, AgentSpec]]  # active agents (id, spec)
    chat_ids: dict[int, str] = field(default_factory=dict)
    buffers: dict[tuple[str, str], Buffer] = field(default_factory=dict)
    messages: dict[str, list[str]] = field(default_factory=dict)  # chat → message ids in order
    arrived: dict[str, datetime] = field(default_factory=dict)  # message id → arrival
    seen: set[str] = field(default_factory=set)  # delivery ids already observed
    created: dict[str, tuple[datetime, AgentDelivery]] = field(default_factory=dict)
    inflight: list[tuple[datetime, int, ClaimedAttempt, bool]] = field(default_factory=list)
    attempts: int = 0
    order: int = 0

    async def arrive(self, chat_index: int) -> None:
        contact = f"+1555000{chat_index:04d}"
        inbound = InboundMessage(
            external_id=f"ext-{len(self.arrived)}",
            contact_id=contact,
            contact_name=None,
            content=f"message {len(self.arrived)}",
            meta_data={},
        )
        async with self.hub.db.transaction() as session:
            message = await store_contact_message(session, self.hub, self.channel, inbound)  # type: ignore[arg-type]
        assert message is not None
        now = self.clock.now
        chat_id = message.chat_id
        if chat_index not in self.chat_ids:
            # First contact: the chat is created and every active default agent is linked.
            self.chat_ids[chat_index] = chat_id
            self.messages[chat_id] = []
            for agent_id, spec in self.agents:
                self.buffers[(chat_id, agent_id)] = Buffer(spec)
        self.messages[chat_id].append(message.id)
        self.arrived[message.id] = now
        for (chat, _), buffer in self.buffers.items():
            if chat == chat_id:
                buffer.waiting.append((message.id, now))
                if buffer.pending is not None:
                    event("a message arrived while a delivery was in flight")

    async def poll(self) -> None:
        now = self.clock.now
        # What the rules demand at this moment, before the hub acts.
        expected = {
            key: [m for m, _ in buffer.waiting]
            for key, buffer in self.buffers.items()
            if buffer.waiting and buffer.pending is None and buffer.due_at <= now
        }
        async with self.hub.db.transaction() as session:
            await create_due_deliveries(session, now)
            claims = await claim_due_attempts(session, now, lease=LEASE)
        new = await self._new_deliveries(now)
        for delivery in new:
            key = (delivery.chat_id, delivery.agent_id)
            buffer = self.buffers.get(key)
            assert buffer is not None, f"delivery for an unlinked or inactive agent: {key}"
            ids = list(delivery.message_ids)
            # Never a second delivery while one for this (chat, agent) is in flight.
            assert buffer.pending is None, f"{key}: new delivery while {buffer.pending} pending"
            # The batch is exactly the waiting messages, oldest first.
            assert ids == [m for m, _ in buffer.waiting], (key, ids, buffer.waiting)
            # Never before the quiet period ended, unless the cap forced it.
            assert now >= buffer.quiet_at or now >= buffer.cap_at, (
                f"{key}: created at {now} before quiet {buffer.quiet_at} and cap {buffer.cap_at}"
            )
            if now < buffer.quiet_at:
                event("the cap forced a delivery before the chat was quiet")
            buffer.waiting.clear()
            buffer.pending = delivery.id
        # And never later than the first poll at/after the due time with nothing in flight.
        made = {(d.chat_id, d.agent_id): list(d.message_ids) for d in new}
        assert made == expected, f"at +{(now - BASE) / MS:.0f} ms: made {made}, due {expected}"
        for claim in claims:
            succeeds, flight_ms = self._next_flight(claim)
            self.order += 1
            heapq.heappush(self.inflight, (now + flight_ms * MS, self.order, claim, succeeds))

    def _next_flight(self, claim: ClaimedAttempt) -> tuple[bool, int]:
        flights = self.scenario.flights or [(True, 0)]
        succeeds, flight_ms = flights[self.attempts % len(flights)]
        self.attempts += 1
        return succeeds or claim.attempt_number >= ALWAYS_SUCCEEDS_FROM_ATTEMPT, flight_ms

    async def complete_due(self, until: datetime) -> None:
        """Finish every attempt whose flight ends by `until`."""
        while self.inflight and self.inflight[0][0] <= until:
            at, _, claim, succeeds = heapq.heappop(self.inflight)
            self.clock.now = at
            outcome = Outcome(200, 1.0) if succeeds else Outcome(503, 1.0, error="HTTP 503")
            async with self.hub.db.transaction() as session:
                await record_outcome(session, self.hub, claim, outcome)
            if not succeeds:
                event("an attempt failed and was retried")
            if succeeds:
                for buffer in self.buffers.values():
                    if buffer.pending == claim.delivery_id:
                        buffer.pending = None
            await self._check_one_pending_per_pair()

    async def _new_deliveries(self, now: datetime) -> list[AgentDelivery]:
        async with self.hub.db.session(read_only=True) as session:
            rows = list(await session.scalars(select(AgentDelivery)))
        new = [d for d in rows if d.id not in self.seen]
        for delivery in new:
            self.seen.add(delivery.id)
            self.created[delivery.id] = (now, delivery)
        self._assert_one_pending(rows)
        return new

    async def _check_one_pending_per_pair(self) -> None:
        async with self.hub.db.session(read_only=True) as session:
            self._assert_one_pending(list(await session.scalars(select(AgentDelivery))))

    @staticmethod
    def _assert_one_pending(rows: list[AgentDelivery]) -> None:
        pending = [(d.chat_id, d.agent_id) for d in rows if d.status == AgentDeliveryStatus.PENDING]
        assert len(pending) == len(set(pending)), f"two pending deliveries for one pair: {pending}"

    async def run(self) -> None:
        timeline = sorted(
            [(ms, 0, chat) for ms, chat in self.scenario.arrivals]
            + [(ms, 1, None) for ms in self.scenario.polls]
        )
        for ms, kind, chat in timeline:
            at = BASE + ms * MS
            await self.complete_due(at)
            self.clock.now = at
            if kind == 0:
                assert chat is not None
                await self.arrive(chat)
            else:
                await self.poll()
        await self.drain()

    async def drain(self) -> None:
        """Keep polling at the hub's own next due time until nothing is left to do."""
        for _ in range(500):
            async with self.hub.db.session(read_only=True) as session:
                due = await next_work_time(session)
            candidates = [t for t in (due, self.inflight[0][0] if self.inflight else None) if t]
            if not candidates:
                return
            at = max(min(candidates), self.clock.now)
            await self.complete_due(at)
            self.clock.now = at
            await self.poll()
        raise AssertionError("the scheduler never settled")


async def _build(hub: Hub, scenario: Scenario) -> Simulation:
    await _empty_tables(hub)
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    clock.now = BASE
    channel = await make_channel(hub)
    agents = []
    for n, spec in enumerate(scenario.agents):
        agent, _ = await make_agent(
            hub,
            name=f"bot{n}",
            buffer_time_seconds=spec.buffer_seconds,
            max_buffer_seconds=spec.max_buffer_seconds,
            timeout_seconds=10,
        )
        agents.append((agent.id, spec))
    # Never linked: an inactive agent and one that is not a default for new conversations.
    await make_agent(hub, name="off", active=False)
    await make_agent(hub, name="manual", activate_for_new_conversation=False)
    return Simulation(hub, clock, scenario, channel, agents)


SETTINGS = hsettings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(scenario=scenarios())
@example(  # a burst that keeps the chat busy: only the cap (5 s) makes the first delivery
    scenario=Scenario(
        agents=[AgentSpec(3.0, 5.0)],
        chats=1,
        arrivals=[(ms, 0) for ms in range(0, 12_000, 2_000)],
        polls=[*range(0, 20_000, 1_000), 4_800],
        flights=[(True, 4_000)],
    )
)
@example(  # two agents, one quick and one slow; every other attempt fails and is retried
    scenario=Scenario(
        agents=[AgentSpec(0.0, 30.0), AgentSpec(10.0, 1.0)],
        chats=2,
        arrivals=[(0, 0), (0, 1), (500, 0), (500, 0), (9_000, 1), (9_001, 0)],
        polls=[0, 1, 499, 500, 1_000, 9_000, 9_500, 12_000],
        flights=[(False, 3_000), (True, 0), (True, 15_000)],
    )
)
async def test_every_message_is_delivered_once_in_order_and_on_time(
    bare_hub: Hub, scenario: Scenario
) -> None:
    sim = await _build(bare_hub, scenario)
    await sim.run()

    async with bare_hub.db.session(read_only=True) as session:
        deliveries = list(await session.scalars(select(AgentDelivery)))
    assert all(d.status == AgentDeliveryStatus.SUCCEEDED for d in deliveries)
    linked = {agent_id for agent_id, _ in sim.agents}
    assert {d.agent_id for d in deliveries} <= linked
    for chat_id, message_ids in sim.messages.items():
        for agent_id in linked:
            batches = sorted(
                (sim.created[d.id][0], sim.created[d.id][1].message_ids)
                for d in deliveries
                if (d.chat_id, d.agent_id) == (chat_id, agent_id)
            )
            delivered = [m for _, ids in batches for m in ids]
            # Exactly once each, and in message order across the (chat, agent)'s deliveries.
            assert delivered == message_ids, (chat_id, agent_id, batches, message_ids)
            assert all(ids for _, ids in batches)
    assert not sim.inflight


# --- timing.py ----------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(
    waiting=moments,
    gap=st.integers(0, 10**9),
    buffer=st.floats(0, 3600),
    cap=st.floats(0, 86_400),
)
def test_buffer_due_is_the_earlier_of_quiet_and_cap(
    waiting: datetime, gap: int, buffer: float, cap: float
) -> None:
    last = waiting + timedelta(microseconds=gap)
    due = buffer_due_at(waiting, last, buffer, cap)
    quiet_at = last + timedelta(seconds=buffer)
    cap_at = waiting + timedelta(seconds=cap)
    assert due == min(quiet_at, cap_at)
    assert due >= waiting
    # Another message later never moves the due time past the cap.
    assert buffer_due_at(waiting, last + timedelta(seconds=1), buffer, cap) <= cap_at


@given(
    attempt=st.integers(1, 12),
    base=st.floats(0.001, 60),
    seed_a=st.integers(),
    seed_b=st.integers(),
)
def test_backoff_grows_and_stays_within_its_jitter(
    attempt: int, base: float, seed_a: int, seed_b: int
) -> None:
    delay = backoff_delay(attempt, base, random.Random(seed_a))
    nominal = base * 3 ** (attempt - 1)
    tolerance = timedelta(microseconds=1)
    assert timedelta(seconds=nominal * 0.5) - tolerance <= delay
    assert delay <= timedelta(seconds=nominal * 1.5) + tolerance
    # Whatever the jitter of each, a later attempt never waits less than an earlier one.
    later = backoff_delay(attempt + 1, base, random.Random(seed_b))
    assert later >= delay - tolerance
    # The same random source gives the same delay (no hidden randomness).
    assert backoff_delay(attempt, base, random.Random(seed_a)) == delay


def test_default_backoff_starts_near_two_seconds_and_spreads_over_minutes() -> None:
    rng = random.Random(7)
    for _ in range(200):
        first = backoff_delay(1, 2.0, rng)
        assert timedelta(seconds=1) <= first <= timedelta(seconds=3)
        total = sum((backoff_delay(n, 2.0, rng) for n in range(1, 6)), timedelta())
        # Six attempts by default: five waits, from two minutes to six at the extremes.
        assert timedelta(minutes=2) <= total <= timedelta(minutes=6, seconds=4)


@given(now=moments, wait=st.integers(0, 10**7))
def test_retry_after_seconds(now: datetime, wait: int) -> None:
    assert retry_after_delay(str(wait), now) == min(timedelta(seconds=wait), MAX_RETRY_AFTER)
    assert retry_after_delay(f"  {wait} ", now) == min(timedelta(seconds=wait), MAX_RETRY_AFTER)


@given(now=moments, wait=st.integers(-(10**6), 10**6))
def test_retry_after_http_date(now: datetime, wait: int) -> None:
    header = format_datetime(now + timedelta(seconds=wait), usegmt=True)  # IMF-fixdate
    delay = retry_after_delay(header, now)
    assert delay is not None
    # The header has whole seconds: it may fall up to one second earlier than meant.
    expected = min(max(timedelta(seconds=wait), timedelta(0)), MAX_RETRY_AFTER)
    assert expected - timedelta(seconds=1) < delay <= expected
    assert timedelta(0) <= delay <= MAX_RETRY_AFTER


def test_retry_after_examples() -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    assert retry_after_delay(None, now) is None
    assert retry_after_delay("", now) is None
    assert retry_after_delay("soon", now) is None
    assert retry_after_delay("-5", now) is None
    assert retry_after_delay("120", now) == timedelta(seconds=120)
    assert retry_after_delay("Wed, 21 Oct 2015 07:28:30 GMT", now) == timedelta(seconds=30)
    assert retry_after_delay("Wed, 21 Oct 2015 07:00:00 GMT", now) == timedelta(0)
    assert retry_after_delay("Thu, 22 Oct 2015 07:28:00 GMT", now) == MAX_RETRY_AFTER
    assert retry_after_delay("86400", now) == MAX_RETRY_AFTER


date_like = st.from_regex(
    r"\A(Mon|Fri|Xyz), [0-9]{1,2} (Jan|Dec|Foo) [0-9]{1,5} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}"
    r" (GMT|UT|EST|[+-][0-9]{4}|Z)?\Z"
)
latin1 = st.text(st.characters(max_codepoint=255), max_size=40)
digits_and_friends = st.text(alphabet="0123456789 ²³¹+-.e", min_size=1, max_size=30)


@given(now=moments, header=st.one_of(latin1, digits_and_friends, date_like))
@example(now=BASE, header="²")  # str.isdigit() says yes, int() says no
@example(now=BASE, header="9" * 5000)  # past int()'s 4300-digit limit
@example(now=BASE, header="100000000000000")  # past timedelta's range
def test_retry_after_never_raises(now: datetime, header: str) -> None:
    """Whatever an agent sends (headers arrive as latin-1 text), the hub gets a sane delay:
    an exception here would abort recording the attempt and leave the delivery stuck."""
    delay = retry_after_delay(header, now)
    assert delay is None or timedelta(0) <= delay <= MAX_RETRY_AFTER


@given(now=moments, digits=st.text(alphabet="0123456789", min_size=1, max_size=40))
def test_retry_after_huge_numbers_are_capped(now: datetime, digits: str) -> None:
    delay = retry_after_delay(digits, now)
    seconds = int(digits)
    assert delay == (MAX_RETRY_AFTER if seconds >= 3600 else timedelta(seconds=seconds))
