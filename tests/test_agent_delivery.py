"""Hub → agent delivery end to end, against a real loopback HTTP agent.

Everything goes through the public API: an `api` channel receives signed inbound messages, the
in-process job runner buffers and delivers them to `tests/agent_server.FakeAgent`, which records
every request and answers as each test scripts it (replies, 5xx, timeouts, dropped connections,
429 with `Retry-After`, other 4xx). Retries are made fast through settings; results are awaited
by polling with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook, WebhookVerificationError

from agenthub.hub import Hub
from agenthub.platforms import get_adapter
from agenthub.security import new_webhook_secret
from agenthub.settings import Settings
from tests.agent_server import (
    Action,
    FakeAgent,
    Request,
    drop,
    eventually,
    hang,
    reply,
    respond,
)
from tests.conftest import Caller
from tests.fake_platform import standard_webhook_headers

pytestmark = pytest.mark.anyio

MAX_ATTEMPTS = 4
AGENT_TIMEOUT = 0.5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with retries fast enough to watch: ~0.05 s, times 3 per attempt."""
    return settings.model_copy(
        update={
            "delivery_backoff_base_seconds": 0.05,
            "delivery_max_attempts": MAX_ATTEMPTS,
            "job_sweep_seconds": 0.05,
        }
    )


# --- the world, through the API -------------------------------------------------------------


