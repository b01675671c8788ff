"""The `a2a` transport end to end: the real hub delivers to a real A2A agent on loopback.

The agent is built with a2a-sdk's own server classes (an `AgentExecutor`, the SDK's request
handler and its JSON-RPC and agent-card Starlette routes) under uvicorn on 127.0.0.1, wrapped in
a small ASGI recorder that keeps every JSON-RPC call (and can answer 503 first). Everything on
the hub's side goes through its API: an `api` channel gets signed inbound messages, the job
runner delivers them, and the tests read the stored messages, deliveries and chats back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import pytest
from a2a.helpers.proto_helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import (
    BasePushNotificationSender,
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    TaskUpdater,
)
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    Message,
    Part,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatus,
)
from starlette.applications import Starlette

from agenthub.hub import Hub
from agenthub.settings import Settings
from agenthub.transports import a2a as a2a_transport
from agenthub.transports import a2a_push
from agenthub.transports.base import AgentCall
from tests.conftest import Caller, uvicorn_server
from tests.test_agent_delivery import World, replayed_events
from tests.test_agent_delivery import make_world as make_agent_world

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "delivery_backoff_base_seconds": 0.05,
            "delivery_max_attempts": 3,
            "job_sweep_seconds": 0.05,
        }
    )


@pytest.fixture(autouse=True)
def fresh_cards() -> None:
    a2a_transport._forget_cards()  # every test's agent is on a new port anyway


# --- the agent ---------------------------------------------------------------------------


class ScriptedExecutor(AgentExecutor):
    """Answers by the newest text part: see each branch."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        texts = [p.text for p in context.message.parts if p.text]
        text = texts[-1] if texts else ""
        task, context_id = context.current_task, str(context.context_id)
        if task is None and text in ("hi", "human"):
            reply = new_text_message(f"hello, {text}", context_id=context_id)
            if text == "human":
                reply.metadata.update({"handoff": True, "handoff_reason": "wants a person"})
            await event_queue.enqueue_event(reply)
            return
        task_id = str(context.task_id)
        if task is None:
            await event_queue.enqueue_event(
                Task(
                    id=task_id,
                    context_id=context_id,
                    status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                    history=[context.message],
                )
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
        if task is not None:  # the answer to "ask"
            await updater.add_artifact([Part(text=f"thanks, {text}")])
            await updater.complete()
        elif text == "ask":
            await updater.requires_input(new_text_message("your name?", context_id=context_id))
        elif text == "fail":
            await updater.failed(new_text_message("cannot do that", context_id=context_id))
        elif text in ("slow", "slower"):
            await updater.start_work()
            await asyncio.sleep(0.5 if text == "slow" else 1.2)
            await updater.add_artifact([Part(text="done at last")])
            await updater.complete()
        else:  # streamed word by word, slowly enough for partials to go out
            await updater.start_work()
            words = f"echo: {text}".split(" ")
            for n, word in enumerate(words):
                await updater.add_artifact(
                    [Part(text=word if n == 0 else f" {word}")], artifact_id="a", append=n > 0
                )
                await asyncio.sleep(0.22)
            await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class Handler(DefaultRequestHandler):
    """The SDK's handler, except that `slow` and `slower` are answered at once with the working
    task (as an agent that does not hold the request open does)."""

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Message | Task:
        if any(p.text in ("slow", "slower") for p in params.message.parts):
            params.configuration.return_immediately = True
        return await super().on_message_send(params, context)


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    answered: int = 200


@dataclass
class Recorder:
    """ASGI: every JSON-RPC call the agent got; `fail_next` answers that many with 503."""

    app: Any
    calls: list[Call] = field(default_factory=list)
    card_reads: int = 0
    fail_next: int = 0

    def sent(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.answered == 200]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            self.card_reads += 1
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        payload = json.loads(body)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        call = Call(payload["method"], payload["params"], headers)
        self.calls.append(call)
        if self.fail_next:
            self.fail_next -= 1
            call.answered = 503
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"busy"})
            return None
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


