"""A real loopback agent for delivery tests: a small HTTP/1.1 server on 127.0.0.1.

It records every request (headers, raw body, parsed JSON, when it started and ended, what it
answered) and answers as scripted, one `Action` per request:

- `reply(...)` / `respond(status, ...)`: an answer, optionally after a delay;
- `hang(seconds)`: no answer; holds the connection until the client gives up (or `seconds`);
- `drop()`: closes the connection without answering.

Actions come from `agent.script` (a queue, first in first out), else from `agent.handler(request)`,
else `agent.default` (200 with an empty JSON object). Every response carries `Connection: close`,
so each delivery attempt is one connection and a dropped one never poisons a pooled connection.

With `protocol="a2a"` it is an A2A agent without a card (the URL is its JSON-RPC endpoint):
a 2xx action answers `SendMessage` with an agent message of the reply's texts (`handoff` in
its metadata), and the card requests get a 404 that is not recorded.
With `protocol="openai"` it is an OpenAI-compatible server instead (`POST /chat/completions`,
`/responses`): the same actions, a 2xx answer streamed as server-sent events (a reply's texts
as chunks, `handoff` as a `handoff_to_human` tool call); `stream(...)` scripts the chunks
themselves, and can break the stream halfway. The hub's ids come from its `agenthub-*`
headers, so the checks below work the same.

The server also checks the hub's ordering promise: it notes every time two requests for the same
(chat, agent) were in flight at once (`agent.overlaps`). A request stops being in flight once it is
answered, dropped, or the client has hung up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal


@dataclass(frozen=True)
class Action:
    kind: Literal["respond", "hang", "drop", "stream"]
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # `stream` (openai): the text chunks, the pause between them, and how many to send before
    # dropping the connection (None: all, then the end of the stream).
    chunks: tuple[str, ...] = ()
    pause: float = 0.0
    break_after: int | None = None


def respond(
    status: int = 200, body: Any = None, *, headers: dict[str, str] | None = None, delay: float = 0
) -> Action:
    return Action("respond", status, {} if body is None else body, headers or {}, delay)


def reply(
    text: str | None = None,
    *,
    replies: list[str] | None = None,
    handoff: bool | None = None,
    delay: float = 0,
) -> Action:
    body: dict[str, Any] = {}
    if text is not None:
        body["reply"] = text
    if replies is not None:
        body["replies"] = replies
    if handoff is not None:
        body["handoff"] = handoff
    return respond(200, body, delay=delay)


def stream(
    *chunks: str, pause: float = 0.0, break_after: int | None = None, delay: float = 0
) -> Action:
    """(openai) A streamed answer of these text chunks."""
    return Action("stream", 200, delay=delay, chunks=chunks, pause=pause, break_after=break_after)


def hang(seconds: float = 10.0) -> Action:
    return Action("hang", delay=seconds)


def drop() -> Action:
    return Action("drop")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    started_at: float  # time.monotonic()
    received_at: datetime  # wall clock, comparable with the hub's message timestamps
    json: Any = None
    action: Action | None = None
    finished_at: float | None = None
    # The status actually written back (None: no answer reached the client).
    answered: int | None = None

    @property
    def delivery_id(self) -> str | None:
        return self.headers.get("webhook-id") or self.headers.get("agenthub-delivery-id")

    @property
    def chat_id(self) -> str | None:
        chat = self.json.get("chat") if isinstance(self.json, dict) else None
        if isinstance(chat, dict):
            return chat.get("id")
        return self.headers.get("agenthub-chat-id")

    @property
    def agent_id(self) -> str | None:
        agent = self.json.get("agent") if isinstance(self.json, dict) else None
        if isinstance(agent, dict):
            return agent.get("id")
        return self.headers.get("agenthub-agent-id")

    @property
    def new_message_ids(self) -> list[str]:
        if isinstance(self.json, dict) and "new_message_ids" in self.json:
            return list(self.json.get("new_message_ids") or [])
        ids = self.headers.get("agenthub-message-ids")
        return ids.split(",") if ids else []

    @property
    def roles(self) -> list[tuple[str, str]]:
        """(openai) The conversation sent: (role, content) pairs, Chat Completions or Responses."""
        body = self.json if isinstance(self.json, dict) else {}
        entries = list(body.get("messages") or body.get("input") or [])
        if body.get("instructions"):
            entries.insert(0, {"role": "system", "content": body["instructions"]})
        return [(e["role"], e["content"]) for e in entries]

    @property
    def contents(self) -> dict[str, str]:
        """Message id → content for every message in the body's history."""
        messages = self.json.get("messages", []) if isinstance(self.json, dict) else []
        return {m["id"]: m["content"] for m in messages}

    @property
    def succeeded(self) -> bool:
        return self.answered is not None and 200 <= self.answered < 300


# Decides the answer to a request; may be async (e.g. to hold a request until a test says so).
Handler = Callable[[Request], Action | Awaitable[Action]]


