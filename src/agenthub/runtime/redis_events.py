"""The event bus on Redis Streams, so every process's WebSockets see every process's events.

Publishing is one atomic script: `INCR` a counter for the integer `event_id` dashboards rely on,
then `XADD` the event under stream id `<event_id>-1` with `MAXLEN ~ buffer_size`. Each process
runs one reader (`XREAD BLOCK`) that fans events out to its local subscribers, and replays from
the stream for `last_event_id`. Unlike pub/sub, a reader that reconnects after Redis was away
continues from the last id it saw, so it misses nothing the stream still holds.
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
from redis.exceptions import RedisError

from agenthub.runtime.events import Event, _Subscriber

log = logging.getLogger(__name__)

_PUBLISH = """
local id = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id .. '-1', 'e', ARGV[1])
return id
"""


def _event_id(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0])


def _decode(stream_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
    event: Event = json.loads(fields[b"e"])
    event["event_id"] = _event_id(stream_id)
    return event


class RedisStreamEventBus:
    def __init__(
        self,
        url: str,
        *,
        stream: str = "agenthub:events",
        buffer_size: int = 1000,
        subscriber_queue: int = 1000,
    ) -> None:
        # Typed loosely: redis-py's stubs type replies as bytes | str | int unions.
        self._redis: Any = redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._stream = stream
        self._counter = f"{stream}:last_id"
        self._buffer_size = buffer_size
        self._subscriber_queue = subscriber_queue
        self._subscribers: set[_Subscriber] = set()
        self._reader: asyncio.Task[None] | None = None
        self._last_seen = "$"

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="agenthub-events")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for subscriber in self._subscribers:
            subscriber.overflowed = True
        await self._redis.aclose()

    async def publish(self, event: Event) -> Event:
        body = json.dumps(event, default=str, separators=(",", ":"))
        try:
            event_id = await self._redis.eval(
                _PUBLISH, 2, self._stream, self._counter, body, self._buffer_size
            )
        except RedisError:
            # The database holds the truth; a dashboard that missed this refetches on reconnect.
            log.warning("event not published: Redis unavailable", exc_info=True)
            return event
        return {**event, "event_id": int(event_id)}

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
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
            except RedisError:
                log.warning("event reader lost Redis; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
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
    async def subscribe(
        self, last_event_id: int | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        subscriber = _Subscriber(self._subscriber_queue)
        self._subscribers.add(subscriber)
        try:
            if last_event_id is not None:
                await self._replay(subscriber, last_event_id)
            yield subscriber.__aiter__()
        finally:
            self._subscribers.discard(subscriber)

    async def _replay(self, subscriber: _Subscriber, last_event_id: int) -> None:
        """Events after `last_event_id` still in the stream, queued ahead of live ones (the
        live reader may deliver an event twice around the seam: skip what was replayed)."""
        try:
            entries: list[Any] = await self._redis.xrange(self._stream, min=f"({last_event_id}-1")
        except RedisError:
            return
        replayed = [_decode(stream_id, fields) for stream_id, fields in entries]
        if not replayed:
            return
        newest = replayed[-1]["event_id"]
        # Move live events already queued behind the replay, dropping the overlap.
        live = []
        while not subscriber.queue.empty():
            item = subscriber.queue.get_nowait()
            if item is not None and item["event_id"] > newest:
                live.append(item)
        for event in [*replayed, *live]:
            subscriber.offer(event)
