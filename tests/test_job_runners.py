"""The job runner interface (`wake`, `start`, `stop`), the same tests for both runtimes:

- `in_process`: `InProcessJobRunner` in this process (the default mode);
- `celery`: `CeleryJobRunner` here, as in a serve process, and a real `agenthub worker`
  subprocess on a Redis of the test's own, running the same work pass.

The work is real: a chat on a scratch PostgreSQL database whose agent buffer falls due, which
the work pass turns into a signed delivery to a loopback agent. "The pass ran" means the agent
got that delivery and the database shows it succeeded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from agenthub.app import start_runtime
from agenthub.hub import Hub
from agenthub.models import AgentDelivery, Base, ChatAgentLink, Message, utcnow
from agenthub.runtime.celery_jobs import CeleryJobRunner
from agenthub.runtime.jobs import InProcessJobRunner
from agenthub.settings import Settings
from tests.agent_server import FakeAgent, eventually, respond
from tests.factories import make_agent, make_channel, make_chat
from tests.procs import SECRET_KEY, RedisServer, WorkerProcess, hub_env, scratch_database

pytestmark = pytest.mark.anyio

NO_SWEEP = 3600.0  # seconds: "never" within a test
SWEEP = 0.2


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


CELERY = pytest.param("celery", marks=pytest.mark.multiprocess)


@pytest.fixture(params=["in_process", CELERY])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def celery_worker(
    database_url: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One `agenthub worker` without the sweep (no beat), shared by the Celery tests: work
    reaches it only through wake-ups (and the passes it waits for itself)."""
    env = hub_env(database_url, redis_server.url(), job_sweep_seconds=NO_SWEEP)
    workdir = tmp_path_factory.mktemp("worker")
    worker = WorkerProcess("worker", env, workdir, concurrency=1, beat=False)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()
        print(worker.log_text()[-3000:])  # shown when a test fails


@pytest.fixture
def runtime(
    kind: str,
    database_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
):  # type: ignore[no-untyped-def]
    """`runtime(sweep_seconds)`: a started Hub whose `jobs` is the runner under test.

    Celery: with the sweep, a worker of the test's own whose embedded beat sweeps every
    `sweep_seconds`; without, the shared worker that has no beat."""

    @asynccontextmanager
    async def running(sweep_seconds: float) -> AsyncIterator[Hub]:
        redis_url = None
        if kind == "celery":  # the in-process runner starts no Redis
            redis_url = request.getfixturevalue("redis_server").url()
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            secret_key=SECRET_KEY,
            allow_private_agent_urls=True,
            job_sweep_seconds=sweep_seconds,
            delivery_backoff_base_seconds=0.5,
            db_pool_size=2,
            _env_file=None,  # type: ignore[call-arg]
        )
        sweeper = None
        if kind == "celery":
            worker: WorkerProcess = request.getfixturevalue("celery_worker")
            assert worker.alive
            if sweep_seconds < NO_SWEEP:
                env = hub_env(database_url, redis_url, job_sweep_seconds=sweep_seconds)
                sweeper = WorkerProcess("sweeper", env, tmp_path, concurrency=1)
        hub = Hub.from_settings(settings)
        try:
            await _empty_tables(hub)
            if sweeper is not None:
                await sweeper.astart()
            await start_runtime(hub)
            expected = CeleryJobRunner if kind == "celery" else InProcessJobRunner
            assert isinstance(hub.jobs, expected)
            if isinstance(hub.jobs, InProcessJobRunner):
                # Its first pass runs at start, in the background: let it end before the test
                # makes work due, or that pass may find it (a wake-up the test did not send).
                jobs = hub.jobs
                await eventually(lambda: jobs.passes >= 1, message="no first pass")
            yield hub
        finally:
            try:
                await hub.close()
            finally:
                if sweeper is not None:
                    sweeper.stop()
                    print(sweeper.log_text()[-3000:])  # shown when the test fails

    return running


async def _empty_tables(hub: Hub) -> None:
    names = ", ".join(table.name for table in Base.metadata.sorted_tables)
    async with hub.db.transaction() as session:
        await session.execute(text(f"TRUNCATE {names} CASCADE"))


async def _due_work(hub: Hub, agent: FakeAgent, *, in_seconds: float = 0.0) -> str:
    """A chat whose contact message waits in its agent's buffer until `in_seconds` from now;
    returns the message id. Nothing wakes the runner: that is each test's business."""
    message_id, _ = await _due_work_at(hub, agent, in_seconds=in_seconds)
    return message_id


