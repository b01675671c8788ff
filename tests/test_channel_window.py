"""WhatsApp's customer-service window and message errors: the window in chat answers (open,
closed, none per platform, `closes_at` exact), the 409 on free-form messages to a closed window
(nothing stored; templates go), an agent's inline reply to a closed window stored FAILED with a
human needed, platform refusals and status callbacks becoming `error`, and migration 0009's
backfill."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from alembic import command
from sqlalchemy import create_engine, select, text, update

from agenthub.chats.schemas import ChatOut
from agenthub.delivery import events
from agenthub.delivery.outbound import apply_status, failure
from agenthub.delivery.replies import apply_agent_reply
from agenthub.hub import Hub
from agenthub.migrate import alembic_config, upgrade_database
from agenthub.models import (
    Channel,
    Chat,
    ChatAgentLink,
    DeliveryStatus,
    Message,
    OutboundSend,
    SenderType,
    utcnow,
)
from tests.conftest import Caller
from tests.factories import make_agent, make_chat
from tests.fake_platform import FakePlatform, Reply, wait_until
from tests.test_rich_outbound import (
    CLOUD_PATH,
    CONTACTS,
    CREDENTIALS,
    TWILIO_PATH,
    fake_api,
)

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]

DAY = timedelta(hours=24)


@pytest.fixture
def platform_api() -> Any:
    with fake_api() as fake:
        yield fake


async def chat_on(
    hub: Hub, platform: str, fake: FakePlatform, *, contact_at: datetime | None, messages: int = 0
) -> Chat:
    """A chat on a channel of `platform` (its API at `fake`), the contact's last message at
    `contact_at` (None: the contact never wrote)."""
    async with hub.db.transaction() as session:
        channel = Channel(
            name=platform,
            platform=platform,
            credentials_encrypted=hub.secrets.encrypt_json(CREDENTIALS[platform]),
            config={"api_base_url": fake.url},
        )
        session.add(channel)
    chat = await make_chat(hub, channel, external_id=CONTACTS[platform], messages=messages)
    async with hub.db.transaction() as session:
        await session.execute(
            update(Chat).where(Chat.id == chat.id).values(last_contact_message_at=contact_at)
        )
    return chat


async def get_chat(client: httpx2.AsyncClient, admin: Caller, chat_id: str) -> dict[str, Any]:
    answer = await client.get(f"/chats/{chat_id}", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def stored_messages(hub: Hub, chat_id: str) -> list[Message]:
    async with hub.db.session(read_only=True) as session:
        query = select(Message).where(Message.chat_id == chat_id).order_by(Message.seq)
        return list(await session.scalars(query))


async def test_the_window_per_platform(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, platform_api: FakePlatform
) -> None:
    recent = utcnow().replace(microsecond=0) - timedelta(hours=2)
    old = recent - DAY
    for platform in ("whatsapp_cloud", "whatsapp_twilio"):
        never = await chat_on(hub, platform, platform_api, contact_at=None)
        assert (await get_chat(client, admin, never.id))["window"] == {
            "open": False,
            "closes_at": None,
        }
        chat = await chat_on(hub, platform, platform_api, contact_at=recent)
        window = (await get_chat(client, admin, chat.id))["window"]
        assert window["open"] is True
        assert datetime.fromisoformat(window["closes_at"]) == recent + DAY
        chat = await chat_on(hub, platform, platform_api, contact_at=old)
        window = (await get_chat(client, admin, chat.id))["window"]
        assert window["open"] is False
        assert datetime.fromisoformat(window["closes_at"]) == old + DAY
    for platform in ("telegram", "whapi", "api"):
        chat = await chat_on(hub, platform, platform_api, contact_at=old)
        assert (await get_chat(client, admin, chat.id))["window"] is None
    # The listing carries it too.
    chat = await chat_on(hub, "whatsapp_cloud", platform_api, contact_at=recent)
    answer = await client.get(f"/channels/{chat.channel_id}/chats", headers=admin.headers)
    [listed] = answer.json()["chats"]
    assert listed["window"]["open"] is True
    assert datetime.fromisoformat(listed["window"]["closes_at"]) == recent + DAY


async def test_contact_messages_open_the_window(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, platform_api: FakePlatform
) -> None:
    chat = await chat_on(hub, "whatsapp_cloud", platform_api, contact_at=None)
    async with hub.db.transaction() as session:
        row = await session.get_one(Chat, chat.id)
        from agenthub.chats.service import add_message

        message = await add_message(
            session, row, content="Oi", sender_type=SenderType.CONTACT, sender_id="x"
        )
    window = (await get_chat(client, admin, chat.id))["window"]
    assert window["open"] is True
    assert datetime.fromisoformat(window["closes_at"]) == message.timestamp + DAY


async def test_a_closed_window_refuses_free_form_messages_but_takes_templates(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, platform_api: FakePlatform
) -> None:
    old = utcnow().replace(microsecond=0) - DAY - timedelta(minutes=1)
    chat = await chat_on(hub, "whatsapp_cloud", platform_api, contact_at=old)
    agent, agent_token = await make_agent(hub)
    async with hub.db.transaction() as session:
        session.add(ChatAgentLink(chat_id=chat.id, agent_id=agent.id, active=True))
    url = f"/chats/{chat.id}/messages"
    for headers in (admin.headers, {"Authorization": f"Bearer {agent_token}"}):
        for body in (
            {"content": "Hi again"},
            {"content": "Pick", "buttons": [{"id": "a", "title": "A"}]},
        ):
            answer = await client.post(url, json=body, headers=headers)
            assert answer.status_code == 409, answer.text
            detail = answer.json()["detail"]
            assert detail["code"] == "window_closed"
            assert detail["message"]
            assert datetime.fromisoformat(detail["closes_at"]) == old + DAY
    assert await stored_messages(hub, chat.id) == []
    template = {"name": "order_confirmation", "language": "en_US", "parameters": ["Jessica"]}
    answer = await client.post(url, json={"template": template}, headers=admin.headers)
    assert answer.status_code == 201, answer.text
    sent = answer.json()
    assert sent["content"] == "[template order_confirmation (en_US)] Jessica"
    assert sent["meta_data"]["template"] == template
    [request] = await platform_api.wait_for(1, path=CLOUD_PATH)
    assert request.json["type"] == "template"
    assert request.json["template"]["name"] == "order_confirmation"
    # A chat whose contact never wrote takes only a template too.
    never = await chat_on(hub, "whatsapp_twilio", platform_api, contact_at=None)
    answer = await client.post(
        f"/chats/{never.id}/messages", json={"content": "hello"}, headers=admin.headers
    )
    assert answer.status_code == 409
    assert answer.json()["detail"]["closes_at"] is None


async def test_an_inline_reply_to_a_closed_window_is_stored_failed(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, platform_api: FakePlatform
) -> None:
    chat = await chat_on(hub, "whatsapp_twilio", platform_api, contact_at=utcnow() - 2 * DAY)
    agent, _ = await make_agent(hub)
    async with hub.db.transaction() as session:
        await apply_agent_reply(session, hub, chat.id, agent.id, {"reply": "Too late?"})
    [message] = await stored_messages(hub, chat.id)
    assert (message.sender_type, message.delivery_status) == ("AGENT", "FAILED")
    assert message.error is not None and message.error["code"] == "window_closed"
    async with hub.db.session(read_only=True) as session:
        assert await session.get(OutboundSend, message.id) is None  # never queued
    shown = await get_chat(client, admin, chat.id)
    assert (shown["needs_human"], shown["needs_human_reason"]) == (True, "send_failed")
    answer = await client.get(f"/chats/{chat.id}/messages", headers=admin.headers)
    [out] = answer.json()["messages"]
    assert out["error"]["code"] == "window_closed"
    assert platform_api.requests(TWILIO_PATH) == []


async def test_platform_refusals_become_message_errors(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, platform_api: FakePlatform
) -> None:
    chat = await chat_on(hub, "whatsapp_cloud", platform_api, contact_at=utcnow())
    closed = {
        "error": {
            "message": "(#131047) Re-engagement message",
            "type": "OAuthException",
            "code": 131047,
            "error_data": {"messaging_product": "whatsapp", "details": "24 hours have passed"},
            "fbtrace_id": "AbC",
        }
    }
    undeliverable = {"error": {"message": "Message Undeliverable", "code": 131026}}
    platform_api.script(Reply(400, json=closed), Reply(400, json=undeliverable), path=CLOUD_PATH)
    ids = []
    for content in ("first", "second"):
        answer = await client.post(
            f"/chats/{chat.id}/messages", json={"content": content}, headers=admin.headers
        )
        assert answer.status_code == 201
        ids.append(answer.json()["id"])

    async def failed() -> dict[str, Any]:
        messages = (await client.get(f"/chats/{chat.id}/messages", headers=admin.headers)).json()[
            "messages"
        ]
        by_id = {m["id"]: m for m in messages}
        assert all(by_id[i]["delivery_status"] == "FAILED" for i in ids), by_id
        return by_id

    by_id = await wait_until(failed)
    assert by_id[ids[0]]["error"]["code"] == "window_closed"
    assert by_id[ids[0]]["error"]["platform_code"] == 131047
    assert by_id[ids[1]]["error"]["code"] == "platform_error"
    assert by_id[ids[1]]["error"]["platform_code"] == 131026
    assert "Undeliverable" in by_id[ids[1]]["error"]["message"]


async def test_a_retried_message_drops_its_old_error(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, platform_api: FakePlatform
) -> None:
    """`POST …/retry`: the message shows PENDING with no `error` at once (answer, reads and its
    `message_status` event), not the failure it is being sent again after."""
    chat = await chat_on(hub, "whatsapp_cloud", platform_api, contact_at=utcnow())
    undeliverable = {"error": {"message": "Message Undeliverable", "code": 131026}}
    platform_api.script(Reply(400, json=undeliverable), path=CLOUD_PATH)
    answer = await client.post(
        f"/chats/{chat.id}/messages", json={"content": "hello"}, headers=admin.headers
    )
    message_id = answer.json()["id"]

    async def shown() -> dict[str, Any]:
        messages = (await client.get(f"/chats/{chat.id}/messages", headers=admin.headers)).json()
        [found] = [m for m in messages["messages"] if m["id"] == message_id]
        return dict(found)

    async def failed() -> dict[str, Any]:
        found = await shown()
        assert found["delivery_status"] == "FAILED", found
        return found

    assert (await wait_until(failed))["error"]["platform_code"] == 131026
    _, before = await hub.events.since(0)
    # The next attempt waits, so the re-queued state can be seen before it goes.
    platform_api.script(Reply(500, json={"error": {"code": 1}}, delay=1.0), path=CLOUD_PATH)
    retried = await client.post(
        f"/chats/{chat.id}/messages/{message_id}/retry", headers=admin.headers
    )
    assert retried.status_code == 200, retried.text
    assert (retried.json()["delivery_status"], retried.json()["error"]) == ("PENDING", None)
    assert "error" not in retried.json()["meta_data"]
    again = await shown()
    assert again["error"] is None
    [status] = [
        e
        for e in (await hub.events.since(before))[0]
        if e["type"] == "message_status" and e["message_id"] == message_id
    ]
    assert status["delivery_status"] == "PENDING"
    assert "error" not in status  # a message without an error, as the events document


async def test_status_callback_errors_are_stored_and_published(
    hub: Hub, platform_api: FakePlatform
) -> None:
    chat = await chat_on(hub, "whatsapp_twilio", platform_api, contact_at=utcnow())
    async with hub.db.transaction() as session:
        row = await session.get_one(Chat, chat.id)
        from agenthub.chats.service import add_message

        for n, status in enumerate(("SENT", "SENT")):
            message = await add_message(
                session, row, content=f"m{n}", sender_type=SenderType.USER, sender_id="u"
            )
            message.external_id = f"SM{n}"
            message.delivery_status = status
    # As the parsers hand it over, and a raw platform code (older parsers).
    normalized = {"code": "window_closed", "platform_code": 63016, "message": "outside window"}
    async with hub.db.transaction() as session:
        assert await apply_status(
            session, hub, chat.channel_id, "SM0", DeliveryStatus.FAILED, normalized
        )
        assert await apply_status(
            session, hub, chat.channel_id, "SM1", DeliveryStatus.FAILED, {"code": "63016"}
        )
    first, second = await stored_messages(hub, chat.id)
    assert first.error == normalized
    assert second.error == {"code": "window_closed", "platform_code": 63016, "message": None}
    event = events.message_status(first)
    assert (event["delivery_status"], event["error"]) == ("FAILED", normalized)
    async with hub.db.session(read_only=True) as session:
        shown = ChatOut.model_validate(await session.get_one(Chat, chat.id))
    assert shown.needs_human and shown.needs_human_reason == "send_failed"


@pytest.mark.database_independent
def test_each_platforms_window_codes_become_window_closed() -> None:
    """A send's synchronous refusal, as `SendError` gives it (`code`, `detail`)."""
    twilio = failure("whatsapp_twilio", {"code": 63016, "message": "Outside the window"})
    assert twilio == {
        "code": "window_closed",
        "platform_code": 63016,
        "message": "Outside the window",
    }
    cloud = failure("whatsapp_cloud", {"code": 131047, "message": "Re-engagement message"})
    assert (cloud["code"], cloud["platform_code"]) == ("window_closed", 131047)
    # The same number means nothing special elsewhere.
    assert failure("telegram", {"code": 63016, "message": "x"})["code"] == "platform_error"
    assert failure("whatsapp_twilio", {"code": 21211, "message": "Invalid 'To'"}) == {
        "code": "platform_error",
        "platform_code": 21211,
        "message": "Invalid 'To'",
    }
    assert failure("whatsapp_cloud", None) == {
        "code": "platform_error",
        "platform_code": None,
        "message": None,
    }


