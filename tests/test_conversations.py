"""`POST /channels/{id}/conversations`: writing to a contact first. The chat for `to` is found
or created (with the channel's agents for new chats) under the address the platform's webhooks
give the contact, so its answers land in the same chat; the message goes out as any other
(template on WhatsApp, free-form text elsewhere); a refused request leaves nothing behind.
Runs on both databases (the chat's insert-if-absent is written for each)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import Role
from tests.conftest import Caller
from tests.factories import make_agent
from tests.fake_platform import (
    GRAPH_MESSAGES_PATH,
    TWILIO_MESSAGES_PATH,
    FakePlatform,
    add_typing_routes,
    fake_twilio,
    twilio_sid,
    twilio_sign,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]

PUBLIC_URL = "http://hub.test"
APP_SECRET = "conversation-app-secret"
PHONE_NUMBER_ID = "106540352242922"
ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "twilio-auth-token-conversations"
CONTENT_SID = "HX" + "b5b62575e6e4ff6129ad7c8efe1f983e"
TEMPLATE = {"name": "order_confirmation", "language": "en_US", "parameters": ["Ana", "A-42"]}


@pytest.fixture
def graph() -> Iterator[FakePlatform]:
    with FakePlatform() as fake:
        yield add_typing_routes(fake)


@pytest.fixture
def twilio() -> Iterator[FakePlatform]:
    with fake_twilio() as fake:
        yield fake


async def new_channel(
    client: httpx2.AsyncClient, admin: Caller, platform: str, **body: Any
) -> dict[str, Any]:
    answer = await client.post(
        "/channels", json={"name": platform, "platform": platform, **body}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def cloud_channel(client: httpx2.AsyncClient, admin: Caller, url: str) -> dict[str, Any]:
    credentials = {
        "access_token": "EAAG-conversations",
        "phone_number_id": PHONE_NUMBER_ID,
        "app_secret": APP_SECRET,
        "verify_token": "verify",
    }
    return await new_channel(
        client,
        admin,
        "whatsapp_cloud",
        credentials=credentials,
        config={"api_base_url": url},
    )


async def twilio_channel(client: httpx2.AsyncClient, admin: Caller, url: str) -> dict[str, Any]:
    credentials = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": "whatsapp:+14155238886",
    }
    return await new_channel(
        client, admin, "whatsapp_twilio", credentials=credentials, config={"api_base_url": url}
    )


async def start(
    client: httpx2.AsyncClient, caller: Caller, channel_id: str, **body: Any
) -> httpx2.Response:
    return await client.post(
        f"/channels/{channel_id}/conversations", json=body, headers=caller.headers
    )


async def chats_of(client: httpx2.AsyncClient, admin: Caller, channel_id: str) -> list[Any]:
    answer = await client.get(f"/channels/{channel_id}/chats", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["chats"])


async def messages_of(client: httpx2.AsyncClient, admin: Caller, chat_id: str) -> list[Any]:
    answer = await client.get(f"/chats/{chat_id}/messages", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["messages"]))


async def cloud_inbound(client: httpx2.AsyncClient, channel_id: str, wa_id: str, text: str) -> None:
    """A contact's text as Meta posts it, signed with the app secret."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Ana Lima"}, "wa_id": wa_id}],
        "messages": [
            {
                "from": wa_id,
                "id": "wamid.HBgN" + secrets.token_hex(16),
                "timestamp": "1739321024",
                "type": "text",
                "text": {"body": text},
            }
        ],
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = await client.post(
        f"/webhooks/whatsapp_cloud/{channel_id}",
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    )
    assert answer.status_code == 200, answer.text


# --- WhatsApp Cloud -------------------------------------------------------------------------------