@dataclass
class World:
    client: httpx2.AsyncClient
    admin: Caller
    channel_id: str
    channel_secret: str
    agent_id: str
    agent_name: str
    agent_secret: str
    agent_token: str

    async def send(
        self,
        content: str,
        *,
        contact: str = "+15550001111",
        message_id: str | None = None,
        contact_name: str | None = None,
        meta_data: dict[str, Any] | None = None,
    ) -> str:
        """POST one signed inbound message; returns its platform message id."""
        message_id = message_id or f"ext-{uuid.uuid4().hex[:12]}"
        payload: dict[str, Any] = {
            "contact_id": contact,
            "message_id": message_id,
            "content": content,
        }
        if contact_name is not None:
            payload["contact_name"] = contact_name
        if meta_data is not None:
            payload["meta_data"] = meta_data
        body = json.dumps(payload)
        headers = {
            "content-type": "application/json",
            **standard_webhook_headers(self.channel_secret, body),
        }
        response = await self.client.post(
            f"/webhooks/api/{self.channel_id}", content=body, headers=headers
        )
        assert response.status_code == 200, response.text
        return message_id

    async def chat_id(self, contact: str = "+15550001111") -> str:
        response = await self.client.get(
            f"/channels/{self.channel_id}/chats", headers=self.admin.headers
        )
        assert response.status_code == 200, response.text
        (chat,) = [c for c in response.json()["chats"] if c["external_id"] == contact]
        return str(chat["id"])

    async def chat(self, chat_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/chats/{chat_id}", headers=self.admin.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def messages(self, chat_id: str) -> list[dict[str, Any]]:
        """The chat's messages, oldest first."""
        response = await self.client.get(
            f"/chats/{chat_id}/messages", params={"limit": 200}, headers=self.admin.headers
        )
        assert response.status_code == 200, response.text
        return list(reversed(response.json()["messages"]))

    async def contact_ids(self, chat_id: str) -> list[str]:
        return [m["id"] for m in await self.messages(chat_id) if m["sender_type"] == "CONTACT"]

    async def agent_texts(self, chat_id: str) -> list[str]:
        return [m["content"] for m in await self.messages(chat_id) if m["sender_type"] == "AGENT"]

    async def deliveries(self, chat_id: str) -> list[dict[str, Any]]:
        """The chat's deliveries, oldest first."""
        response = await self.client.get(
            f"/chats/{chat_id}/deliveries", params={"limit": 200}, headers=self.admin.headers
        )
        assert response.status_code == 200, response.text
        return sorted(response.json(), key=lambda d: d["created_at"])

    async def settled(self, chat_id: str) -> list[dict[str, Any]] | None:
        """The deliveries once every one of them is finished (None while any is pending)."""
        deliveries = await self.deliveries(chat_id)
        if deliveries and all(d["status"] != "pending" for d in deliveries):
            return deliveries
        return None

    async def finished(self, chat_id: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait for the chat's `count` deliveries to be made and finished; oldest first."""

        async def done() -> list[dict[str, Any]] | None:
            deliveries = await self.settled(chat_id)
            return deliveries if deliveries is not None and len(deliveries) >= count else None

        found: list[dict[str, Any]] = await eventually(done, message="deliveries pending")
        return found

    async def get(self, path: str) -> Any:
        response = await self.client.get(path, headers=self.admin.headers)
        assert response.status_code == 200, response.text
        return response.json()


def transport_fields(agent: FakeAgent | None) -> dict[str, Any]:
    """How an agent at `agent.url` is reached, in `POST /auth/agents` fields."""
    assert agent is not None
    if agent.protocol == "openai":
        settings = {"base_url": agent.url, "api_key": "sk-test-key", "model": "test-model"}
        return {"transport": "openai", "openai": settings}
    if agent.protocol == "a2a":
        return {"transport": "a2a", "a2a": {"url": agent.url}}
    return {"webhook_url": agent.url}


async def make_world(
    client: httpx2.AsyncClient,
    admin: Caller,
    agent: FakeAgent | None,
    *,
    channel_config: dict[str, Any] | None = None,
    reached: dict[str, Any] | None = None,
    **agent_fields: Any,
) -> World:
    """An `api` channel and an agent: at `agent` (its transport from its protocol), or as
    `reached` says (`{"transport": …, …}`)."""
    response = await client.post(
        "/channels",
        json={"name": "web", "platform": "api", "config": channel_config or {}},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    channel = response.json()
    fields = {"buffer_time_seconds": 0, "timeout_seconds": AGENT_TIMEOUT} | agent_fields
    response = await client.post(
        "/auth/agents",
        json={"name": "bot", **(reached or transport_fields(agent)), **fields},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return World(
        client,
        admin,
        channel["id"],
        channel["credentials"]["secret"],
        created["id"],
        created["name"],
        created["webhook_secret"],
        created["token"],
    )


@dataclass
class Accounting:
    deliveries_succeeded: int
    messages_delivered: int  # contact message ids in successful deliveries, with repeats
    duplicated: int  # contact messages seen in two different delivery ids
    lost: int  # contact messages in no successful delivery
    answered_twice: int  # deliveries the agent answered 2xx more than once


def account(agent: FakeAgent, contact_ids: list[str]) -> Accounting:
    seen: dict[str, set[str | None]] = defaultdict(set)
    for request in agent.requests:
        for message_id in request.new_message_ids:
            seen[message_id].add(request.delivery_id)
    successes = Counter(r.delivery_id for r in agent.successes)
    first_success = {r.delivery_id: r for r in reversed(agent.successes)}
    delivered = [m for r in first_success.values() for m in r.new_message_ids]
    return Accounting(
        deliveries_succeeded=len(successes),
        messages_delivered=len(delivered),
        duplicated=sum(1 for ids in seen.values() if len(ids) > 1),
        lost=len(set(contact_ids) - set(delivered)),
        answered_twice=sum(1 for n in successes.values() if n > 1),
    )


async def replayed_events(hub: Hub) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with hub.events.subscribe(last_event_id=0) as stream:
        while True:
            try:
                events.append(await asyncio.wait_for(anext(stream), 0.1))
            except (TimeoutError, StopAsyncIteration):
                return events


def verify_signature(request: Request, secret: str) -> Any:
    return Webhook(secret).verify(request.raw, request.headers)


# --- the delivery body and the agent's answer ------------------------------------------------


async def test_delivery_matches_the_documented_body_and_an_inline_reply_becomes_an_agent_message(
    agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent)
    agent.default = reply("hello from bot")

    await world.send("hi", contact_name="Ana", meta_data={"page": "/pricing"})
    chat_id = await world.chat_id()
    await eventually(lambda: agent.successes, message="no delivery")
    (request,) = agent.requests
    (contact_id,) = await world.contact_ids(chat_id)

    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    body = request.json
    assert body["delivery_id"].startswith("dlv_")
    assert request.headers["webhook-id"] == body["delivery_id"]
    assert verify_signature(request, world.agent_secret) == body
    with pytest.raises(WebhookVerificationError):
        verify_signature(request, new_webhook_secret())
    assert body["event"] == "chat.messages"
    assert body["agent"] == {"id": world.agent_id, "name": world.agent_name}
    assert body["chat"] == {
        "id": chat_id,
        "name": "Ana",
        "external_id": "+15550001111",
        "channel_id": world.channel_id,
        "platform": "api",
        "window": None,  # no customer-service window on `api` channels
        "capabilities": get_adapter("api").capabilities.as_dict(),
    }
    (message,) = body["messages"]
    assert message.keys() == {"id", "content", "sender", "sender_type", "timestamp", "meta_data"}
    assert message["id"] == contact_id
    assert message["content"] == "hi"
    assert (message["sender"], message["sender_type"]) == ("contact", "CONTACT")
    assert message["meta_data"] == {"page": "/pricing"}
    datetime.fromisoformat(message["timestamp"])
    assert body["new_message_ids"] == [contact_id]
    assert body["reply_url"] == f"http://hub.test/chats/{chat_id}/messages"

    # The inline reply is stored once as an AGENT message from this agent.
    await eventually(lambda: world.agent_texts(chat_id), message="no agent message")
    stored = await world.messages(chat_id)
    assert [(m["sender_type"], m["content"]) for m in stored] == [
        ("CONTACT", "hi"),
        ("AGENT", "hello from bot"),
    ]
    assert stored[1]["sender_id"] == world.agent_id

    # The next delivery carries the history oldest first, and only the new message as new.
    agent.default = respond(200, {})
    await world.send("and another thing")
    await eventually(lambda: len(agent.successes) == 2, message="no second delivery")
    second = agent.requests[-1].json
    assert second["delivery_id"] != body["delivery_id"]
    history = [(m["sender"], m["sender_type"], m["content"]) for m in second["messages"]]
    assert history == [
        ("contact", "CONTACT", "hi"),
        ("agent", "AGENT", "hello from bot"),
        ("contact", "CONTACT", "and another thing"),
    ]
    assert second["new_message_ids"] == [second["messages"][-1]["id"]]

    # An agent may also answer later through the API, with its own token.
    path = second["reply_url"].removeprefix("http://hub.test")
    response = await client.post(
        path,
        json={"content": "a later answer"},
        headers={"Authorization": f"Bearer {world.agent_token}"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["sender_type"] == "AGENT"
    assert await world.agent_texts(chat_id) == ["hello from bot", "a later answer"]


async def test_replies_list_and_handoff(
    agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent)
    agent.script.append(reply(replies=["one", "two", "  ", 3], handoff=True))  # type: ignore[list-item]

    await world.send("I want a human")
    chat_id = await world.chat_id()
    await eventually(lambda: agent.successes, message="no delivery")
    await eventually(
        lambda: len_at_least(world.agent_texts(chat_id), 2), message="replies not stored"
    )
    assert await world.agent_texts(chat_id) == ["one", "two"]  # blank and non-text ignored
    chat = await world.chat(chat_id)
    assert chat["needs_human"] is True
    response = await client.get(f"/chats/{chat_id}/agents", headers=admin.headers)
    assert [(link["agent_id"], link["active"]) for link in response.json()] == [
        (world.agent_id, False)
    ]

    # The agent stepped back: it no longer receives this chat's messages.
    await world.send("hello?")
    await asyncio.sleep(0.4)  # several sweeps of the job runner
    assert len(agent.requests) == 1
    assert len(await world.deliveries(chat_id)) == 1


async def len_at_least(texts: Any, n: int) -> bool:
    return len(await texts) >= n


# --- failures and retries --------------------------------------------------------------------

FAULTS: dict[str, tuple[Action, int | None, str]] = {
    # fault → (the agent's action, the status code recorded, a piece of the recorded error)
    "500": (respond(500, {"error": "boom"}), 500, "HTTP 500"),
    "503": (respond(503), 503, "HTTP 503"),
    "timeout": (hang(5), None, f"timeout after {AGENT_TIMEOUT:g}s"),
    "connection closed": (drop(), None, "Error"),
    "429": (respond(429, headers={"Retry-After": "0"}), 429, "HTTP 429"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_each_fault_is_retried_with_the_same_webhook_id_until_it_succeeds(
    fault: str, agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent)
    action, status_code, error = FAULTS[fault]
    agent.script.extend([action, action, reply("finally")])

    await world.send("hello")
    chat_id = await world.chat_id()
    deliveries = await eventually(lambda: world.settled(chat_id), message="never settled")

    assert len(agent.requests) == 3
    ids = {r.headers["webhook-id"] for r in agent.requests}
    assert len(ids) == 1, "every attempt must carry the same webhook-id"
    assert {r.json["delivery_id"] for r in agent.requests} == ids
    for request in agent.requests:
        verify_signature(request, world.agent_secret)
    assert len({tuple(r.new_message_ids) for r in agent.requests}) == 1

    (delivery,) = deliveries
    assert delivery["id"] in ids
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 3
    attempts = delivery["attempts"]
    assert [a["attempt_number"] for a in attempts] == [1, 2, 3]
    assert [a["status_code"] for a in attempts] == [status_code, status_code, 200]
    for attempt in attempts[:2]:
        assert error in attempt["error"]
    assert attempts[2]["error"] is None
    assert delivery["last_error"] is None

    contact_ids = await world.contact_ids(chat_id)
    assert account(agent, contact_ids) == Accounting(1, 1, 0, 0, 0)
    assert await world.agent_texts(chat_id) == ["finally"]  # the reply is stored once
    assert (await world.chat(chat_id))["needs_human"] is False


@pytest.fixture(params=["webhook", "openai", "a2a"])
async def any_agent(request: pytest.FixtureRequest) -> AsyncIterator[FakeAgent]:
    """A loopback agent on each transport (the A2A transport's own protocol details, against
    the a2a-sdk's server: tests/test_a2a_transport.py)."""
    async with FakeAgent(protocol=request.param) as server:
        yield server


async def test_mixed_faults_across_chats_lose_and_duplicate_nothing(
    any_agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    agent = any_agent
    world = await make_world(client, admin, agent)
    plans = [
        [],
        [respond(500)],
        [drop(), respond(503)],
        [respond(429, headers={"Retry-After": "0"})],
        [hang(5)],
        [respond(502), drop(), respond(500)],
    ]
    order: dict[str, int] = {}
    attempts: Counter[str] = Counter()

    def handler(request: Request) -> Action:
        delivery_id = request.delivery_id or ""
        plan = plans[order.setdefault(delivery_id, len(order)) % len(plans)]
        attempts[delivery_id] += 1
        if attempts[delivery_id] <= len(plan):
            return plan[attempts[delivery_id] - 1]
        return reply(f"ack {delivery_id}", delay=0.05)

    agent.handler = handler
    contacts = [f"+1555000200{n}" for n in range(3)]
    for round_ in range(4):
        for contact in contacts:
            await world.send(f"{contact} #{round_}", contact=contact)
        await asyncio.sleep(0.07)  # let some deliveries start, so later messages find them busy

    chat_ids = [await world.chat_id(c) for c in contacts]
    for chat_id in chat_ids:
        await eventually(lambda c=chat_id: all_delivered(world, agent, c), timeout=20)

    all_contact_ids: list[str] = []
    succeeded = 0
    for chat_id in chat_ids:
        contact_ids = await world.contact_ids(chat_id)
        all_contact_ids += contact_ids
        deliveries = await world.deliveries(chat_id)
        assert {d["status"] for d in deliveries} == {"succeeded"}
        succeeded += len(deliveries)
        # Each chat's deliveries, in order, carry its messages in order.
        assert [m for d in deliveries for m in d["message_ids"]] == contact_ids
        # Every successful delivery's inline reply is stored, once.
        assert sorted(await world.agent_texts(chat_id)) == sorted(
            f"ack {d['id']}" for d in deliveries
        )
    assert len(all_contact_ids) == 12
    assert account(agent, all_contact_ids) == Accounting(succeeded, 12, 0, 0, 0)
    assert agent.overlaps == []


async def all_delivered(world: World, agent: FakeAgent, chat_id: str) -> bool:
    contact_ids = await world.contact_ids(chat_id)
    delivered = {m for r in agent.successes if r.chat_id == chat_id for m in r.new_message_ids}
    return set(contact_ids) <= delivered and bool(await world.settled(chat_id))


async def test_after_the_last_attempt_the_delivery_fails_and_the_chat_needs_a_human(
    agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    world = await make_world(client, admin, agent)
    agent.script.extend([respond(500, {"oops": True}), hang(5), drop(), respond(503)])
    agent.default = reply("too late")

    await world.send("anyone there?")
    chat_id = await world.chat_id()
    (delivery,) = await eventually(lambda: world.settled(chat_id), message="never gave up")

    assert len(agent.requests) == MAX_ATTEMPTS
    assert len({r.delivery_id for r in agent.requests}) == 1
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == MAX_ATTEMPTS
    attempts = delivery["attempts"]
    assert [a["attempt_number"] for a in attempts] == [1, 2, 3, 4]
    assert [a["status_code"] for a in attempts] == [500, None, None, 503]
    assert attempts[0]["error"].startswith("HTTP 500")
    assert attempts[1]["error"] == f"timeout after {AGENT_TIMEOUT:g}s"
    assert attempts[2]["error"]  # the connection closed without an answer
    assert attempts[3]["error"].startswith("HTTP 503")
    assert delivery["last_error"] == attempts[3]["error"]
    assert all(a["latency_ms"] is not None for a in attempts)
    assert (await world.chat(chat_id))["needs_human"] is True
    assert await world.agent_texts(chat_id) == []

    events = await replayed_events(hub)
    failed = [e for e in events if e["type"] == "agent_delivery_failed"]
    assert [(e["chat_id"], e["agent_id"], e["delivery_id"]) for e in failed] == [
        (chat_id, world.agent_id, delivery["id"])
    ]
    assert failed[0]["channel_id"] == world.channel_id


@pytest.mark.parametrize("status_code", [400, 404])
async def test_other_4xx_fail_at_once(
    status_code: int, agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent)
    agent.default = respond(status_code, {"detail": "no"})

    await world.send("hello")
    chat_id = await world.chat_id()
    (delivery,) = await eventually(lambda: world.settled(chat_id), message="never failed")
    await asyncio.sleep(0.2)  # a retry would have come by now

    assert len(agent.requests) == 1
    assert delivery["status"] == "failed"
    assert [(a["attempt_number"], a["status_code"]) for a in delivery["attempts"]] == [
        (1, status_code)
    ]
    assert delivery["attempts"][0]["error"].startswith(f"HTTP {status_code}")
    assert (await world.chat(chat_id))["needs_human"] is True


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured(
    form: str, agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent)

    def handler(request: Request) -> Action:
        if len(agent.requests) > 1:
            return reply("ok")
        if form == "seconds":
            return respond(429, headers={"Retry-After": "1"})
        # Two seconds ahead in whole seconds: between one and two seconds from now.
        later = datetime.now(UTC) + timedelta(seconds=2)
        return respond(429, headers={"Retry-After": format_datetime(later, usegmt=True)})

    agent.handler = handler
    await world.send("hello")
    chat_id = await world.chat_id()
    (delivery,) = await eventually(lambda: world.settled(chat_id), message="never settled")

    first, second = agent.requests
    assert first.finished_at is not None
    # Backoff alone would retry after ~0.05 s; Retry-After holds the next attempt back.
    assert second.started_at - first.finished_at >= 0.95
    assert second.delivery_id == first.delivery_id
    assert [a["status_code"] for a in delivery["attempts"]] == [429, 200]


# --- the buffer, live -----------------------------------------------------------------------


async def test_a_burst_becomes_one_delivery(
    agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    buffer = timedelta(seconds=0.3)
    world = await make_world(client, admin, agent, buffer_time_seconds=0.3)

    for n in range(5):
        await world.send(f"part {n}")
    chat_id = await world.chat_id()
    await eventually(lambda: all_delivered(world, agent, chat_id), message="not delivered")
    await asyncio.sleep(0.4)  # longer than the buffer: nothing else is coming

    contact = [m for m in await world.messages(chat_id) if m["sender_type"] == "CONTACT"]
    arrived = {m["id"]: datetime.fromisoformat(m["timestamp"]) for m in contact}
    ids = [m["id"] for m in contact]
    assert [m["content"] for m in contact] == [f"part {n}" for n in range(5)]
    assert [m for r in agent.requests for m in r.new_message_ids] == ids
    assert account(agent, ids) == Accounting(len(agent.requests), 5, 0, 0, 0)
    for request in agent.requests:
        # Not before the chat had been quiet for the buffer time.
        assert request.received_at >= arrived[request.new_message_ids[-1]] + buffer
    # A burst splits only where the contact paused for at least the buffer time. (On a
    # loaded machine the posts themselves may be that slow; normally they take a few ms.)
    gaps = [arrived[b] - arrived[a] for a, b in itertools.pairwise(ids)]
    for request in agent.requests[1:]:
        index = ids.index(request.new_message_ids[0])
        assert gaps[index - 1] >= buffer - timedelta(milliseconds=5), (gaps, index)
    if max(gaps) < buffer - timedelta(milliseconds=50):
        assert len(agent.requests) == 1


async def test_max_buffer_caps_a_steady_stream(
    agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent, buffer_time_seconds=0.3, max_buffer_seconds=0.5)
    for n in range(10):  # one message every ~0.1 s: never quiet for 0.3 s
        await world.send(f"tick {n}")
        await asyncio.sleep(0.1)
    last_sent = time.monotonic()
    chat_id = await world.chat_id()
    contact_ids = await world.contact_ids(chat_id)
    await eventually(lambda: all_delivered(world, agent, chat_id), message="not all delivered")

    # The cap, not the quiet period, started the first delivery: while messages kept coming.
    assert agent.requests[0].started_at < last_sent
    assert len(agent.successes) >= 2
    assert [m for r in agent.successes for m in r.new_message_ids] == contact_ids
    assert account(agent, contact_ids) == Accounting(len(agent.successes), 10, 0, 0, 0)
    assert agent.overlaps == []


async def test_messages_arriving_in_flight_go_into_the_next_delivery(
    agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent, timeout_seconds=10)
    release = asyncio.Event()

    async def handler(request: Request) -> Action:
        # The first delivery of the first chat is held until the test lets it go.
        first = request.json["chat"]["external_id"] == "+15550000001"
        if first and len(agent.for_chat(request.chat_id or "")) == 1:
            await release.wait()
        return respond(200, {})

    agent.handler = handler
    await world.send("first", contact="+15550000001")
    first_chat = await world.chat_id("+15550000001")
    await eventually(lambda: agent.requests, message="no delivery")

    # While it is in flight: two more messages for the same chat, and one in another chat.
    await world.send("second", contact="+15550000001")
    await world.send("third", contact="+15550000001")
    await world.send("elsewhere", contact="+15550000002")
    other_chat = await world.chat_id("+15550000002")
    # One slow chat holds back only itself: the other chat is delivered meanwhile.
    await eventually(lambda: all_delivered(world, agent, other_chat), message="other chat")
    await asyncio.sleep(0.2)  # several sweeps: a concurrent delivery would start now
    assert len(agent.for_chat(first_chat)) == 1
    release.set()
    await eventually(lambda: all_delivered(world, agent, first_chat), message="first chat")

    one, two = agent.for_chat(first_chat)
    ids = await world.contact_ids(first_chat)
    assert one.new_message_ids == ids[:1]
    assert two.new_message_ids == ids[1:]
    assert [two.contents[m] for m in two.new_message_ids] == ["second", "third"]
    assert one.finished_at is not None
    assert two.started_at >= one.finished_at
    assert agent.overlaps == []


async def test_inbound_duplicates_are_stored_once_and_delivered_once(
    agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent, buffer_time_seconds=0.1)

    # The platform retries a message (sequentially, and concurrently with a new one).
    await world.send("hello", message_id="wamid.1")
    await world.send("hello", message_id="wamid.1")
    await asyncio.gather(
        world.send("hello", message_id="wamid.1"),
        world.send("hello", message_id="wamid.1"),
        world.send("second", message_id="wamid.2"),
    )
    chat_id = await world.chat_id()
    messages = await world.messages(chat_id)
    assert sorted(m["external_id"] for m in messages) == ["wamid.1", "wamid.2"]

    contact_ids = await world.contact_ids(chat_id)
    await eventually(lambda: all_delivered(world, agent, chat_id), message="not delivered")
    await asyncio.sleep(0.3)
    assert account(agent, contact_ids) == Accounting(len(agent.successes), 2, 0, 0, 0)
    assert [m for r in agent.successes for m in r.new_message_ids] == contact_ids


class CountingRunner:
    """A job runner that only counts wake-ups (the test is the scheduler)."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def test_an_outcome_wakes_the_runner_only_when_it_makes_work_due(settings: Settings) -> None:
    """Recording an attempt wakes the runner for a retry, or when messages arrived while the
    delivery was in flight (the runner left them waiting) — and for nothing else, such as
    another chat's waiting messages or a stale attempt."""
    from agenthub.delivery.agents import (
        ClaimedAttempt,
        Outcome,
        claim_due_attempts,
        create_due_deliveries,
        record_outcome,
    )
    from agenthub.models import Base, DeliveryAttempt
    from agenthub.platforms.base import InboundMessage
    from agenthub.uow import commit
    from agenthub.webhooks.service import store_contact_message
    from tests.factories import make_agent, make_channel

    hub = Hub.from_settings(settings)
    runner = CountingRunner()
    hub.jobs = runner
    sent = itertools.count()

    async def arrive(contact: str) -> None:
        inbound = InboundMessage(f"ext-{next(sent)}", contact, "hi")
        async with hub.db.transaction() as session:
            assert await store_contact_message(session, hub, channel, inbound) is not None

    async def claim() -> dict[str, ClaimedAttempt]:
        async with hub.db.transaction() as session:
            await create_due_deliveries(session, hub.clock())
            claims = await claim_due_attempts(
                session, hub.clock(), lease=hub.settings.delivery_lease
            )
        # By contact: the chats' external ids.
        return {c.target.chat_external_id: c for c in claims if c.target is not None}

    async def woke(claim: ClaimedAttempt, outcome: Outcome) -> bool:
        before = runner.wakes
        async with hub.db.session() as session:
            await record_outcome(session, hub, claim, outcome)
            await commit(session)
        return runner.wakes > before

    try:
        channel = await make_channel(hub)
        await make_agent(hub, buffer_time_seconds=0)
        await arrive("+1555000001")
        await arrive("+1555000002")
        first = await claim()
        assert len(first) == 2
        chat_a, chat_b = "+1555000001", "+1555000002"
        await arrive(chat_a)  # while its delivery is in flight

        assert not await woke(first[chat_b], Outcome(200, 1.0))  # A's waiting messages: not B's
        assert await woke(first[chat_a], Outcome(200, 1.0))  # A's next batch can go now
        second = await claim()
        assert list(second) == [chat_a]
        assert await woke(second[chat_a], Outcome(503, 1.0, error="HTTP 503"))  # a retry
        stale = ClaimedAttempt(second[chat_a].delivery_id, second[chat_a].attempt_number - 1)
        assert not await woke(stale, Outcome(200, 1.0))
        async with hub.db.session(read_only=True) as session:
            attempts = list(await session.scalars(select(DeliveryAttempt)))
        assert sorted((a.status_code, a.attempt_number) for a in attempts) == [
            (200, 1),
            (200, 1),
            (503, 1),
        ]
    finally:
        async with hub.db.transaction() as session:
            for table in reversed(Base.metadata.sorted_tables):
                await session.execute(table.delete())
        await hub.close()
