"""Event frames written straight to the socket, once serialised for every dashboard.

An event goes to many sockets as the same bytes: server frames are not masked, and `serve`
declines compression, so a text frame is the same for every socket. Sent through ASGI, each
socket still paid for the whole stack per frame (Starlette's `send`, each middleware's wrapper,
uvicorn's handler, the websockets protocol building the frame): more than the write itself
with a thousand dashboards. `DirectFrames` writes the ready frame to uvicorn's transport.

It applies only where that is safe, and everything else takes the ASGI path:
- the connection is served by uvicorn's Sans-I/O websockets protocol (what `serve` runs), with
  no extension negotiated;
- the connection is open, not closing, and its transport has room (no backpressure: a send
  that would have to wait goes through ASGI, which waits).

`RawSendMiddleware` (outermost) keeps the server's own `send` in the scope for it to find.
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.frames import Frame, Opcode
from websockets.protocol import State

_RAW_SEND = "agenthub.raw_send"

try:  # uvicorn's Sans-I/O implementation, the default with websockets >= 14
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - another uvicorn
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]


class RawSendMiddleware:
    """Records the server's `send` of each WebSocket in its scope (nothing else changes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[_RAW_SEND] = send
        await self.app(scope, receive, send)


@functools.lru_cache(maxsize=256)
def text_frame(text: str) -> bytes:
    """The bytes of an unmasked, uncompressed text frame of `text` (each event's text is
    built once per process and reused by every socket, so is its frame)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class DirectFrames:
    """Writes frames to one connection's transport while that is safe (see the module)."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @classmethod
    def of(cls, scope: Scope) -> DirectFrames | None:
        protocol = getattr(scope.get(_RAW_SEND), "__self__", None)
        if WebSocketsSansIOProtocol is None or not isinstance(protocol, WebSocketsSansIOProtocol):
            return None
        if protocol.conn.extensions:
            return None
        return cls(protocol)

    def write(self, texts: list[str]) -> bool:
        """Write `texts` as frames, in one write; False when they must go through ASGI."""
        protocol = self._protocol
        if (
            protocol.close_sent
            or protocol.conn.state is not State.OPEN
            or not protocol.writable.is_set()
            or protocol.transport.is_closing()
        ):
            return False
        if len(texts) == 1:
            protocol.transport.write(text_frame(texts[0]))
        else:
            protocol.transport.write(b"".join(map(text_frame, texts)))
        return True