async def test_cloud_conversation_starts_with_a_template(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, graph: FakePlatform
) -> None:
    agent, _ = await make_agent(hub, name="greeter")
    channel = await cloud_channel(client, admin, graph.url)
    answer = await start(
        client, admin, channel["id"], to="+55 (11) 98765-4321", name="Ana", template=TEMPLATE
    )
    assert answer.status_code == 201, answer.text
    chat, message = answer.json()["chat"], answer.json()["message"]
    assert chat["external_id"] == "5511987654321"  # as Meta's webhooks give `from`
    assert chat["name"] == "Ana"
    assert chat["channel_id"] == channel["id"]
    assert chat["window"] == {"open": False, "closes_at": None}
    assert chat["handled_by"] == "agent"  # the channel's agents for new chats are linked
    assert chat["last_sender_type"] == "USER"
    assert message["chat_id"] == chat["id"]
    assert message["sender_type"] == "USER"
    assert message["sender_id"] == admin.id
    assert message["delivery_status"] == "PENDING"
    assert message["meta_data"]["template"] == TEMPLATE
    assert message["content"] == "[template order_confirmation (en_US)] Ana, A-42"
    links = (await client.get(f"/chats/{chat['id']}/agents", headers=admin.headers)).json()
    assert [link["agent_id"] for link in links] == [agent.id]

    [sent] = await graph.wait_for(1, path=GRAPH_MESSAGES_PATH)
    assert sent.json["to"] == "5511987654321"
    assert sent.json["type"] == "template"
    assert sent.json["template"]["name"] == "order_confirmation"
    assert sent.json["template"]["components"][0]["parameters"][1] == {
        "type": "text",
        "text": "A-42",
    }

    # The contact's answer lands in the same chat, which the next conversation finds again.
    await cloud_inbound(client, channel["id"], "5511987654321", "Obrigada!")
    [same] = await chats_of(client, admin, channel["id"])
    assert same["id"] == chat["id"]
    assert same["window"]["open"] is True
    again = await start(client, admin, channel["id"], to="5511987654321", template=TEMPLATE)
    assert again.status_code == 201, again.text
    assert again.json()["chat"]["id"] == chat["id"]
    contents = [m["content"] for m in await messages_of(client, admin, chat["id"])]
    assert contents[1] == "Obrigada!"
    assert len(contents) == 3


async def test_whatsapp_without_a_template_creates_nothing(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, graph: FakePlatform
) -> None:
    await make_agent(hub)
    channel = await cloud_channel(client, admin, graph.url)
    for body in (
        {"to": "+5511987654321", "content": "Hello!"},
        {"to": "+5511987654321"},
        {"to": "+5511987654321", "name": "Ana"},
    ):
        answer = await start(client, admin, channel["id"], **body)
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["detail"]
        assert error["loc"] == ["body", "template"]
        assert "template" in error["msg"]
    both = await start(
        client, admin, channel["id"], to="+5511987654321", content="Hi", template=TEMPLATE
    )
    assert both.status_code == 422
    bad_number = await start(client, admin, channel["id"], to="call me", template=TEMPLATE)
    assert bad_number.status_code == 422
    assert bad_number.json()["detail"][0]["loc"] == ["body", "to"]
    no_language = await start(
        client, admin, channel["id"], to="+5511987654321", template={"name": "welcome"}
    )
    assert no_language.status_code == 422
    assert no_language.json()["detail"][0]["loc"] == ["body", "template", "language"]
    assert await chats_of(client, admin, channel["id"]) == []
    audit = (await client.get("/audit?action=conversation.started", headers=admin.headers)).json()
    assert not [e for e in audit["events"] if e["action"] == "conversation.started"]
    assert not graph.requests(GRAPH_MESSAGES_PATH)


# --- Twilio ---------------------------------------------------------------------------------------


