"""`whatsapp_cloud`: the GET verification handshake, `X-Hub-Signature-256` (reference vector),
every documented message type, batching, statuses (monotonic, errors kept), the media proxy,
and sends through a fake Graph API on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import Role
from agenthub.platforms.base import WebhookRequest
from agenthub.platforms.whatsapp_cloud import WhatsAppCloudAdapter, signature
from agenthub.settings import Settings, get_settings
from tests.conftest import Caller
from tests.factories import make_agent
from tests.fake_platform import FakePlatform, Recorded, Reply, wait_until
from tests.platform_helpers import HubReader, assert_ack, send_user_message

# Parsing, signatures and platform calls: the storage path they share is tested on both
# databases elsewhere (test_intake, test_agent_delivery, test_platform_parsers_fuzz).
pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs, pytest.mark.database_independent]

PUBLIC_URL = "http://hub.test"
ACCESS_TOKEN = "EAAGm0PX4ZCpsBAKZAZBq1ZCd9ZAZAZBfZAqwerty12345"
PHONE_NUMBER_ID = "106540352242922"
APP_SECRET = "c0ffee1234567890deadbeefcafebabe"
VERIFY_TOKEN = "verify-me-7f3a"
WA_ID = "5511987654321"
WABA_ID = "102290129340398"
VERSION = "v21.0"
MESSAGES_PATH = rf"/{VERSION}/{PHONE_NUMBER_ID}/messages"
MEDIA_ID = "1037543291543636"
MEDIA_BYTES = b"\x89PNG\r\n\x1a\n fake image"

_hub = HubReader(secret=ACCESS_TOKEN)
chats_of = _hub.chats_of
messages_of = _hub.messages_of
only_message = _hub.only_message
message = _hub.message


def wamid() -> str:
    return "wamid.HBgN" + secrets.token_hex(16).upper()


def fake_graph(version: str = VERSION) -> FakePlatform:
    """A Graph API double: `/{version}/{phone_number_id}/messages` (Bearer checked) answers a
    fresh wamid; `/{version}/{media_id}` gives a download URL on the same server."""
    fake = FakePlatform(
        default=Reply(
            404,
            json={
                "error": {"message": "Unknown path", "type": "GraphMethodException", "code": 100}
            },
        )
    )

    def authorized(request: Recorded) -> bool:
        return request.headers.get("authorization") == f"Bearer {ACCESS_TOKEN}"

    def unauthorized() -> Reply:
        error = {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}
        return Reply(401, json={"error": error})

    def send(request: Recorded, groups: dict[str, str]) -> Reply:
        if not authorized(request):
            return unauthorized()
        body = request.json
        return Reply(
            200,
            json={
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                "messages": [{"id": wamid()}],
            },
        )

    def media_info(request: Recorded, groups: dict[str, str]) -> Reply:
        if not authorized(request):
            return unauthorized()
        if groups["media_id"] != MEDIA_ID:
            error = {
                "message": "Unsupported get request.",
                "type": "GraphMethodException",
                "code": 100,
            }
            return Reply(400, json={"error": error})
        return Reply(
            200,
            json={
                "messaging_product": "whatsapp",
                "url": f"{fake.url}/lookaside/whatsapp_business/attachments/?mid={MEDIA_ID}&ext=1",
                "mime_type": "image/png",
                "sha256": hashlib.sha256(MEDIA_BYTES).hexdigest(),
                "file_size": len(MEDIA_BYTES),
                "id": groups["media_id"],
            },
        )

    def download(request: Recorded, groups: dict[str, str]) -> Reply:
        if not authorized(request):
            return Reply(401, body=b"")
        return Reply(200, body=MEDIA_BYTES, headers={"content-type": "image/png"})

    fake.route("POST", rf"/{version}/(?P<phone>\d+)/messages", send)
    fake.route("GET", rf"/{version}/(?P<media_id>\d+)", media_info)
    fake.route("GET", r"/lookaside/whatsapp_business/attachments/", download)
    return fake


@pytest.fixture
def graph() -> Iterator[FakePlatform]:
    with fake_graph() as fake:
        yield fake


CREDENTIALS = {
    "access_token": ACCESS_TOKEN,
    "phone_number_id": PHONE_NUMBER_ID,
    "app_secret": APP_SECRET,
    "verify_token": VERIFY_TOKEN,
}


@pytest.fixture
async def channel(client: httpx2.AsyncClient, admin: Caller, graph: FakePlatform) -> dict[str, Any]:
    answer = await client.post(
        "/channels",
        json={
            "name": "WhatsApp",
            "platform": "whatsapp_cloud",
            "credentials": CREDENTIALS,
            "config": {"api_base_url": graph.url},
        },
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert body["webhook_url"] == f"{PUBLIC_URL}/webhooks/whatsapp_cloud/{body['id']}"
    assert body["webhook_registered"] is None
    assert any(VERIFY_TOKEN not in step and "Verify token" in step for step in body["setup"])
    for secret in CREDENTIALS.values():
        assert secret not in answer.text
    return body


# --- payloads (shapes from Meta's webhook reference and the Node SDK's types) --------------------


def envelope(
    *,
    messages: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    phone_number_id: str = PHONE_NUMBER_ID,
    name: str = "Ana Lima",
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
    }
    if messages is not None:
        value["contacts"] = [{"profile": {"name": name}, "wa_id": WA_ID}]
        value["messages"] = messages
    if statuses is not None:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    }


timestamps = itertools.count(1739321024)


def msg(kind: str, body: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    message = {"from": WA_ID, "id": wamid(), "timestamp": str(next(timestamps)), "type": kind}
    if body is not None:
        message[kind] = body
    message.update(extra)
    return message


def status(message_id: str, value: str, **extra: Any) -> dict[str, Any]:
    update = {
        "id": message_id,
        "status": value,
        "timestamp": str(next(timestamps)),
        "recipient_id": WA_ID,
    }
    if value != "failed":
        update["conversation"] = {"id": "CONVERSATION_ID", "origin": {"type": "service"}}
        update["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
    update.update(extra)
    return update


async def post_signed(
    client: httpx2.AsyncClient,
    channel: dict[str, Any],
    payload: Any,
    *,
    secret: str | None = APP_SECRET,
    content: bytes | None = None,
    header: str | None = None,
) -> httpx2.Response:
    body = content if content is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    elif secret is not None:
        headers["X-Hub-Signature-256"] = (
            "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        )
    return await client.post(
        f"/webhooks/whatsapp_cloud/{channel['id']}", content=body, headers=headers
    )


async def open_chat(client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]) -> str:
    assert_ack(await post_signed(client, channel, envelope(messages=[msg("text", {"body": "Oi"})])))
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


# --- the reference vector and the handshake -------------------------------------------------------


def test_signature_matches_the_reference_vector() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    expected = "sha256=02fe0c96d28c59ddb7cf81eff0ca05809b360ba73b63c28210b5906a0a107d1f"
    assert signature("app_secret_123", body) == expected
    adapter = WhatsAppCloudAdapter()

    def request(header: str) -> WebhookRequest:
        return WebhookRequest(
            "POST",
            "http://hub.test/webhooks/whatsapp_cloud/chn_x",
            {"x-hub-signature-256": header},
            {},
            body,
        )

    assert adapter.verify(request(expected), {"app_secret": "app_secret_123"})
    assert adapter.verify(
        request(expected.upper().replace("SHA256=", "sha256=")), {"app_secret": "app_secret_123"}
    )
    assert not adapter.verify(request(expected), {"app_secret": "app_secret_124"})
    assert not adapter.verify(
        request(expected.removeprefix("sha256=")), {"app_secret": "app_secret_123"}
    )
    assert not adapter.verify(request(expected), {})


async def test_reference_vector_body_is_accepted_end_to_end(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    answer = await client.post(
        "/channels",
        json={
            "name": "vector",
            "platform": "whatsapp_cloud",
            "credentials": {**CREDENTIALS, "app_secret": "app_secret_123"},
        },
        headers=admin.headers,
    )
    channel = answer.json()
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    header = "sha256=02fe0c96d28c59ddb7cf81eff0ca05809b360ba73b63c28210b5906a0a107d1f"
    assert_ack(await post_signed(client, channel, None, content=body, header=header))
    forged = await post_signed(client, channel, None, content=body + b" ", header=header)
    assert forged.status_code == 403


async def test_verification_handshake(client: httpx2.AsyncClient, channel: dict[str, Any]) -> None:
    path = f"/webhooks/whatsapp_cloud/{channel['id']}"
    good = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    answer = await client.get(path, params=good)
    assert answer.status_code == 200, answer.text
    assert answer.text == "1158201444"
    assert answer.headers["content-type"].startswith("text/plain")

    for params in (
        {**good, "hub.verify_token": "wrong"},
        {**good, "hub.verify_token": ""},
        {**good, "hub.verify_token": "vérify"},
        {**good, "hub.mode": "unsubscribe"},
        {k: v for k, v in good.items() if k != "hub.verify_token"},
        {k: v for k, v in good.items() if k != "hub.challenge"},
        {},
    ):
        answer = await client.get(path, params=params)
        assert answer.status_code == 403, (params, answer.text)
        assert "detail" in answer.json()
    assert (
        await client.get("/webhooks/whatsapp_cloud/chn_missing000", params=good)
    ).status_code == 404


async def test_handshake_only_where_the_platform_has_one(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    web = await client.post(
        "/channels", json={"name": "web", "platform": "api"}, headers=admin.headers
    )
    answer = await client.get(f"/webhooks/api/{web.json()['id']}", params={"hub.mode": "subscribe"})
    assert answer.status_code == 405
    assert "detail" in answer.json()
    # A whatsapp_cloud URL pointing at another platform's channel is not found.
    answer = await client.get(f"/webhooks/whatsapp_cloud/{web.json()['id']}")
    assert answer.status_code == 404


# --- inbound ------------------------------------------------------------------------------------


async def test_text_message_is_stored_once_even_when_posted_twice(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    text = msg("text", {"body": "Olá, preciso de ajuda"})
    payload = envelope(messages=[text])
    assert_ack(await post_signed(client, channel, payload))
    assert_ack(await post_signed(client, channel, payload))
    [chat] = await chats_of(client, admin, channel)
    assert (chat["external_id"], chat["name"]) == (WA_ID, "Ana Lima")
    [stored] = await messages_of(client, admin, chat["id"])
    assert stored["external_id"] == text["id"]
    assert stored["content"] == "Olá, preciso de ajuda"
    assert stored["meta_data"]["type"] == "text"


async def test_batched_entries_are_all_stored_in_order(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    first = envelope(messages=[msg("text", {"body": "one"}), msg("text", {"body": "two"})])
    second = envelope(messages=[msg("text", {"body": "three"})])
    first["entry"].append(second["entry"][0])
    first["entry"][0]["changes"].append({"field": "account_update", "value": {"event": "x"}})
    assert_ack(await post_signed(client, channel, first))
    stored = await messages_of(client, admin, (await chats_of(client, admin, channel))[0]["id"])
    assert [m["content"] for m in stored] == ["one", "two", "three"]


TYPES = [
    pytest.param(
        msg(
            "image",
            {"caption": "my receipt", "mime_type": "image/jpeg", "sha256": "abc=", "id": MEDIA_ID},
        ),
        "my receipt",
        {
            "media": [
                {
                    "kind": "image",
                    "content_type": "image/jpeg",
                    "media_id": MEDIA_ID,
                    "sha256": "abc=",
                }
            ]
        },
        id="image",
    ),
    pytest.param(
        msg(
            "audio",
            {"mime_type": "audio/ogg; codecs=opus", "sha256": "s", "id": "2001", "voice": True},
        ),
        "",
        {
            "media": [
                {"kind": "voice", "content_type": "audio/ogg", "media_id": "2001", "sha256": "s"}
            ]
        },
        id="voice-note",
    ),
    pytest.param(
        msg("audio", {"mime_type": "audio/mpeg", "id": "2002"}),
        "",
        {"media": [{"kind": "audio", "content_type": "audio/mpeg", "media_id": "2002"}]},
        id="audio",
    ),
    pytest.param(
        msg("video", {"mime_type": "video/mp4", "id": "2003", "caption": "look"}),
        "look",
        {"media": [{"kind": "video", "content_type": "video/mp4", "media_id": "2003"}]},
        id="video",
    ),
    pytest.param(
        msg(
            "document",
            {
                "filename": "invoice.pdf",
                "mime_type": "application/pdf",
                "id": "2004",
                "caption": "invoice",
            },
        ),
        "invoice",
        {
            "media": [
                {
                    "kind": "document",
                    "content_type": "application/pdf",
                    "media_id": "2004",
                    "filename": "invoice.pdf",
                }
            ]
        },
        id="document",
    ),
    pytest.param(
        msg("sticker", {"mime_type": "image/webp", "id": "2005", "animated": False}),
        "",
        {"media": [{"kind": "sticker", "content_type": "image/webp", "media_id": "2005"}]},
        id="sticker",
    ),
    pytest.param(
        msg(
            "location",
            {
                "latitude": -23.55052,
                "longitude": -46.633308,
                "name": "Sé",
                "address": "Praça da Sé",
            },
        ),
        "",
        {
            "location": {
                "latitude": -23.55052,
                "longitude": -46.633308,
                "name": "Sé",
                "address": "Praça da Sé",
            }
        },
        id="location",
    ),
    pytest.param(
        msg(
            "contacts",
            None,
            contacts=[
                {
                    "name": {"formatted_name": "Bia Souza", "first_name": "Bia"},
                    "phones": [
                        {"phone": "+55 11 99999-0000", "wa_id": "5511999990000", "type": "CELL"}
                    ],
                }
            ],
        ),
        "",
        {
            "contacts": [
                {
                    "name": "Bia Souza",
                    "phones": [{"phone": "+55 11 99999-0000", "wa_id": "5511999990000"}],
                }
            ]
        },
        id="contacts",
    ),
    pytest.param(
        msg(
            "interactive",
            {"type": "button_reply", "button_reply": {"id": "yes-1", "title": "Yes"}},
            context={"from": "15550783881", "id": "wamid.ORIGINAL"},
        ),
        "Yes",
        {
            "interactive": {"type": "button_reply", "id": "yes-1", "title": "Yes"},
            # the hub id of the message answered: not this test's
            "reply_to": {"id": "yes-1", "message_id": None},
        },
        id="interactive-button-reply",
    ),
    pytest.param(
        msg(
            "interactive",
            {
                "type": "list_reply",
                "list_reply": {"id": "plan-2", "title": "Premium", "description": "R$ 99"},
            },
        ),
        "Premium",
        {
            "interactive": {
                "type": "list_reply",
                "id": "plan-2",
                "title": "Premium",
                "description": "R$ 99",
            }
        },
        id="interactive-list-reply",
    ),
    pytest.param(
        msg("button", {"text": "Stop promotions", "payload": "STOP"}),
        "Stop promotions",
        {"button": {"text": "Stop promotions", "payload": "STOP"}},
        id="template-quick-reply",
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
    assert_ack(await post_signed(client, channel, envelope(messages=[payload])))
    stored = await only_message(client, admin, channel)
    assert stored["content"] == content
    assert stored["external_id"] == payload["id"]
    assert stored["meta_data"]["type"] == payload["type"]
    for key, expected in meta.items():
        if key == "media":
            [item] = stored["meta_data"]["media"]
            assert item == item | expected[0]
            assert (
                item["url"]
                == f"{PUBLIC_URL}/channels/{channel['id']}/media/{expected[0]['media_id']}"
            )
        else:
            assert stored["meta_data"][key] == expected


IGNORED = [
    pytest.param(
        envelope(messages=[msg("reaction", {"message_id": "wamid.X", "emoji": "👍"})]),
        id="reaction",
    ),
    pytest.param(
        envelope(
            messages=[
                msg("unsupported", None, errors=[{"code": 131051, "title": "Message type unknown"}])
            ]
        ),
        id="unsupported",
    ),
    pytest.param(
        envelope(
            messages=[msg("system", {"body": "changed number", "type": "user_changed_number"})]
        ),
        id="system",
    ),
    pytest.param(
        envelope(messages=[msg("order", {"catalog_id": "1", "product_items": []})]), id="order"
    ),
    pytest.param(envelope(messages=[msg("text", {"body": ""})]), id="empty-text"),
    pytest.param(
        envelope(messages=[msg("image", {"mime_type": "image/jpeg"})]), id="media-without-id"
    ),
    pytest.param(envelope(messages=[msg("location", {"latitude": "north"})]), id="bad-location"),
    pytest.param(
        envelope(messages=[msg("interactive", {"type": "nothing"})]), id="unknown-interactive"
    ),
    pytest.param(
        envelope(messages=[{"id": wamid(), "type": "text", "text": {"body": "no sender"}}]),
        id="no-from",
    ),
    pytest.param(
        envelope(messages=[{"from": WA_ID, "type": "text", "text": {"body": "no id"}}]), id="no-id"
    ),
    pytest.param(
        envelope(messages=[msg("text", {"body": "other number"})], phone_number_id="999999999999"),
        id="other-phone-number",
    ),
    pytest.param(
        envelope(statuses=[status(wamid(), "delivered")]), id="status-for-unknown-message"
    ),
    pytest.param(envelope(statuses=[status(wamid(), "deleted")]), id="unknown-status"),
    pytest.param(
        {**envelope(messages=[msg("text", {"body": "x"})]), "object": "page"}, id="other-object"
    ),
    pytest.param(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "changes": [
                        {"field": "message_template_status_update", "value": {"event": "APPROVED"}}
                    ]
                }
            ],
        },
        id="template-status",
    ),
    pytest.param({"object": "whatsapp_business_account", "entry": "nope"}, id="entry-not-a-list"),
    pytest.param([], id="json-array"),
]


@pytest.mark.parametrize("payload", IGNORED)
async def test_unhandled_payloads_are_acknowledged_and_ignored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], payload: Any
) -> None:
    assert_ack(await post_signed(client, channel, payload))
    assert await chats_of(client, admin, channel) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"\xff\xfe", b'{"object": "whatsapp_business_account", "entry": [{'],
)
async def test_undecodable_bodies_are_acknowledged(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], content: bytes
) -> None:
    assert_ack(await post_signed(client, channel, None, content=content))
    assert await chats_of(client, admin, channel) == []


@pytest.mark.parametrize(
    "how",
    ["missing", "forged", "wrong-secret", "no-prefix", "other-body", "sha1-header", "non-ascii"],
)
async def test_bad_or_missing_signature_is_403_and_nothing_stored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], how: str
) -> None:
    payload = envelope(messages=[msg("text", {"body": "let me in"})])
    body = json.dumps(payload).encode()
    good = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    path = f"/webhooks/whatsapp_cloud/{channel['id']}"
    if how == "missing":
        answer = await post_signed(client, channel, payload, secret=None)
    elif how == "forged":
        answer = await post_signed(client, channel, payload, header="sha256=" + "0" * 64)
    elif how == "wrong-secret":
        answer = await post_signed(client, channel, payload, secret="not-the-app-secret")
    elif how == "no-prefix":
        answer = await post_signed(client, channel, payload, header=good.removeprefix("sha256="))
    elif how == "other-body":
        answer = await post_signed(
            client, channel, None, content=body.replace(b"let me in", b"let me out"), header=good
        )
    elif how == "sha1-header":
        sha1 = "sha1=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha1).hexdigest()
        answer = await client.post(path, content=body, headers={"X-Hub-Signature": sha1})
    else:
        answer = await client.post(
            path, content=body, headers={"X-Hub-Signature-256": "sha256=é".encode("latin-1")}
        )
    assert answer.status_code == 403, answer.text
    assert await chats_of(client, admin, channel) == []


# --- media proxy ----------------------------------------------------------------------------------


async def test_media_proxy_downloads_with_the_access_token(
    client: httpx2.AsyncClient,
    admin: Caller,
    make_user: Any,
    channel: dict[str, Any],
    graph: FakePlatform,
) -> None:
    image = msg("image", {"mime_type": "image/png", "id": MEDIA_ID})
    assert_ack(await post_signed(client, channel, envelope(messages=[image])))
    stored = await only_message(client, admin, channel)
    path = stored["meta_data"]["media"][0]["url"].removeprefix(PUBLIC_URL)
    answer = await client.get(path, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.content == MEDIA_BYTES
    assert answer.headers["content-type"] == "image/png"
    [info] = graph.requests(rf"/{VERSION}/{MEDIA_ID}")
    assert info.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    [download] = graph.requests(r"/lookaside/.*")
    assert download.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"

    stranger: Caller = await make_user(Role.MEMBER)
    assert (await client.get(path, headers=stranger.headers)).status_code == 404
    unknown = await client.get(f"/channels/{channel['id']}/media/999", headers=admin.headers)
    assert unknown.status_code == 404


# --- outbound and statuses ------------------------------------------------------------------------


async def test_user_message_is_sent_to_the_messages_endpoint(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], graph: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id, "Olá! Como posso ajudar?")
    [request] = await graph.wait_for(1, path=MESSAGES_PATH)
    assert request.path == f"/{VERSION}/{PHONE_NUMBER_ID}/messages"
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA_ID,
        "type": "text",
        "text": {"body": "Olá! Como posso ajudar?", "preview_url": False},
    }
    stored = await wait_status(client, admin, chat_id, sent["id"], "SENT")
    assert stored["external_id"].startswith("wamid.")
    await asyncio.sleep(0.3)
    assert len(graph.requests(MESSAGES_PATH)) == 1


async def test_media_is_sent_by_link_with_its_caption(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], graph: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    media = [
        {
            "url": "https://files.example.com/a.pdf",
            "content_type": "application/pdf",
            "filename": "a.pdf",
        }
    ]
    sent = await send_user_message(client, admin, chat_id, "your invoice", media=media)
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    [request] = graph.requests(MESSAGES_PATH)
    assert request.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA_ID,
        "type": "document",
        "document": {"link": media[0]["url"], "caption": "your invoice", "filename": "a.pdf"},
    }

    graph.clear()
    several = [
        {"url": "https://files.example.com/b.jpg", "content_type": "image/jpeg"},
        # What the contact sent: Meta already has it, so it goes by id.
        {
            "url": f"{PUBLIC_URL}/channels/{channel['id']}/media/{MEDIA_ID}",
            "content_type": "audio/ogg",
            "media_id": MEDIA_ID,
            "kind": "voice",
        },
    ]
    sent = await send_user_message(client, admin, chat_id, "two files", media=several)
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    bodies = [r.json for r in graph.requests(MESSAGES_PATH)]
    assert [(b["type"], b.get(b["type"])) for b in bodies] == [
        ("text", {"body": "two files", "preview_url": False}),
        ("image", {"link": "https://files.example.com/b.jpg"}),
        ("audio", {"id": MEDIA_ID}),
    ]


async def test_agent_reply_reaches_the_graph_api(
    client: httpx2.AsyncClient,
    admin: Caller,
    hub: Hub,
    channel: dict[str, Any],
    graph: FakePlatform,
) -> None:
    with FakePlatform(default=Reply(200, json={"reply": "pong: Oi"})) as agent_server:
        agent, _ = await make_agent(
            hub, webhook_url=agent_server.url + "/", buffer_time_seconds=0.1
        )
        assert_ack(
            await post_signed(client, channel, envelope(messages=[msg("text", {"body": "Oi"})]))
        )
        [delivery] = await agent_server.wait_for(1)
        assert delivery.json["chat"]["external_id"] == WA_ID
        [request] = await graph.wait_for(1, path=MESSAGES_PATH)
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert (request.json["to"], request.json["text"]["body"]) == (WA_ID, "pong: Oi")
    [chat] = await chats_of(client, admin, channel)
    _, reply = await messages_of(client, admin, chat["id"])
    assert (reply["sender_type"], reply["sender_id"]) == ("AGENT", agent.id)


async def test_statuses_only_move_forward(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], graph: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    external_id = (await wait_status(client, admin, chat_id, sent["id"], "SENT"))["external_id"]

    async def callback(*values: str) -> str:
        payload = envelope(statuses=[status(external_id, v) for v in values])
        assert_ack(await post_signed(client, channel, payload))
        return str((await message(client, admin, chat_id, sent["id"]))["delivery_status"])

    assert await callback("delivered") == "DELIVERED"
    assert await callback("read") == "READ"
    assert await callback("sent") == "READ"  # late
    assert await callback("delivered", "sent") == "READ"
    assert await callback("failed") == "READ"
    # A late failure neither moves it nor pins an error on a message that was read.
    assert "error" not in (await message(client, admin, chat_id, sent["id"]))["meta_data"]


async def test_read_before_delivered_in_one_batch(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], graph: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    external_id = (await wait_status(client, admin, chat_id, sent["id"], "SENT"))["external_id"]
    payload = envelope(statuses=[status(external_id, "read"), status(external_id, "delivered")])
    assert_ack(await post_signed(client, channel, payload))
    assert (await message(client, admin, chat_id, sent["id"]))["delivery_status"] == "READ"


async def test_failed_status_keeps_metas_error(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], graph: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    external_id = (await wait_status(client, admin, chat_id, sent["id"], "SENT"))["external_id"]
    error = {
        "code": 131047,
        "title": "Re-engagement message",
        "message": "Re-engagement message",
        "error_data": {
            "details": "Message failed to send because more than 24 hours have passed since "
            "the customer last replied to this number."
        },
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }
    payload = envelope(statuses=[status(external_id, "failed", errors=[error])])
    assert_ack(await post_signed(client, channel, payload))
    stored = await message(client, admin, chat_id, sent["id"])
    assert stored["delivery_status"] == "FAILED"
    assert stored["meta_data"]["error"]["code"] == "window_closed"
    assert stored["meta_data"]["error"]["platform_code"] == 131047
    assert "24 hours" in stored["meta_data"]["error"]["details"]
    late = envelope(statuses=[status(external_id, "sent")])
    assert_ack(await post_signed(client, channel, late))
    assert (await message(client, admin, chat_id, sent["id"]))["delivery_status"] == "FAILED"


def graph_error(code: int, message: str, details: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbC",
    }
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": error}


async def test_permanent_send_error_fails_with_metas_code(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], graph: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    graph.script(
        Reply(
            400,
            json=graph_error(131026, "Message Undeliverable", "Recipient is not a WhatsApp user"),
        ),
        path=MESSAGES_PATH,
    )
    sent = await send_user_message(client, admin, chat_id, "doomed")
    stored = await wait_status(client, admin, chat_id, sent["id"], "FAILED")
    assert stored["meta_data"]["error"]["code"] == 131026
    assert stored["meta_data"]["error"]["status_code"] == 400
    assert "not a WhatsApp user" in stored["meta_data"]["error"]["detail"]
    await asyncio.sleep(0.4)
    assert len(graph.requests(MESSAGES_PATH)) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(400, json=graph_error(130429, "Rate limit hit")),
        Reply(429, json=graph_error(80007, "Rate limit issues")),
        Reply(500, json=graph_error(131000, "Something went wrong")),
        Reply(503, body=b"Service Unavailable"),
    ],
    ids=["130429", "429", "500", "503-text"],
)
async def test_transient_send_errors_are_retried(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: dict[str, Any],
    graph: FakePlatform,
    reply: Reply,
) -> None:
    chat_id = await open_chat(client, admin, channel)
    graph.script(reply, path=MESSAGES_PATH)
    sent = await send_user_message(client, admin, chat_id, "retry me")
    stored = await wait_status(client, admin, chat_id, sent["id"], "SENT")
    first, second = graph.requests(MESSAGES_PATH)
    assert first.json == second.json
    assert "error" not in stored["meta_data"]


async def test_graph_version_is_a_setting(
    client: httpx2.AsyncClient,
    admin: Caller,
    hub: Hub,
    channel: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`AGENTHUB_WHATSAPP_GRAPH_VERSION` moves every Graph call to that version's paths."""
    monkeypatch.setenv("AGENTHUB_WHATSAPP_GRAPH_VERSION", "v99.0")
    monkeypatch.setattr(
        hub, "settings", hub.settings.model_copy(update={"whatsapp_graph_version": "v99.0"})
    )
    get_settings.cache_clear()
    try:
        with fake_graph("v99.0") as graph99:
            patch = {"config": {"api_base_url": graph99.url}}
            await client.patch(f"/channels/{channel['id']}", json=patch, headers=admin.headers)
            chat_id = await open_chat(client, admin, channel)
            sent = await send_user_message(client, admin, chat_id)
            await wait_status(client, admin, chat_id, sent["id"], "SENT")
            [request] = graph99.requests(r"/v99\.0/.*/messages")
            assert request.path == f"/v99.0/{PHONE_NUMBER_ID}/messages"
            media = await client.get(
                f"/channels/{channel['id']}/media/{MEDIA_ID}", headers=admin.headers
            )
            assert media.content == MEDIA_BYTES
            assert graph99.requests(rf"/v99\.0/{MEDIA_ID}")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert Settings(_env_file=None).whatsapp_graph_version == VERSION  # type: ignore[call-arg]
