"""Rich messages going out: buttons, lists and templates rendered per platform (checked against
the platforms' documented payloads, sent to loopback fakes of their APIs), the limits (422
before anything is stored, hypothesis), agents' inline reply objects, `chat.capabilities`, and
reactions sent to the platforms."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from agenthub.delivery.replies import apply_agent_reply, reply_items
from agenthub.hub import Hub
from agenthub.models import Channel, Chat, Message, Platform, SenderType, utcnow
from agenthub.platforms import get_adapter
from agenthub.platforms.base import OutboundContext
from agenthub.settings import get_settings
from tests.conftest import Caller
from tests.factories import make_agent, make_chat
from tests.fake_platform import FakePlatform, Recorded, Reply
from tests.hypothesis_budget import examples

pytestmark = [pytest.mark.anyio, pytest.mark.database_independent]

WA_ID = "16505551234"
PHONE_NUMBER_ID = "106540352242922"
GRAPH_VERSION = get_settings().whatsapp_graph_version
CLOUD_PATH = f"/{GRAPH_VERSION}/{PHONE_NUMBER_ID}/messages"
ACCOUNT_SID = "AC" + "0" * 32
TWILIO_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
BOT_TOKEN = "123456:ABC-DEF"
CONTENT_SID = "HXb5b62575e6e4ff6129ad7c8efe1f983e"

CREDENTIALS: dict[str, dict[str, str]] = {
    "whatsapp_cloud": {
        "access_token": "EAAG-test-token",
        "phone_number_id": PHONE_NUMBER_ID,
        "app_secret": "app_secret_123",
        "verify_token": "verify",
    },
    "whatsapp_twilio": {
        "account_sid": ACCOUNT_SID,
        "auth_token": "12345",
        "from_number": "whatsapp:+14155550199",
    },
    "telegram": {"bot_token": BOT_TOKEN, "secret_token": "tg-secret"},
    "whapi": {"token": "whapi-token", "webhook_secret": "whapi-secret"},
    "api": {"secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="},
}
CONTACTS = {
    "whatsapp_cloud": WA_ID,
    "whatsapp_twilio": "whatsapp:+14155550100",
    "telegram": "123456789",
    "whapi": "14155550100",
    "api": "visitor-1",
}

# The documented examples (B.7): the hub's channel-neutral input and what the platform gets.
BUTTONS = [{"id": "change-button", "title": "Change"}, {"id": "cancel-button", "title": "Cancel"}]
LIST = {
    "button": "Shipping Options",
    "sections": [
        {
            "title": "I want it ASAP!",
            "rows": [
                {
                    "id": "priority_express",
                    "title": "Priority Mail Express",
                    "description": "Next Day to 2 Days",
                }
            ],
        }
    ],
}


def fake_api() -> FakePlatform:
    """One fake for every platform's API: each answers what its platform does on success."""
    fake = FakePlatform()

    def graph(request: Recorded, groups: dict[str, str]) -> Reply:
        return Reply(200, json={"messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT"}]})

    def twilio(request: Recorded, groups: dict[str, str]) -> Reply:
        return Reply(201, json={"sid": "SM" + "1" * 32, "status": "queued"})

    def telegram(request: Recorded, groups: dict[str, str]) -> Reply:
        if groups["method"] == "sendMessage":
            return Reply(200, json={"ok": True, "result": {"message_id": 43}})
        return Reply(200, json={"ok": True, "result": True})

    def whapi(request: Recorded, groups: dict[str, str]) -> Reply:
        return Reply(200, json={"sent": True, "message": {"id": "WH-OUT-1"}})

    fake.route("POST", rf"/{GRAPH_VERSION}/\d+/messages", graph)
    fake.route("POST", r"/2010-04-01/Accounts/[^/]+/Messages\.json", twilio)
    fake.route("POST", r"/bot[^/]+/(?P<method>\w+)", telegram)
    fake.route("POST", r"/messages/\w+", whapi)
    fake.route("PUT", r"/messages/[^/]+/reaction", lambda r, g: Reply(200, json={"success": True}))
    fake.route(
        "DELETE", r"/messages/[^/]+/reaction", lambda r, g: Reply(200, json={"success": True})
    )
    return fake


@pytest.fixture
def platform_api() -> Iterator[FakePlatform]:
    with fake_api() as fake:
        yield fake