async def test_twilio_conversation_uses_the_content_sid(
    client: httpx2.AsyncClient, admin: Caller, twilio: FakePlatform
) -> None:
    channel = await twilio_channel(client, admin, twilio.url)
    template = {"name": CONTENT_SID, "parameters": ["12/1", "3pm"]}
    answer = await start(client, admin, channel["id"], to="+1 415-555-0100", template=template)
    assert answer.status_code == 201, answer.text
    chat = answer.json()["chat"]
    assert chat["external_id"] == "whatsapp:+14155550100"  # as Twilio's `From`
    [sent] = await twilio.wait_for(1, path=TWILIO_MESSAGES_PATH)
    assert sent.field("To") == "whatsapp:+14155550100"
    assert sent.field("ContentSid") == CONTENT_SID
    assert json.loads(sent.field("ContentVariables") or "") == {"1": "12/1", "2": "3pm"}
    assert sent.field("Body") is None

    # The contact answers: Twilio's `From` is the chat's id.
    path = f"/webhooks/whatsapp_twilio/{channel['id']}"
    form = {
        "MessageSid": twilio_sid(),
        "AccountSid": ACCOUNT_SID,
        "From": "whatsapp:+14155550100",
        "To": "whatsapp:+14155238886",
        "Body": "See you then",
        "NumMedia": "0",
        "ProfileName": "Bo",
    }
    signature = twilio_sign(AUTH_TOKEN, PUBLIC_URL + path, form)
    inbound = await client.post(path, data=form, headers={"X-Twilio-Signature": signature})
    assert inbound.status_code == 200, inbound.text
    [same] = await chats_of(client, admin, channel["id"])
    assert same["id"] == chat["id"]
    assert same["name"] == "Bo"  # the chat had none: the contact's profile name fills it
    bad_sid = await start(client, admin, channel["id"], to="+14155550100", template=TEMPLATE)
    assert bad_sid.status_code == 422
    assert bad_sid.json()["detail"][0]["loc"] == ["body", "template", "name"]


# --- other platforms ------------------------------------------------------------------------------


async def test_api_channel_takes_free_form_content(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    channel = await new_channel(client, admin, "api")
    answer = await start(client, admin, channel["id"], to=" visitor-7 ", content="Welcome back!")
    assert answer.status_code == 201, answer.text
    chat, message = answer.json()["chat"], answer.json()["message"]
    assert chat["external_id"] == "visitor-7"
    assert chat["window"] is None
    assert chat["handled_by"] == "none"  # no agent for new chats
    assert message["content"] == "Welcome back!"
    assert message["meta_data"] == {}
    again = await start(
        client, admin, channel["id"], to="visitor-7", name="V", content="Still there?"
    )
    assert again.status_code == 201
    assert again.json()["chat"]["id"] == chat["id"]
    assert again.json()["chat"]["name"] == "V"  # it had none
    assert [m["content"] for m in await messages_of(client, admin, chat["id"])] == [
        "Welcome back!",
        "Still there?",
    ]

    for body in (
        {"to": "visitor-8"},
        {"to": "visitor-8", "content": "   "},
        {"to": "visitor-8", "template": TEMPLATE},
        {"to": "", "content": "Hi"},
        {"to": "visitor-8", "content": "Hi", "extra": 1},
    ):
        refused = await start(client, admin, channel["id"], **body)
        assert refused.status_code == 422, (body, refused.text)
    assert len(await chats_of(client, admin, channel["id"])) == 1

    audit = (await client.get("/audit?limit=200", headers=admin.headers)).json()
    started = [e for e in audit["events"] if e["action"] == "conversation.started"]
    assert len(started) == 2
    assert {e["target"]["id"] for e in started} == {chat["id"]}
    assert {e["detail"]["new_chat"] for e in started} == {True, False}
    assert all(e["actor"]["id"] == admin.id for e in started)


async def test_telegram_takes_a_chat_id(client: httpx2.AsyncClient, admin: Caller) -> None:
    channel = await new_channel(
        client,
        admin,
        "telegram",
        credentials={"bot_token": "123456:ABC-conversations", "secret_token": "tg-secret"},
        config={"api_base_url": "http://127.0.0.1:9"},
    )
    refused = await start(client, admin, channel["id"], to="@ana", content="Hi")
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "to"]
    answer = await start(client, admin, channel["id"], to="123456789", content="Hi")
    assert answer.status_code == 201, answer.text
    assert answer.json()["chat"]["external_id"] == "123456789"