class FakeAgent:
    def __init__(
        self,
        handler: Handler | None = None,
        *,
        protocol: Literal["webhook", "openai", "a2a"] = "webhook",
    ) -> None:
        self.protocol = protocol
        self.handler = handler
        self.default = respond(200, {})
        self.script: deque[Action] = deque()
        self.requests: list[Request] = []
        self.overlaps: list[tuple[Request, Request]] = []
        self._in_flight: dict[tuple[str, str], Request] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.url = ""

    async def start(self) -> FakeAgent:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(BaseException):
                    await task
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeAgent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- what tests look at -------------------------------------------------------------

    def for_chat(self, chat_id: str) -> list[Request]:
        return [r for r in self.requests if r.chat_id == chat_id]

    @property
    def successes(self) -> list[Request]:
        return [r for r in self.requests if r.succeeded]

    # --- the server ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await self._read_request(reader)
            if request is not None:
                await self._handle(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        request = Request(method, path, headers, raw, time.monotonic(), datetime.now(UTC))
        with contextlib.suppress(ValueError):
            request.json = json.loads(raw) if raw else None
        return request

    async def _handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.protocol == "a2a" and request.method == "GET":  # the card: there is none
            writer.write(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            return
        self.requests.append(request)
        key = (request.chat_id, request.agent_id)
        tracked = key[0] is not None and key[1] is not None
        if tracked:
            other = self._in_flight.get(key)  # type: ignore[arg-type]
            if other is not None:
                self.overlaps.append((other, request))
            self._in_flight[key] = request  # type: ignore[index]
        try:
            action = request.action = await self._choose(request)
            if action.kind == "drop":
                return
            if action.delay and await _client_hung_up(reader, action.delay):
                return
            if action.kind == "hang":
                return
            if self.protocol == "openai" and 200 <= action.status < 300:
                await _stream_openai(request, action, writer)
                return
            body = action.body
            if self.protocol == "a2a" and 200 <= action.status < 300:
                body = _a2a_result(request, action)
            payload = json.dumps(body).encode()
            reason = HTTPStatus(action.status).phrase if action.status in _KNOWN else "Status"
            head = [
                f"HTTP/1.1 {action.status} {reason}",
                "Content-Type: application/json",
                f"Content-Length: {len(payload)}",
                "Connection: close",
                *(f"{k}: {v}" for k, v in action.headers.items()),
            ]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
            request.answered = action.status
        finally:
            request.finished_at = time.monotonic()
            if tracked and self._in_flight.get(key) is request:  # type: ignore[arg-type]
                del self._in_flight[key]  # type: ignore[arg-type]

    async def _choose(self, request: Request) -> Action:
        if self.script:
            return self.script.popleft()
        if self.handler is not None:
            action = self.handler(request)
            if inspect.isawaitable(action):
                action = await action
            return action
        return self.default


_KNOWN = {s.value for s in HTTPStatus}


async def _stream_openai(request: Request, action: Action, writer: asyncio.StreamWriter) -> None:
    """A 2xx action as an OpenAI-compatible event stream (Chat Completions or Responses)."""
    body = action.body if isinstance(action.body, dict) else {}
    chunks = list(action.chunks)
    if action.kind != "stream":
        texts = [body["reply"]] if isinstance(body.get("reply"), str) else []
        texts += [r for r in body.get("replies") or [] if isinstance(r, str)]
        chunks = [word + " " for word in " ".join(texts).split(" ")] if texts else []
        if chunks:
            chunks[-1] = chunks[-1].rstrip(" ")
    responses = request.path.rstrip("/").endswith("/responses")
    head = (
        f"HTTP/1.1 {action.status} OK\r\nContent-Type: text/event-stream\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1"))
    events = [_text_event(chunk, responses) for chunk in chunks]
    if body.get("handoff") is True:
        events.append(_handoff_event(str(body.get("handoff_reason") or "asked"), responses))
    events.append(
        'data: {"type":"response.completed","response":{"status":"completed"}}\n\n'
        if responses
        else "data: [DONE]\n\n"
    )
    for n, event in enumerate(events):
        if action.break_after is not None and n >= action.break_after:
            writer.transport.abort()  # mid-stream, as a crashed server would
            return
        writer.write(event.encode())
        await writer.drain()
        if action.pause:
            await asyncio.sleep(action.pause)
    request.answered = action.status


def _a2a_result(request: Request, action: Action) -> dict[str, Any]:
    """A 2xx action as the JSON-RPC answer to `SendMessage`: one agent message."""
    body = action.body if isinstance(action.body, dict) else {}
    texts = [body["reply"]] if isinstance(body.get("reply"), str) else []
    texts += [r for r in body.get("replies") or [] if isinstance(r, str)]
    metadata: dict[str, Any] = {}
    if body.get("handoff") is True:
        metadata = {"handoff": True, "handoff_reason": body.get("handoff_reason") or "asked"}
    message = {
        "messageId": f"reply-{request.delivery_id}",
        "role": "ROLE_AGENT",
        "parts": [{"text": text} for text in texts],
        "metadata": metadata,
    }
    rpc_id = request.json.get("id") if isinstance(request.json, dict) else None
    return {"jsonrpc": "2.0", "id": rpc_id, "result": {"message": message}}


def _text_event(chunk: str, responses: bool) -> str:
    if responses:
        data = {"type": "response.output_text.delta", "delta": chunk}
        return f"event: response.output_text.delta\ndata: {json.dumps(data)}\n\n"
    data = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": chunk}}],
    }
    return f"data: {json.dumps(data)}\n\n"


def _handoff_event(reason: str, responses: bool) -> str:
    arguments = json.dumps({"reason": reason})
    if responses:
        item = {"type": "function_call", "name": "handoff_to_human", "arguments": arguments}
        return f"data: {json.dumps({'type': 'response.output_item.done', 'item': item})}\n\n"
    call = {"index": 0, "id": "call_1", "type": "function"}
    call["function"] = {"name": "handoff_to_human", "arguments": arguments}  # type: ignore[assignment]
    delta = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
    return f"data: {json.dumps(delta)}\n\n"


async def _client_hung_up(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait up to `seconds`; True as soon as the client closes its end (it gave up on us)."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return False
    return data == b""


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition not met",
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        await asyncio.sleep(interval)