def context_for(
    platform: str, fake: FakePlatform, content: str, meta: dict[str, Any], **message: Any
) -> OutboundContext:
    config = {"api_base_url": fake.url}
    if platform == "api":
        config = {"callback_url": f"{fake.url}/callback"}
    channel = Channel(id="chn_test", name="t", platform=platform, config=config)
    chat = Chat(
        id="cht_test",
        channel_id="chn_test",
        external_id=CONTACTS[platform],
        name="Ana",
        needs_human=False,
        handled_by="none",
        contact_message_count=1,
        created_at=utcnow(),
    )
    msg = Message(
        id="msg_test",
        chat_id="cht_test",
        channel_id="chn_test",
        seq=1,
        content=content,
        sender_type="USER",
        delivery_status="PENDING",
        timestamp=utcnow(),
        meta_data=meta,
        **message,
    )
    return OutboundContext(
        message=msg,
        chat=chat,
        channel=channel,
        credentials=CREDENTIALS[platform],
        public_url="http://hub.test",
        # The fakes listen on loopback, whatever database the process's settings name.
        settings=get_settings().model_copy(update={"allow_private_agent_urls": True}),
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


async def render(
    http: httpx2.AsyncClient, fake: FakePlatform, platform: str, content: str, meta: dict[str, Any]
) -> Recorded:
    fake.clear()
    await get_adapter(platform).send(http, context_for(platform, fake, content, meta))
    [request] = fake.requests()
    return request


# --- rendering, per platform ----------------------------------------------------------------------


async def test_whatsapp_cloud_renders_the_documented_shapes(
    http: httpx2.AsyncClient, platform_api: FakePlatform
) -> None:
    head = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID}
    sent = await render(
        http,
        platform_api,
        "whatsapp_cloud",
        "Your workshop is at 9am tomorrow.",
        {"buttons": BUTTONS},
    )
    assert sent.path == CLOUD_PATH
    assert sent.json == head | {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Your workshop is at 9am tomorrow."},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "change-button", "title": "Change"}},
                    {"type": "reply", "reply": {"id": "cancel-button", "title": "Cancel"}},
                ]
            },
        },
    }
    sent = await render(
        http, platform_api, "whatsapp_cloud", "Which shipping option do you prefer?", {"list": LIST}
    )
    assert sent.json == head | {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": "Which shipping option do you prefer?"},
            "action": LIST,
        },
    }
    positional = {
        "name": "order_confirmation",
        "language": "en_US",
        "parameters": ["Jessica", "SKBUP2-4CPIG9"],
    }
    sent = await render(http, platform_api, "whatsapp_cloud", "x", {"template": positional})
    assert sent.json == head | {
        "type": "template",
        "template": {
            "name": "order_confirmation",
            "language": {"code": "en_US"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Jessica"},
                        {"type": "text", "text": "SKBUP2-4CPIG9"},
                    ],
                }
            ],
        },
    }
    named = {"name": "welcome", "language": "pt_BR", "parameters": {"first_name": "Ana"}}
    sent = await render(http, platform_api, "whatsapp_cloud", "x", {"template": named})
    assert sent.json["template"]["components"] == [
        {
            "type": "body",
            "parameters": [{"type": "text", "parameter_name": "first_name", "text": "Ana"}],
        }
    ]
    bare = {"name": "hello_world", "language": "en_US"}
    sent = await render(http, platform_api, "whatsapp_cloud", "x", {"template": bare})
    assert sent.json["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


async def test_twilio_renders_content_templates_and_numbered_choices(
    http: httpx2.AsyncClient, platform_api: FakePlatform
) -> None:
    template = {"name": CONTENT_SID, "parameters": ["12/1", "3pm"]}
    sent = await render(http, platform_api, "whatsapp_twilio", "x", {"template": template})
    assert sent.path == TWILIO_PATH
    assert sent.field("ContentSid") == CONTENT_SID
    assert json.loads(sent.field("ContentVariables") or "") == {"1": "12/1", "2": "3pm"}
    assert sent.field("Body") is None
    assert sent.field("To") == "whatsapp:+14155550100"
    named = {"name": CONTENT_SID, "parameters": {"name": "Ana"}}
    sent = await render(http, platform_api, "whatsapp_twilio", "x", {"template": named})
    assert json.loads(sent.field("ContentVariables") or "") == {"name": "Ana"}
    sent = await render(
        http,
        platform_api,
        "whatsapp_twilio",
        "Confirm?",
        {"buttons": [{"id": "y", "title": "Yes"}, {"id": "n", "title": "No"}]},
    )
    assert sent.field("Body") == "Confirm?\n\n1. Yes\n2. No"
    assert sent.field("ContentSid") is None
    sent = await render(http, platform_api, "whatsapp_twilio", "Which one?", {"list": LIST})
    assert sent.field("Body") == "Which one?\n\n1. Priority Mail Express - Next Day to 2 Days"


async def test_telegram_renders_an_inline_keyboard(
    http: httpx2.AsyncClient, platform_api: FakePlatform
) -> None:
    buttons = [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]
    sent = await render(
        http, platform_api, "telegram", "Confirm your booking?", {"buttons": buttons}
    )
    assert sent.path == f"/bot{BOT_TOKEN}/sendMessage"
    assert sent.json == {
        "chat_id": 123456789,
        "text": "Confirm your booking?",
        "reply_markup": {
            "inline_keyboard": [
                [{"text": "Yes", "callback_data": "yes"}, {"text": "No", "callback_data": "no"}]
            ]
        },
    }
    two_rows = {
        "button": "Pick",
        "sections": [
            {"title": "A", "rows": [{"id": "a1", "title": "One"}]},
            {"title": "B", "rows": [{"id": "b1", "title": "Two", "description": "more"}]},
        ],
    }
    sent = await render(http, platform_api, "telegram", "Pick one", {"list": two_rows})
    assert sent.json["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "One", "callback_data": "a1"}],
            [{"text": "Two", "callback_data": "b1"}],
        ]
    }