@asynccontextmanager
async def a2a_agent(
    *, streaming: bool = False, push_to: Any = None, card: bool = True
) -> AsyncIterator[tuple[str, Recorder]]:
    """An A2A agent on a free loopback port; its card names `/rpc` as its JSON-RPC endpoint.
    With `push_to` (the hub's ASGI app), it takes push-notification configs and pushes there.
    Without a `card`, it serves none and its URL is the JSON-RPC endpoint's."""
    recorder = Recorder(None)
    async with uvicorn_server(recorder) as address:
        base = f"http://{address}"
        agent_card = AgentCard(
            name="scripted",
            description="test agent",
            version="1",
            supported_interfaces=[
                AgentInterface(
                    url=f"{base}/rpc", protocol_binding="JSONRPC", protocol_version="1.0"
                )
            ],
            capabilities=AgentCapabilities(
                streaming=streaming, push_notifications=push_to is not None
            ),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
        )
        push: dict[str, Any] = {}
        if push_to is not None:
            store = InMemoryPushNotificationConfigStore()
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=push_to))
            push = {
                "push_config_store": store,
                "push_sender": BasePushNotificationSender(http, store),
            }
        handler = Handler(
            agent_executor=ScriptedExecutor(),
            task_store=InMemoryTaskStore(),
            agent_card=agent_card,
            **push,
        )
        routes = create_agent_card_routes(agent_card) if card else []
        recorder.app = Starlette(routes=routes + create_jsonrpc_routes(handler, rpc_url="/rpc"))
        yield (f"{base}/" if card else f"{base}/rpc"), recorder


# --- the hub -----------------------------------------------------------------------------


async def make_world(
    client: httpx2.AsyncClient, admin: Caller, url: str, timeout: float = 5
) -> World:
    """An `api` channel and an A2A agent at `url`, with a bearer token."""
    a2a = {"url": url, "auth": {"scheme": "bearer", "token": "sekrit"}}
    return await make_agent_world(
        client, admin, None, reached={"transport": "a2a", "a2a": a2a}, timeout_seconds=timeout
    )


async def bus_events(hub: Hub, kind: str) -> list[dict[str, Any]]:
    return [event for event in await replayed_events(hub) if event["type"] == kind]


# --- the cases ---------------------------------------------------------------------------


