"""Login protection: too many failed logins for one username, or from one client address, and
further attempts get 429 (with `Retry-After`) until the window lets them through again.

`POST /auth/login` and `POST /auth/session` share the counters. The rules:

- **Only failures count**, in a moving window (the `limits` library): after
  `login_max_failures_per_username` failures for a username (10) or
  `login_max_failures_per_address` from an address (30) within `login_failure_window_seconds`
  (900), every attempt is refused, a correct password too, until the oldest failure of the
  window is older than the window. `Retry-After` says how many seconds that is.
- **Unknown usernames count like real ones**, so the lockout does not tell whether a user
  exists (nor does the 401: `service.login` answers both alike and spends a hash either way).
- **A success clears the username's counter, not the address's.** Whoever logs in proved they
  know the password: the failures before were most likely their own typos. An address may be
  shared by an attacker and honest users (a NAT, a proxy), and an attacker's own account
  must not wipe the failures recorded against the address.
- **A success is checked again after the password was verified**: a burst of parallel guesses
  all pass the first check before any of them is counted, so a correct guess that arrives
  once the burst has filled the window is refused too.
- **The client address is the peer as the ASGI server reports it** (`request.client.host`).
  uvicorn rewrites it from `X-Forwarded-For` only for a proxy at `127.0.0.1` (its
  `FORWARDED_ALLOW_IPS` widens that); behind a proxy elsewhere every client shares the proxy's
  address, and only the per-username limit tells them apart. Without a peer (some ASGI servers on a
  Unix socket) only the username is counted.
- **Where the counters live**: in this process's memory without `AGENTHUB_REDIS_URL`; in Redis
  with it, so every `serve` process sees the same counts. Should Redis fail, each process
  falls back to counting in its own memory (logged) rather than refusing every login.

Nothing here logs a username or a password: usernames are stored only as a hash.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, RateLimiter
from limits.errors import StorageError

from agenthub.errors import DomainError
from agenthub.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_KEY_PREFIX = "agenthub:login"
# A login must not hang on an unresponsive Redis: past this, count in memory instead.
REDIS_TIMEOUT_SECONDS = 2.0


class TooManyAttempts(DomainError):
    """429, with `Retry-After`: the seconds until the window allows another attempt."""

    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins; try again in {retry_after} seconds")
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class LoginThrottle:
    """The failure counters of one Hub (built once, on first use: `Hub.login_throttle`)."""

    def __init__(self, settings: Settings) -> None:
        window = settings.login_failure_window_seconds
        self._per_username = RateLimitItemPerSecond(
            settings.login_max_failures_per_username, window, namespace="username"
        )
        self._per_address = RateLimitItemPerSecond(
            settings.login_max_failures_per_address, window, namespace="address"
        )
        self._memory: RateLimiter = MovingWindowRateLimiter(MemoryStorage())
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._limiter = self._memory
        if settings.redis_url:
            # Our own pool (from redis-py, which the hub already uses) so `close` can end it;
            # `limits` takes any URL redis-py does through it (redis://, rediss://, unix://).
            self._pool = redis.asyncio.ConnectionPool.from_url(
                settings.redis_url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=REDIS_KEY_PREFIX,
                wrap_exceptions=True,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self._limiter = MovingWindowRateLimiter(storage)

    def _counters(self, username: str, address: str | None) -> list[tuple[RateLimitItem, str]]:
        # Hashed: no username (or NUL, or odd character) ends up in a Redis key.
        counters: list[tuple[RateLimitItem, str]] = [(self._per_username, _digest(username))]
        if address:
            counters.append((self._per_address, address))
        return counters

    async def check(self, username: str, address: str | None) -> None:
        """Raise `TooManyAttempts` while either counter is full."""
        now = time.time()
        wait = 0.0
        for item, key in self._counters(username, address):
            stats = await self._run(lambda limiter: limiter.get_window_stats(item, key))  # noqa: B023 - awaited at once
            if stats.remaining <= 0:
                wait = max(wait, stats.reset_time - now, 1.0)
        if wait > 0:
            raise TooManyAttempts(math.ceil(wait))

    async def failed(self, username: str, address: str | None) -> None:
        """Count a failed attempt against the username and the address."""
        for item, key in self._counters(username, address):
            await self._run(lambda limiter: limiter.hit(item, key))  # noqa: B023 - awaited at once

    async def succeeded(self, username: str, address: str | None) -> None:
        """Before a login is granted: refuse it if the counters filled up while the password
        was checked (see the module docstring), else clear the username's counter."""
        await self.check(username, address)
        await self._run(lambda limiter: limiter.clear(self._per_username, _digest(username)))

    async def _run(self, operation: Callable[[RateLimiter], Awaitable[T]]) -> T:
        if self._limiter is self._memory:
            return await operation(self._memory)
        try:
            return await operation(self._limiter)
        except StorageError as exc:
            log.warning(
                "login throttle: Redis failed (%s); counting in this process's memory",
                type(exc.storage_error).__name__,
            )
            return await operation(self._memory)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


def _digest(username: str) -> str:
    return hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]
