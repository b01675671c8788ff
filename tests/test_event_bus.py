"""The event bus interface, the same tests for both runtimes:
`InProcessEventBus` (one process) and `RedisStreamEventBus` (several processes, real Redis).

Then what only the Redis bus can show: two buses on one stream (as two processes would have)
see each other's events, and events flow again after Redis is killed and restarted empty.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from agenthub.runtime.events import EventBus, InProcessEventBus
from agenthub.runtime.redis_events import RedisStreamEventBus
from tests.procs import RedisServer
from tests.services import REDIS_URL, require_redis

pytestmark = pytest.mark.anyio

Event = dict[str, Any]
TIMEOUT = 5.0


@dataclass
class Buses:
    """Makes started buses of one kind; for Redis, every bus shares one stream (one "cluster")."""

    kind: str
    make: Callable[..., Awaitable[Any]]
    # How many events beyond `buffer_size` the bus may keep (Redis trims with `MAXLEN ~`,
    # whole stream nodes of 100 entries at a time).
    slack: int
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def subscribe(self, bus: EventBus, last_event_id: int | None = None) -> Any:
        return await self.stack.enter_async_context(bus.subscribe(last_event_id))


@pytest.fixture(params=["in_process", "redis"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[Buses]:
    started: list[Any] = []
    stream = f"agenthub:test-events:{uuid.uuid4().hex}"
    if request.param == "redis":
        require_redis()

    async def make(**options: Any) -> Any:
        bus: Any
        if request.param == "in_process":
            bus = InProcessEventBus(**options)
        else:
            bus = RedisStreamEventBus(REDIS_URL, stream=stream, **options)
        await bus.start()
        started.append(bus)
        return bus

    result = Buses(request.param, make, slack=0 if request.param == "in_process" else 100)
    try:
        yield result
    finally:
        await result.stack.aclose()
        for bus in started:
            await bus.stop()
        if request.param == "redis":
            client = redis.from_url(REDIS_URL)
            await client.delete(stream, f"{stream}:last_id")
            await client.aclose()


def _event(n: int, channel: str = "chn_test") -> Event:
    return {"type": "new_message", "channel_id": channel, "n": n, "text": f"event {n} ✓"}


async def _publish(bus: EventBus, count: int, start: int = 0) -> list[int]:
    ids = []
    for n in range(start, start + count):
        stamped = await bus.publish(_event(n))
        ids.append(stamped["event_id"])
    return ids


async def _take(stream: Any, count: int, timeout: float = TIMEOUT) -> list[Event]:
    events = []
    for _ in range(count):
        events.append(await asyncio.wait_for(anext(stream), timeout))
    return events


async def _take_until(stream: Any, last_id: int, timeout: float = TIMEOUT) -> list[Event]:
    """Everything up to and including the event `last_id` (a sentinel the test published)."""
    events: list[Event] = []
    while not events or events[-1]["event_id"] < last_id:
        events.append(await asyncio.wait_for(anext(stream), timeout))
    return events


async def _nothing_more(stream: Any, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        extra = await asyncio.wait_for(anext(stream), wait)
        pytest.fail(f"unexpected event {extra}")


# --- the same tests for both buses ---------------------------------------------------------


async def test_publish_reaches_every_subscriber_with_increasing_integer_ids(buses: Buses) -> None:
    bus = await buses.make()
    first = await buses.subscribe(bus)
    second = await buses.subscribe(bus)
    ids = await _publish(bus, 20)

    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for stream in (first, second):
        events = await _take(stream, 20)
        assert [e["event_id"] for e in events] == ids
        assert events[0] == {**_event(0), "event_id": ids[0]}  # the payload arrives intact
        assert [e["n"] for e in events] == list(range(20))
        await _nothing_more(stream)


async def test_a_new_subscriber_gets_only_later_events(buses: Buses) -> None:
    bus = await buses.make()
    await _publish(bus, 3)
    stream = await buses.subscribe(bus)
    ids = await _publish(bus, 2, start=3)
    assert [e["event_id"] for e in await _take(stream, 2)] == ids
    await _nothing_more(stream)


async def test_replay_after_last_event_id_then_live_without_gap_or_duplicate(
    buses: Buses,
) -> None:
    bus = await buses.make()
    ids = await _publish(bus, 10)
    stream = await buses.subscribe(bus, last_event_id=ids[3])
    replayed = await _take(stream, 6)
    assert [e["event_id"] for e in replayed] == ids[4:]
    assert [e["n"] for e in replayed] == list(range(4, 10))

    live_ids = await _publish(bus, 5, start=10)
    live = await _take(stream, 5)
    assert [e["event_id"] for e in live] == live_ids
    await _nothing_more(stream)


async def test_replay_while_events_are_being_published(buses: Buses) -> None:
    """Subscribing with `last_event_id` in the middle of a stream of events: the replay and
    the live events meet with nothing missing and nothing twice."""
    bus = await buses.make()
    published: list[int] = []

    async def publisher() -> None:
        for n in range(300):
            published.append((await bus.publish(_event(n)))["event_id"])
            if n % 10 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(publisher())
    while len(published) < 50:
        await asyncio.sleep(0.001)
    after = published[20]
    stream = await buses.subscribe(bus, last_event_id=after)
    await task
    received = [e["event_id"] for e in await _take_until(stream, published[-1])]
    assert received == published[21:]
    await _nothing_more(stream)


async def test_last_event_id_at_the_newest_event_replays_nothing(buses: Buses) -> None:
    bus = await buses.make()
    ids = await _publish(bus, 5)
    stream = await buses.subscribe(bus, last_event_id=ids[-1])
    live = await _publish(bus, 1, start=5)
    assert [e["event_id"] for e in await _take(stream, 1)] == live


async def test_replay_holds_at_most_the_buffer(buses: Buses) -> None:
    bus = await buses.make(buffer_size=10)
    ids = await _publish(bus, 250)
    stream = await buses.subscribe(bus, last_event_id=0)
    sentinel = (await bus.publish(_event(999)))["event_id"]
    replayed = [e["event_id"] for e in await _take_until(stream, sentinel)][:-1]
    # The newest events, oldest first, without holes: a suffix of what was published.
    assert replayed == ids[-len(replayed) :]
    assert 10 <= len(replayed) <= 10 + buses.slack


async def test_a_subscriber_that_falls_behind_is_cut_off_and_others_are_not(
    buses: Buses,
) -> None:
    bus = await buses.make(subscriber_queue=5)
    slow = await buses.subscribe(bus)
    fast = await buses.subscribe(bus)
    ids: list[int] = []
    for n in range(12):
        ids += await _publish(bus, 1, start=n)
        assert (await _take(fast, 1))[0]["event_id"] == ids[-1]

    got = []
    with pytest.raises(StopAsyncIteration):
        while True:
            got.append((await asyncio.wait_for(anext(slow), TIMEOUT))["event_id"])
    # At most what fitted in its queue, then the end (its WebSocket is closed with 1013).
    assert got == ids[: len(got)] and len(got) <= 5


# --- Redis only: several processes ----------------------------------------------------------


@pytest.fixture
def redis_buses(buses: Buses) -> Buses:
    """Only the Redis bus spans processes: tests taking this one run with `redis` alone."""
    assert buses.kind == "redis", "mark the test with @only_redis"
    return buses


only_redis = pytest.mark.parametrize("buses", ["redis"], indirect=True)


@only_redis
async def test_an_event_published_on_one_bus_reaches_the_other_buses(redis_buses: Buses) -> None:
    serve_a = await redis_buses.make()
    serve_b = await redis_buses.make()
    on_a = await redis_buses.subscribe(serve_a)
    on_b = await redis_buses.subscribe(serve_b)
    # A Celery worker's bus only publishes: it is never started (no reader).
    worker = RedisStreamEventBus(REDIS_URL, stream=serve_a._stream)
    try:
        ids = await _publish(serve_a, 3)
        ids += await _publish(serve_b, 3, start=3)
        ids += await _publish(worker, 3, start=6)
    finally:
        await worker.stop()
    assert ids == sorted(ids) and len(set(ids)) == 9
    for stream in (on_a, on_b):
        events = await _take(stream, 9)
        assert [e["event_id"] for e in events] == ids
        assert [e["n"] for e in events] == list(range(9))
        await _nothing_more(stream)

    late = await redis_buses.subscribe(serve_b, last_event_id=ids[4])
    assert [e["event_id"] for e in await _take(late, 4)] == ids[5:]


@pytest.mark.multiprocess
async def test_events_flow_again_after_redis_restarts_empty(tmp_path: Path) -> None:
    """A Redis that keeps nothing on disk is SIGKILLed and started again: the stream and its
    counter are gone. Publishing meanwhile fails fast without raising; afterwards every bus
    reads on, with event ids still increasing, and replay works across the restart."""
    server = RedisServer(tmp_path)
    server.start()
    buses: list[RedisStreamEventBus] = []
    try:
        serve_a = RedisStreamEventBus(server.url())
        serve_b = RedisStreamEventBus(server.url())
        buses += [serve_a, serve_b]
        for bus in buses:
            await bus.start()
        async with serve_b.subscribe() as stream:
            before = await _publish(serve_a, 5)
            assert [e["event_id"] for e in await _take(stream, 5)] == before

            server.kill()
            started = time.monotonic()
            lost = await serve_a.publish(_event(100))
            assert "event_id" not in lost  # not published: Redis is away
            assert time.monotonic() - started < 3
            assert not await serve_a.ping()

            await server.astart()
            after = await _publish(serve_a, 5, start=5)
            assert min(after) > max(before)  # ids never go back: dashboards' replay relies on it
            events = await _take(stream, 5, timeout=15)
            assert [e["event_id"] for e in events] == after
            assert [e["n"] for e in events] == list(range(5, 10))
        async with serve_b.subscribe(last_event_id=before[-1]) as replay:
            assert [e["event_id"] for e in await _take(replay, 5)] == after
    finally:
        try:
            for bus in buses:
                await bus.stop()
        finally:
            server.stop()