async def test_whapi_renders_interactive_messages(
    http: httpx2.AsyncClient, platform_api: FakePlatform
) -> None:
    buttons = [{"id": "yes", "title": "Confirm"}, {"id": "no", "title": "Cancel"}]
    sent = await render(
        http, platform_api, "whapi", "Confirm your appointment?", {"buttons": buttons}
    )
    assert sent.path == "/messages/interactive"
    assert sent.json == {
        "to": "14155550100",
        "type": "button",
        "body": {"text": "Confirm your appointment?"},
        "action": {
            "buttons": [
                {"type": "quick_reply", "title": "Confirm", "id": "yes"},
                {"type": "quick_reply", "title": "Cancel", "id": "no"},
            ]
        },
    }
    menu = {
        "button": "Pick a hamburger!",
        "sections": [
            {
                "title": "Burgers",
                "rows": [{"id": "r1", "title": "Cheeseburger", "description": "With cheese"}],
            }
        ],
    }
    sent = await render(http, platform_api, "whapi", "Your order?", {"list": menu})
    assert sent.json == {
        "to": "14155550100",
        "type": "list",
        "body": {"text": "Your order?"},
        "action": {"list": {"label": "Pick a hamburger!", "sections": menu["sections"]}},
    }


async def test_api_callback_passes_buttons_and_lists_through(
    http: httpx2.AsyncClient, platform_api: FakePlatform
) -> None:
    sent = await render(http, platform_api, "api", "Pick", {"buttons": BUTTONS})
    assert sent.path == "/callback"
    assert sent.json["event"] == "message.outbound"
    assert sent.json["buttons"] == BUTTONS
    sent = await render(http, platform_api, "api", "Pick", {"list": LIST})
    assert sent.json["list"] == LIST


def test_capabilities_are_declared_by_every_adapter() -> None:
    keys = {"buttons", "list_rows", "templates", "typing", "reactions", "media", "max_text_length"}
    for platform in Platform:
        caps = get_adapter(platform).capabilities.as_dict()
        assert keys <= set(caps), platform
    cloud = get_adapter("whatsapp_cloud").capabilities
    assert (cloud.buttons, cloud.list_rows, cloud.templates, cloud.max_text_length) == (
        3,
        10,
        True,
        4096,
    )
    twilio = get_adapter("whatsapp_twilio").capabilities
    assert (twilio.buttons, twilio.templates, twilio.reactions, twilio.max_text_length) == (
        3,
        True,
        False,
        1600,
    )
    assert get_adapter("telegram").capabilities.templates is False


# --- the API: limits, per platform --------------------------------------------------------------