@pytest.mark.database_independent
def test_migration_0009_backfills_the_last_contact_message(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade_database(url)
    config = alembic_config(url)
    command.downgrade(config, "0008")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO channels (id, name, platform, credentials_encrypted, config, "
                    "is_active, created_at, default_agents_listed) VALUES ('chn_0000000001', "
                    "'c', 'whatsapp_cloud', 'x', '{}', true, CURRENT_TIMESTAMP, false)"
                )
            )
            for chat_id in ("cht_0000000001", "cht_0000000002"):
                conn.execute(
                    text(
                        "INSERT INTO chats (id, channel_id, external_id, needs_human, "
                        "handled_by, message_seq, contact_message_count, activity_at, "
                        "created_at) VALUES (:id, 'chn_0000000001', :id, false, 'none', 3, 2, "
                        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"id": chat_id},
                )
            for seq, (sender, at) in enumerate(
                [
                    ("CONTACT", "2026-11-30 10:00:00.000000"),
                    ("CONTACT", "2026-12-01 09:30:00.000000"),
                    ("USER", "2026-12-01 11:00:00.000000"),
                ],
                start=1,
            ):
                conn.execute(
                    text(
                        "INSERT INTO messages (id, chat_id, channel_id, seq, content, "
                        "sender_type, delivery_status, timestamp, meta_data) VALUES (:id, "
                        "'cht_0000000001', 'chn_0000000001', :seq, 'x', :sender, 'SENT', :at, "
                        "'{}')"
                    ),
                    {"id": f"msg_000000000{seq}", "seq": seq, "sender": sender, "at": at},
                )
        upgrade_database(url)
        with engine.connect() as conn:
            result = conn.execute(text("SELECT id, last_contact_message_at FROM chats"))
            rows = {chat_id: at for chat_id, at in result}
            assert conn.scalar(text("SELECT count(*) FROM messages WHERE error IS NULL")) == 3
        assert str(rows["cht_0000000001"]).startswith("2026-12-01 09:30:00")
        assert rows["cht_0000000002"] is None
        command.check(config)  # the models match the migrations
    finally:
        engine.dispose()