async def _due_work_at(hub: Hub, agent: FakeAgent, *, in_seconds: float) -> tuple[str, datetime]:
    channel = await make_channel(hub)
    bot, _ = await make_agent(hub, webhook_url=agent.url, buffer_time_seconds=0)
    chat = await make_chat(hub, channel, messages=1, agents=(bot,))
    due = utcnow() + timedelta(seconds=in_seconds)
    async with hub.db.transaction() as session:
        await session.execute(
            update(ChatAgentLink)
            .where(ChatAgentLink.chat_id == chat.id)
            .values(waiting_since=due, last_arrival_at=due, due_at=due)
        )
        message_id = await session.scalar(select(Message.id).where(Message.chat_id == chat.id))
    assert message_id is not None
    return message_id, due


async def _delivered(hub: Hub, agent: FakeAgent, message_id: str, timeout: float = 15) -> float:
    """Wait until the agent got `message_id` and the hub recorded success; when it arrived."""
    await eventually(
        lambda: [r for r in agent.successes if r.new_message_ids == [message_id]],
        timeout=timeout,
        message=f"{message_id} never delivered",
    )

    async def recorded() -> bool:
        async with hub.db.session(read_only=True) as session:
            statuses = list(await session.scalars(select(AgentDelivery.status)))
        return statuses == ["succeeded"]

    await eventually(recorded, timeout=timeout, message="the delivery was not recorded")
    return next(r.started_at for r in agent.requests if r.new_message_ids == [message_id])


async def test_a_wake_up_runs_the_work_pass(runtime, agent: FakeAgent) -> None:  # type: ignore[no-untyped-def]
    async with runtime(NO_SWEEP) as hub:
        message_id = await _due_work(hub, agent)
        await asyncio.sleep(1.0)
        assert agent.requests == []  # no sweep: due work waits for a wake-up
        woken = time.monotonic()
        hub.jobs.wake()
        arrived = await _delivered(hub, agent, message_id)
        assert arrived - woken < 5


async def test_a_lost_wake_up_is_caught_by_the_sweep(runtime, agent: FakeAgent) -> None:  # type: ignore[no-untyped-def]
    async with runtime(SWEEP) as hub:
        message_id = await _due_work(hub, agent)  # committed, but nobody calls wake()
        await _delivered(hub, agent, message_id)


async def test_work_due_later_runs_when_due_after_one_wake_up(runtime, agent: FakeAgent) -> None:  # type: ignore[no-untyped-def]
    """One wake-up, no sweep: the pass itself schedules the next look at the due time (the
    in-process runner sleeps until then; a Celery worker waits for it inside its task)."""
    async with runtime(NO_SWEEP) as hub:
        message_id, due = await _due_work_at(hub, agent, in_seconds=1.5)
        hub.jobs.wake()
        await _delivered(hub, agent, message_id)
        (request,) = agent.requests
        assert due <= request.received_at < due + timedelta(seconds=3)  # not early, not late


async def test_a_retry_runs_after_its_backoff_without_another_wake_up(
    runtime,  # type: ignore[no-untyped-def]
    agent: FakeAgent,
) -> None:
    async with runtime(NO_SWEEP) as hub:
        agent.script.append(respond(503))
        message_id = await _due_work(hub, agent)
        hub.jobs.wake()
        await _delivered(hub, agent, message_id)
        first, second = agent.requests
        assert first.answered == 503 and second.answered == 200
        assert first.delivery_id == second.delivery_id
        assert second.started_at - first.started_at >= 0.2  # 0.5 s ± 50 % backoff


@pytest.mark.parametrize("kind", [CELERY])  # the in-process runner has no broker
async def test_a_burst_of_wake_ups_sends_one_or_two_tasks(
    kind: str,
    runtime,  # type: ignore[no-untyped-def]
    agent: FakeAgent,
    redis_server: RedisServer,
) -> None:
    """Celery only: every task costs a publish, a dispatch and a pass, so wake-ups that come
    while one is being sent become one more task at most (kombu publishes with LPUSH)."""
    import redis

    async with runtime(NO_SWEEP) as hub:
        message_id = await _due_work(hub, agent)
        broker = redis.Redis.from_url(redis_server.url())
        try:
            before = broker.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0)
            # A burst between two turns of the event loop (as a batch of commits makes it):
            # counted before the delivery, whose own work may send more wake-ups.
            for _ in range(50):
                hub.jobs.wake()
            await asyncio.sleep(0.3)
            sent = broker.info("commandstats")["cmdstat_lpush"]["calls"] - before
            await _delivered(hub, agent, message_id)
        finally:
            broker.close()
        assert sent == 1, sent


