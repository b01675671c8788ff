"""`whapi`: the `X-Webhook-Secret` header, `from_me` echoes ignored, group chats keyed by chat,
every documented message type, status events (monotonic), the media proxy and sends through a
fake WHAPI gate on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from tests.conftest import Caller
from tests.factories import make_agent
from tests.fake_platform import FakePlatform, Recorded, Reply, wait_until
from tests.platform_helpers import HubReader, assert_ack, send_user_message

# Parsing, signatures and platform calls: the storage path they share is tested on both
# databases elsewhere (test_intake, test_agent_delivery, test_platform_parsers_fuzz).
pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs, pytest.mark.database_independent]

PUBLIC_URL = "http://hub.test"
TOKEN = "whapi-T0k3n-9f8e7d6c5b4a"
WEBHOOK_SECRET = "wh-s3cr3t-1a2b3c"
PHONE = "5511987654321"
CHAT = f"{PHONE}@s.whatsapp.net"
GROUP = "120363025246125486@g.us"
SEND_PATH = r"/messages/(?P<kind>\w+)"
VCARD = "BEGIN:VCARD\nVERSION:3.0\nFN:Bia Souza\nTEL;type=CELL:+5511999990000\nEND:VCARD"
MEDIA_BYTES = b"OggS fake voice note"

_hub = HubReader(secret=TOKEN)
chats_of = _hub.chats_of
messages_of = _hub.messages_of
only_message = _hub.only_message
message = _hub.message


def whapi_id() -> str:
    return secrets.token_hex(8).upper() + "-" + secrets.token_hex(4)


def fake_whapi() -> FakePlatform:
    """A WHAPI gate double: `POST /messages/{kind}` (Bearer checked) → `{"sent": true,
    "message": {"id": …}}`; `GET /media/{id}` serves a file."""
    fake = FakePlatform(default=Reply(404, json={"error": {"code": 404, "message": "Not found"}}))

    def send(request: Recorded, groups: dict[str, str]) -> Reply:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, json={"error": {"code": 401, "message": "Unauthorized"}})
        body = request.json
        message = {
            "id": whapi_id(),
            "from_me": True,
            "type": groups["kind"],
            "chat_id": body["to"],
            "status": "pending",
        }
        return Reply(200, json={"sent": True, "message": message})

    def media(request: Recorded, groups: dict[str, str]) -> Reply:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, json={"error": {"code": 401, "message": "Unauthorized"}})
        if groups["media_id"] != "oga-3EB0A1B2C3":
            return Reply(404, json={"error": {"code": 404, "message": "Media not found"}})
        return Reply(200, body=MEDIA_BYTES, headers={"content-type": "audio/ogg"})

    fake.route("POST", SEND_PATH, send)
    fake.route("GET", r"/media/(?P<media_id>[^/]+)", media)
    return fake


@pytest.fixture
def gate() -> Iterator[FakePlatform]:
    with fake_whapi() as fake:
        yield fake


@pytest.fixture
async def channel(client: httpx2.AsyncClient, admin: Caller, gate: FakePlatform) -> dict[str, Any]:
    answer = await client.post(
        "/channels",
        json={
            "name": "WHAPI",
            "platform": "whapi",
            "credentials": {"token": TOKEN, "webhook_secret": WEBHOOK_SECRET},
            "config": {"api_base_url": gate.url},
        },
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert body["webhook_url"] == f"{PUBLIC_URL}/webhooks/whapi/{body['id']}"
    assert any("X-Webhook-Secret" in step for step in body["setup"])
    assert TOKEN not in answer.text and WEBHOOK_SECRET not in answer.text
    return body


# --- payloads (mode=body, as captured from WHAPI) -------------------------------------------------

timestamps = itertools.count(1712995245)


def msg(kind: str, body: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": whapi_id(),
        "from_me": False,
        "type": kind,
        "chat_id": CHAT,
        "timestamp": next(timestamps),
        "source": "mobile",
        "from": PHONE,
        "from_name": "Ana Lima",
    }
    if body is not None:
        message[kind] = body
    message.update(extra)
    return message


def messages_event(*messages: dict[str, Any], method: str = "post") -> dict[str, Any]:
    return {
        "messages": list(messages),
        "event": {"type": "messages", "event": method},
        "channel_id": "MANTIS-M72HC",
    }


def statuses_event(*statuses: dict[str, Any]) -> dict[str, Any]:
    return {
        "statuses": list(statuses),
        "event": {"type": "statuses", "event": "post"},
        "channel_id": "MANTIS-M72HC",
    }


def status(message_id: str, value: str, **extra: Any) -> dict[str, Any]:
    codes = {"failed": 0, "pending": 1, "sent": 2, "delivered": 3, "read": 4, "played": 5}
    return {
        "id": message_id,
        "code": codes.get(value, 9),
        "status": value,
        "recipient_id": CHAT,
        "timestamp": str(next(timestamps)),
        **extra,
    }


async def post_event(
    client: httpx2.AsyncClient,
    channel: dict[str, Any],
    payload: Any,
    *,
    secret: str | None = WEBHOOK_SECRET,
    content: bytes | None = None,
) -> httpx2.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Webhook-Secret"] = secret
    body = content if content is not None else json.dumps(payload).encode()
    return await client.post(f"/webhooks/whapi/{channel['id']}", content=body, headers=headers)


async def open_chat(client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]) -> str:
    assert_ack(await post_event(client, channel, messages_event(msg("text", {"body": "Oi"}))))
    [chat] = await chats_of(client, admin, channel)
    return str(chat["id"])


async def wait_status(
    client: httpx2.AsyncClient, admin: Caller, chat_id: str, message_id: str, value: str
) -> Any:
    async def check() -> Any:
        found = await message(client, admin, chat_id, message_id)
        assert found["delivery_status"] == value, found
        return found

    return await wait_until(check, timeout=10)


# --- inbound ------------------------------------------------------------------------------------


async def test_text_message_is_stored_once_even_when_posted_twice(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    text = msg("text", {"body": "Olá, tudo bem?"})
    assert_ack(await post_event(client, channel, messages_event(text)))
    assert_ack(await post_event(client, channel, messages_event(text)))  # WHAPI retried
    [chat] = await chats_of(client, admin, channel)
    assert (chat["external_id"], chat["name"]) == (CHAT, "Ana Lima")
    [stored] = await messages_of(client, admin, chat["id"])
    assert (stored["external_id"], stored["content"]) == (text["id"], "Olá, tudo bem?")
    assert stored["meta_data"]["type"] == "text"


async def test_from_me_messages_are_ignored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    echo = msg("text", {"body": "our own send"}, from_me=True)
    assert_ack(await post_event(client, channel, messages_event(echo)))
    assert await chats_of(client, admin, channel) == []
    mixed = messages_event(
        msg("text", {"body": "from Ana"}), msg("text", {"body": "from the phone"}, from_me=True)
    )
    assert_ack(await post_event(client, channel, mixed))
    assert (await only_message(client, admin, channel))["content"] == "from Ana"


async def test_group_chat_is_keyed_by_chat_not_sender(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    ana = msg("text", {"body": "bom dia"}, chat_id=GROUP, chat_name="Equipe Vendas")
    bia = msg(
        "text",
        {"body": "oi!"},
        chat_id=GROUP,
        chat_name="Equipe Vendas",
        **{"from": "5511999990000", "from_name": "Bia"},
    )
    assert_ack(await post_event(client, channel, messages_event(ana, bia)))
    [chat] = await chats_of(client, admin, channel)
    assert (chat["external_id"], chat["name"]) == (GROUP, "Equipe Vendas")
    first, second = await messages_of(client, admin, chat["id"])
    assert first["meta_data"]["sender"] == {"id": PHONE, "name": "Ana Lima"}
    assert second["meta_data"]["sender"] == {"id": "5511999990000", "name": "Bia"}
    assert second["sender_id"] == GROUP  # the chat's address; the member is in meta_data


TYPES = [
    pytest.param(
        msg(
            "image",
            {
                "id": "jpeg-3EB0A1",
                "mime_type": "image/jpeg",
                "file_size": 12345,
                "link": "https://s3.eu-central-1.wasabisys.com/in-files/123/jpeg-3EB0A1.jpeg",
                "caption": "receipt",
            },
        ),
        "receipt",
        {
            "media": [
                {
                    "url": "https://s3.eu-central-1.wasabisys.com/in-files/123/jpeg-3EB0A1.jpeg",
                    "content_type": "image/jpeg",
                    "kind": "image",
                    "media_id": "jpeg-3EB0A1",
                    "file_size": 12345,
                }
            ]
        },
        id="image-with-link",
    ),
    pytest.param(
        msg("voice", {"id": "oga-3EB0A1B2C3", "mime_type": "audio/ogg; codecs=opus", "seconds": 4}),
        "",
        {
            "media": [
                {
                    "url": "{proxy}/oga-3EB0A1B2C3",
                    "content_type": "audio/ogg",
                    "kind": "voice",
                    "media_id": "oga-3EB0A1B2C3",
                }
            ]
        },
        id="voice-without-link-uses-the-proxy",
    ),
    pytest.param(
        msg(
            "audio",
            {"id": "mp3-1", "mime_type": "audio/mpeg", "link": "https://files.example.com/a.mp3"},
        ),
        "",
        {
            "media": [
                {
                    "url": "https://files.example.com/a.mp3",
                    "content_type": "audio/mpeg",
                    "kind": "audio",
                }
            ]
        },
        id="audio",
    ),
    pytest.param(
        msg(
            "video",
            {
                "id": "mp4-1",
                "mime_type": "video/mp4",
                "link": "https://files.example.com/v.mp4",
                "caption": "look",
            },
        ),
        "look",
        {
            "media": [
                {
                    "url": "https://files.example.com/v.mp4",
                    "content_type": "video/mp4",
                    "kind": "video",
                }
            ]
        },
        id="video",
    ),
    pytest.param(
        msg(
            "document",
            {
                "id": "pdf-1",
                "mime_type": "application/pdf",
                "file_name": "invoice.pdf",
                "link": "https://files.example.com/invoice.pdf",
                "caption": "invoice",
            },
        ),
        "invoice",
        {
            "media": [
                {
                    "url": "https://files.example.com/invoice.pdf",
                    "content_type": "application/pdf",
                    "kind": "document",
                    "filename": "invoice.pdf",
                }
            ]
        },
        id="document",
    ),
    pytest.param(
        msg(
            "sticker",
            {
                "id": "webp-1",
                "mime_type": "image/webp",
                "link": "https://files.example.com/s.webp",
                "animated": False,
            },
        ),
        "",
        {
            "media": [
                {
                    "url": "https://files.example.com/s.webp",
                    "content_type": "image/webp",
                    "kind": "sticker",
                }
            ]
        },
        id="sticker",
    ),
    pytest.param(
        msg(
            "gif",
            {"id": "mp4-2", "mime_type": "video/mp4", "link": "https://files.example.com/g.mp4"},
        ),
        "",
        {
            "media": [
                {
                    "url": "https://files.example.com/g.mp4",
                    "content_type": "video/mp4",
                    "kind": "gif",
                }
            ]
        },
        id="gif",
    ),
    pytest.param(
        msg(
            "location",
            {
                "latitude": -23.55052,
                "longitude": -46.633308,
                "address": "Praça da Sé",
                "name": "Sé",
            },
        ),
        "",
        {
            "location": {
                "latitude": -23.55052,
                "longitude": -46.633308,
                "address": "Praça da Sé",
                "name": "Sé",
            }
        },
        id="location",
    ),
    pytest.param(
        msg("live_location", {"latitude": 38.7223, "longitude": -9.1393, "caption": "on my way"}),
        "on my way",
        {"location": {"latitude": 38.7223, "longitude": -9.1393}},
        id="live-location",
    ),
    pytest.param(
        msg(
            "contact",
            {
                "name": "Bia Souza",
                "vcard": VCARD,
            },
        ),
        "",
        {
            "contacts": [
                {
                    "name": "Bia Souza",
                    "vcard": VCARD,
                }
            ]
        },
        id="contact",
    ),
    pytest.param(
        msg(
            "contact_list",
            {
                "list": [
                    {"name": "A", "vcard": "BEGIN:VCARD\nFN:A\nEND:VCARD"},
                    {"name": "B", "vcard": "BEGIN:VCARD\nFN:B\nEND:VCARD"},
                ]
            },
        ),
        "",
        {
            "contacts": [
                {"name": "A", "vcard": "BEGIN:VCARD\nFN:A\nEND:VCARD"},
                {"name": "B", "vcard": "BEGIN:VCARD\nFN:B\nEND:VCARD"},
            ]
        },
        id="contact-list",
    ),
    pytest.param(
        msg(
            "link_preview",
            {"body": "see https://example.com", "url": "https://example.com", "title": "Example"},
        ),
        "see https://example.com",
        {"link": {"url": "https://example.com", "title": "Example"}},
        id="link-preview",
    ),
    pytest.param(
        msg(
            "reply",
            {"type": "buttons_reply", "buttons_reply": {"id": "ButtonsV3:yes", "title": "Yes"}},
            context={"quoted_id": "ABCD-1234", "quoted_author": "15550783881"},
        ),
        "Yes",
        {
            "interactive": {"type": "buttons_reply", "id": "ButtonsV3:yes", "title": "Yes"},
            # the prefix stripped; the hub id of the message answered: not this test's
            "reply_to": {"id": "yes", "message_id": None},
        },
        id="buttons-reply",
    ),
    pytest.param(
        msg(
            "reply",
            {
                "type": "list_reply",
                "list_reply": {"id": "ListV3:plan-2", "title": "Premium", "description": "R$ 99"},
            },
        ),
        "Premium",
        {
            "interactive": {
                "type": "list_reply",
                "id": "ListV3:plan-2",
                "title": "Premium",
                "description": "R$ 99",
            }
        },
        id="list-reply",
    ),
]


@pytest.mark.parametrize(("payload", "content", "meta"), TYPES)
async def test_every_documented_message_type_parses(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: dict[str, Any],
    payload: dict[str, Any],
    content: str,
    meta: dict[str, Any],
) -> None:
    assert_ack(await post_event(client, channel, messages_event(payload)))
    stored = await only_message(client, admin, channel)
    assert (stored["content"], stored["external_id"]) == (content, payload["id"])
    assert stored["meta_data"]["type"] == payload["type"]
    proxy = f"{PUBLIC_URL}/channels/{channel['id']}/media"
    for key, expected in meta.items():
        if key == "media":
            [item] = stored["meta_data"]["media"]
            wanted = {
                k: (v.format(proxy=proxy) if isinstance(v, str) else v)
                for k, v in expected[0].items()
            }
            assert item == item | wanted
        else:
            assert stored["meta_data"][key] == expected


IGNORED = [
    pytest.param(
        messages_event(msg("action", {"target": "ABCD", "type": "reaction", "emoji": "👍"})),
        id="reaction",
    ),
    pytest.param(
        messages_event(msg("action", {"target": "ABCD", "type": "delete"})), id="deletion"
    ),
    pytest.param(messages_event(msg("text", {"body": "edited"}), method="patch"), id="edit-event"),
    pytest.param(messages_event(msg("text", {"body": "gone"}), method="delete"), id="delete-event"),
    pytest.param(messages_event(msg("poll", {"title": "?", "options": ["a"]})), id="poll"),
    pytest.param(messages_event(msg("system", {"body": "joined"})), id="system"),
    pytest.param(
        messages_event(msg("text", {"body": "story"}, chat_id="status@broadcast")),
        id="status-broadcast",
    ),
    pytest.param(
        messages_event(msg("text", {"body": "news"}, chat_id="120363040000000000@newsletter")),
        id="newsletter",
    ),
    pytest.param(messages_event(msg("text", {"body": ""})), id="empty-text"),
    pytest.param(
        messages_event(msg("image", {"mime_type": "image/jpeg"})), id="media-without-link-or-id"
    ),
    pytest.param(
        messages_event(
            {"type": "text", "text": {"body": "no id"}, "chat_id": CHAT, "from_me": False}
        ),
        id="no-id",
    ),
    pytest.param(
        messages_event({"id": "X1", "type": "text", "text": {"body": "no chat"}, "from_me": False}),
        id="no-chat",
    ),
    pytest.param(statuses_event(status(whapi_id(), "read")), id="status-for-unknown-message"),
    pytest.param(statuses_event(status(whapi_id(), "pending")), id="pending-status"),
    pytest.param(
        {
            "chats_updates": [{"before_update": {}, "after_update": {}}],
            "event": {"type": "chats", "event": "patch"},
        },
        id="chats-event",
    ),
    pytest.param(
        {
            "presences": [{"contact_id": CHAT, "status": "typing"}],
            "event": {"type": "presences", "event": "post"},
        },
        id="presence",
    ),
    pytest.param({"messages": "not a list"}, id="messages-not-a-list"),
    pytest.param([], id="json-array"),
]


@pytest.mark.parametrize("payload", IGNORED)
async def test_unhandled_payloads_are_acknowledged_and_ignored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], payload: Any
) -> None:
    assert_ack(await post_event(client, channel, payload))
    assert await chats_of(client, admin, channel) == []


@pytest.mark.parametrize("content", [b"", b"not json", b"\xff\xfe", b'{"messages": [{'])
async def test_undecodable_bodies_are_acknowledged(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], content: bytes
) -> None:
    assert_ack(await post_event(client, channel, None, content=content))
    assert await chats_of(client, admin, channel) == []


@pytest.mark.parametrize(
    "secret",
    [None, "", "wrong", WEBHOOK_SECRET.upper(), WEBHOOK_SECRET + " x", TOKEN],
    ids=["missing", "empty", "wrong", "case", "longer", "api-token"],
)
async def test_bad_or_missing_secret_is_403_and_nothing_stored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], secret: str | None
) -> None:
    answer = await post_event(
        client, channel, messages_event(msg("text", {"body": "let me in"})), secret=secret
    )
    assert answer.status_code == 403, answer.text
    assert "detail" in answer.json()
    assert await chats_of(client, admin, channel) == []


async def test_bearer_header_is_no_substitute_for_the_secret(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    body = json.dumps(messages_event(msg("text", {"body": "x"})))
    for headers in (
        {"Authorization": f"Bearer {WEBHOOK_SECRET}"},
        {"X-Webhook-Secret": "é".encode("latin-1")},
    ):
        answer = await client.post(
            f"/webhooks/whapi/{channel['id']}", content=body, headers=headers
        )
        assert answer.status_code == 403
    assert await chats_of(client, admin, channel) == []


# --- media proxy ----------------------------------------------------------------------------------


async def test_media_proxy_downloads_with_the_token(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], gate: FakePlatform
) -> None:
    voice = msg("voice", {"id": "oga-3EB0A1B2C3", "mime_type": "audio/ogg"})
    assert_ack(await post_event(client, channel, messages_event(voice)))
    path = (await only_message(client, admin, channel))["meta_data"]["media"][0][
        "url"
    ].removeprefix(PUBLIC_URL)
    answer = await client.get(path, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.content == MEDIA_BYTES
    assert answer.headers["content-type"] == "audio/ogg"
    [request] = gate.requests(r"/media/.*")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    missing = await client.get(f"/channels/{channel['id']}/media/nope", headers=admin.headers)
    assert missing.status_code == 404


async def test_a_media_redirect_is_not_followed(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], gate: FakePlatform
) -> None:
    """A 3xx from the media host fails the download: the hub never fetches where it points
    (which could be inside the network), and the caller gets a 502."""
    inside = f"{gate.url}/internal/secret"
    gate.script(Reply(302, headers={"location": inside}), path=r"/media/.*")
    answer = await client.get(
        f"/channels/{channel['id']}/media/oga-3EB0A1B2C3", headers=admin.headers
    )
    assert answer.status_code == 502, answer.text
    assert gate.requests(r"/internal/.*") == []


# --- outbound and statuses ------------------------------------------------------------------------


async def test_user_message_is_sent_with_messages_text(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], gate: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id, "Olá! Como posso ajudar?")
    [request] = await gate.wait_for(1, path=SEND_PATH)
    assert request.path == "/messages/text"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.json == {"to": CHAT, "body": "Olá! Como posso ajudar?"}
    stored = await wait_status(client, admin, chat_id, sent["id"], "SENT")
    assert stored["external_id"]
    # WHAPI echoes our send back as a from_me message: ignored, nothing new stored.
    echo = msg("text", {"body": "Olá! Como posso ajudar?"}, id=stored["external_id"], from_me=True)
    assert_ack(await post_event(client, channel, messages_event(echo)))
    assert len(await messages_of(client, admin, chat_id)) == 2
    await asyncio.sleep(0.3)
    assert len(gate.requests(SEND_PATH)) == 1


async def test_group_reply_goes_to_the_group(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], gate: FakePlatform
) -> None:
    group_message = msg("text", {"body": "alguém?"}, chat_id=GROUP, chat_name="Equipe")
    assert_ack(await post_event(client, channel, messages_event(group_message)))
    [chat] = await chats_of(client, admin, channel)
    sent = await send_user_message(client, admin, chat["id"], "Estou aqui")
    await wait_status(client, admin, chat["id"], sent["id"], "SENT")
    [request] = gate.requests(SEND_PATH)
    assert request.json == {"to": GROUP, "body": "Estou aqui"}


async def test_media_is_sent_to_the_matching_endpoint(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], gate: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    one = [{"url": "https://files.example.com/a.jpg", "content_type": "image/jpeg"}]
    sent = await send_user_message(client, admin, chat_id, "your receipt", media=one)
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    [request] = gate.requests(SEND_PATH)
    assert request.path == "/messages/image"
    assert request.json == {"to": CHAT, "media": one[0]["url"], "caption": "your receipt"}

    gate.clear()
    several = [
        {
            "url": "https://files.example.com/b.pdf",
            "content_type": "application/pdf",
            "filename": "b.pdf",
        },
        # What the contact sent (behind the hub's proxy): WHAPI gets its own media id back.
        {
            "url": f"{PUBLIC_URL}/channels/{channel['id']}/media/oga-3EB0A1B2C3",
            "content_type": "audio/ogg",
            "media_id": "oga-3EB0A1B2C3",
            "kind": "voice",
        },
    ]
    sent = await send_user_message(client, admin, chat_id, "two files", media=several)
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    assert [(r.path, r.json) for r in gate.requests(SEND_PATH)] == [
        ("/messages/text", {"to": CHAT, "body": "two files"}),
        ("/messages/document", {"to": CHAT, "media": several[0]["url"], "filename": "b.pdf"}),
        ("/messages/voice", {"to": CHAT, "media": "oga-3EB0A1B2C3"}),
    ]


async def test_agent_reply_reaches_whapi(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, channel: dict[str, Any], gate: FakePlatform
) -> None:
    with FakePlatform(default=Reply(200, json={"reply": "pong: Oi"})) as agent_server:
        agent, _ = await make_agent(
            hub, webhook_url=agent_server.url + "/", buffer_time_seconds=0.1
        )
        assert_ack(await post_event(client, channel, messages_event(msg("text", {"body": "Oi"}))))
        [delivery] = await agent_server.wait_for(1)
        assert delivery.json["chat"]["external_id"] == CHAT
        [request] = await gate.wait_for(1, path=SEND_PATH)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.json == {"to": CHAT, "body": "pong: Oi"}
    [chat] = await chats_of(client, admin, channel)
    _, reply = await messages_of(client, admin, chat["id"])
    assert (reply["sender_type"], reply["sender_id"]) == ("AGENT", agent.id)


async def test_status_events_only_move_forward(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], gate: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    external_id = (await wait_status(client, admin, chat_id, sent["id"], "SENT"))["external_id"]

    async def event(*values: str) -> str:
        assert_ack(
            await post_event(
                client, channel, statuses_event(*(status(external_id, v) for v in values))
            )
        )
        return str((await message(client, admin, chat_id, sent["id"]))["delivery_status"])

    assert await event("delivered") == "DELIVERED"
    assert await event("read") == "READ"
    assert await event("sent") == "READ"
    assert await event("delivered", "pending") == "READ"
    assert await event("played") == "READ"


async def test_failed_status_is_recorded(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], gate: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    external_id = (await wait_status(client, admin, chat_id, sent["id"], "SENT"))["external_id"]
    failed = status(
        external_id,
        "failed",
        errors=[
            {
                "code": 470,
                "message": "Message failed to send because more than 24 hours have passed",
            }
        ],
    )
    assert_ack(await post_event(client, channel, statuses_event(failed)))
    stored = await message(client, admin, chat_id, sent["id"])
    assert stored["delivery_status"] == "FAILED"
    assert stored["meta_data"]["error"]["code"] == 470
    assert "24 hours" in stored["meta_data"]["error"]["detail"]
    assert_ack(await post_event(client, channel, statuses_event(status(external_id, "sent"))))
    assert (await message(client, admin, chat_id, sent["id"]))["delivery_status"] == "FAILED"


async def test_permanent_send_error_fails_with_whapis_code(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], gate: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    error = {
        "error": {
            "code": 400,
            "message": "Parameter 'to' is invalid",
            "details": "to must be a phone number or chat id",
        }
    }
    gate.script(Reply(400, json=error), path=SEND_PATH)
    sent = await send_user_message(client, admin, chat_id, "doomed")
    stored = await wait_status(client, admin, chat_id, sent["id"], "FAILED")
    assert stored["meta_data"]["error"]["code"] == 400
    assert "Parameter 'to' is invalid" in stored["meta_data"]["error"]["detail"]
    await asyncio.sleep(0.4)
    assert len(gate.requests(SEND_PATH)) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(503, json={"error": {"code": 503, "message": "Channel is starting"}}),
        Reply(429, json={"error": {"code": 429, "message": "Too many requests"}}),
        Reply(502, body=b"Bad Gateway"),
    ],
    ids=["503", "429", "502-text"],
)
async def test_transient_send_errors_are_retried(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: dict[str, Any],
    gate: FakePlatform,
    reply: Reply,
) -> None:
    chat_id = await open_chat(client, admin, channel)
    gate.script(reply, path=SEND_PATH)
    sent = await send_user_message(client, admin, chat_id, "retry me")
    stored = await wait_status(client, admin, chat_id, sent["id"], "SENT")
    first, second = gate.requests(SEND_PATH)
    assert first.json == second.json == {"to": CHAT, "body": "retry me"}
    assert "error" not in stored["meta_data"]
