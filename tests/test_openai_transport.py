"""The `openai` agent transport against a loopback OpenAI-compatible server (tests/agent_server.py
with `protocol="openai"`): the conversation as roles, the streamed reply, the handoff tool,
retries, partial replies, and a stream that breaks halfway. What depends on the database (the
exactly-once recording of a retried, broken stream) runs on both; the rest on SQLite only.
The exactly-once test across faults and chats runs for this transport too
(tests/test_agent_delivery.py `any_agent`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from agenthub.hub import Hub
from agenthub.models import Agent
from agenthub.settings import Settings
from tests.agent_server import FakeAgent, drop, eventually, hang, reply, respond, stream
from tests.conftest import Caller
from tests.fake_platform import FakePlatform, Reply
from tests.test_agent_delivery import World, make_world, replayed_events

pytestmark = pytest.mark.anyio

API_KEY = "sk-test-key"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Retries fast enough to watch (as in tests/test_agent_delivery.py)."""
    return settings.model_copy(
        update={"delivery_backoff_base_seconds": 0.05, "delivery_max_attempts": 4}
    )


@pytest.fixture
async def llm() -> AsyncIterator[FakeAgent]:
    async with FakeAgent(protocol="openai") as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[FakePlatform]:
    """An `api` channel's callback endpoint."""
    with FakePlatform(default=Reply(200, json={"received": True})) as fake:
        yield fake


async def settled(world: World) -> tuple[str, list[dict[str, Any]]]:
    chat_id = await world.chat_id()
    deliveries = await eventually(lambda: world.settled(chat_id), message="never settled")
    return chat_id, deliveries


