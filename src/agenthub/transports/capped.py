"""An agent's answer read as text, cut off past the response cap: httpx-sse reads streams
through it (it has the `headers` and `aiter_text` that `EventSource` uses), and whole answers
with `read`. The first 4 KiB are kept for the attempt log's excerpt."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator

import httpx2

from agenthub.delivery.webhook_call import EXCERPT_BYTES, excerpt_of


class TooLarge(Exception):
    """The answer passed `AGENTHUB_AGENT_MAX_RESPONSE_BYTES`."""


class CappedBody:
    def __init__(self, response: httpx2.Response, limit: int) -> None:
        self.response = response
        self.headers = response.headers
        self.limit = limit
        self.size = 0
        self.start = b""

    async def aiter_text(self) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        async for chunk in self.response.aiter_bytes():
            self.size += len(chunk)
            if len(self.start) < EXCERPT_BYTES:
                self.start += chunk[: EXCERPT_BYTES - len(self.start)]
            if self.size > self.limit:
                raise TooLarge
            yield decoder.decode(chunk)

    async def read(self) -> str:
        return "".join([text async for text in self.aiter_text()])

    def excerpt(self) -> str | None:
        return excerpt_of(self.start)
