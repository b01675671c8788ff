"""`POST /mcp`, mounted without importing the MCP SDK until an agent first calls it.

The SDK costs about a third of a second to import; every `agenthub serve` and worker process
(and every process the tests start) would pay that at startup, and most deployments never get
an MCP call. The first request imports `mcp_server`, builds its endpoint, and starts the SDK's
session manager in a task of its own (the manager's task group must be entered and left by the
same task), which the app's lifespan stops at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

PATH = "/mcp"


class LazyMCPEndpoint:
    def __init__(self) -> None:
        self._endpoint: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._starting: asyncio.Lock | None = None

    @property
    def route(self) -> Route:
        """Other methods get 405: stateless with JSON answers, there is no GET stream to
        hold open and no session to DELETE."""
        return Route(PATH, self, methods=["POST"], include_in_schema=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._endpoint or await self._start()
        await endpoint(scope, receive, send)

    async def _start(self) -> Any:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._endpoint is None:
                ready = asyncio.Event()
                self._stop = asyncio.Event()
                self._task = asyncio.create_task(self._serve(ready, self._stop))
                await ready.wait()
        if self._endpoint is None:  # the SDK did not start: the task says why
            assert self._task is not None
            await self._task
        return self._endpoint

    async def _serve(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        from agenthub.mcp_server import MCPEndpoint

        endpoint = MCPEndpoint()
        try:
            async with endpoint.run():
                self._endpoint = endpoint
                ready.set()
                await stop.wait()
        finally:
            self._endpoint = None
            ready.set()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Around the app's lifespan: the session manager, if a request started one, stops
        with it (and the next lifespan of the same app starts afresh)."""
        try:
            yield
        finally:
            task, self._task = self._task, None
            if task is not None and self._stop is not None:
                self._stop.set()
                with contextlib.suppress(Exception):
                    await task
            self._starting = None
