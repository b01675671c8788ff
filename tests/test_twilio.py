"""`whatsapp_twilio`: signatures (reference vectors), inbound webhooks, outbound sends through a
fake Twilio Messages API on loopback, status callbacks and send retries."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from agenthub.platforms.base import WebhookRequest
from agenthub.platforms.twilio import TwilioAdapter, twilio_signature
from tests.conftest import Caller
from tests.fake_platform import (
    TWILIO_MESSAGES_PATH,
    FakePlatform,
    Reply,
    fake_twilio,
    twilio_sid,
    twilio_sign,
    wait_until,
)

# Parsing, signatures and platform calls: the storage path they share is tested on both
# databases elsewhere (test_intake, test_agent_delivery, test_platform_parsers_fuzz).
pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs, pytest.mark.database_independent]

PUBLIC_URL = "http://hub.test"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-123"
FROM_NUMBER = "whatsapp:+14155238886"
CONTACT = "whatsapp:+14155551111"


@pytest.fixture
def twilio() -> Iterator[FakePlatform]:
    with fake_twilio() as fake:
        yield fake


@pytest.fixture
async def channel(
    client: httpx2.AsyncClient, admin: Caller, twilio: FakePlatform
) -> dict[str, Any]:
    answer = await client.post(
        "/channels",
        json={
            "name": "WhatsApp",
            "platform": "whatsapp_twilio",
            "credentials": {
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from_number": FROM_NUMBER,
            },
            "config": {"api_base_url": twilio.url},
        },
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["webhook_url"] == f"{PUBLIC_URL}/webhooks/whatsapp_twilio/{body['id']}"
    assert AUTH_TOKEN not in answer.text
    return body


# --- helpers ----------------------------------------------------------------------------------


def inbound_form(sid: str, body: str = "Hello", **extra: str) -> dict[str, str]:
    """An inbound WhatsApp message as Twilio posts it (fields from captured requests)."""
    form = {
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ProfileName": "Ana Lima",
        "MessageType": "text",
        "SmsSid": sid,
        "WaId": "14155551111",
        "SmsStatus": "received",
        "Body": body,
        "To": FROM_NUMBER,
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": CONTACT,
        "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


def status_form(sid: str, status: str, **extra: str) -> dict[str, str]:
    """A WhatsApp status callback as Twilio posts it."""
    form = {
        "ChannelPrefix": "whatsapp",
        "ApiVersion": "2010-04-01",
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "ChannelInstallSid": "XE" + "0" * 32,
        "To": CONTACT,
        "From": FROM_NUMBER,
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "ChannelToAddress": "+14155551111",
    }
    if status in ("delivered", "read", "undelivered"):
        form["EventType"] = status.upper()
    form.update(extra)
    return form


async def post_signed(
    client: httpx2.AsyncClient,
    channel: dict[str, Any],
    form: dict[str, str] | None,
    *,
    status_callback: bool = False,
    sign_form: dict[str, str] | None = None,
    token: str = AUTH_TOKEN,
    content: bytes | None = None,
) -> httpx2.Response:
    """POST `form` to the channel's webhook, signed as Twilio signs it (over `sign_form` when
    given, to forge a replay)."""
    path = f"/webhooks/whatsapp_twilio/{channel['id']}" + ("/status" if status_callback else "")
    signature = twilio_sign(
        token, PUBLIC_URL + path, sign_form if sign_form is not None else form or {}
    )
    headers = {"X-Twilio-Signature": signature}
    if content is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return await client.post(path, content=content, headers=headers)
    return await client.post(path, data=form or {}, headers=headers)


def assert_twiml_ack(answer: httpx2.Response) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].split(";")[0] in ("text/xml", "application/xml")
    assert "<Response/>" in answer.text or "<Response></Response>" in answer.text


async def chats_of(client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]) -> list[Any]:
    answer = await client.get(f"/channels/{channel['id']}/chats", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    chats: list[Any] = answer.json()["chats"]
    assert answer.json()["total_count"] == len(chats)
    return chats


async def messages_of(client: httpx2.AsyncClient, admin: Caller, chat_id: str) -> list[Any]:
    answer = await client.get(f"/chats/{chat_id}/messages?limit=200", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["messages"]))  # oldest first


async def message(client: httpx2.AsyncClient, admin: Caller, chat_id: str, message_id: str) -> Any:
    [found] = [m for m in await messages_of(client, admin, chat_id) if m["id"] == message_id]
    return found


async def open_chat(client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]) -> str:
    """The contact writes first (so the chat exists); returns the chat id."""
    assert_twiml_ack(await post_signed(client, channel, inbound_form(twilio_sid())))
    [chat] = await chats_of(client, admin, channel)
    return str(chat["id"])


async def send_user_message(
    client: httpx2.AsyncClient, admin: Caller, chat_id: str, content: str = "Hi Ana"
) -> dict[str, Any]:
    answer = await client.post(
        f"/chats/{chat_id}/messages", json={"content": content}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert body["sender_type"] == "USER"
    return body


async def wait_status(
    client: httpx2.AsyncClient, admin: Caller, chat_id: str, message_id: str, status: str
) -> Any:
    async def check() -> Any:
        found = await message(client, admin, chat_id, message_id)
        assert found["delivery_status"] == status, found
        return found

    return await wait_until(check, timeout=10)


# --- signature vectors  --------------------------------------------------------

VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
VECTOR_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
VECTOR_SIGNATURE_443 = "kvajT1Ptam85bY51eRf/AJRuM3w="
VECTOR_SIGNATURE_HTTP_80 = "0ZXoZLH/DfblKGATFgpif+LLRf4="


def _params() -> dict[str, list[str]]:
    return {name: [value] for name, value in VECTOR_PARAMS.items()}


def _request(
    url: str, signature: str | None, params: dict[str, str] = VECTOR_PARAMS
) -> WebhookRequest:
    headers = {"x-twilio-signature": signature} if signature is not None else {}
    return WebhookRequest(
        method="POST", url=url, headers=headers, query={}, body=urlencode(params).encode()
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (VECTOR_URL, VECTOR_SIGNATURE),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", VECTOR_SIGNATURE_443),
        ("http://mycompany.com:80/myapp.php?foo=1&bar=2", VECTOR_SIGNATURE_HTTP_80),
    ],
)
def test_signature_reference_vectors(url: str, expected: str) -> None:
    assert twilio_signature(VECTOR_TOKEN, url, _params()) == expected
    assert twilio_sign(VECTOR_TOKEN, url, VECTOR_PARAMS) == expected  # the tests' own signer


def test_signature_json_body_vector() -> None:
    body = b'{"property": "value", "boolean": true}'
    digest = hashlib.sha256(body).hexdigest()
    assert digest == "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    url = f"{VECTOR_URL}&bodySHA256={digest}"
    assert twilio_signature(VECTOR_TOKEN, url, {}) == "a9nBmqA0ju/hNViExpshrM61xv4="


def test_signature_sorts_names_and_values_and_dedupes() -> None:
    params = {"b": ["2", "1", "2"], "a": ["x"]}
    expected = twilio_sign("tok", "https://h/p", {"a": "x", "b": ["1", "2"]})
    assert twilio_signature("tok", "https://h/p", params) == expected


@pytest.mark.parametrize(
    ("request_url", "signature"),
    [
        # Twilio's SDK accepts a signature made with or without the default port, either way.
        (VECTOR_URL, VECTOR_SIGNATURE),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", VECTOR_SIGNATURE),
        (VECTOR_URL, VECTOR_SIGNATURE_443),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", VECTOR_SIGNATURE_443),
        ("http://mycompany.com/myapp.php?foo=1&bar=2", VECTOR_SIGNATURE_HTTP_80),
    ],
)
def test_adapter_verify_accepts_port_variants(request_url: str, signature: str) -> None:
    adapter = TwilioAdapter()
    assert adapter.verify(_request(request_url, signature), {"auth_token": VECTOR_TOKEN})


@pytest.mark.parametrize(
    ("webhook", "token"),
    [
        pytest.param(_request(VECTOR_URL, VECTOR_SIGNATURE), "54321", id="wrong-token"),
        pytest.param(_request(VECTOR_URL, None), VECTOR_TOKEN, id="no-signature"),
        pytest.param(_request(VECTOR_URL, ""), VECTOR_TOKEN, id="empty-signature"),
        pytest.param(_request(VECTOR_URL, "garbage"), VECTOR_TOKEN, id="garbage-signature"),
        pytest.param(
            _request("https://mycompany.com/myapp.php?foo=1&bar=3", VECTOR_SIGNATURE),
            VECTOR_TOKEN,
            id="other-query",
        ),
        pytest.param(
            _request("https://mycompany.com:8443/myapp.php?foo=1&bar=2", VECTOR_SIGNATURE),
            VECTOR_TOKEN,
            id="non-default-port",
        ),
        pytest.param(
            _request(VECTOR_URL, VECTOR_SIGNATURE, {**VECTOR_PARAMS, "Digits": "9999"}),
            VECTOR_TOKEN,
            id="other-body",
        ),
        pytest.param(
            _request(VECTOR_URL, VECTOR_SIGNATURE, {**VECTOR_PARAMS, "Extra": ""}),
            VECTOR_TOKEN,
            id="added-param",
        ),
    ],
)
def test_adapter_verify_refuses(webhook: WebhookRequest, token: str) -> None:
    assert not TwilioAdapter().verify(webhook, {"auth_token": token})


def test_adapter_verify_needs_a_token() -> None:
    assert not TwilioAdapter().verify(_request(VECTOR_URL, VECTOR_SIGNATURE), {})


# --- inbound ----------------------------------------------------------------------------------


async def test_inbound_message_is_stored_once_and_opens_the_chat(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    sid = twilio_sid()
    form = inbound_form(sid, "Olá, preciso de ajuda")
    assert_twiml_ack(await post_signed(client, channel, form))
    assert_twiml_ack(await post_signed(client, channel, form))  # Twilio retried it

    [chat] = await chats_of(client, admin, channel)
    assert chat["external_id"] == CONTACT
    assert chat["name"] == "Ana Lima"
    assert chat["last_message"] == "Olá, preciso de ajuda"
    assert chat["last_sender_type"] == "CONTACT"
    [stored] = await messages_of(client, admin, chat["id"])
    assert stored["content"] == "Olá, preciso de ajuda"
    assert stored["sender_type"] == "CONTACT"
    assert stored["external_id"] == sid
    assert stored["meta_data"].get("media", []) == []


async def test_concurrent_duplicates_are_stored_once(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    form = inbound_form(twilio_sid(), "first words")
    answers = await asyncio.gather(*(post_signed(client, channel, form) for _ in range(4)))
    for answer in answers:
        assert_twiml_ack(answer)
    [chat] = await chats_of(client, admin, channel)
    assert len(await messages_of(client, admin, chat["id"])) == 1


async def test_second_message_joins_the_chat(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    assert_twiml_ack(await post_signed(client, channel, inbound_form(twilio_sid(), "one")))
    assert_twiml_ack(await post_signed(client, channel, inbound_form(twilio_sid(), "two")))
    other = inbound_form(twilio_sid(), "hey", From="whatsapp:+5511999990000", ProfileName="Bia")
    assert_twiml_ack(await post_signed(client, channel, other))
    chats = await chats_of(client, admin, channel)
    assert sorted(c["external_id"] for c in chats) == sorted([CONTACT, "whatsapp:+5511999990000"])
    ana = next(c for c in chats if c["external_id"] == CONTACT)
    assert [m["content"] for m in await messages_of(client, admin, ana["id"])] == ["one", "two"]


async def test_inbound_media_lands_in_meta_data(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    sid = twilio_sid("MM")
    media_base = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media"
    form = inbound_form(
        sid,
        "",
        NumMedia="2",
        MessageType="image",
        MediaUrl0=f"{media_base}/ME{'1' * 32}",
        MediaContentType0="image/jpeg",
        MediaUrl1=f"{media_base}/ME{'2' * 32}",
        MediaContentType1="application/pdf",
    )
    assert_twiml_ack(await post_signed(client, channel, form))
    [chat] = await chats_of(client, admin, channel)
    [stored] = await messages_of(client, admin, chat["id"])
    assert stored["content"] == ""
    assert stored["meta_data"]["media"] == [
        {"url": f"{media_base}/ME{'1' * 32}", "content_type": "image/jpeg"},
        {"url": f"{media_base}/ME{'2' * 32}", "content_type": "application/pdf"},
    ]


async def test_bad_signature_is_refused_and_nothing_stored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], subtests: Any
) -> None:
    form = inbound_form(twilio_sid(), "let me in")
    path = f"/webhooks/whatsapp_twilio/{channel['id']}"
    other_url = f"{PUBLIC_URL}/webhooks/whatsapp_twilio/chn_other00000"
    attempts = {
        "forged": lambda: client.post(
            path, data=form, headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJlIQ=="}
        ),
        "missing": lambda: client.post(path, data=form),
        "empty": lambda: client.post(path, data=form, headers={"X-Twilio-Signature": ""}),
        "wrong-token": lambda: post_signed(client, channel, form, token="not-the-token"),
        # A captured, validly signed request whose body was swapped.
        "replayed-with-other-body": lambda: post_signed(
            client, channel, form, sign_form=inbound_form(twilio_sid(), "harmless")
        ),
        "signed-for-other-url": lambda: client.post(
            path,
            data=form,
            headers={"X-Twilio-Signature": twilio_sign(AUTH_TOKEN, other_url, form)},
        ),
        "signed-for-https": lambda: client.post(
            path,
            data=form,
            headers={
                "X-Twilio-Signature": twilio_sign(AUTH_TOKEN, "https://hub.test" + path, form)
            },
        ),
    }
    for how, attempt in attempts.items():
        with subtests.test(how):
            answer = await attempt()
            assert answer.status_code == 403, answer.text
            assert "detail" in answer.json()
            assert await chats_of(client, admin, channel) == []


async def test_status_callback_with_a_bad_signature_is_refused(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], twilio: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    external_id = (await message(client, admin, chat_id, sent["id"]))["external_id"]
    form = status_form(external_id, "read")
    # Signed over the inbound URL instead of the /status URL it is posted to.
    answer = await post_signed(client, channel, form, status_callback=True, sign_form={})
    assert answer.status_code == 403
    path = f"/webhooks/whatsapp_twilio/{channel['id']}/status"
    answer = await client.post(path, data=form)
    assert answer.status_code == 403
    assert (await message(client, admin, chat_id, sent["id"]))["delivery_status"] == "SENT"


async def test_unhandled_payloads_are_acknowledged_and_ignored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], subtests: Any
) -> None:
    no_sid = {
        k: v
        for k, v in inbound_form(twilio_sid()).items()
        if k not in ("MessageSid", "SmsSid", "SmsMessageSid")
    }
    no_from = {k: v for k, v in inbound_form(twilio_sid()).items() if k != "From"}
    forms = {
        "empty": {},
        "unknown-fields": {"Foo": "bar", "Unexpected": "x"},
        "no-message-sid": no_sid,
        "no-from": no_from,
        "status-for-unknown-message": status_form(twilio_sid(), "delivered"),
        "unknown-status": status_form(twilio_sid(), "teleported"),
    }
    for case, form in forms.items():
        with subtests.test(case):
            assert_twiml_ack(await post_signed(client, channel, form))
            assert await chats_of(client, admin, channel) == []
    bodies = {
        "not-utf8": b"\xff\xfe\x00garbage",
        "not-a-form": b"%%%===&&&",
        "json": b'{"MessageSid": "SM1", "From": "x"}',
    }
    for case, content in bodies.items():
        with subtests.test(case):
            answer = await post_signed(client, channel, None, content=content, sign_form={})
            assert answer.status_code in (200, 403), answer.text  # never 5xx
            assert await chats_of(client, admin, channel) == []


async def test_odd_media_fields_still_store_the_message(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    odd = [
        inbound_form(twilio_sid(), "a", NumMedia="lots", MediaUrl0=""),
        inbound_form(twilio_sid(), "b", NumMedia="3", MediaUrl0="https://x.test/1"),
        inbound_form(twilio_sid(), "c", NumMedia="-1"),
    ]
    for form in odd:
        assert_twiml_ack(await post_signed(client, channel, form))
    [chat] = await chats_of(client, admin, channel)
    stored = await messages_of(client, admin, chat["id"])
    assert [m["content"] for m in stored] == ["a", "b", "c"]
    assert stored[1]["meta_data"]["media"] == [{"url": "https://x.test/1", "content_type": None}]
    assert all(item["url"] for m in stored for item in m["meta_data"].get("media", []))


async def test_unknown_or_mismatched_channel_is_404(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    form = inbound_form(twilio_sid())
    answer = await client.post("/webhooks/whatsapp_twilio/chn_nope000000", data=form)
    assert answer.status_code == 404
    answer = await client.post(f"/webhooks/telegram/{channel['id']}", json={})
    assert answer.status_code == 404
    assert await chats_of(client, admin, channel) == []


# --- outbound ---------------------------------------------------------------------------------


async def test_user_message_is_sent_through_the_messages_api(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], twilio: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id, "Olá! Como posso ajudar?")
    assert sent["delivery_status"] == "PENDING"

    [request] = await twilio.wait_for(1, path=TWILIO_MESSAGES_PATH)
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert request.field("To") == CONTACT
    assert request.field("From") == FROM_NUMBER
    assert request.field("Body") == "Olá! Como posso ajudar?"
    assert (
        request.field("StatusCallback")
        == f"{PUBLIC_URL}/webhooks/whatsapp_twilio/{channel['id']}/status"
    )
    assert "MediaUrl" not in request.form

    stored = await wait_status(client, admin, chat_id, sent["id"], "SENT")
    assert stored["external_id"].startswith("SM") and len(stored["external_id"]) == 34
    await asyncio.sleep(0.3)
    assert len(twilio.requests(TWILIO_MESSAGES_PATH)) == 1  # sent once


async def test_outbound_media_urls_are_repeated_fields(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], twilio: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    media = [
        {"url": "https://files.example.com/a.jpg", "content_type": "image/jpeg"},
        {"url": "https://files.example.com/b.pdf", "content_type": "application/pdf"},
    ]
    answer = await client.post(
        f"/chats/{chat_id}/messages",
        json={"content": "two files", "meta_data": {"media": media}},
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    [request] = await twilio.wait_for(1, path=TWILIO_MESSAGES_PATH)
    assert sorted(request.form["MediaUrl"]) == [m["url"] for m in media]


async def test_status_callbacks_only_move_forward(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], twilio: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    external_id = (await wait_status(client, admin, chat_id, sent["id"], "SENT"))["external_id"]

    async def callback(status: str) -> str:
        answer = await post_signed(
            client, channel, status_form(external_id, status), status_callback=True
        )
        assert_twiml_ack(answer)
        return str((await message(client, admin, chat_id, sent["id"]))["delivery_status"])

    assert await callback("delivered") == "DELIVERED"
    assert await callback("read") == "READ"
    # Late and duplicated callbacks (Twilio does not keep order) never move it back.
    assert await callback("sent") == "READ"
    assert await callback("delivered") == "READ"
    assert await callback("read") == "READ"
    assert await callback("queued") == "READ"
    final = await message(client, admin, chat_id, sent["id"])
    assert final["external_id"] == external_id
    assert "error" not in final["meta_data"]


async def test_out_of_order_read_before_delivered(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], twilio: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    external_id = (await wait_status(client, admin, chat_id, sent["id"], "SENT"))["external_id"]
    for status in ("read", "delivered", "sent"):
        answer = await post_signed(
            client, channel, status_form(external_id, status), status_callback=True
        )
        assert_twiml_ack(answer)
    assert (await message(client, admin, chat_id, sent["id"]))["delivery_status"] == "READ"


@pytest.mark.parametrize(
    ("status", "code", "detail"),
    [
        ("failed", "63016", "Failed to send freeform message outside the window"),
        ("undelivered", "30008", "Unknown error"),
    ],
)
async def test_failure_callbacks_record_the_error(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: dict[str, Any],
    twilio: FakePlatform,
    status: str,
    code: str,
    detail: str,
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    external_id = (await wait_status(client, admin, chat_id, sent["id"], "SENT"))["external_id"]
    form = status_form(external_id, status, ErrorCode=code, ErrorMessage=detail)
    assert_twiml_ack(await post_signed(client, channel, form, status_callback=True))
    stored = await message(client, admin, chat_id, sent["id"])
    assert stored["delivery_status"] == "FAILED"
    assert str(stored["meta_data"]["error"]["platform_code"]) == code
    # A late `sent` does not revive it.
    late = status_form(external_id, "sent")
    assert_twiml_ack(await post_signed(client, channel, late, status_callback=True))
    assert (await message(client, admin, chat_id, sent["id"]))["delivery_status"] == "FAILED"


@pytest.mark.parametrize("first_status", [500, 503, 429])
async def test_transient_send_errors_are_retried(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: dict[str, Any],
    twilio: FakePlatform,
    first_status: int,
) -> None:
    twilio.script(
        Reply(first_status, json={"code": 20500, "message": "Internal Server Error"}),
        path=TWILIO_MESSAGES_PATH,
    )
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id, "retry me")
    stored = await wait_status(client, admin, chat_id, sent["id"], "SENT")
    first, second = twilio.requests(TWILIO_MESSAGES_PATH)
    assert first.body == second.body  # the same message, resent
    assert second.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert stored["external_id"].startswith("SM")
    assert "error" not in stored["meta_data"]


async def test_permanent_send_error_fails_with_the_code(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], twilio: FakePlatform
) -> None:
    twilio.script(
        Reply(
            400,
            json={
                "code": 21211,
                "message": "The 'To' number whatsapp:+14155551111 is not a valid phone number.",
                "more_info": "https://www.twilio.com/docs/errors/21211",
                "status": 400,
            },
        ),
        path=TWILIO_MESSAGES_PATH,
    )
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id, "doomed")
    stored = await wait_status(client, admin, chat_id, sent["id"], "FAILED")
    assert stored["meta_data"]["error"]["code"] == 21211
    assert "not a valid phone number" in str(stored["meta_data"]["error"])
    assert stored["external_id"] is None
    await asyncio.sleep(0.5)
    assert len(twilio.requests(TWILIO_MESSAGES_PATH)) == 1  # not retried


async def test_connection_refused_is_retried(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], twilio: FakePlatform
) -> None:
    # Twilio unreachable at first (nothing listens there), then back: the send goes through.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    patch = {"config": {"api_base_url": dead_url}}
    answer = await client.patch(f"/channels/{channel['id']}", json=patch, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id)
    await asyncio.sleep(0.2)
    assert (await message(client, admin, chat_id, sent["id"]))["delivery_status"] == "PENDING"
    patch = {"config": {"api_base_url": twilio.url}}
    answer = await client.patch(f"/channels/{channel['id']}", json=patch, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    assert len(twilio.requests(TWILIO_MESSAGES_PATH)) == 1