@pytest.mark.database_independent
async def test_a_delivery_is_one_streamed_chat_completion_with_the_history_as_roles(
    llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, llm)
    response = await client.patch(
        f"/auth/agents/{world.agent_id}",
        json={"openai": {"base_url": llm.url, "model": "m-2", "system_prompt": "Be brief."}},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    llm.script.append(reply("Hello, how can I help?"))
    await world.send("hi there")
    chat_id, _ = await settled(world)
    # An operator writes, then the contact again: the next delivery sees all of it, as roles.
    response = await client.post(
        f"/chats/{chat_id}/messages", json={"content": "An operator here."}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    llm.script.append(reply("Noted."))
    await world.send("and another thing")
    await eventually(lambda: len(llm.successes) == 2)
    await eventually(lambda: world.settled(chat_id))

    first, second = llm.requests
    assert first.path == "/chat/completions"
    assert first.headers["authorization"] == f"Bearer {API_KEY}"  # kept through the update
    assert first.json["model"] == "m-2" and first.json["stream"] is True
    [tool] = first.json["tools"]
    assert tool["function"]["name"] == "handoff_to_human"
    assert tool["function"]["parameters"]["required"] == ["reason"]
    assert first.roles == [("system", "Be brief."), ("user", "hi there")]
    assert second.roles == [
        ("system", "Be brief."),
        ("user", "hi there"),
        ("assistant", "Hello, how can I help?"),
        ("assistant", "An operator here."),
        ("user", "and another thing"),
    ]
    # The hub's ids ride along in headers, the delivery id the same on every retry.
    deliveries = await world.deliveries(chat_id)
    assert [r.delivery_id for r in llm.requests] == [d["id"] for d in deliveries]
    assert second.headers["agenthub-chat-id"] == chat_id
    assert second.new_message_ids == deliveries[1]["message_ids"]
    assert await world.agent_texts(chat_id) == ["Hello, how can I help?", "Noted."]


@pytest.mark.database_independent
async def test_the_responses_api_gets_instructions_and_input(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    async with FakeAgent(protocol="openai") as llm:
        world = await make_world(client, admin, llm)
        settings = {"base_url": llm.url, "model": "m", "api": "responses", "system_prompt": "Hi"}
        response = await client.patch(
            f"/auth/agents/{world.agent_id}", json={"openai": settings}, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        llm.script.append(stream("Stream", "ed ", "reply"))
        await world.send("question")
        chat_id, deliveries = await settled(world)
    [request] = llm.requests
    assert request.path == "/responses"
    assert request.json["instructions"] == "Hi"
    assert request.json["input"] == [{"role": "user", "content": "question"}]
    assert request.json["tools"][0]["name"] == "handoff_to_human"
    assert [d["status"] for d in deliveries] == ["succeeded"]
    assert await world.agent_texts(chat_id) == ["Streamed reply"]


@pytest.mark.database_independent
@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_the_handoff_tool_hands_the_chat_to_a_human(
    api: str, llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, llm)
    await client.patch(
        f"/auth/agents/{world.agent_id}",
        json={"openai": {"base_url": llm.url, "model": "m", "api": api}},
        headers=admin.headers,
    )
    llm.script.append(respond(200, {"handoff": True, "handoff_reason": "wants a refund"}))
    await world.send("I want a person")
    chat_id, deliveries = await settled(world)
    assert [d["status"] for d in deliveries] == ["succeeded"]
    chat = await world.chat(chat_id)
    assert chat["needs_human"] is True
    assert await world.agent_texts(chat_id) == []  # an empty text makes no message


@pytest.mark.database_independent
@pytest.mark.parametrize(
    ("fault", "retried"),
    [(respond(429), True), (respond(503), True), (hang(5), True), (respond(400), False)],
    ids=["429", "503", "timeout", "400"],
)
async def test_429_5xx_and_timeouts_are_retried_other_4xx_fail(
    fault: Any, retried: bool, llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, llm)
    llm.script.extend([fault, reply("recovered")])
    await world.send("hello")
    chat_id, [delivery] = await settled(world)
    if retried:
        assert delivery["status"] == "succeeded"
        assert [a["status_code"] for a in delivery["attempts"]][-1] == 200
        assert len({r.delivery_id for r in llm.requests}) == 1
        assert await world.agent_texts(chat_id) == ["recovered"]
    else:
        assert delivery["status"] == "failed"
        assert delivery["attempts"][0]["error_kind"] == "http_status"
        assert len(llm.requests) == 1
        assert (await world.chat(chat_id))["needs_human"] is True


async def test_a_stream_broken_halfway_is_retried_and_its_reply_stored_once(
    llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    world = await make_world(client, admin, llm, timeout_seconds=10)  # a slow machine: no timeout
    llm.script.extend(
        [
            stream("Half ", "a ", "reply ", "then ", "gone", pause=0.05, break_after=3),
            drop(),
            stream("The ", "whole ", "reply", pause=0.05),
        ]
    )
    await world.send("hello")
    chat_id, [delivery] = await settled(world)
    assert delivery["status"] == "succeeded"
    kinds = [a["error_kind"] for a in delivery["attempts"]]
    assert kinds == ["protocol", "protocol", None], delivery["attempts"]
    assert await world.agent_texts(chat_id) == ["The whole reply"]
    # Dashboards watched both attempts form; the broken one never became a message.
    partials = [e for e in await replayed_events(hub) if e["type"] == "message_partial"]
    assert {e["delivery_id"] for e in partials} == {delivery["id"]}
    assert any(e["text"].startswith("Half") for e in partials)
    assert partials[-1]["text"].startswith("The")
    assert "The whole reply".startswith(partials[-1]["text"])


@pytest.mark.database_independent
async def test_partials_are_throttled_and_reach_an_api_channel_before_the_reply(
    llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller, hub: Hub, receiver: FakePlatform
) -> None:
    world = await make_world(
        client,
        admin,
        llm,
        channel_config={"callback_url": receiver.url, "stream": True},
        timeout_seconds=5,
    )
    chunks = [f"w{n} " for n in range(12)]
    llm.script.append(stream(*chunks, pause=0.05))  # 0.6 s of streaming
    await world.send("tell me")
    chat_id, _ = await settled(world)
    final = "".join(chunks).strip()
    assert await world.agent_texts(chat_id) == [final]

    partials = [e for e in await replayed_events(hub) if e["type"] == "message_partial"]
    assert 2 <= len(partials) <= 5, partials  # at most one per 200 ms, not one per chunk
    texts = [e["text"] for e in partials]
    assert all(final.startswith(t.strip()) for t in texts)
    assert texts == sorted(texts, key=len)
    assert partials[0]["chat_id"] == chat_id and partials[0]["agent_id"] == world.agent_id

    requests = await receiver.wait_for(len(partials) + 1)
    events = [Webhook(world.channel_secret).verify(r.body, r.headers) for r in requests]
    kinds = [e["event"] for e in events]
    assert kinds == ["message.partial"] * len(partials) + ["message.outbound"], kinds
    assert [e["text"] for e in events[:-1]] == texts
    assert events[0]["chat"]["id"] == chat_id and events[0]["delivery_id"]
    assert events[-1]["message"]["content"] == final


@pytest.mark.database_independent
async def test_settings_are_validated_and_secrets_never_shown(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    base = {"name": "llm", "transport": "openai"}
    refused = [
        {**base},
        {**base, "openai": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},  # no api_key
        {**base, "openai": {"base_url": "ftp://x", "model": "m", "api_key": "k"}},
        {
            **base,
            "openai": {
                "base_url": "http://127.0.0.1:9/v1",
                "model": "m",
                "api_key": "k",
                "api": "x",
            },
        },
        {"name": "hook", "transport": "webhook"},  # no webhook_url
    ]
    for body in refused:
        response = await client.post("/auth/agents", json=body, headers=admin.headers)
        assert response.status_code == 422, (body, response.text)

    secret = "sk-live-never-shown-1234"
    settings = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": secret}
    response = await client.post(
        "/auth/agents", json={**base, "openai": settings}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert secret not in response.text
    assert created["transport"] == "openai" and created["webhook_url"] is None
    assert created["openai"] == {
        "base_url": "http://127.0.0.1:9/v1",
        "model": "m",
        "api": "chat_completions",
        "system_prompt": None,
    }
    listed = await client.get("/auth/agents", headers=admin.headers)
    assert secret not in listed.text
    async with hub.db.session() as session:
        stored = await session.scalar(select(Agent).where(Agent.id == created["id"]))
        assert stored is not None
        assert secret not in json.dumps(stored.transport_settings)
        assert secret not in (stored.transport_secret_encrypted or "")
        assert hub.secrets.decrypt(stored.transport_secret_encrypted or "") == secret

    # Back to a webhook: the settings and the secret go; a webhook URL is required.
    response = await client.patch(
        f"/auth/agents/{created['id']}", json={"transport": "webhook"}, headers=admin.headers
    )
    assert response.status_code == 422, response.text
    response = await client.patch(
        f"/auth/agents/{created['id']}",
        json={"transport": "webhook", "webhook_url": "http://127.0.0.1:9/hook"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["openai"] is None and response.json()["transport"] == "webhook"


@pytest.mark.database_independent
async def test_a_telegram_channel_with_stream_drafts_shows_the_reply_forming(
    llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    from tests.test_telegram import BOT_TOKEN, CHAT_ID, SECRET, fake_bot_api, post_update, update

    with fake_bot_api() as bot_api:
        answer = await client.post(
            "/channels",
            json={
                "name": "bot",
                "platform": "telegram",
                "credentials": {"bot_token": BOT_TOKEN, "secret_token": SECRET},
                "config": {"api_base_url": bot_api.url, "stream_drafts": True},
            },
            headers=admin.headers,
        )
        assert answer.status_code == 201, answer.text
        channel = answer.json()
        settings = {"base_url": llm.url, "api_key": API_KEY, "model": "m"}
        answer = await client.post(
            "/auth/agents",
            json={
                "name": "llm",
                "transport": "openai",
                "openai": settings,
                "buffer_time_seconds": 0,
            },
            headers=admin.headers,
        )
        assert answer.status_code == 201, answer.text
        chunks = [f"part{n} " for n in range(8)]
        llm.script.append(stream(*chunks, pause=0.06))
        assert (await post_update(client, channel, update(text="hello"))).status_code == 200

        sent = await bot_api.wait_for(1, path=r"/bot[^/]+/sendMessage$")
        drafts = bot_api.requests(r"/bot[^/]+/sendMessageDraft")
    assert 2 <= len(drafts) <= 4, [d.json for d in drafts]
    [draft_id] = {d.json["draft_id"] for d in drafts}  # one draft, updated
    assert isinstance(draft_id, int) and draft_id != 0
    assert all(d.json["chat_id"] == CHAT_ID for d in drafts)
    final = "".join(chunks).strip()
    assert all(final.startswith(d.json["text"].strip()) for d in drafts)
    assert sent[0].json["text"] == final  # and the message itself, once


@pytest.mark.database_independent
async def test_a_test_delivery_runs_the_sample_conversation_through_the_transport(
    llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, llm)
    llm.script.append(reply("pong"))
    answer = await client.post(
        f"/auth/agents/{world.agent_id}/test-delivery", headers=admin.headers
    )
    assert answer.status_code == 200, answer.text
    probe = answer.json()
    assert probe["ok"] is True and probe["status_code"] == 200
    [request] = llm.requests
    assert request.roles[-1][0] == "user" and "test delivery" in request.roles[-1][1]
    assert request.headers["agenthub-delivery-id"] == probe["webhook_id"]

    llm.script.append(respond(401, {"error": {"message": "bad key"}}))
    probe = (
        await client.post(f"/auth/agents/{world.agent_id}/test-delivery", headers=admin.headers)
    ).json()
    assert probe["ok"] is False and probe["status_code"] == 401
    assert "bad key" in probe["response_excerpt"]


@pytest.mark.database_independent
async def test_a_stream_over_the_response_limit_fails_at_once_as_too_large(
    llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    world = await make_world(client, admin, llm, timeout_seconds=10)
    limit = hub.settings.agent_max_response_bytes
    llm.script.append(stream("x" * (limit // 2), "y" * (limit // 2), "z"))
    await world.send("write a novel")
    chat_id, [delivery] = await settled(world)
    assert delivery["status"] == "failed"
    [attempt] = delivery["attempts"]  # not retried
    assert attempt["error_kind"] == "too_large" and attempt["status_code"] == 200
    assert len(attempt["response_excerpt"]) == 4096
    assert await world.agent_texts(chat_id) == []
    assert (await world.chat(chat_id))["needs_human"] is True