async def make_platform_chat(hub: Hub, platform: str, fake_url: str) -> Chat:
    config = {"api_base_url": fake_url} if platform != "api" else {}
    async with hub.db.transaction() as session:
        channel = Channel(
            name=platform,
            platform=platform,
            credentials_encrypted=hub.secrets.encrypt_json(CREDENTIALS[platform]),
            config=config,
        )
        session.add(channel)
    return await make_chat(hub, channel, external_id=CONTACTS[platform], messages=1)


async def count_messages(hub: Hub, chat_id: str) -> int:
    async with hub.db.session(read_only=True) as session:
        return int(
            await session.scalar(select(func.count()).where(Message.chat_id == chat_id)) or 0
        )


async def test_limits_are_422_naming_the_field_and_nothing_is_stored(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, platform_api: FakePlatform
) -> None:
    chats = {
        p: await make_platform_chat(hub, p, platform_api.url)
        for p in ("telegram", "whatsapp_twilio", "whatsapp_cloud")
    }

    async def refused(platform: str, body: dict[str, Any]) -> list[Any]:
        chat = chats[platform]
        before = await count_messages(hub, chat.id)
        answer = await client.post(f"/chats/{chat.id}/messages", json=body, headers=admin.headers)
        assert answer.status_code == 422, answer.text
        assert await count_messages(hub, chat.id) == before
        return [e["loc"] for e in answer.json()["detail"]]

    four = [{"id": str(n), "title": f"B{n}"} for n in range(4)]
    assert ["body", "buttons"] in await refused("whatsapp_cloud", {"content": "x", "buttons": four})
    long_title = [{"id": "a", "title": "x" * 21}]
    assert ["body", "buttons", 0, "title"] in await refused(
        "whatsapp_cloud", {"content": "x", "buttons": long_title}
    )
    same = [{"id": "a", "title": "Yes"}, {"id": "b", "title": "Yes"}]
    assert await refused("whatsapp_cloud", {"content": "x", "buttons": same})
    eleven = {
        "button": "Pick",
        "sections": [{"title": "S", "rows": [{"id": str(n), "title": "r"} for n in range(11)]}],
    }
    assert await refused("whatsapp_cloud", {"content": "x", "list": eleven})
    assert await refused("whatsapp_cloud", {"content": "", "buttons": BUTTONS})  # no body
    assert await refused("whatsapp_cloud", {"content": "x", "buttons": BUTTONS, "list": LIST})
    # Telegram: callback_data is 1-64 bytes ("é" is two).
    assert ["body", "buttons", 0, "id"] in await refused(
        "telegram", {"content": "x", "buttons": [{"id": "é" * 40, "title": "ok"}]}
    )
    assert ["body", "template"] in await refused(
        "telegram", {"template": {"name": "hello", "language": "en"}}
    )
    assert ["body", "template", "name"] in await refused(
        "whatsapp_twilio", {"template": {"name": "hello_world"}}
    )
    assert ["body", "template", "language"] in await refused(
        "whatsapp_cloud", {"template": {"name": "hello_world"}}
    )
    # Within the limits, "opção" (5 characters, 7 bytes) is a fine callback_data.
    chat = chats["telegram"]
    ok = {"content": "x", "buttons": [{"id": "opção", "title": "Opção"}]}
    answer = await client.post(f"/chats/{chat.id}/messages", json=ok, headers=admin.headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["meta_data"]["buttons"] == ok["buttons"]


# --- hypothesis: any rich content is either rendered validly or refused before storing --------

# Mostly plausible values (so that many examples get through), sometimes anything at all.
anything = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
plausible = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Z")), min_size=1, max_size=14
)
texts = st.one_of(plausible, plausible, anything)
button = st.fixed_dictionaries({"id": texts, "title": texts})
row = st.fixed_dictionaries(
    {"id": texts, "title": texts}, optional={"description": st.text(max_size=80)}
)
section = st.fixed_dictionaries({"title": texts, "rows": st.lists(row, min_size=1, max_size=5)})
rich_content = st.one_of(
    st.fixed_dictionaries(
        {"buttons": st.lists(button, min_size=1, max_size=4, unique_by=lambda b: b["title"])}
    ),
    st.fixed_dictionaries(
        {
            "list": st.fixed_dictionaries(
                {"button": texts, "sections": st.lists(section, max_size=3)}
            )
        }
    ),
)
PLATFORMS = ("whatsapp_cloud", "whatsapp_twilio", "telegram", "whapi", "api")


