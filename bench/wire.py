"""A lean HTTP/1.1 keep-alive client and server on asyncio streams, for load generation.

A general-purpose client (httpx2) spends more CPU per request than the servers under test, so on a
two-core machine it would measure itself. These speak just enough HTTP/1.1 for the bench: fixed
`Content-Length` bodies, keep-alive, no chunking.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

IDLE_REOPEN_SECONDS = 4.0


@dataclass
class Response:
    status: int
    body: bytes


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = time.monotonic()

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, data: bytes) -> Response:
        if self.writer is not None and time.monotonic() - self.last_used > IDLE_REOPEN_SECONDS:
            self.close()  # the server may be closing it right now (uvicorn: 5 s keep-alive)
        if self.writer is None or self.writer.is_closing():
            await self.open()
        self.last_used = time.monotonic()
        assert self.reader is not None and self.writer is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return Response(status, body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def post(path: str, host: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete POST request, ready to write."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    completed: int
    errors: int
    seconds: float
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.completed / self.seconds


async def closed_loop(
    host: str,
    port: int,
    make_request: Callable[[], bytes],
    *,
    connections: int,
    seconds: float,
) -> LoadResult:
    """`connections` clients, each sending its next request as soon as the last is answered."""
    statuses: dict[int, int] = {}
    done = errors = 0
    conns = [await Connection(host, port).open() for _ in range(connections)]
    started = time.perf_counter()
    stop_at = started + seconds

    async def client(conn: Connection) -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            try:
                response = await conn.request(make_request())
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                conn.close()
                continue
            statuses[response.status] = statuses.get(response.status, 0) + 1
            done += 1

    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return LoadResult(ok, errors + done - ok, elapsed, statuses)


Handler = Callable[[bytes, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


async def serve(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """A keep-alive HTTP/1.1 server calling `handler(path, headers, body)` per request."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.decode("latin-1").partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                status, answer = await handler(path, headers, body)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the bench is shutting the server down
        finally:
            writer.close()

    return await asyncio.start_server(connection, host, port)
