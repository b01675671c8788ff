"""Production jobs: Celery workers on Redis run the same work pass as the in-process runner.

The database holds all due work, so a Celery task is only "look now": `agenthub.run_due_work`.
It is sent when a request commits new work (`CeleryJobRunner.wake`) and by the beat every
`job_sweep_seconds` (the sweep that catches lost wake-ups and crashed workers' leases). When
something falls due sooner than the next sweep (a sub-second buffer window), one worker in the
cluster waits for it inside its task and runs another pass (work that was already due when a
pass began and that the pass left is not waited for: another pass holds its rows, or its own
wake-up is on the way). No task is ever sent with a countdown: due times stay in the database,
and a worker holding a countdown task when Redis went away crashed its consumer in kombu
(`restore_unacked`) and took no more tasks.

Celery cannot run `async def` tasks, so each worker process keeps one event loop and one Hub for
its whole life (created at `worker_process_init`), and task bodies run the async handlers on it.
A pass waits for the attempts it starts (`run_due_work(wait=True)`), so the heartbeat that renews
their leases (`delivery/leases.py`, one per Hub, so per pool process) runs on that loop while
they do; between tasks nothing is in flight and nothing needs renewing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_process_init,
    worker_process_shutdown,
)

from agenthub.logs import apply_quiet_loggers, install_json_format, install_redaction
from agenthub.models import utcnow
from agenthub.settings import Settings, get_settings

log = logging.getLogger(__name__)
TASK_NAME = "agenthub.run_due_work"
FOLLOW_UP_KEY = "agenthub:follow-up"


def create_celery(settings: Settings) -> Celery:
    assert settings.redis_url, "Celery needs AGENTHUB_REDIS_URL"
    app = Celery("agenthub", broker=settings.redis_url)
    app.conf.update(
        task_ignore_result=True,
        task_default_queue=settings.celery_queue,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Wake-ups are idempotent and cheap: one lost in a crash is caught by the next sweep.
        task_acks_late=False,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep": {"task": TASK_NAME, "schedule": timedelta(seconds=settings.job_sweep_seconds)}
        },
        # The sweep needs no persisted schedule: keep it in memory (no shared file in /tmp).
        beat_scheduler="celery.beat:Scheduler",
        # Redis may be away for long: keep reconnecting instead of exiting after ~100 tries.
        broker_connection_max_retries=None,
        # A wake-up taken by a worker that then dies is simply lost (the sweep looks again),
        # so kombu need not park every task in Redis's unacked set until it is acknowledged:
        # that is several Redis round trips per task, and a restore to run on reconnect.
        broker_transport_options={"ack_emulation": False},
    )
    app.task(name=TASK_NAME)(_run_due_work_task)
    return app


class _WorkerState:
    loop: asyncio.AbstractEventLoop | None = None
    hub: Any = None


def _worker_hub() -> tuple[asyncio.AbstractEventLoop, Any]:
    if _WorkerState.loop is None:
        _start_worker_process()
    assert _WorkerState.loop is not None
    return _WorkerState.loop, _WorkerState.hub


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_worker_logs(**_: Any) -> None:
    # Celery has just added its handlers (the root's, the task logger's; again in each pool
    # process): none of them may print a secret, and with `json` they all write JSON lines.
    install_redaction()
    if get_settings().log_format == "json":
        install_json_format()


@worker_process_init.connect
def _start_worker_process(**_: Any) -> None:
    from agenthub import tracing
    from agenthub.app import build_production_hub

    # Here, in the pool process: the batch span processor's thread does not survive a fork.
    tracing.setup()
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    _WorkerState.loop = loop
    _WorkerState.hub = loop.run_until_complete(build_production_hub(get_settings(), worker=True))
    tracing.instrument_hub(_WorkerState.hub)
    _WorkerState.hub.settle_memory()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (as `agenthub serve` runs under uvicorn): the same passes cost
    less CPU on it than on asyncio's selector loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@worker_process_shutdown.connect
def _stop_worker_process(**_: Any) -> None:
    from agenthub import metrics, tracing

    if _WorkerState.loop is not None and _WorkerState.hub is not None:
        _WorkerState.loop.run_until_complete(_WorkerState.hub.close())
    metrics.process_exit()
    tracing.shutdown()  # flushes the spans not exported yet


def _run_due_work_task() -> None:
    from agenthub.delivery.engine import run_due_work

    loop, hub = _worker_hub()
    sweep = hub.settings.job_sweep_seconds
    deadline = time.monotonic() + sweep  # never hold the worker much longer than a sweep
    while True:
        started, next_due = _passes(loop, hub, run_due_work)
        if next_due is None or (next_due <= started and not hub.jobs.woken):
            # Nothing, or only work that was due when the pass began and that it left: rows
            # a concurrent pass holds (and delivers), or work committed since, whose commit
            # sends its own wake-up. (A pass that reached its limit wakes us: `woken` is
            # still set only if twenty passes in a row did.)
            return
        delay = max((next_due - utcnow()).total_seconds(), 0.0)
        if delay >= sweep or time.monotonic() + delay > deadline:
            return  # the next sweep comes first
        if not loop.run_until_complete(claim_follow_up(hub, next_due, delay)):
            return  # another worker is already waiting for it (or for something sooner)
        loop.run_until_complete(asyncio.sleep(delay))


def _passes(loop: asyncio.AbstractEventLoop, hub: Any, run_due_work: Any) -> Any:
    """Work this pass creates (a retry, a reply to send, the next batch) wakes the runner:
    handle it here and now rather than through the broker. A finished delivery with nothing
    new to do wakes nobody, so the usual task is one pass."""
    started = next_due = None
    for _ in range(20):
        hub.jobs.woken = False
        started = utcnow()
        next_due = loop.run_until_complete(run_due_work(hub, started, wait=True))
        if not hub.jobs.woken:
            break
    return started, next_due


_FOLLOW_UP = """
local stored = redis.call('GET', KEYS[1])
if stored and tonumber(stored) <= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


