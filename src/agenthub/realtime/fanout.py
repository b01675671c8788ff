"""One reader of the event bus per process, for all of the process's WebSockets.

A subscriber per socket (a queue and a task each, every task woken for every event) cost more
than the write itself once a process held a thousand dashboards. Instead `Fanout` reads the bus
once and, for each event, walks its sockets in a plain loop: each `Client` says at once what
the event becomes for it (usually a text every socket shares) and writes it there and then.
Events that queued while a round was going out go round together, one write per socket.

A client gets a task of its own only while it needs one: for a step that has to wait (a replay
after `last_event_id`, re-checking its token, looking up a read marker) or while its connection
takes no more (a send that has to wait for the socket to drain). Events that arrive meanwhile
queue behind that step, in order, and once they are done the client is back in the loop. A
client whose queue grows past `backlog_limit` is closed with 1013 (it reconnects with its
`last_event_id`), so one slow dashboard never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Any, Final

from agenthub.runtime.events import Event, EventBus

log = logging.getLogger(__name__)


class Later:
    """`Client.decide`'s answer when the event needs `Client.handle` (which may wait)."""


LATER: Final = Later()


class ClientClosed(Exception):
    """Raised by `Client.handle` once it closed the socket: nothing more goes to it."""


def run_eagerly(coroutine: Coroutine[Any, Any, None]) -> Awaitable[None] | None:
    """Run `coroutine` up to where it first has to wait, as an eager task would (Python
    3.12's `eager_task_factory`, for one call): None when it finished without waiting, else an
    awaitable that finishes it. A send to a socket with room in its buffer never waits, so the
    fan-out's writes cost no task, no future and no trip through the event loop."""
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    return _finish(coroutine, awaited)


