"""An agent's reply while it streams: `message_partial` to dashboards, and to the platform
where the channel asks for it (`PartialReplies`: an `api` channel's `config.stream`, a
Telegram channel's `config.stream_drafts`).

At most one update every `INTERVAL` seconds per delivery, each with the whole text so far;
the latest text always goes out once the interval has passed, so a stream that pauses still
shows where it is. Everything here is best effort: a failed platform call is logged and
dropped. `close` waits for an update being sent, so the platform sees every partial before the
final message (which the delivery engine stores and sends once, as any reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from agenthub.delivery import events
from agenthub.delivery.payload import DeliveryTarget
from agenthub.platforms import get_adapter
from agenthub.platforms.base import PartialReplies, PartialReply

if TYPE_CHECKING:
    from agenthub.hub import Hub

log = logging.getLogger(__name__)

INTERVAL = 0.2  # seconds between two updates of one delivery


class PartialReplyStream:
    """The partial replies of one attempt."""

    def __init__(self, hub: Hub, target: DeliveryTarget) -> None:
        self._hub = hub
        self._target = target
        self._latest: str | None = None
        self._sent: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self._closed = False
        self._platform: tuple[Any, Any] | None = None
        self._looked_up = False

    def update(self, text: str) -> None:
        if self._closed:
            return
        self._latest = text
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """No more updates; an update on its way is finished first."""
        self._closed = True
        task = self._task
        if task is None:
            return
        if not self._sending:
            task.cancel()  # else it ends once the update on its way is sent
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            await self._changed.wait()
            self._changed.clear()
            wait = last + INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            text = self._latest
            if text is None or text == self._sent:
                continue
            last = loop.time()
            self._sending = True
            try:
                await self._send(text)
            finally:
                self._sending = False
            self._sent = text
            if self._closed:
                return

    async def _send(self, text: str) -> None:
        target = self._target
        await self._hub.events.publish(
            events.message_partial(
                target.channel_id, target.chat_id, target.agent_id, target.delivery_id, text
            )
        )
        platform = await self._platform_of()
        if platform is None:
            return
        adapter, context = platform
        try:
            await adapter.send_partial(
                self._hub.http, context, PartialReply(target.agent_id, target.delivery_id, text)
            )
        except Exception as exc:
            log.warning(
                "a partial reply in chat %s was not shown (%s: %s)",
                target.chat_id,
                type(exc).__name__,
                str(getattr(exc, "detail", None) or exc)[:300],
            )

    async def _platform_of(self) -> tuple[Any, Any] | None:
        """The channel's adapter and chat context, when it shows partials; looked up once."""
        if not self._looked_up:
            self._looked_up = True
            adapter = get_adapter(self._target.platform)
            if isinstance(adapter, PartialReplies):
                found = await self._hub.typing.load(self._target.chat_id)
                if found is not None and adapter.shows_partials(found[1].channel.config or {}):
                    self._platform = (adapter, found[1])
        return self._platform