@pytest.mark.parametrize("kind", [CELERY])  # the in-process runner has no broker
async def test_due_work_another_transaction_holds_does_not_keep_the_worker_passing(
    kind: str,
    runtime,  # type: ignore[no-untyped-def]
    agent: FakeAgent,
    celery_worker: WorkerProcess,
) -> None:
    """Celery only: work due when a pass began that the pass had to leave (its rows held by
    another transaction, as by a concurrent pass in another worker, which delivers it) is
    that transaction's: the worker returns rather than passing again and again, as long as
    the rows stay held, and still takes the next wake-up at once."""
    async with runtime(NO_SWEEP) as hub:
        held = await _due_work(hub, agent)
        async with hub.db.transaction() as session:
            chat_id = select(Message.chat_id).where(Message.id == held).scalar_subquery()
            await session.execute(
                select(ChatAgentLink.id).where(ChatAgentLink.chat_id == chat_id).with_for_update()
            )
            hub.jobs.wake()
            await asyncio.sleep(0.2)  # the worker's pass skips the held buffer
            cpu_before = _tree_cpu_seconds(celery_worker.pid)
            await asyncio.sleep(0.5)
            idle_cpu = _tree_cpu_seconds(celery_worker.pid) - cpu_before
            assert idle_cpu < 0.1, f"the worker kept passing: {idle_cpu:.2f} s of CPU in 0.5 s"
            other = await _due_work(hub, agent)
            hub.jobs.wake()
            assert await eventually_true(
                lambda: [r for r in agent.successes if r.new_message_ids == [other]], timeout=3
            ), "the worker was still busy with the held work"
            assert [r.new_message_ids for r in agent.requests] == [[other]]
        hub.jobs.wake()  # the rows are free again (a real concurrent pass would deliver them)
        assert await eventually_true(
            lambda: [r for r in agent.successes if r.new_message_ids == [held]], timeout=5
        )


@pytest.mark.parametrize("kind", [CELERY])  # the in-process runner has no broker
async def test_a_worker_waiting_for_due_work_outlives_a_broker_restart(
    kind: str,
    runtime,  # type: ignore[no-untyped-def]
    agent: FakeAgent,
    redis_server: RedisServer,
) -> None:
    """Celery only: the worker's pass finds work due in a moment and waits for it in its task
    (no countdown task held in the worker: when Redis went away, kombu crashed restoring one
    and the worker never took a task again). Redis restarts meanwhile: the waited-for work is
    delivered, and later wake-ups reach the worker."""
    async with runtime(NO_SWEEP) as hub:
        waited, due = await _due_work_at(hub, agent, in_seconds=1.5)
        hub.jobs.wake()
        await asyncio.sleep(0.7)  # the worker is now waiting for `due`
        redis_server.kill()
        assert await eventually_true(
            lambda: [r for r in agent.successes if r.new_message_ids == [waited]], timeout=15
        ), "the waited-for work was not delivered"
        (request,) = agent.requests
        assert request.received_at >= due
        await redis_server.astart()
        later = await _due_work(hub, agent)
        assert await _delivered_eventually(hub, agent, later), "no wake-up reached the worker"


@pytest.mark.parametrize("kind", [CELERY])  # the in-process runner has no broker
async def test_wake_ups_survive_the_broker_going_away(
    kind: str,
    runtime,  # type: ignore[no-untyped-def]
    agent: FakeAgent,
    redis_server: RedisServer,
) -> None:
    """Celery only (and last: it restarts the module's Redis). With Redis down a wake-up is
    lost but never blocks the event loop or raises; once Redis is back, empty, the serve side
    and the worker reconnect and wake-ups work again."""
    async with runtime(NO_SWEEP) as hub:
        redis_server.kill()
        lost = await _due_work(hub, agent)
        stalls = await _loop_stalls(hub.jobs.wake, seconds=2.0)
        # kombu's blocking publish (and its retries) stays off the loop: ~40 ticks in 2 s,
        # each on time (were it on the loop, each wake-up would hold it ~0.4 s or more).
        assert len(stalls) >= 20 and sorted(stalls)[len(stalls) // 2] < 0.1, stalls
        assert agent.requests == []

        await redis_server.astart()
        assert await _delivered_eventually(hub, agent, lost), "no wake-up reached the worker"


def _tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its live descendants."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid, seconds in used.items():
        ancestor = pid
        while ancestor > 1 and ancestor != root:
            ancestor = parents.get(ancestor, 0)
        total += seconds if ancestor == root else 0.0
    return total


async def _loop_stalls(wake: object, seconds: float) -> list[float]:
    """Call `wake` every 50 ms for `seconds`, noting how late each tick of the loop was."""
    assert callable(wake)
    stalls = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        wake()
        before = time.monotonic()
        await asyncio.sleep(0.05)
        stalls.append(time.monotonic() - before - 0.05)
    return stalls


async def eventually_true(condition: object, timeout: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return False


async def _delivered_eventually(hub: Hub, agent: FakeAgent, message_id: str) -> bool:
    """Wake every second until delivered (a worker may take a while to reconnect)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if [r for r in agent.successes if r.new_message_ids == [message_id]]:
            return True
        hub.jobs.wake()
        await asyncio.sleep(1.0)
    return False