async def _finish(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive `coroutine` on from a suspension, as its task would: wait for what it awaits,
    then resume it (it reads that future's result or exception itself)."""
    try:
        while True:
            if awaited is None:  # a bare yield: asyncio.sleep(0)
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                await asyncio.wait((awaited,))
            awaited = coroutine.send(None)
    except StopIteration:
        return
    except BaseException:
        coroutine.close()
        raise


class Client:
    """A socket as the fan-out sees it. Subclasses give `decide` (what an event becomes,
    without waiting), `handle` (the same when it may wait), `send_text` and `close`, and may
    give `write_now`."""

    backlog_limit = 1000

    def __init__(self) -> None:
        # Events waiting behind a step that waits, each with whether it was admitted (checked
        # against the floor) yet. A new client waits for its catch-up (`start`): until then
        # events only queue, unadmitted, as the floor is not known.
        self._backlog: deque[tuple[Event, bool]] | None = deque()
        self._task: asyncio.Task[None] | None = None
        self._overflowed = False
        self.closed = False
        # Events at or below it were replayed already, or are older than the socket.
        self.floor = 0

    # --- what subclasses provide ---

    def decide(self, event: Event) -> str | Later | None:
        """The text to send for `event`, None for nothing, or LATER to call `handle`."""
        raise NotImplementedError

    async def handle(self, event: Event) -> str | None:
        """As `decide`, for events that need to wait; may close the socket (ClientClosed)."""
        raise NotImplementedError

    async def send_text(self, text: str) -> None:
        raise NotImplementedError

    def write_now(self, texts: list[str]) -> bool:
        """Send `texts` at once, without waiting, if the client can (False: `send_text` them
        one by one instead)."""
        return False

    async def close(self, code: int) -> None:
        raise NotImplementedError

    # --- the fan-out's side ---

    def start(self, replayed: list[Event], floor: int) -> None:
        """Send `replayed` (the events after the socket's `last_event_id`), then what arrived
        meanwhile, skipping anything at or below `floor`: the socket is live."""
        self._run_later(self._replay(replayed, floor))

    def offer(self, events: list[Event]) -> None:
        """Events in bus order: what they become is sent now, in one write where the socket
        allows it; from the first that needs a step that waits, the rest queue behind it."""
        if self.closed:
            return
        if self._backlog is not None:
            self._queue(events, admitted=False)
            return
        texts: list[str] = []
        try:
            for index, event in enumerate(events):
                if not self._admit(event):
                    continue
                outcome = self.decide(event)
                if isinstance(outcome, str):
                    texts.append(outcome)
                elif outcome is LATER:
                    self._write(texts)
                    if self._backlog is None:
                        self._run_later(self._handle(event))
                    else:  # the write itself has to wait: this event waits behind it
                        self._queue([event], admitted=True)
                    self._queue(events[index + 1 :], admitted=False)
                    return
            self._write(texts)
        except Exception:  # the socket went away under us: its reader ends it
            log.debug("dropping a WebSocket client", exc_info=True)
            self.closed = True

    def stop(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()

    def end(self, code: int) -> None:
        """Close the socket with `code` (the client reconnects and catches up)."""
        if not self.closed:
            self.closed = True
            self._task = asyncio.create_task(self._close_quietly(code))

    async def _close_quietly(self, code: int) -> None:
        with contextlib.suppress(Exception):
            await self.close(code)

    # --- inside ---

    def _admit(self, event: Event) -> bool:
        event_id = event.get("event_id")
        if not isinstance(event_id, int) or event_id <= self.floor:
            return False
        self.floor = event_id
        return True

    def _queue(self, events: list[Event], *, admitted: bool) -> None:
        assert self._backlog is not None
        if self._overflowed:
            return
        if len(self._backlog) + len(events) > self.backlog_limit:
            self._overflowed = True  # `_drain` closes the socket with 1013
            self._backlog.clear()
            return
        self._backlog.extend((event, admitted) for event in events)

    def _write(self, texts: list[str]) -> None:
        if not texts or self.write_now(texts):
            return
        pending = run_eagerly(self._send_each(texts))
        if pending is not None:
            self._run_later(pending)

    async def _send_each(self, texts: list[str]) -> None:
        for text in texts:
            await self.send_text(text)

    def _run_later(self, first: Awaitable[None]) -> None:
        if self._backlog is None:
            self._backlog = deque()
        self._task = asyncio.create_task(self._drain(first))

    async def _replay(self, replayed: list[Event], floor: int) -> None:
        for event in replayed:
            if self._admit(event):
                await self._handle(event)
        self.floor = max(self.floor, floor)

    async def _handle(self, event: Event) -> None:
        text = await self.handle(event)
        if text is not None:
            await self.send_text(text)

    async def _drain(self, first: Awaitable[None]) -> None:
        try:
            await first
            while self._backlog and not self._overflowed:
                event, admitted = self._backlog.popleft()
                if admitted or self._admit(event):
                    await self._handle(event)
            if self._overflowed:
                # Fell too far behind: the client reconnects with its last_event_id.
                self.closed = True
                await self._close_quietly(1013)
                return
            self._backlog = None  # back in the fan-out's loop
        except ClientClosed:
            self.closed = True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("dropping a WebSocket client", exc_info=True)
            self.closed = True


class Fanout:
    """The process's one subscription to the bus, offered to every registered client."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._clients: set[Client] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, client: Client) -> None:
        self._clients.add(client)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read(), name="agenthub-fanout")

    def discard(self, client: Client) -> None:
        self._clients.discard(client)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _read(self) -> None:
        async with self._bus.subscribe() as stream:
            async for event in stream:
                # With whatever queued meanwhile: the further behind, the more events each
                # socket gets per write.
                events = [event, *stream.ready()]
                # A copy: a client may leave while the events go round.
                for client in list(self._clients):
                    client.offer(events)
        # The bus stopped or cut this reader off (the process could not keep up): every
        # client reconnects and catches up from its last event id.
        for client in list(self._clients):
            client.end(1013)