async def claim_follow_up(hub: Any, next_due: Any, delay: float) -> bool:
    """Whether this worker should wait for `next_due` and run a pass then: no, if a pass at
    that time or sooner is already claimed anywhere in the cluster (or Redis is away: the
    sweep still comes)."""
    due_ms = int(next_due.timestamp() * 1000)
    try:
        claimed = await hub.jobs.redis.eval(
            _FOLLOW_UP, 1, FOLLOW_UP_KEY, due_ms, int(delay * 1000) + 1
        )
    except Exception:
        return False
    return bool(claimed)


class WorkerJobRunner:
    """`JobRunner` inside a Celery worker: a wake-up means "run another pass before returning"."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        import redis.asyncio as redis

        self.app = app
        self.redis = redis.from_url(settings.redis_url or "", socket_timeout=5)
        self.woken = False

    def wake(self) -> None:
        self.woken = True

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.redis.aclose()


class CeleryJobRunner:
    """`JobRunner` for serve processes and workers: wake-ups become Celery tasks.

    Sends happen in a thread (kombu is blocking) from one background task, so a burst of
    wake-ups costs one publish, and the event loop never blocks on the broker.
    """

    def __init__(self, app: Celery, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._woken.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._send_wakes(), name="agenthub-celery-wake")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _send_wakes(self) -> None:
        while True:
            await self._woken.wait()
            self._woken.clear()
            try:
                await asyncio.to_thread(self._app.send_task, TASK_NAME)
            except Exception:
                log.warning("wake-up not sent (broker unavailable); the sweep will catch up")
                await asyncio.sleep(0.5)


def run_worker(settings: Settings, *, concurrency: int, queues: str, beat: bool) -> None:
    """`agenthub worker`: a Celery worker (prefork) with the periodic sweep embedded (`-B`).

    Several workers each running the sweep is harmless: a sweep only says "look now"."""
    app = create_celery(settings)
    # Every wake-up is a task: Celery's two INFO lines per task ("received", "succeeded in")
    # cost more CPU than a pass with nothing to do. Failures are still logged (ERROR).
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    apply_quiet_loggers(settings.log_level)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--queues={queues}",
        f"--loglevel={settings.log_level}",
        # The hub neither revokes tasks nor watches worker events, so workers need not sync
        # with each other at start (mingle, about a second) or keep gossiping afterwards.
        "--without-mingle",
        "--without-gossip",
    ]
    if beat:
        argv.append("--beat")
    if settings.log_format == "json":
        argv.insert(0, "--quiet")  # no start-up banner: every line is a JSON object
    app.worker_main(argv)