def check_valid_payload(platform: str, request: Recorded, rich: dict[str, Any]) -> None:
    """What each platform documents as acceptable (B.7), independently of the hub's code."""
    if platform == "whatsapp_cloud":
        interactive = request.json["interactive"]
        assert 0 < len(interactive["body"]["text"]) <= 4096
        if "buttons" in rich:
            buttons = interactive["action"]["buttons"]
            assert 1 <= len(buttons) <= 3
            titles = [b["reply"]["title"] for b in buttons]
            assert len(set(titles)) == len(titles)
            assert all(0 < len(t) <= 20 for t in titles)
            assert all(0 < len(b["reply"]["id"]) <= 256 for b in buttons)
        else:
            action = interactive["action"]
            assert 0 < len(action["button"]) <= 20
            assert 1 <= len(action["sections"]) <= 10
            rows = [r for s in action["sections"] for r in s["rows"]]
            assert 1 <= len(rows) <= 10
            assert all(len(r["title"]) <= 24 and len(r["id"]) <= 200 for r in rows)
    elif platform == "telegram":
        keyboard = request.json["reply_markup"]["inline_keyboard"]
        assert request.json["text"]
        for line in keyboard:
            for key in line:
                assert 1 <= len(key["callback_data"].encode()) <= 64
                assert key["text"]
    elif platform == "whatsapp_twilio":
        body = request.field("Body") or ""
        assert 0 < len(body) <= 1600
        assert "\n1. " in body
    elif platform == "whapi":
        assert request.path == "/messages/interactive"
        assert request.json["body"]["text"]
    else:
        assert ("buttons" in request.json) or ("list" in request.json)