async def test_who_may_start_a_conversation(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, make_user: Any
) -> None:
    channel = await new_channel(client, admin, "api")
    granted = await make_user(Role.MEMBER, channels=(channel["id"],))
    other = await make_user(Role.MEMBER)
    _, agent_token = await make_agent(hub, activate_for_new_conversation=False)
    agent = Caller(id="agent", token=agent_token, token_id="")
    body = {"to": "visitor-1", "content": "Hello"}
    assert (await start(client, granted, channel["id"], **body)).status_code == 201
    assert (await start(client, other, channel["id"], **body)).status_code == 404
    assert (await start(client, agent, channel["id"], **body)).status_code == 403
    assert (await start(client, admin, "chn_nothere000", **body)).status_code == 404
    anonymous = await client.post(f"/channels/{channel['id']}/conversations", json=body)
    assert anonymous.status_code == 401
    [chat] = await chats_of(client, admin, channel["id"])
    assert len(await messages_of(client, admin, chat["id"])) == 1

    await client.patch(
        f"/channels/{channel['id']}", json={"is_active": False}, headers=admin.headers
    )
    inactive = await start(client, admin, channel["id"], **body)
    assert inactive.status_code == 409


async def test_the_new_chat_is_announced(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    channel = await new_channel(client, admin, "api")
    answer = await start(client, admin, channel["id"], to="visitor-9", content="Hi")
    assert answer.status_code == 201
    chat_id = answer.json()["chat"]["id"]

    async def announced() -> None:
        events, _ = await hub.events.since(0)
        kinds = [(e["type"], e.get("chat_id")) for e in events]
        assert ("chat_updated", chat_id) in kinds
        assert ("new_message", chat_id) in kinds
        [update] = [e for e in events if e["type"] == "chat_updated"]
        assert update["chat"]["external_id"] == "visitor-9"

    await wait_until(announced)
    again = await start(client, admin, channel["id"], to="visitor-9", content="Again")
    assert again.status_code == 201
    events, _ = await hub.events.since(0)
    assert len([e for e in events if e["type"] == "chat_updated"]) == 1  # only a new chat


@pytest.mark.database_independent
@pytest.mark.parametrize(
    ("platform", "to", "stored"),
    [
        ("whatsapp_cloud", "+55 (11) 98765-4321", "5511987654321"),
        ("whatsapp_cloud", "005511987654321", "5511987654321"),
        ("whatsapp_cloud", "whatsapp:+14155550100", "14155550100"),
        ("whatsapp_twilio", "+1.415.555.0100", "whatsapp:+14155550100"),
        ("whatsapp_twilio", "whatsapp:+14155550100", "whatsapp:+14155550100"),
        ("whapi", "+1 415 555 0100", "14155550100@s.whatsapp.net"),
        ("whapi", "120363025555555555@g.us", "120363025555555555@g.us"),
        ("telegram", "-1001234567890", "-1001234567890"),
    ],
)
def test_addresses_are_stored_as_the_webhooks_give_them(
    platform: str, to: str, stored: str
) -> None:
    from agenthub.chats.conversations import contact_address
    from agenthub.platforms import get_adapter

    credentials = {"from_number": "whatsapp:+14155238886"}
    assert contact_address(get_adapter(platform), to, credentials) == stored


@pytest.mark.database_independent
@pytest.mark.parametrize(
    "to", ["12345", "+0123456789", "call me", "+1 415 555 0100 ext 2", "٥٥١١٩٨٧٦٥٤٣٢١"]
)
def test_what_is_no_phone_number_is_refused(to: str) -> None:
    from agenthub.chats.conversations import contact_address
    from agenthub.errors import InvalidInput
    from agenthub.platforms import get_adapter

    with pytest.raises(InvalidInput):
        contact_address(get_adapter("whatsapp_cloud"), to, {})
