"""The event bus behind the WebSocket: publish once, every subscriber (and replay) sees it.

`EventBus` is the small interface; `InProcessEventBus` is the default (one process, no
services). A Redis Streams implementation plugs in behind the same interface for several
processes. Events are dicts with `type` and `channel_id`; the bus assigns an increasing
`event_id` and keeps the last `buffer_size` events for `last_event_id` replay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

Event = dict[str, Any]


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Event]: ...


class EventBus(Protocol):
    async def publish(self, event: Event) -> Event: ...

    def subscribe(self, last_event_id: int | None = None) -> Any:
        """An async context manager yielding an async iterator of events (replay first)."""
        ...

    async def since(self, last_event_id: int | None) -> tuple[list[Event], int]:
        """The events still held after `last_event_id` (none without it), and the newest id
        this answer covers: a reader that took live events from before the call drops those
        at or below it, and misses nothing after it."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Subscriber:
    def __init__(self, max_queue: int) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(max_queue)
        self.overflowed = False

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # A subscriber that cannot keep up is cut off (it can reconnect with
            # last_event_id) rather than stalling every other dashboard.
            self.overflowed = True

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Event:
        if not self.overflowed:
            event = await self.queue.get()
            if event is not None:
                return event
        raise StopAsyncIteration

    def ready(self) -> list[Event]:
        """The events already queued, without waiting: a reader that fell behind takes them
        all at once (the WebSocket fan-out then writes them to each socket in one go)."""
        events: list[Event] = []
        while not self.overflowed and not self.queue.empty():
            event = self.queue.get_nowait()
            if event is None:
                self.overflowed = True  # the bus stopped: end after these
                break
            events.append(event)
        return events


class InProcessEventBus:
    def __init__(self, buffer_size: int = 1000, subscriber_queue: int = 1000) -> None:
        self._buffer: deque[Event] = deque(maxlen=buffer_size)
        self._subscribers: set[Subscriber] = set()
        self._next_id = 1
        self._subscriber_queue = subscriber_queue

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for subscriber in self._subscribers:
            subscriber.overflowed = True
            if not subscriber.queue.full():
                subscriber.queue.put_nowait(None)

    async def publish(self, event: Event) -> Event:
        stamped = {**event, "event_id": self._next_id}
        self._next_id += 1
        self._buffer.append(stamped)
        for subscriber in list(self._subscribers):
            subscriber.offer(stamped)
        return stamped

    async def since(self, last_event_id: int | None) -> tuple[list[Event], int]:
        newest = self._next_id - 1
        if last_event_id is None:
            return [], newest
        return [event for event in self._buffer if event["event_id"] > last_event_id], newest

    @asynccontextmanager
    async def subscribe(self, last_event_id: int | None = None) -> AsyncIterator[Subscriber]:
        subscriber = Subscriber(self._subscriber_queue)
        # Replay and registration happen without an await in between: no event slips through.
        if last_event_id is not None:
            for event in self._buffer:
                if event["event_id"] > last_event_id:
                    subscriber.offer(event)
        self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)