@settings(
    max_examples=examples(25),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(platform=st.sampled_from(PLATFORMS), body=texts, rich=rich_content)
async def test_arbitrary_rich_content_is_rendered_or_refused_before_storing(
    client: httpx2.AsyncClient,
    admin: Caller,
    hub: Hub,
    http: httpx2.AsyncClient,
    platform: str,
    body: str,
    rich: dict[str, Any],
) -> None:
    with fake_api() as fake:
        chat = await make_platform_chat(hub, platform, fake.url)
        before = await count_messages(hub, chat.id)
        answer = await client.post(
            f"/chats/{chat.id}/messages", json={"content": body, **rich}, headers=admin.headers
        )
        assert answer.status_code in (201, 422), answer.text
        event(f"{platform}: {answer.status_code}")
        if answer.status_code == 422:
            assert await count_messages(hub, chat.id) == before
            return
        stored = answer.json()
        async with hub.db.session(read_only=True) as session:
            message = await session.get_one(Message, stored["id"])
        fake.clear()
        context = context_for(platform, fake, message.content, message.meta_data)
        await get_adapter(platform).send(http, context)
        requests = [r for r in fake.requests() if r.path != "/callback" or platform == "api"]
        assert requests
        check_valid_payload(platform, requests[-1], rich)


# --- agents' inline reply objects ---------------------------------------------------------------


def test_inline_reply_objects_are_parsed_and_invalid_ones_dropped() -> None:
    body = {
        "reply": "first",
        "replies": [
            {"text": "Pick one", "buttons": [{"id": "a", "title": "A"}]},
            "plain text",
            {"text": "too many", "buttons": [{"id": str(n), "title": str(n)} for n in range(4)]},
            {"text": "Choose", "list": LIST},
            {"buttons": [{"id": "a", "title": "A"}]},  # no text
            42,
        ],
    }
    assert reply_items(body) == [
        ("first", {}),
        ("Pick one", {"buttons": [{"id": "a", "title": "A"}]}),
        ("plain text", {}),
        ("Choose", {"list": LIST}),
    ]


@pytest.mark.parametrize("platform", ["telegram"])
async def test_inline_reply_with_buttons_is_stored_and_queued(
    hub: Hub, platform: str, platform_api: FakePlatform
) -> None:
    chat = await make_platform_chat(hub, platform, platform_api.url)
    agent, _ = await make_agent(hub)
    body = {
        "replies": [
            {"text": "Pick", "buttons": [{"id": "ok", "title": "OK"}]},
            {"text": "x", "buttons": [{"id": "é" * 40, "title": "Too long for Telegram"}]},
        ]
    }
    async with hub.db.transaction() as session:
        await apply_agent_reply(session, hub, chat.id, agent.id, body)
    async with hub.db.session(read_only=True) as session:
        rows = list(
            await session.scalars(
                select(Message).where(
                    Message.chat_id == chat.id, Message.sender_type == SenderType.AGENT
                )
            )
        )
    assert [(m.content, m.meta_data) for m in rows] == [
        ("Pick", {"buttons": [{"id": "ok", "title": "OK"}]})
    ]
    [request] = await platform_api.wait_for(1, path=r"/bot[^/]+/sendMessage")
    assert request.json["reply_markup"] == {
        "inline_keyboard": [[{"text": "OK", "callback_data": "ok"}]]
    }


# --- reactions out ------------------------------------------------------------------------------


async def test_reactions_are_sent_and_recorded(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, platform_api: FakePlatform
) -> None:
    chats = {
        p: await make_platform_chat(hub, p, platform_api.url)
        for p in ("whatsapp_cloud", "telegram", "whapi", "whatsapp_twilio")
    }

    async def target(chat: Chat) -> str:
        async with hub.db.session(read_only=True) as session:
            return str(await session.scalar(select(Message.id).where(Message.chat_id == chat.id)))

    async def react(platform: str, emoji: str) -> httpx2.Response:
        chat = chats[platform]
        url = f"/chats/{chat.id}/messages/{await target(chat)}/reactions"
        return await client.post(url, json={"emoji": emoji}, headers=admin.headers)

    answer = await react("whatsapp_cloud", "👍")
    assert answer.status_code == 200, answer.text
    [reaction] = answer.json()["meta_data"]["reactions"]
    assert (reaction["emoji"], reaction["by"]) == ("👍", admin.id)
    [sent] = platform_api.requests(CLOUD_PATH)
    assert sent.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA_ID,
        "type": "reaction",
        "reaction": {"message_id": f"{chats['whatsapp_cloud'].id}-ext-0", "emoji": "👍"},
    }
    answer = await react("whatsapp_cloud", "")  # removes ours
    assert answer.json()["meta_data"]["reactions"] == []
    assert platform_api.requests(CLOUD_PATH)[-1].json["reaction"]["emoji"] == ""

    # Telegram: only its fixed set; "❤️" is sent as "❤".
    answer = await react("telegram", "🦆")
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "emoji"]
    chat = chats["telegram"]
    async with hub.db.transaction() as session:
        message = await session.get_one(Message, await target(chat))
        message.external_id = "123456789:42"
    answer = await react("telegram", "❤️")
    assert answer.status_code == 200, answer.text
    [sent] = platform_api.requests(r"/bot[^/]+/setMessageReaction")
    assert sent.json == {
        "chat_id": 123456789,
        "message_id": 42,
        "reaction": [{"type": "emoji", "emoji": "❤"}],
    }

    assert (await react("whapi", "👍")).status_code == 200
    [put] = platform_api.requests(r"/messages/[^/]+/reaction", method="PUT")
    assert put.json == {"emoji": "👍"}
    assert (await react("whapi", "")).status_code == 200
    assert platform_api.requests(r"/messages/[^/]+/reaction", method="DELETE")

    answer = await react("whatsapp_twilio", "👍")
    assert answer.status_code == 422
    assert "not supported" in answer.json()["detail"][0]["msg"]


async def test_agent_payload_carries_capabilities_and_window(
    hub: Hub, platform_api: FakePlatform
) -> None:
    from agenthub.delivery.payload import DeliveryTarget, build_payload

    chat = await make_platform_chat(hub, "whatsapp_twilio", platform_api.url)
    target = DeliveryTarget(
        delivery_id="dlv_1",
        message_ids=[],
        agent_id="agt_1",
        agent_name="bot",
        webhook_url="http://127.0.0.1:9/",
        webhook_secret_encrypted="",
        previous_webhook_secret_encrypted=None,
        previous_webhook_secret_until=None,
        timeout_seconds=5,
        history_msg_count=5,
        recent_msg_window_minutes=60,
        chat_id=chat.id,
        chat_name=chat.name,
        chat_external_id=chat.external_id,
        channel_id=chat.channel_id,
        platform="whatsapp_twilio",
    )
    async with hub.db.session(read_only=True) as session:
        prepared = await build_payload(session, hub, target)
    body = json.loads(prepared.body)
    assert body["chat"]["capabilities"] == get_adapter("whatsapp_twilio").capabilities.as_dict()
    assert body["chat"]["window"]["open"] is True
    assert body["chat"]["window"]["closes_at"]
