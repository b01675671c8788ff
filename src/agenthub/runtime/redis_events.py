"""The event bus on Redis Streams, so every process's WebSockets see every process's events.

Publishing is one atomic script: `INCR` a counter for the integer `event_id` dashboards rely on,
then `XADD` the event under stream id `<event_id>-1` with `MAXLEN ~ buffer_size`. Each process
runs one reader (`XREAD BLOCK`) that fans events out to its local subscribers, and replays from
the stream for `last_event_id`. Unlike pub/sub, a reader that reconnects after Redis was away
continues from the last id it saw, so it misses nothing the stream still holds.

A Redis that keeps nothing on disk comes back from a restart without the stream and the counter.
The counter then starts again from Redis's clock in microseconds (not from 1), so event ids keep
increasing across the restart: readers positioned at the old ids read on, and dashboards'
`last_event_id` stays meaningful.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from agenthub.runtime.events import Event, Subscriber

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_SECONDS = 2.0

# Lua numbers are doubles printed with 14 digits: format ids with %d, never with `..` alone.
_PUBLISH = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
end
local id = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('%d', id) .. '-1', 'e', ARGV[1])
return id
"""


def _event_id(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0])


def _decode(stream_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
    event: Event = json.loads(fields[b"e"])
    event["event_id"] = _event_id(stream_id)
    return event


class _StreamSubscriber(Subscriber):
    """Takes only events newer than the last it took: the replay and the live reader may both
    bring an event around the seam, and a new subscriber must not get events older than itself."""

    floor: int | None = None

    def offer(self, event: Event) -> None:
        event_id = event["event_id"]
        if self.floor is not None and event_id <= self.floor:
            return
        self.floor = event_id
        super().offer(event)


class RedisStreamEventBus:
    def __init__(
        self,
        url: str,
        *,
        stream: str = "agenthub:events",
        buffer_size: int = 1000,
        subscriber_queue: int = 1000,
    ) -> None:
        # Typed loosely: redis-py's stubs type replies as bytes | str | int unions. Clients from
        # a URL get no retries: after Redis restarts, each pooled connection would fail its
        # next command once (a replay that returns nothing). Retry on a fresh connection —
        # connection errors only: a Redis that hangs must not cost a webhook several timeouts.
        self._redis: Any = redis.from_url(
            url,
            socket_timeout=10,
            socket_connect_timeout=5,
            retry=Retry(
                ExponentialBackoff(cap=0.5, base=0.05),
                retries=2,
                supported_errors=(RedisConnectionError,),
            ),
        )
        self._stream = stream
        self._counter = f"{stream}:last_id"
        self._buffer_size = buffer_size
        self._subscriber_queue = subscriber_queue
        self._subscribers: set[Subscriber] = set()
        self._reader: asyncio.Task[None] | None = None
        self._last_seen = "$"

    async def start(self) -> None:
        # Where reading starts is fixed now, not whenever the reader task first runs: an event
        # published right after start must reach this process's subscribers.
        with contextlib.suppress(RedisError):
            self._last_seen = await self._current_last_id()
        self._reader = asyncio.create_task(self._read_forever(), name="agenthub-events")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            # Bounded: a reader cancelled in the middle of a blocking XREAD can take the
            # client's whole socket timeout to notice. Closing the client below ends it anyway.
            await asyncio.wait({self._reader}, timeout=1)
        for subscriber in self._subscribers:
            subscriber.overflowed = True
            if not subscriber.queue.full():
                subscriber.queue.put_nowait(None)
        await self._redis.aclose()

    async def publish(self, event: Event) -> Event:
        body = json.dumps(event, default=str, separators=(",", ":"))
        try:
            # Bounded: publishing runs after a webhook's commit, and a hanging Redis must not
            # hold the platform's request for the client's whole socket timeout.
            event_id = await asyncio.wait_for(
                self._redis.eval(_PUBLISH, 2, self._stream, self._counter, body, self._buffer_size),
                PUBLISH_TIMEOUT_SECONDS,
            )
        except (RedisError, TimeoutError):
            # The database holds the truth; a dashboard that missed this refetches on reconnect.
            log.warning("event not published: Redis unavailable", exc_info=True)
            return event
        return {**event, "event_id": int(event_id)}

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), PUBLISH_TIMEOUT_SECONDS))
        except (RedisError, TimeoutError):
            return False

    async def _read_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                if self._last_seen == "$":
                    self._last_seen = await self._current_last_id()
                entries = await self._redis.xread(
                    {self._stream: self._last_seen}, block=5000, count=500
                )
                delay = 0.1
            except Exception:  # RedisError, or anything else: the reader must never die
                log.warning("event reader lost Redis; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            for _stream, messages in entries or []:
                for stream_id, fields in messages:
                    self._last_seen = (
                        stream_id.decode() if isinstance(stream_id, bytes) else stream_id
                    )
                    event = _decode(stream_id, fields)
                    for subscriber in list(self._subscribers):
                        subscriber.offer(event)

    async def _current_last_id(self) -> str:
        info = (
            await self._redis.xinfo_stream(self._stream)
            if await self._redis.exists(self._stream)
            else None
        )
        if not info:
            return "0-0"
        last = info["last-generated-id"]
        return last.decode() if isinstance(last, bytes) else str(last)

    @asynccontextmanager
    async def subscribe(self, last_event_id: int | None = None) -> AsyncIterator[Subscriber]:
        subscriber = _StreamSubscriber(self._subscriber_queue)
        self._subscribers.add(subscriber)
        try:
            await self._catch_up(subscriber, last_event_id)
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)

    async def since(self, last_event_id: int | None) -> tuple[list[Event], int]:
        """Without Redis, nothing to replay and no floor: live events only, as the reader
        brings them."""
        try:
            if last_event_id is None:
                newest: list[Any] = await self._redis.xrevrange(self._stream, count=1)
                return [], _event_id(newest[0][0]) if newest else 0
            entries: list[Any] = await self._redis.xrange(self._stream, min=f"({last_event_id}-1")
        except RedisError:
            return [], 0
        replayed = [_decode(stream_id, fields) for stream_id, fields in entries]
        return replayed, replayed[-1]["event_id"] if replayed else last_event_id

    async def _catch_up(self, subscriber: _StreamSubscriber, last_event_id: int | None) -> None:
        """Queue the events after `last_event_id` still in the stream ahead of the live ones
        the reader brought meanwhile; without `last_event_id`, only events newer than the
        stream's newest now. The subscriber's floor drops whatever both bring."""
        replayed, newest = await self.since(last_event_id)
        live = []
        while not subscriber.queue.empty():
            item = subscriber.queue.get_nowait()
            if item is not None:
                live.append(item)
        # Replayed events raise the floor one by one; without them it starts at the newest.
        subscriber.floor = None if replayed else newest
        for event in [*replayed, *live]:
            subscriber.offer(event)
