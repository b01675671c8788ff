"""`a2a`: each delivery is one A2A 1.0 call (JSON-RPC binding) to the agent.

The agent card is read from `/.well-known/agent-card.json` on the URL's origin (older agents:
`/.well-known/agent.json`) and kept a minute per process; calls go to the JSON-RPC interface it
lists, or to the URL itself when there is no card. Every request carries `A2A-Version: 1.0` and
the agent's auth header. A delivery is one `SendMessage`, or `SendStreamingMessage` when the card
declares streaming: `contextId` is the chat id, `messageId` the delivery id (the same on every
retry), the new contact messages are text parts (media as url parts), the hub's ids and the
history are in `metadata`, and a task the previous delivery left waiting for input is named by
`taskId`.

What comes back becomes the reply: a `Message`, or a task's artifacts and status message (text
parts; a data part `{"buttons": …}` or `{"list": …}` rides along as on a webhook reply).
`INPUT_REQUIRED` keeps the task id for the chat's next delivery; `COMPLETED` clears it; `FAILED`,
`REJECTED`, `AUTH_REQUIRED` and `CANCELED` fail the delivery like a 4xx. A task still working when
the call returns is followed with `GetTask` (0.2 s, growing to 1 s) until it ends, within the
agent's time limit, and at once when the agent pushes a notification (when its card takes
push-notification configs, one is sent with the message: `a2a_push.py`); a retry in this
process goes on following the task it already started instead of sending the message again.
Metadata `{"handoff": true}` on an agent message (or the task) hands the chat off.

JSON-RPC is built and read here with the SDK's protobuf types, and sent through the hub's own
client (`delivery/webhook_call.py`: one address check, no redirects, the answer capped), not the
SDK's client: docs/decisions.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx2
from a2a.types.a2a_pb2 import (
    AgentCard,
    Artifact,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
)
from a2a.utils.proto_utils import parse_lenient
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import Error as ProtobufError  # type: ignore[import-untyped]
from httpx_sse import EventSource, SSEError

from agenthub.delivery.webhook_call import (
    Outcome,
    ms_since,
    open_request,
    read_capped,
    too_large,
)
from agenthub.hub import Hub
from agenthub.transports import a2a_push
from agenthub.transports.base import (
    AgentCall,
    Partial,
    TransportEvent,
    answer,
    hub_headers,
    within,
)
from agenthub.transports.capped import CappedBody, TooLarge

A2A_VERSION = "1.0"
CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")
CARD_TTL = 60.0  # seconds a card (or its absence) is kept per process
CARD_TIMEOUT = 5.0  # at most, of the agent's time limit, for reading its card
POLL_FIRST, POLL_MAX = 0.2, 1.0  # GetTask backoff, seconds
FOLLOWED = 1000  # deliveries whose task a retry in this process goes on following

WORKING = frozenset({TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING})
FAILED = frozenset(
    {
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
        TaskState.TASK_STATE_AUTH_REQUIRED,
        TaskState.TASK_STATE_CANCELED,
    }
)
# JSON-RPC errors that say the agent is in trouble, not the request: retried as a 5xx.
RETRIED_RPC_CODES = frozenset({-32603, -32000})
# Sent with a task id, these say the task is gone or over: the message goes as a new task.
TASK_GONE_RPC_CODES = frozenset({-32001, -32004})  # TaskNotFound, UnsupportedOperation
FAILED_STATUS = 422  # the status a failed task or refused call is recorded with (not retried)
RETRIED_STATUS = 502


@dataclass(frozen=True)
class Card:
    """What the hub uses of an agent card: where JSON-RPC calls go, whether to stream, and
    whether the agent takes a push-notification config."""

    endpoint: str
    streaming: bool = False
    push: bool = False


_cards: dict[str, tuple[float, Card]] = {}
_followed: OrderedDict[str, tuple[str, str]] = OrderedDict()  # delivery id → (endpoint, task)


class A2ATransport:
    name: ClassVar[str] = "a2a"

    async def deliver(self, hub: Hub, call: AgentCall) -> AsyncIterator[TransportEvent]:
        timeout = call.target.timeout_seconds
        started = time.perf_counter()
        session = _Session(hub, call, headers_for(call), started + timeout)
        try:
            async for event in within(started + timeout, session.run()):
                yield event
        except TimeoutError:
            yield Outcome(
                None,
                ms_since(started),
                error=f"timeout after {timeout:g}s",
                error_kind="timeout",
                remote_address=session.address,
            )


def headers_for(call: AgentCall) -> dict[str, str]:
    headers = {"A2A-Version": A2A_VERSION}
    auth = call.settings.get("auth")
    if auth and call.secret:
        if auth.get("scheme") == "api_key":
            headers[auth.get("header") or "X-API-Key"] = call.secret
        else:
            headers["Authorization"] = f"Bearer {call.secret}"
    return headers


# --- the request -------------------------------------------------------------------------


def message_for(
    call: AgentCall, task_id: str | None, push: TaskPushNotificationConfig | None = None
) -> dict[str, Any]:
    """The `SendMessageRequest` params: the new contact messages as parts, the hub's ids and
    the history in metadata (and where to push the task's updates)."""
    target = call.target
    document = call.document
    message = Message(
        message_id=target.delivery_id,
        context_id=target.chat_id,
        role=Role.ROLE_USER,
        parts=list(_parts_of(call.new_messages())),
    )
    if not message.parts:  # nothing to show (a message with neither text nor media): its ids
        empty = Part()
        empty.data.struct_value.update({"new_message_ids": call.document["new_message_ids"]})
        message.parts.append(empty)
    if task_id:
        message.task_id = task_id
    configuration = SendMessageConfiguration()
    if push is not None:
        configuration.task_push_notification_config.CopyFrom(push)
    request = SendMessageRequest(message=message, configuration=configuration)
    params: dict[str, Any] = json_format.MessageToDict(request)
    # Plain JSON, not a protobuf Struct (which would turn every number into a float).
    params["message"]["metadata"] = {
        "delivery_id": target.delivery_id,
        "chat_id": target.chat_id,
        "channel_id": target.channel_id,
        "platform": target.platform,
        "agent_id": target.agent_id,
        "new_message_ids": document.get("new_message_ids", []),
        "chat": document.get("chat"),
        "history": document.get("messages", []),
    }
    return params


def _parts_of(messages: list[dict[str, Any]]) -> Iterable[Part]:
    for message in messages:
        meta = {"message_id": message["id"]}
        if message.get("content"):
            part = Part(text=str(message["content"]))
            part.metadata.update(meta)
            yield part
        media = (message.get("meta_data") or {}).get("media")
        for item in media if isinstance(media, list) else [media]:
            if isinstance(item, dict) and item.get("url"):
                part = Part(url=str(item["url"]))
                if item.get("content_type") or item.get("type"):
                    part.media_type = str(item.get("content_type") or item.get("type"))
                part.metadata.update(meta)
                yield part


def _rpc(method: str, params: dict[str, Any]) -> bytes:
    body = {"jsonrpc": "2.0", "id": uuid.uuid4().hex, "method": method, "params": params}
    return json.dumps(body, ensure_ascii=False).encode()


# --- what comes back ---------------------------------------------------------------------


class _Failed(Exception):
    """An answer that ends the attempt (carried to `run` as its outcome)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class _RpcError(Exception):
    def __init__(self, error: Any) -> None:
        error = error if isinstance(error, dict) else {"message": str(error)}
        self.code = error.get("code")
        self.message = str(error.get("message") or error)[:300]
        super().__init__(f"JSON-RPC error {self.code}: {self.message}")


@dataclass
class _Reply:
    """The reply so far: a returned message, or a task's artifacts and status."""

    task_id: str | None = None
    state: int = TaskState.TASK_STATE_UNSPECIFIED
    message: Message | None = None  # a direct answer (no task)
    status_message: Message | None = None
    artifacts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    artifact_texts: dict[str, str] = field(default_factory=dict)
    handoff_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.message is not None or (
            self.state != TaskState.TASK_STATE_UNSPECIFIED and self.state not in WORKING
        )

    def take_message(self, message: Message) -> None:
        self.message = message
        self.look_for_handoff(message.metadata)

    def take_task(self, task: Task) -> None:
        self.task_id = task.id or self.task_id
        self.take_status(task.status)
        self.look_for_handoff(task.metadata)
        self.artifacts.clear()
        self.artifact_texts.clear()
        for artifact in task.artifacts:
            self.take_artifact(artifact, append=False)

    def take_status(self, status: TaskStatus) -> None:
        self.state = status.state
        if status.HasField("message") and status.message.role != Role.ROLE_USER:
            self.status_message = status.message
            self.look_for_handoff(status.message.metadata)
        elif status.state not in WORKING:
            self.status_message = None

    def take_artifact(self, artifact: Artifact, *, append: bool) -> None:
        key = artifact.artifact_id or str(len(self.artifacts))
        text = _text_of(artifact.parts)
        rich = _rich_of(artifact.parts)
        if append and key in self.artifact_texts:
            self.artifact_texts[key] += text
            self.artifacts[key].extend(rich)
        else:
            self.artifact_texts[key] = text
            self.artifacts[key] = rich
        self.look_for_handoff(artifact.metadata)

    def text(self) -> str:
        return "\n\n".join(text for text, _ in self._replies())

    def replies(self) -> list[Any]:
        replies: list[Any] = []
        for text, rich in self._replies():
            replies.append({"text": text, **rich} if rich else text)
        return replies

    def _replies(self) -> list[tuple[str, dict[str, Any]]]:
        if self.message is not None:
            messages = [self.message] if self.message.role != Role.ROLE_USER else []
            return [r for m in messages if (r := _reply_of(m.parts))[0].strip()]
        replies = [
            (text, _merged(self.artifacts[key]))
            for key, text in self.artifact_texts.items()
            if text.strip()
        ]
        if self.status_message is not None:
            reply = _reply_of(self.status_message.parts)
            if reply[0].strip() and reply[0] not in {text for text, _ in replies}:
                replies.append(reply)
        return replies

    def look_for_handoff(self, metadata: Any) -> None:
        values = json_format.MessageToDict(metadata) if metadata is not None else {}
        if values.get("handoff") is True:
            reason = values.get("handoff_reason") or values.get("reason")
            self.handoff_reason = str(reason or "the agent asked for a human")


def _text_of(parts: Iterable[Part]) -> str:
    return "\n".join(part.text for part in parts if part.WhichOneof("content") == "text")


def _rich_of(parts: Iterable[Part]) -> list[dict[str, Any]]:
    """Data parts that carry a webhook reply's rich content (`buttons`, `list`)."""
    rich = []
    for part in parts:
        if part.WhichOneof("content") == "data":
            value = json_format.MessageToDict(part.data)
            if isinstance(value, dict):
                rich.append({k: v for k, v in value.items() if k in ("buttons", "list")})
    return [r for r in rich if r]


def _merged(rich: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for item in rich:
        merged.update(item)
    return merged


def _reply_of(parts: Iterable[Part]) -> tuple[str, dict[str, Any]]:
    parts = list(parts)
    return _text_of(parts), _merged(_rich_of(parts))


# --- one delivery ------------------------------------------------------------------------


class _Session:
    def __init__(self, hub: Hub, call: AgentCall, headers: dict[str, str], deadline: float):
        self.hub = hub
        self.call = call
        self.headers = headers
        self.deadline = deadline
        self.started = time.perf_counter()
        self.address: str | None = None
        self.status_code = 200
        self.excerpt: str | None = None
        self.reply = _Reply()
        self.shown = ""
        self.woken = asyncio.Event()
        self.push_config: TaskPushNotificationConfig | None = None

    async def run(self) -> AsyncIterator[TransportEvent]:
        with a2a_push.waiting() as (waiter_id, token, woken):
            self.woken = woken
            self.push_config = TaskPushNotificationConfig(
                url=f"{self.hub.settings.effective_public_url}/a2a/push/{waiter_id}", token=token
            )
            async for event in self._run():
                yield event

    async def _run(self) -> AsyncIterator[TransportEvent]:
        try:
            card = await self._card()
            delivery_id = self.call.target.delivery_id
            followed = _followed.get(delivery_id)
            under_way = followed is not None and followed[0] == card.endpoint
            if followed is not None and under_way:
                # A retry: the task is already under way; unless the agent lost it.
                self.reply.task_id = followed[1]
                try:
                    async for event in self._get_task(card.endpoint):
                        yield event
                except _RpcError as exc:
                    if exc.code not in TASK_GONE_RPC_CODES:
                        raise _Failed(self._rpc_failed(exc)) from exc
                    self.reply, under_way = _Reply(), False
            if not under_way:
                async for event in self._send(card, self.call.continuation):
                    yield event
            if not self.reply.done and self.reply.task_id:
                _remember(delivery_id, card.endpoint, self.reply.task_id)
                async for event in self._follow(card.endpoint):
                    yield event
            _followed.pop(delivery_id, None)
            if not self.reply.done:  # a stream that ended with neither a message nor a task
                raise _Failed(self._failed("protocol", "the answer ended before the reply did"))
            yield self._outcome()
        except _Failed as failed:
            yield failed.outcome

    # --- the card

    async def _card(self) -> Card:
        url = str(self.call.settings["url"])
        now = time.monotonic()
        cached = _cards.get(url)
        if cached is not None and cached[0] > now:
            return cached[1]
        parts = urlsplit(url)
        card: Card | None = None
        definite = False  # an answer worth keeping (a card, or a clear "none here")
        for path in CARD_PATHS:
            card_url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
            found = await self._get_json(card_url)
            if found is None:
                continue
            definite = True
            if isinstance(found, dict):
                card = card_from(found, card_url)
                if card is not None:
                    break
        card = card or Card(url)
        if definite:
            _cards[url] = (now + CARD_TTL, card)
        return card

    async def _get_json(self, url: str) -> Any:
        """The JSON at `url` (GET, through the address check); None when it could not be
        read (not there, not reachable); `False` when it answered but with no JSON."""
        timeout = max(0.1, min(CARD_TIMEOUT, self.deadline - time.perf_counter()))
        headers = {**self.headers, "accept": "application/json"}
        opened = await open_request(self.hub, url, None, headers, timeout, method="GET")
        if isinstance(opened, Outcome):
            if opened.error_kind in ("refused_address", "dns"):
                raise _Failed(self._failed(opened.error_kind, opened.error or ""))
            return None
        try:
            if opened.response.status_code != 200:
                return False if opened.response.status_code in (404, 410) else None
            data = await read_capped(self.hub, opened)
            return False if isinstance(data, Outcome) else json.loads(data)
        except (httpx2.HTTPError, OSError):
            return None
        except ValueError:
            return False
        finally:
            await opened.response.aclose()

    # --- the calls

    async def _send(self, card: Card, task_id: str | None) -> AsyncIterator[TransportEvent]:
        method = "SendStreamingMessage" if card.streaming else "SendMessage"
        push = self.push_config if card.push else None
        content = _rpc(method, message_for(self.call, task_id, push))
        try:
            async for event in self._call(card.endpoint, content, stream=card.streaming):
                yield event
        except _RpcError as exc:
            if exc.code in TASK_GONE_RPC_CODES and task_id:
                # The task the chat was waiting on is gone on the agent's side: a new one.
                async for event in self._send(card, None):
                    yield event
                return
            raise _Failed(self._rpc_failed(exc)) from exc

    async def _follow(self, endpoint: str) -> AsyncIterator[TransportEvent]:
        """GetTask until the task stops working (the deadline is `within`'s), at once when a
        push notification comes in (`a2a_push.py`), else with a growing pause."""
        pause = POLL_FIRST
        while not self.reply.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), pause)
            self.woken.clear()
            pause = min(POLL_MAX, pause * 1.5)
            try:
                async for event in self._get_task(endpoint):
                    yield event
            except _RpcError as exc:
                raise _Failed(self._rpc_failed(exc)) from exc

    async def _get_task(self, endpoint: str) -> AsyncIterator[TransportEvent]:
        params = json_format.MessageToDict(GetTaskRequest(id=self.reply.task_id or ""))
        async for event in self._call(endpoint, _rpc("GetTask", params), stream=False):
            yield event

    async def _call(
        self, url: str, content: bytes, *, stream: bool
    ) -> AsyncIterator[TransportEvent]:
        headers = {
            **self.headers,
            **hub_headers(self.call),  # the same ids as the message's, for logs and proxies
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        remaining = max(0.1, self.deadline - time.perf_counter())
        opened = await open_request(self.hub, url, content, headers, remaining)
        if isinstance(opened, Outcome):
            raise _Failed(opened)
        self.address = opened.address
        body = CappedBody(opened.response, self.hub.settings.agent_max_response_bytes)
        try:
            code = opened.response.status_code
            self.status_code = code
            if not 200 <= code < 300:
                data = await read_capped(self.hub, opened)
                raise _Failed(data if isinstance(data, Outcome) else opened.answered(data))
            if "text/event-stream" in opened.response.headers.get("content-type", ""):
                async for sse in EventSource(body).aiter_sse():  # type: ignore[arg-type]
                    if not sse.data.strip():
                        continue
                    self._take(StreamResponse(), _result_of(json.loads(sse.data)))
                    if (partial := self._partial()) is not None:
                        yield partial
                    if self.reply.done:
                        break
            else:
                self._take(SendMessageResponse(), _result_of(json.loads(await body.read())))
                if (partial := self._partial()) is not None and not self.reply.done:
                    yield partial
            self.excerpt = body.excerpt()
        except TooLarge as exc:
            raise _Failed(too_large(opened, body.limit, body.start)) from exc
        except (SSEError, ValueError, ProtobufError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise _Failed(opened.failed("protocol", error, excerpt=body.excerpt())) from exc
        except (httpx2.HTTPError, OSError) as exc:
            raise _Failed(opened.broken(exc, remaining)) from exc
        finally:
            await opened.response.aclose()

    def _take(self, into: SendMessageResponse | StreamResponse, result: Any) -> None:
        """One result (a `SendMessageResponse`, a `StreamResponse`, or a `Task` from GetTask:
        the three share `task` and `message`)."""
        if isinstance(result, dict) and "id" in result and "status" in result:
            self.reply.take_task(parse_lenient(result, Task()))
            return
        parsed = parse_lenient(result, into)
        kind = parsed.WhichOneof("payload")
        if kind == "message":
            self.reply.take_message(parsed.message)
        elif kind == "task":
            self.reply.take_task(parsed.task)
        elif isinstance(parsed, StreamResponse) and kind == "status_update":
            self.reply.task_id = parsed.status_update.task_id or self.reply.task_id
            self.reply.take_status(parsed.status_update.status)
            self.reply.look_for_handoff(parsed.status_update.metadata)
        elif isinstance(parsed, StreamResponse) and kind == "artifact_update":
            update = parsed.artifact_update
            self.reply.task_id = update.task_id or self.reply.task_id
            self.reply.take_artifact(update.artifact, append=update.append)
        else:
            raise ValueError("a result that is neither a message nor a task")

    def _partial(self) -> Partial | None:
        text = self.reply.text()
        if text and text != self.shown:
            self.shown = text
            return Partial(text)
        return None

    # --- the outcome

    def _outcome(self) -> Outcome:
        reply = self.reply
        if reply.state in FAILED:
            name = TaskState.Name(reply.state)
            said = reply.text()
            error = f"the task ended {name}" + (f": {said}" if said else "")
            return self._failed("http_status", error, status_code=FAILED_STATUS)
        keep = reply.task_id if reply.state == TaskState.TASK_STATE_INPUT_REQUIRED else None
        return Outcome(
            self.status_code,
            ms_since(self.started),
            body=answer(
                reply.replies(),
                handoff=reply.handoff_reason is not None,
                handoff_reason=reply.handoff_reason,
            ),
            excerpt=self.excerpt,
            remote_address=self.address,
            sets_continuation=True,
            continuation=keep,
        )

    def _failed(self, kind: str, error: str, *, status_code: int | None = None) -> Outcome:
        return Outcome(
            status_code,
            ms_since(self.started),
            error=error[:500],
            error_kind=kind,
            excerpt=self.excerpt,
            remote_address=self.address,
        )

    def _rpc_failed(self, exc: _RpcError) -> Outcome:
        code = RETRIED_STATUS if exc.code in RETRIED_RPC_CODES else FAILED_STATUS
        return self._failed("http_status", str(exc), status_code=code)


def _result_of(response: Any) -> Any:
    if not isinstance(response, dict):
        raise ValueError("a JSON-RPC answer that is not an object")
    if response.get("error"):
        raise _RpcError(response["error"])
    if "result" not in response:
        raise ValueError("a JSON-RPC answer with neither result nor error")
    return response["result"]


def _remember(delivery_id: str, endpoint: str, task_id: str) -> None:
    _followed[delivery_id] = (endpoint, task_id)
    _followed.move_to_end(delivery_id)
    while len(_followed) > FOLLOWED:
        _followed.popitem(last=False)


def card_from(data: dict[str, Any], card_url: str) -> Card | None:
    """The JSON-RPC endpoint and streaming flag of an agent card (1.0: `supportedInterfaces`;
    0.3: `url` with `preferredTransport` and `additionalInterfaces`); None without JSON-RPC."""
    try:
        card = parse_lenient(data, AgentCard())
    except (ProtobufError, ValueError, TypeError):
        card = AgentCard()
    capabilities = data.get("capabilities") or {}
    streaming = bool(capabilities.get("streaming"))
    push = bool(capabilities.get("pushNotifications"))
    for interface in card.supported_interfaces:
        if interface.protocol_binding.upper() == "JSONRPC" and interface.url:
            return Card(urljoin(card_url, interface.url), streaming, push)
    # A 0.3 card.
    candidates = [(data.get("preferredTransport") or "JSONRPC", data.get("url"))]
    for extra in data.get("additionalInterfaces") or []:
        if isinstance(extra, dict):
            candidates.append((extra.get("transport") or "", extra.get("url")))
    for transport, url in candidates:
        if str(transport).upper() == "JSONRPC" and isinstance(url, str) and url:
            return Card(urljoin(card_url, url), streaming, push)
    return None


def _forget_cards() -> None:
    """Tests: read every card again."""
    _cards.clear()
    _followed.clear()
