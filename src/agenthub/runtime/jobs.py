"""The job runner: wakes the handlers that do due work. The database holds the work itself.

Every piece of pending work (a buffered batch, a delivery retry, an outbound send) is a row with a
due time, so a wake-up only says "look now". Lost, duplicated or early wake-ups are harmless, and
a periodic sweep catches anything missed — including work left by a process that was killed.

`InProcessJobRunner` (default) runs the handlers as asyncio tasks in the serving process; a Celery
runner implements the same `JobRunner` interface for several processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from agenthub.models import utcnow

log = logging.getLogger(__name__)

# One pass over all due work; returns when the next piece of work falls due (None: unknown).
WorkPass = Callable[[datetime], Awaitable[datetime | None]]


class JobRunner(Protocol):
    def wake(self) -> None:
        """Something may be due now (called after a commit that created work)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class InProcessJobRunner:
    def __init__(self, work_pass: WorkPass, sweep_seconds: float = 1.0) -> None:
        self._work_pass = work_pass
        self._sweep_seconds = sweep_seconds
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.passes = 0  # passes finished since start (the first one runs at once)

    def wake(self) -> None:
        self._woken.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="agenthub-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            self._woken.clear()
            next_due: datetime | None = None
            try:
                next_due = await self._work_pass(utcnow())
            except Exception:
                log.exception("job pass failed; retrying at the next sweep")
            self.passes += 1
            await self._sleep_until(next_due)

    async def _sleep_until(self, next_due: datetime | None) -> None:
        timeout = self._sweep_seconds
        if next_due is not None:
            timeout = min(timeout, max(0.0, (next_due - utcnow()).total_seconds()))
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
