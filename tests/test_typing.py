"""Typing indicators and read receipts: `POST /chats/{id}/typing`, agents'
`typing_while_working`, and `whatsapp_cloud` channels' `config.read_receipts`.

Every platform call is checked at a loopback fake of the platform's API (`tests/fake_platform.py`):
the request's shape, that a failure is only logged (never retried, never in a message's way),
and that Telegram's renewal stops when a message goes out or the time is up (both shortened
here: `typing_renew_seconds`, `TYPING_SECONDS`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from agenthub import typing_indicator
from agenthub.hub import Hub
from agenthub.models import Channel, Chat, ChatAgentLink, Platform
from agenthub.platforms.telegram import TelegramAdapter
from tests.agent_server import FakeAgent, reply
from tests.conftest import Caller
from tests.factories import make_agent, make_channel, make_chat
from tests.fake_platform import (
    GRAPH_MESSAGES_PATH,
    TELEGRAM_CHAT_ACTION_PATH,
    TWILIO_TYPING_PATH,
    WHAPI_PRESENCE_PATH,
    FakePlatform,
    Recorded,
    Reply,
    add_typing_routes,
    wait_until,
)
from tests.platform_helpers import post_api_message

pytestmark = pytest.mark.anyio

TOKEN = "123456:TEST-bot-token"
CREDENTIALS: dict[Platform, dict[str, str]] = {
    Platform.TELEGRAM: {"bot_token": TOKEN, "secret_token": "s3cret"},
    Platform.WHATSAPP_CLOUD: {
        "access_token": "EAAG-test-token",
        "phone_number_id": "106540352242922",
        "app_secret": "app-secret",
        "verify_token": "verify",
    },
    Platform.WHATSAPP_TWILIO: {
        "account_sid": "AC" + "a" * 32,
        "auth_token": "twilio-auth-token",
        "from_number": "whatsapp:+14155238886",
    },
    Platform.WHAPI: {"token": "whapi-token", "webhook_secret": "hook"},
}
SEND_MESSAGE = r"/bot[^/]+/sendMessage"


@pytest.fixture
def fake() -> Iterator[FakePlatform]:
    with add_typing_routes(FakePlatform()) as platform:
        yield platform


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Telegram renews every 50 ms, typing lasts 0.3 s."""
    monkeypatch.setattr(TelegramAdapter, "typing_renew_seconds", 0.05)
    monkeypatch.setattr(typing_indicator, "TYPING_SECONDS", 0.3)


async def platform_chat(
    hub: Hub,
    platform: Platform,
    config: dict[str, Any],
    *,
    messages: int = 1,
    external_id: str = "+15550001111",
) -> tuple[Channel, Chat]:
    channel = await make_channel(hub, platform=platform, config=config)
    if platform in CREDENTIALS:
        async with hub.db.transaction() as session:
            stored = await session.get(Channel, channel.id)
            assert stored is not None
            stored.credentials_encrypted = hub.secrets.encrypt_json(CREDENTIALS[platform])
    chat = await make_chat(hub, channel, messages=messages, external_id=external_id)
    return channel, chat


