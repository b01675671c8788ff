"""The process-wide state every request and job shares (built once in the app lifespan)."""

from __future__ import annotations

import asyncio
import functools
import gc
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2

from agenthub.db import Database
from agenthub.models import utcnow
from agenthub.runtime.events import EventBus, InProcessEventBus
from agenthub.runtime.jobs import JobRunner
from agenthub.runtime.presence import InProcessPresence, Presence
from agenthub.security import SecretBox
from agenthub.settings import Settings

if TYPE_CHECKING:
    from agenthub.auth.throttle import LoginThrottle
    from agenthub.delivery.leases import LeaseHeartbeat
    from agenthub.realtime.fanout import Fanout
    from agenthub.typing_indicator import TypingIndicators
    from agenthub.webhooks.intake import WebhookIntake

T = TypeVar("T")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle takes ~20 ms, and every
    client made with `verify=True` would load its own."""
    return httpx2.create_ssl_context()


class _NoJobs:
    """Until a runner is attached (tests that call handlers directly): wake-ups go nowhere."""

    def wake(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@dataclass
class Hub:
    settings: Settings
    db: Database
    secrets: SecretBox
    http: httpx2.AsyncClient
    events: EventBus
    # Who views / types in which chat (WebSocket presence); replaced with Redis's in
    # production mode, like `events`.
    presence: Presence
    jobs: JobRunner = field(default_factory=_NoJobs)
    clock: Callable[[], datetime] = utcnow
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # When this process last purged old attempt excerpts (`delivery/engine.py`).
    excerpts_purged_at: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Hub:
        events = InProcessEventBus(settings.events_buffer_size)
        return cls(
            settings=settings,
            db=Database(settings.database_url, settings.db_pool_size),
            secrets=SecretBox(settings.resolved_secret_key()),
            # Agents and platforms get no redirects followed (a 3xx is a failure) and a
            # connection pool shared by every delivery.
            http=httpx2.AsyncClient(
                verify=_tls_context(),
                follow_redirects=False,
                limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
            ),
            events=events,
            presence=InProcessPresence(
                events, settings.presence_viewing_seconds, settings.presence_typing_seconds
            ),
        )

    def settle_memory(self) -> None:
        """Call once startup is done (app, engines, caches built): move every object that
        exists now out of reach of the cyclic garbage collector. They live as long as the
        process, yet each full collection walked them all; under load that was about a sixth
        of the CPU a webhook cost (`gc.freeze`, as the Python docs suggest for servers); and
        space out the collections that come after.
        Skipped without `freeze_memory_after_startup` (the test suite)."""
        if not self.settings.freeze_memory_after_startup:
            return
        gc.collect()
        gc.freeze()
        # Rarer collections (the defaults are 700, 10, 10): a full one walks every object made
        # since, and with a thousand dashboards' sockets that stalled every socket's events
        # (p99 at 1,000 sockets: 137 ms with the defaults, 64-71 ms with these;
        # docs/benchmarks.md, "The WebSocket fan-out"). Garbage is mostly freed by reference
        # counting anyway; these only space out the search for cycles.
        gc.set_threshold(50_000, 20, 100)

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `work` in the background, tracked so shutdown can wait for it."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @cached_property
    def intake(self) -> WebhookIntake:
        """Where webhook requests queue to be stored, in batches (`webhooks/intake.py`)."""
        from agenthub.webhooks.intake import WebhookIntake

        return WebhookIntake(self)

    @cached_property
    def lease_heartbeat(self) -> LeaseHeartbeat:
        """Renews the leases of this process's attempts in flight (`delivery/leases.py`)."""
        from agenthub.delivery.leases import LeaseHeartbeat

        return LeaseHeartbeat(self)

    @cached_property
    def fanout(self) -> Fanout:
        """The process's one reader of `events` for all its WebSockets (`realtime/fanout.py`)."""
        from agenthub.realtime.fanout import Fanout

        return Fanout(self.events)

    @cached_property
    def login_throttle(self) -> LoginThrottle:
        """The failed-login counters (`auth/throttle.py`), in memory or in Redis."""
        from agenthub.auth.throttle import LoginThrottle

        return LoginThrottle(self.settings)

    @cached_property
    def typing(self) -> TypingIndicators:
        """Typing indicators and read receipts in the background (`typing_indicator.py`)."""
        from agenthub.typing_indicator import TypingIndicators

        return TypingIndicators(self)

    async def close(self) -> None:
        await self.jobs.stop()
        if "typing" in self.__dict__:  # its loops renew for up to 25 s: stop them first
            await self.typing.close()
        if "login_throttle" in self.__dict__:  # built on first use only
            await self.login_throttle.close()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=5)
            for task in pending:
                task.cancel()
        await self.presence.stop()
        if "fanout" in self.__dict__:  # built on the first WebSocket only
            await self.fanout.stop()
        await self.events.stop()
        await self.http.aclose()
        await self.db.dispose()
        # What `settle_memory` froze may be garbage now (tests start many hubs in one process).
        gc.unfreeze()
