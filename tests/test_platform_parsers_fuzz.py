"""Property tests: inbound parsers and webhook endpoints never fail on what a platform (or an
attacker holding the secret) might send.

- Every adapter's `parse` (and `parse_for_channel`, `verify`, `handshake` where present) is fed
  arbitrary bodies: random bytes, random JSON, and valid payloads with random parts replaced,
  dropped or added. It never raises, and what it returns is safe to store on both databases
  (ids and names within their column sizes; no NUL or lone surrogate; meta_data plain JSON,
  no NaN).
- The webhook endpoints of `telegram`, `whatsapp_cloud` and `whapi` get the same bodies,
  correctly signed, on SQLite and PostgreSQL: always 200 (a platform retries anything else);
  with random signature headers: 200 or 403, never 5xx. The WhatsApp Cloud handshake with
  random query strings: 200 or 403.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agenthub.models import DeliveryStatus
from agenthub.platforms import get_adapter
from agenthub.platforms.base import ChannelParser, Inbound, WebhookHandshake, WebhookRequest
from tests.conftest import Caller
from tests.hypothesis_budget import examples

pytestmark = pytest.mark.anyio

PUBLIC_URL = "http://hub.test"

# --- valid payloads to mutate ---------------------------------------------------------------------

TELEGRAM_UPDATES: list[Any] = [
    {
        "update_id": 100000001,
        "message": {
            "message_id": 42,
            "from": {"id": 123456789, "is_bot": False, "first_name": "Ana", "language_code": "pt"},
            "chat": {"id": 123456789, "first_name": "Ana", "type": "private"},
            "date": 1700000000,
            "text": "Oi",
            "reply_to_message": {"message_id": 41},
        },
    },
    {
        "update_id": 100000002,
        "message": {
            "message_id": 43,
            "from": {"id": 123456789, "is_bot": False, "first_name": "Ana"},
            "chat": {"id": -1001234567890, "title": "Equipe", "type": "supergroup"},
            "date": 1700000001,
            "caption": "receipt",
            "photo": [
                {"file_id": "AgACs", "file_unique_id": "u1", "width": 90, "height": 90},
                {"file_id": "AgACl", "file_unique_id": "u2", "width": 800, "height": 800},
            ],
            "document": {"file_id": "BQAC", "file_name": "a.pdf", "mime_type": "application/pdf"},
            "voice": {"file_id": "AwAC", "duration": 3, "mime_type": "audio/ogg"},
            "location": {"latitude": -23.5, "longitude": -46.6},
            "venue": {
                "location": {"latitude": 1.0, "longitude": 2.0},
                "title": "t",
                "address": "a",
            },
            "contact": {"phone_number": "+5511", "first_name": "Bia", "user_id": 7},
            "sticker": {"file_id": "CAAC", "is_animated": True, "is_video": False},
        },
    },
    {"update_id": 3, "edited_message": {"message_id": 1, "chat": {"id": 1, "type": "private"}}},
    {
        "update_id": 100000004,
        "callback_query": {
            "id": "4382bfdwdsb323b2d9",
            "from": {"id": 123456789, "is_bot": False, "first_name": "Ana"},
            "message": {
                "message_id": 43,
                "chat": {"id": 123456789, "first_name": "Ana", "type": "private"},
                "date": 1700000100,
                "text": "Confirm?",
                "reply_markup": {
                    "inline_keyboard": [
                        [
                            {"text": "Yes", "callback_data": "yes"},
                            {"text": "No", "callback_data": "no"},
                        ]
                    ]
                },
            },
            "chat_instance": "-1",
            "data": "yes",
        },
    },
    {
        "update_id": 100000005,
        "message_reaction": {
            "chat": {"id": -1001234567890, "title": "Equipe", "type": "supergroup"},
            "message_id": 42,
            "user": {"id": 123456789, "is_bot": False, "first_name": "Ana"},
            "actor_chat": {"id": -1001234567890, "type": "supergroup"},
            "date": 1700000200,
            "old_reaction": [{"type": "emoji", "emoji": "👍"}],
            "new_reaction": [
                {"type": "emoji", "emoji": "❤"},
                {"type": "custom_emoji", "custom_emoji_id": "5"},
                {"type": "paid"},
            ],
        },
    },
]

WHATSAPP_PAYLOADS: list[Any] = [
    {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5511987654321"}],
                            "messages": [
                                {
                                    "from": "5511987654321",
                                    "id": "wamid.A1",
                                    "timestamp": "1739321024",
                                    "type": "text",
                                    "text": {"body": "Oi"},
                                    "context": {"id": "wamid.Z", "forwarded": True},
                                },
                                {
                                    "from": "5511987654321",
                                    "id": "wamid.A2",
                                    "timestamp": "1739321025",
                                    "type": "image",
                                    "image": {
                                        "id": "1037",
                                        "mime_type": "image/jpeg",
                                        "sha256": "x",
                                        "caption": "c",
                                    },
                                },
                                {
                                    "from": "5511987654321",
                                    "id": "wamid.A3",
                                    "timestamp": "1739321026",
                                    "type": "location",
                                    "location": {"latitude": 1.5, "longitude": 2.5, "name": "n"},
                                },
                                {
                                    "from": "5511987654321",
                                    "id": "wamid.A4",
                                    "type": "interactive",
                                    "interactive": {
                                        "type": "list_reply",
                                        "list_reply": {"id": "i", "title": "t", "description": "d"},
                                    },
                                },
                                {
                                    "from": "5511987654321",
                                    "id": "wamid.A5",
                                    "type": "contacts",
                                    "contacts": [
                                        {
                                            "name": {"formatted_name": "B"},
                                            "phones": [{"phone": "+1", "wa_id": "1"}],
                                        }
                                    ],
                                },
                                {
                                    "from": "5511987654321",
                                    "id": "wamid.A6",
                                    "type": "button",
                                    "button": {"text": "Stop", "payload": "STOP"},
                                },
                                {
                                    "from": "5511987654321",
                                    "id": "wamid.A7",
                                    "type": "interactive",
                                    "interactive": {
                                        "type": "nfm_reply",
                                        "nfm_reply": {
                                            "name": "flow",
                                            "body": "Sent",
                                            "response_json": "{}",
                                        },
                                    },
                                },
                            ],
                            "statuses": [
                                {
                                    "id": "wamid.S1",
                                    "status": "failed",
                                    "timestamp": "1",
                                    "recipient_id": "1",
                                    "errors": [
                                        {
                                            "code": 131047,
                                            "title": "t",
                                            "message": "m",
                                            "error_data": {"details": "d"},
                                        }
                                    ],
                                },
                                {
                                    "id": "wamid.S2",
                                    "status": "read",
                                    "timestamp": "2",
                                    "recipient_id": "1",
                                },
                            ],
                        },
                    }
                ],
            }
        ],
    }
]

WHATSAPP_PAYLOADS.append(
    {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": "106540352242922"},
                            "messages": [
                                {
                                    "from": "16505551234",
                                    "id": "wamid.R1",
                                    "timestamp": "1749419544",
                                    "type": "reaction",
                                    "reaction": {"message_id": "wamid.T", "emoji": "👍"},
                                },
                                {
                                    "context": {"from": "15550783881", "id": "wamid.T"},
                                    "from": "16505551234",
                                    "id": "wamid.B1",
                                    "timestamp": "1714510003",
                                    "type": "interactive",
                                    "interactive": {
                                        "type": "button_reply",
                                        "button_reply": {"id": "change-button", "title": "Change"},
                                    },
                                },
                                {
                                    "context": {"id": "wamid.T"},
                                    "from": "16505551234",
                                    "id": "wamid.B2",
                                    "type": "button",
                                    "button": {"text": "Stop", "payload": "STOP"},
                                },
                            ],
                        },
                    }
                ],
            }
        ],
    }
)

WHAPI_PAYLOADS: list[Any] = [
    {
        "messages": [
            {
                "id": "M1",
                "from_me": False,
                "type": "text",
                "chat_id": "5511987654321@s.whatsapp.net",
                "timestamp": 1712995245,
                "source": "mobile",
                "text": {"body": "Oi"},
                "from": "5511987654321",
                "from_name": "Ana",
            },
            {
                "id": "M2",
                "from_me": False,
                "type": "image",
                "chat_id": "120363025246125486@g.us",
                "chat_name": "Equipe",
                "from": "5511",
                "from_name": "Bia",
                "image": {
                    "id": "jpeg-1",
                    "mime_type": "image/jpeg",
                    "link": "https://files.example.com/a.jpg",
                    "caption": "c",
                    "file_size": 10,
                },
            },
            {
                "id": "M3",
                "from_me": False,
                "type": "document",
                "chat_id": "5511@s.whatsapp.net",
                "document": {"id": "pdf-1", "file_name": "a.pdf"},
            },
            {
                "id": "M4",
                "from_me": False,
                "type": "location",
                "chat_id": "5511@s.whatsapp.net",
                "location": {"latitude": 1, "longitude": 2, "address": "a"},
            },
            {
                "id": "M5",
                "from_me": False,
                "type": "contact_list",
                "chat_id": "5511@s.whatsapp.net",
                "contact_list": {"list": [{"name": "A", "vcard": "V"}]},
            },
            {
                "id": "M6",
                "from_me": False,
                "type": "reply",
                "chat_id": "5511@s.whatsapp.net",
                "reply": {"type": "buttons_reply", "buttons_reply": {"id": "b", "title": "Yes"}},
                "context": {"quoted_id": "Q"},
            },
            {
                "id": "M7",
                "from_me": True,
                "type": "text",
                "chat_id": "5511@s.whatsapp.net",
                "text": {"body": "echo"},
            },
            {
                "id": "M8",
                "from_me": False,
                "type": "link_preview",
                "from": "5512",
                "link_preview": {"body": "see", "url": "https://e.com"},
            },
        ],
        "event": {"type": "messages", "event": "post"},
        "channel_id": "MANTIS-M72HC",
    },
    {
        "statuses": [
            {"id": "M1", "status": "failed", "code": 0, "errors": [{"code": 470, "message": "m"}]},
            {"id": "M2", "status": "played"},
        ],
        "event": {"type": "statuses", "event": "post"},
    },
    {
        "messages": [
            {
                "id": "A1",
                "from_me": False,
                "type": "action",
                "chat_id": "5511@s.whatsapp.net",
                "from": "5511",
                "timestamp": 1788024200,
                "action": {"type": "reaction", "target": "M1", "emoji": "👍"},
            },
            {
                "id": "A2",
                "from_me": False,
                "type": "reply",
                "chat_id": "5511@s.whatsapp.net",
                "reply": {"type": "list_reply", "list_reply": {"id": "ListV3:r1", "title": "C"}},
                "context": {"quoted_id": "M1"},
            },
        ],
        "event": {"type": "messages", "event": "post"},
    },
]

TEMPLATES = {
    "telegram": TELEGRAM_UPDATES,
    "whatsapp_cloud": WHATSAPP_PAYLOADS,
    "whapi": WHAPI_PAYLOADS,
}

# --- strategies -----------------------------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", "\x00", "a\x00b", "\ud800", "x" * 300, "é" * 5000, "-1", "0", "1e400", "NaN"]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """`value` with random subtrees replaced, keys dropped and keys added."""
    if draw(st.integers(0, 15)) == 0:
        return draw(json_values)
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if draw(st.integers(0, 19)) == 0:
                continue
            result[key] = draw(mutated(item))
        if draw(st.integers(0, 7)) == 0:
            result[draw(nasty_text)] = draw(json_values)
        return result
    if isinstance(value, list):
        items = [draw(mutated(item)) for item in value]
        if items and draw(st.integers(0, 7)) == 0:
            items.append(draw(mutated(items[0])))
        return items
    return value


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN, Infinity and lone surrogates (escaped) included


def bodies(platform: str) -> st.SearchStrategy[bytes]:
    near_valid = st.sampled_from(TEMPLATES[platform]).flatmap(mutated).map(encode)
    # Mostly near-valid payloads (they reach storage), some arbitrary JSON and bytes.
    return st.one_of(
        near_valid, near_valid, near_valid, json_values.map(encode), st.binary(max_size=200)
    )


# --- what a parser returns must be storable -------------------------------------------------------


def _storable_text(value: str, limit: int | None = None) -> None:
    assert "\x00" not in value
    value.encode("utf-8")  # no lone surrogates
    if limit is not None:
        assert len(value) <= limit


def _plain_json(value: Any) -> None:
    if isinstance(value, str):
        _storable_text(value)
    elif isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _storable_text(key)
            _plain_json(item)
    elif isinstance(value, list):
        for item in value:
            _plain_json(item)
    else:
        assert value is None or isinstance(value, bool | int)


def assert_storable(inbound: Inbound) -> None:
    assert isinstance(inbound, Inbound)
    for message in inbound.messages:
        assert message.external_id and message.contact_id
        _storable_text(message.external_id, 255)
        _storable_text(message.contact_id, 255)
        if message.contact_name is not None:
            _storable_text(message.contact_name, 255)
        _storable_text(message.content, 32_768)
        _plain_json(message.meta_data)
        json.dumps(message.meta_data, allow_nan=False)
        for item in message.meta_data.get("media", []):
            assert isinstance(item["url"], str) and item["url"].startswith(("http://", "https://"))
            assert isinstance(item["content_type"], str) and item["content_type"]
    for update in inbound.statuses:
        _storable_text(update.external_id, 255)
        assert update.external_id
        assert isinstance(update.status, DeliveryStatus)
        if update.error is not None:
            _plain_json(update.error)
    for reaction in inbound.reactions:
        assert reaction.target_external_id and reaction.contact_id
        _storable_text(reaction.target_external_id, 255)
        _storable_text(reaction.contact_id, 255)
        if reaction.emoji is not None:
            _storable_text(reaction.emoji)


def webhook_request(
    platform: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url=f"{PUBLIC_URL}/webhooks/{platform}/chn_fuzz000000",
        headers=headers or {},
        query=query or {},
        body=body,
    )


CREDENTIALS: dict[str, dict[str, str]] = {
    "telegram": {"bot_token": "1:fuzz", "secret_token": "fuzz-secret"},
    "whatsapp_cloud": {
        "access_token": "fuzz-token",
        "phone_number_id": "106540352242922",
        "app_secret": "fuzz-app-secret",
        "verify_token": "fuzz-verify",
    },
    "whapi": {"token": "fuzz-token", "webhook_secret": "fuzz-secret"},
}
PARSER_SETTINGS = settings(
    max_examples=examples(120), deadline=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.parametrize("platform", ["telegram", "whatsapp_cloud", "whapi"])
@PARSER_SETTINGS
@given(data=st.data())
def test_json_parsers_never_raise_and_return_storable_data(
    platform: str, data: st.DataObject
) -> None:
    body = data.draw(bodies(platform), label="body")
    adapter = get_adapter(platform)
    request = webhook_request(platform, body)
    assert_storable(adapter.parse(request))
    if isinstance(adapter, ChannelParser):
        assert_storable(adapter.parse_for_channel(request, CREDENTIALS[platform]))
        assert_storable(
            adapter.parse_for_channel(
                request, data.draw(st.dictionaries(nasty_text, json_values, max_size=3))
            )
        )


@pytest.mark.parametrize("platform", ["telegram", "whatsapp_cloud", "whapi"])
def test_the_templates_themselves_parse(platform: str) -> None:
    """The unmutated payloads yield messages (so mutations start from something meaningful)."""
    found = 0
    for payload in TEMPLATES[platform]:
        inbound = get_adapter(platform).parse(webhook_request(platform, encode(payload)))
        assert_storable(inbound)
        found += len(inbound.messages) + len(inbound.statuses) + len(inbound.reactions)
    assert found >= 2


header_values = st.one_of(
    st.text(max_size=80), st.sampled_from(["", "sha256=", "sha256=zz", "\x00", "é"])
)


@pytest.mark.parametrize(
    "platform", ["telegram", "whatsapp_cloud", "whapi", "whatsapp_twilio", "api"]
)
@PARSER_SETTINGS
@given(data=st.data())
def test_verify_never_raises_on_odd_headers(platform: str, data: st.DataObject) -> None:
    names = st.sampled_from(
        [
            "x-telegram-bot-api-secret-token",
            "x-hub-signature-256",
            "x-webhook-secret",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "other",
        ]
    )
    if platform == "whatsapp_twilio":
        # Starlette decodes header bytes as latin-1: a real request carries nothing else.
        values = st.text(alphabet=st.characters(max_codepoint=255), max_size=80)
    else:
        values = header_values
    headers = data.draw(st.dictionaries(names, values, max_size=4), label="headers")
    body = data.draw(st.binary(max_size=100), label="body")
    credentials = data.draw(
        st.one_of(
            st.just(CREDENTIALS.get(platform, {})),
            st.dictionaries(nasty_text, json_values, max_size=3),
        ),
        label="credentials",
    )
    adapter = get_adapter(platform)
    try:
        result = adapter.verify(webhook_request(platform, body, headers), credentials)
    except Exception as exc:  # pragma: no cover - the failure message says which
        raise AssertionError(f"verify raised {exc!r}") from exc
    assert isinstance(result, bool)


@PARSER_SETTINGS
@given(
    query=st.dictionaries(
        st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "x"]),
        header_values,
        max_size=4,
    )
)
@example(query={"hub.mode": "subscribe", "hub.verify_token": "fuzz-verify", "hub.challenge": "42"})
def test_handshake_never_raises(query: dict[str, str]) -> None:
    adapter = get_adapter("whatsapp_cloud")
    assert isinstance(adapter, WebhookHandshake)
    answer = adapter.handshake(
        webhook_request("whatsapp_cloud", b"", query=query), CREDENTIALS["whatsapp_cloud"]
    )
    if answer is not None:
        assert answer.status_code == 200
        assert query.get("hub.verify_token") == "fuzz-verify"
        assert answer.body == query["hub.challenge"].encode()


form_bodies = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(
            [
                "MessageSid",
                "SmsSid",
                "From",
                "Body",
                "NumMedia",
                "MediaUrl0",
                "MediaContentType0",
                "MessageStatus",
                "ErrorCode",
                "ErrorMessage",
                "ButtonPayload",
                "ButtonText",
                "OriginalRepliedMessageSid",
                "ListId",
                "ListTitle",
                "ProfileName",
                "Latitude",
                "x",
            ]
        ),
        nasty_text,
        max_size=8,
    ).map(lambda d: urlencode(d, encoding="utf-8", errors="surrogatepass").encode()),
)


@PARSER_SETTINGS
@given(body=form_bodies)
def test_twilio_parser_never_raises(body: bytes) -> None:
    assert isinstance(
        get_adapter("whatsapp_twilio").parse(webhook_request("whatsapp_twilio", body)), Inbound
    )


@PARSER_SETTINGS
@given(body=st.one_of(json_values.map(encode), st.binary(max_size=200)))
def test_api_parser_never_raises(body: bytes) -> None:
    assert isinstance(get_adapter("api").parse(webhook_request("api", body)), Inbound)


# --- the endpoints, on both databases -------------------------------------------------------------


def sign(platform: str, body: bytes) -> dict[str, str]:
    if platform == "telegram":
        return {"X-Telegram-Bot-Api-Secret-Token": CREDENTIALS["telegram"]["secret_token"]}
    if platform == "whapi":
        return {"X-Webhook-Secret": CREDENTIALS["whapi"]["webhook_secret"]}
    secret = CREDENTIALS["whatsapp_cloud"]["app_secret"].encode()
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


async def create_channel(client: httpx2.AsyncClient, admin: Caller, platform: str) -> str:
    answer = await client.post(
        "/channels",
        json={
            "name": f"fuzz {platform}",
            "platform": platform,
            "credentials": CREDENTIALS[platform],
            # Nothing is sent in these tests; a closed port makes sure of it.
            "config": {"api_base_url": "http://127.0.0.1:9"},
        },
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


ENDPOINT_SETTINGS = settings(
    max_examples=examples(60),  # about 20 per platform
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
JSON_PLATFORMS = ("telegram", "whatsapp_cloud", "whapi")
# Everything is drawn before the test body runs: a draw inside an async test that runs out of
# data would stop the event loop's runner.
platform_bodies = st.sampled_from(JSON_PLATFORMS).flatmap(
    lambda platform: st.tuples(st.just(platform), bodies(platform))
)
SECRET_HEADERS = {
    "telegram": "X-Telegram-Bot-Api-Secret-Token",
    "whatsapp_cloud": "X-Hub-Signature-256",
    "whapi": "X-Webhook-Secret",
}


@ENDPOINT_SETTINGS
@given(case=platform_bodies)
async def test_signed_webhooks_are_always_acknowledged(
    client: httpx2.AsyncClient, admin: Caller, case: tuple[str, bytes]
) -> None:
    platform, body = case
    channel_id = await create_channel(client, admin, platform)
    headers = {"Content-Type": "application/json", **sign(platform, body)}
    answer = await client.post(f"/webhooks/{platform}/{channel_id}", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    # Posting it again (a platform retry) changes nothing and is acknowledged too.
    again = await client.post(f"/webhooks/{platform}/{channel_id}", content=body, headers=headers)
    assert again.status_code == 200, again.text


@ENDPOINT_SETTINGS
@given(
    case=platform_bodies,
    header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
)
async def test_unsigned_or_forged_webhooks_are_refused_never_500(
    client: httpx2.AsyncClient, admin: Caller, case: tuple[str, bytes], header: str
) -> None:
    platform, body = case
    channel_id = await create_channel(client, admin, platform)
    answer = await client.post(
        f"/webhooks/{platform}/{channel_id}",
        content=body,
        headers={
            "Content-Type": "application/json",
            SECRET_HEADERS[platform]: header.encode("latin-1"),
        },
    )
    assert answer.status_code == 403, answer.text
    chats = await client.get(f"/channels/{channel_id}/chats", headers=admin.headers)
    assert chats.json()["total_count"] == 0


@ENDPOINT_SETTINGS
@given(
    query=st.dictionaries(
        st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "x"]),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
        max_size=4,
    )
)
async def test_handshake_endpoint_never_500(
    client: httpx2.AsyncClient, admin: Caller, query: dict[str, str]
) -> None:
    channel_id = await create_channel(client, admin, "whatsapp_cloud")
    answer = await client.get(f"/webhooks/whatsapp_cloud/{channel_id}", params=query)
    assert answer.status_code in (200, 403), answer.text