async def typing(client: Any, caller: Caller, chat_id: str) -> None:
    answer = await client.post(f"/chats/{chat_id}/typing", headers=caller.headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["chat_id"] == chat_id


async def quiet(fake: FakePlatform, path: str, count: int, seconds: float = 0.15) -> None:
    """Nothing more than `count` requests to `path` within `seconds`."""
    await asyncio.sleep(seconds)
    assert len(fake.requests(path)) == count


# --- each platform's request ----------------------------------------------------------------------


@pytest.mark.database_independent
async def test_telegram_sends_chat_action(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    _, chat = await platform_chat(
        hub, Platform.TELEGRAM, {"api_base_url": fake.url}, external_id="123456789"
    )
    await typing(client, admin, chat.id)
    [request, *_] = await fake.wait_for(1, path=TELEGRAM_CHAT_ACTION_PATH)
    assert request.path == f"/bot{TOKEN}/sendChatAction"
    assert request.json == {"chat_id": 123456789, "action": "typing"}


@pytest.mark.database_independent
async def test_whatsapp_cloud_types_on_the_last_inbound_message(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    _, chat = await platform_chat(
        hub, Platform.WHATSAPP_CLOUD, {"api_base_url": fake.url}, messages=2
    )
    await typing(client, admin, chat.id)
    [request] = await fake.wait_for(1, path=GRAPH_MESSAGES_PATH)
    assert request.path == f"/{hub.settings.whatsapp_graph_version}/106540352242922/messages"
    assert request.headers["authorization"] == "Bearer EAAG-test-token"
    assert request.json == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": f"{chat.id}-ext-1",
        "typing_indicator": {"type": "text"},
    }
    await quiet(fake, GRAPH_MESSAGES_PATH, 1)  # no renewal


@pytest.mark.database_independent
async def test_twilio_types_on_the_last_inbound_sid(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    config = {"api_base_url": fake.url, "typing_api_base_url": fake.url}
    _, chat = await platform_chat(hub, Platform.WHATSAPP_TWILIO, config)
    await typing(client, admin, chat.id)
    [request] = await fake.wait_for(1, path=TWILIO_TYPING_PATH)
    assert request.form == {"channel": ["whatsapp"], "messageId": [f"{chat.id}-ext-0"]}
    creds = CREDENTIALS[Platform.WHATSAPP_TWILIO]
    assert request.basic_auth == (creds["account_sid"], creds["auth_token"])


@pytest.mark.database_independent
async def test_no_inbound_message_nothing_to_type_on(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    config = {"api_base_url": fake.url, "typing_api_base_url": fake.url}
    _, cloud = await platform_chat(
        hub, Platform.WHATSAPP_CLOUD, {"api_base_url": fake.url}, messages=0
    )
    _, twilio = await platform_chat(hub, Platform.WHATSAPP_TWILIO, config, messages=0)
    await typing(client, admin, cloud.id)
    await typing(client, admin, twilio.id)
    await asyncio.sleep(0.1)
    assert fake.requests() == []


@pytest.mark.database_independent
async def test_whapi_sends_a_typing_presence(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    _, chat = await platform_chat(
        hub, Platform.WHAPI, {"api_base_url": fake.url}, external_id="15550001111@s.whatsapp.net"
    )
    await typing(client, admin, chat.id)
    [request] = await fake.wait_for(1, path=WHAPI_PRESENCE_PATH, method="PUT")
    assert request.path == "/presences/15550001111@s.whatsapp.net"
    assert request.headers["authorization"] == "Bearer whapi-token"
    assert request.json == {"presence": "typing", "delay": 5}


@pytest.mark.database_independent
async def test_api_channel_gets_a_signed_chat_typing_callback(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    _, chat = await platform_chat(hub, Platform.API, {"callback_url": f"{fake.url}/cb"})
    await typing(client, admin, chat.id)
    [request] = await fake.wait_for(1, path="/cb")
    assert request.json["event"] == "chat.typing"
    assert request.json["chat"]["id"] == chat.id
    assert request.headers["webhook-signature"].startswith("v1,")


# --- Telegram's renewal ---------------------------------------------------------------------------


@pytest.mark.usefixtures("quick")
async def test_telegram_renews_until_a_message_goes_out(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    _, chat = await platform_chat(
        hub, Platform.TELEGRAM, {"api_base_url": fake.url}, external_id="123456789"
    )
    await typing(client, admin, chat.id)
    await fake.wait_for(2, path=TELEGRAM_CHAT_ACTION_PATH)  # renewed while nothing goes out
    answer = await client.post(
        f"/chats/{chat.id}/messages", json={"content": "hello"}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    await fake.wait_for(1, path=SEND_MESSAGE)
    sent = len(fake.requests(TELEGRAM_CHAT_ACTION_PATH))
    await asyncio.sleep(0.15)
    # At most the renewal that was already on its way when the message was stored.
    assert len(fake.requests(TELEGRAM_CHAT_ACTION_PATH)) <= sent + 1
    assert hub.typing.active == 0


@pytest.mark.database_independent
@pytest.mark.usefixtures("quick")
async def test_telegram_renewal_stops_after_the_typing_time(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    _, chat = await platform_chat(
        hub, Platform.TELEGRAM, {"api_base_url": fake.url}, external_id="123456789"
    )
    await typing(client, admin, chat.id)
    await wait_until(lambda: _assert(hub.typing.active == 0), timeout=2)
    calls = fake.requests(TELEGRAM_CHAT_ACTION_PATH)
    # Every 50 ms for 0.3 s: 6 calls (the last one at 0.25 s), give or take a slow machine.
    assert 3 <= len(calls) <= 6
    # None sent after the 0.3 s (counted from before the first call).
    assert calls[-1].at - calls[0].at < 0.3
    await quiet(fake, TELEGRAM_CHAT_ACTION_PATH, len(calls), 0.1)


@pytest.mark.database_independent
@pytest.mark.usefixtures("quick")
async def test_asking_again_restarts_one_loop_per_chat(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    _, chat = await platform_chat(
        hub, Platform.TELEGRAM, {"api_base_url": fake.url}, external_id="123456789"
    )
    await typing(client, admin, chat.id)
    await typing(client, admin, chat.id)
    assert hub.typing.active == 1


def as_bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert(condition: bool) -> None:
    assert condition


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.database_independent
async def test_a_failed_typing_call_is_logged_not_retried_and_blocks_nothing(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agenthub.typing_indicator")
    fake.script(
        Reply(500, json={"ok": False, "error_code": 500, "description": "Internal"}),
        path=TELEGRAM_CHAT_ACTION_PATH,
    )
    _, chat = await platform_chat(
        hub, Platform.TELEGRAM, {"api_base_url": fake.url}, external_id="123456789"
    )
    await typing(client, admin, chat.id)
    answer = await client.post(
        f"/chats/{chat.id}/messages", json={"content": "still here"}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    [sent] = await fake.wait_for(1, path=SEND_MESSAGE)
    assert sent.json["text"] == "still here"
    await wait_until(lambda: _assert("typing in chat" in caplog.text))
    assert TOKEN not in caplog.text
    await quiet(fake, TELEGRAM_CHAT_ACTION_PATH, 1, 0.1)  # never retried


@pytest.mark.database_independent
async def test_an_unreachable_platform_still_answers_202(
    client: Any, hub: Hub, admin: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agenthub.typing_indicator")
    _, chat = await platform_chat(hub, Platform.TELEGRAM, {"api_base_url": "http://127.0.0.1:9"})
    await typing(client, admin, chat.id)
    await wait_until(lambda: _assert("typing in chat" in caplog.text))
    assert TOKEN not in caplog.text


# --- who may --------------------------------------------------------------------------------------


@pytest.mark.database_independent
async def test_who_may_show_typing(client: Any, hub: Hub, make_user: Any) -> None:
    channel, chat = await platform_chat(hub, Platform.API, {})
    linked, linked_token = await make_agent(hub, name="linked")
    _, other_token = await make_agent(hub, name="other")
    async with hub.db.transaction() as session:
        session.add(ChatAgentLink(chat_id=chat.id, agent_id=linked.id, active=True))
    member_in = await make_user(channels=(channel.id,))
    member_out = await make_user()
    path = f"/chats/{chat.id}/typing"
    assert (await client.post(path, headers=member_in.headers)).status_code == 202
    assert (await client.post(path, headers=as_bearer(linked_token))).status_code == 202
    # Out of reach, as for the chat's other routes.
    assert (await client.post(path, headers=member_out.headers)).status_code == 404
    assert (await client.post(path, headers=as_bearer(other_token))).status_code == 404
    assert (await client.post(path)).status_code == 401


# --- agents' typing_while_working -----------------------------------------------------------------


async def _agent_world(
    client: Any, admin: Caller, agent: FakeAgent, fake: FakePlatform, **fields: Any
) -> tuple[str, str, str]:
    answer = await client.post(
        "/channels",
        json={"name": "web", "platform": "api", "config": {"callback_url": f"{fake.url}/cb"}},
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    channel = answer.json()
    answer = await client.post(
        "/auth/agents",
        json={"name": "bot", "webhook_url": agent.url, "buffer_time_seconds": 0, **fields},
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["typing_while_working"] is fields.get("typing_while_working", False)
    return channel["id"], channel["credentials"]["secret"], answer.json()["id"]


def _events(fake: FakePlatform, name: str) -> list[Recorded]:
    return [r for r in fake.requests("/cb") if r.json["event"] == name]


async def test_typing_while_working_shows_typing_during_the_delivery(
    client: Any, admin: Caller, agent: FakeAgent, fake: FakePlatform
) -> None:
    agent.script.append(reply("Hi Ana", delay=0.3))
    channel_id, secret, _ = await _agent_world(
        client, admin, agent, fake, typing_while_working=True
    )
    inbound = {"contact_id": "+15550001111", "message_id": "in-1", "content": "hello"}
    await post_api_message(client, channel_id, secret, inbound)
    await wait_until(lambda: _assert(len(_events(fake, "message.outbound")) == 1))
    [typed] = _events(fake, "chat.typing")
    [delivery] = agent.requests
    assert delivery.finished_at is not None
    assert delivery.started_at - 0.1 <= typed.at <= delivery.finished_at


async def test_without_typing_while_working_no_typing(
    client: Any, admin: Caller, agent: FakeAgent, fake: FakePlatform
) -> None:
    agent.script.append(reply("Hi Ana", delay=0.1))
    channel_id, secret, agent_id = await _agent_world(client, admin, agent, fake)
    inbound = {"contact_id": "+15550001111", "message_id": "in-1", "content": "hello"}
    await post_api_message(client, channel_id, secret, inbound)
    await wait_until(lambda: _assert(len(_events(fake, "message.outbound")) == 1))
    assert _events(fake, "chat.typing") == []
    answer = await client.patch(
        f"/auth/agents/{agent_id}", json={"typing_while_working": True}, headers=admin.headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["typing_while_working"] is True


# --- read receipts (whatsapp_cloud) ---------------------------------------------------------------


def _reads(fake: FakePlatform) -> list[Any]:
    return [r.json for r in fake.requests(GRAPH_MESSAGES_PATH) if r.json.get("status") == "read"]


async def test_read_receipts_on_open(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    config = {"api_base_url": fake.url, "read_receipts": "on_open"}
    _, chat = await platform_chat(hub, Platform.WHATSAPP_CLOUD, config, messages=2)
    answer = await client.post(f"/chats/{chat.id}/read", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    await wait_until(lambda: _assert(len(_reads(fake)) == 1))
    assert _reads(fake) == [
        {"messaging_product": "whatsapp", "status": "read", "message_id": f"{chat.id}-ext-1"}
    ]
    # Opened again with nothing new: the marker does not move, no second receipt.
    assert (await client.post(f"/chats/{chat.id}/read", headers=admin.headers)).status_code == 200
    await asyncio.sleep(0.1)
    assert len(_reads(fake)) == 1


@pytest.mark.database_independent
async def test_read_receipts_on_reply(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    config = {"api_base_url": fake.url, "read_receipts": "on_reply"}
    _, chat = await platform_chat(hub, Platform.WHATSAPP_CLOUD, config)
    assert (await client.post(f"/chats/{chat.id}/read", headers=admin.headers)).status_code == 200
    answer = await client.post(
        f"/chats/{chat.id}/messages", json={"content": "On it"}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    await wait_until(lambda: _assert(len(_reads(fake)) == 1))
    [send, read] = fake.requests(GRAPH_MESSAGES_PATH)
    assert send.json["type"] == "text"
    assert read.json == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": f"{chat.id}-ext-0",
    }


@pytest.mark.database_independent
async def test_read_receipts_off_by_default(
    client: Any, hub: Hub, admin: Caller, fake: FakePlatform
) -> None:
    _, chat = await platform_chat(hub, Platform.WHATSAPP_CLOUD, {"api_base_url": fake.url})
    assert (await client.post(f"/chats/{chat.id}/read", headers=admin.headers)).status_code == 200
    answer = await client.post(
        f"/chats/{chat.id}/messages", json={"content": "On it"}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    await fake.wait_for(1, path=GRAPH_MESSAGES_PATH)
    await asyncio.sleep(0.1)
    assert _reads(fake) == []


@pytest.mark.database_independent
async def test_read_receipts_must_be_a_known_mode(client: Any, admin: Caller) -> None:
    body = {
        "name": "wa",
        "platform": "whatsapp_cloud",
        "credentials": CREDENTIALS[Platform.WHATSAPP_CLOUD],
        "config": {"read_receipts": "always"},
    }
    answer = await client.post("/channels", json=body, headers=admin.headers)
    assert answer.status_code == 422, answer.text
    assert any("read_receipts" in json.dumps(e["loc"]) for e in answer.json()["detail"])
    body["config"] = {"read_receipts": "on_reply"}
    answer = await client.post("/channels", json=body, headers=admin.headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["config"]["read_receipts"] == "on_reply"