@pytest.mark.database_independent
async def test_a_returned_message_becomes_the_reply_and_the_request_is_a2a(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    async with a2a_agent() as (url, agent):
        world = await make_world(client, admin, url)
        await world.send("hi")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "succeeded"
        assert await world.agent_texts(chat_id) == ["hello, hi"]

        (call,) = agent.sent("SendMessage")
        assert agent.card_reads == 1  # the card, read once
        assert call.headers["a2a-version"] == "1.0"
        assert call.headers["authorization"] == "Bearer sekrit"
        message = call.params["message"]
        assert message["messageId"] == delivery["id"]
        assert message["contextId"] == chat_id
        assert message["role"] == "ROLE_USER"
        assert "taskId" not in message
        assert [p["text"] for p in message["parts"]] == ["hi"]
        meta = message["metadata"]
        assert (meta["chat_id"], meta["channel_id"], meta["agent_id"], meta["platform"]) == (
            chat_id,
            world.channel_id,
            world.agent_id,
            "api",
        )
        assert meta["delivery_id"] == delivery["id"]
        assert [m["content"] for m in meta["history"]] == ["hi"]
        assert meta["new_message_ids"] == [meta["history"][0]["id"]]

        await world.send("hi")  # the card is kept: not read again
        await world.finished(chat_id, 2)
        assert agent.card_reads == 1


@pytest.mark.database_independent
async def test_without_a_card_the_url_is_the_json_rpc_endpoint(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    async with a2a_agent(card=False) as (url, agent):
        world = await make_world(client, admin, url)
        await world.send("hi")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "succeeded"
        assert await world.agent_texts(chat_id) == ["hello, hi"]
        assert agent.card_reads == 2  # agent-card.json, then agent.json: both 404
        assert [c.method for c in agent.calls] == ["SendMessage"]


@pytest.mark.database_independent
async def test_a_streamed_reply_shows_partials_then_one_agent_message(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    async with a2a_agent(streaming=True) as (url, agent):
        world = await make_world(client, admin, url)
        await world.send("one two")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "succeeded"
        assert await world.agent_texts(chat_id) == ["echo: one two"]
        assert [c.method for c in agent.calls] == ["SendStreamingMessage"]
        partials = [e["text"] for e in await bus_events(hub, "message_partial")]
        assert len(partials) >= 2
        assert all("echo: one two".startswith(text) for text in partials)
        assert all(
            e["delivery_id"] == delivery["id"] for e in await bus_events(hub, "message_partial")
        )


async def test_input_required_keeps_the_task_for_the_next_delivery(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    async with a2a_agent() as (url, agent):
        world = await make_world(client, admin, url)
        await world.send("ask")
        chat_id = await world.chat_id()
        await world.finished(chat_id)
        assert await world.agent_texts(chat_id) == ["your name?"]
        await world.send("Ana")
        deliveries = await world.finished(chat_id, 2)
        assert [d["status"] for d in deliveries] == ["succeeded", "succeeded"]
        assert await world.agent_texts(chat_id) == ["your name?", "thanks, Ana"]
        first, second = agent.sent("SendMessage")
        assert "taskId" not in first.params["message"]
        task_id = second.params["message"]["taskId"]
        assert task_id
        # The task completed: the chat's next message starts a new one.
        await world.send("hi")
        await world.finished(chat_id, 3)
        assert "taskId" not in agent.sent("SendMessage")[2].params["message"]
        assert (await world.agent_texts(chat_id))[-1] == "hello, hi"


@pytest.mark.database_independent
async def test_a_failed_task_fails_the_delivery_without_retries(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    async with a2a_agent() as (url, agent):
        world = await make_world(client, admin, url)
        await world.send("fail")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "failed"
        (attempt,) = delivery["attempts"]
        assert attempt["status_code"] == 422
        assert "TASK_STATE_FAILED" in attempt["error"] and "cannot do that" in attempt["error"]
        assert len(agent.calls) == 1
        chat = await world.get(f"/chats/{chat_id}")
        assert chat["needs_human"] is True
        assert await world.agent_texts(chat_id) == []


@pytest.mark.database_independent
async def test_handoff_metadata_hands_the_chat_off(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    async with a2a_agent() as (url, _):
        world = await make_world(client, admin, url)
        await world.send("human")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "succeeded"
        assert await world.agent_texts(chat_id) == ["hello, human"]
        chat = await world.get(f"/chats/{chat_id}")
        assert chat["needs_human"] is True
        (link,) = await world.get(f"/chats/{chat_id}/agents")
        assert link["active"] is False


@pytest.mark.database_independent
async def test_a_task_still_working_is_followed_with_get_task(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    async with a2a_agent() as (url, agent):
        world = await make_world(client, admin, url)
        await world.send("slow")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "succeeded"
        assert len(delivery["attempts"]) == 1
        assert await world.agent_texts(chat_id) == ["done at last"]
        assert len(agent.sent("SendMessage")) == 1
        polls = agent.sent("GetTask")
        assert len(polls) >= 2
        assert polls[0].params["id"]
        assert all(p.headers["a2a-version"] == "1.0" for p in polls)


@pytest.mark.database_independent
async def test_a_retry_goes_on_following_the_task_instead_of_sending_again(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    """The task outlasts the first attempt's time limit: the retry reads it, sends nothing."""
    async with a2a_agent() as (url, agent):
        world = await make_world(client, admin, url, timeout=0.6)
        await world.send("slower")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "succeeded"
        assert delivery["attempts"][0]["error_kind"] == "timeout"
        assert len(agent.sent("SendMessage")) == 1
        assert await world.agent_texts(chat_id) == ["done at last"]


@pytest.mark.database_independent
async def test_a_retry_sends_the_same_message_id(client: httpx2.AsyncClient, admin: Caller) -> None:
    async with a2a_agent() as (url, agent):
        agent.fail_next = 1
        world = await make_world(client, admin, url)
        await world.send("hi")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "succeeded"
        assert [a["status_code"] for a in delivery["attempts"]] == [503, 200]
        first, second = agent.calls
        assert first.answered == 503
        assert first.params["message"]["messageId"] == delivery["id"]
        assert second.params["message"]["messageId"] == delivery["id"]
        assert await world.agent_texts(chat_id) == ["hello, hi"]


@pytest.mark.database_independent
async def test_a_push_notification_wakes_the_attempt_following_a_task(
    client: httpx2.AsyncClient,
    admin: Caller,
    app_and_hub: tuple[object, Hub],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Polling is made slower than the agent's time limit: only the push can end it in time."""
    monkeypatch.setattr(a2a_transport, "POLL_FIRST", 30.0)
    monkeypatch.setattr(a2a_transport, "POLL_MAX", 30.0)
    async with a2a_agent(push_to=app_and_hub[0]) as (url, agent):
        world = await make_world(client, admin, url)
        await world.send("slow")
        chat_id = await world.chat_id()
        (delivery,) = await world.finished(chat_id)
        assert delivery["status"] == "succeeded"
        assert await world.agent_texts(chat_id) == ["done at last"]
        (send,) = agent.sent("SendMessage")
        push = send.params["configuration"]["taskPushNotificationConfig"]
        assert push["url"].startswith("http://hub.test/a2a/push/") and push["token"]
        assert agent.sent("GetTask")


@pytest.mark.database_independent
async def test_the_push_endpoint_wants_the_attempts_token(client: httpx2.AsyncClient) -> None:
    with a2a_push.waiting() as (waiter_id, token, woken):
        wrong = await client.post(
            f"/a2a/push/{waiter_id}", headers={"X-A2A-Notification-Token": "guess"}
        )
        assert wrong.status_code == 401 and not woken.is_set()
        right = await client.post(
            f"/a2a/push/{waiter_id}", headers={"X-A2A-Notification-Token": token}
        )
        assert right.status_code == 204 and woken.is_set()
    # Over (or another process's): acknowledged, nothing to wake.
    gone = await client.post(f"/a2a/push/{waiter_id}", headers={"X-A2A-Notification-Token": token})
    assert gone.status_code == 204


def test_cards_of_both_versions_name_their_jsonrpc_endpoint() -> None:
    card_url = "https://agent.example/.well-known/agent-card.json"
    v1 = {
        "name": "x",
        "supportedInterfaces": [
            {"url": "https://agent.example/grpc", "protocolBinding": "GRPC"},
            {"url": "/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        ],
        "capabilities": {"streaming": True},
    }
    assert a2a_transport.card_from(v1, card_url) == a2a_transport.Card(
        "https://agent.example/a2a", True
    )
    v03 = {"name": "x", "url": "https://agent.example/rpc", "preferredTransport": "JSONRPC"}
    assert a2a_transport.card_from(v03, card_url) == a2a_transport.Card(
        "https://agent.example/rpc", False
    )
    assert (
        a2a_transport.card_from(
            {
                "name": "rest only",
                "supportedInterfaces": [
                    {"url": "https://agent.example/", "protocolBinding": "HTTP+JSON"}
                ],
            },
            card_url,
        )
        is None
    )


def test_the_auth_header_follows_the_scheme() -> None:
    def headers(auth: dict[str, Any] | None, secret: str | None) -> dict[str, str]:
        call = AgentCall(None, {"url": "https://agent.example/", "auth": auth}, secret)  # type: ignore[arg-type]
        return a2a_transport.headers_for(call)

    assert headers({"scheme": "bearer"}, "t") == {"A2A-Version": "1.0", "Authorization": "Bearer t"}
    assert headers({"scheme": "api_key", "header": None}, "t") == {
        "A2A-Version": "1.0",
        "X-API-Key": "t",
    }
    assert headers({"scheme": "api_key", "header": "X-Token"}, "t")["X-Token"] == "t"
    assert headers(None, None) == {"A2A-Version": "1.0"}
