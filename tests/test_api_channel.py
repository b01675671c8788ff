"""`api` channels: inbound JSON signed with Standard Webhooks, outbound pushes to
`config.callback_url` signed with the channel's secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from standardwebhooks import Webhook

from tests.conftest import Caller
from tests.fake_platform import FakePlatform, Reply, standard_webhook_headers, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]

VECTOR_SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


@pytest.fixture
def receiver() -> Iterator[FakePlatform]:
    """The client app's callback endpoint."""
    with FakePlatform(default=Reply(200, json={"received": True})) as fake:
        yield fake


async def create_api_channel(
    client: httpx2.AsyncClient, admin: Caller, **fields: Any
) -> dict[str, Any]:
    answer = await client.post(
        "/channels", json={"name": "web chat", "platform": "api", **fields}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture
async def channel(client: httpx2.AsyncClient, admin: Caller) -> dict[str, Any]:
    """An `api` channel without a callback URL; `secret` is the generated one, shown once."""
    body = await create_api_channel(client, admin)
    secret = body["credentials"]["secret"]
    assert secret.startswith("whsec_")
    Webhook(secret)  # a well-formed Standard Webhooks key
    shown_again = await client.get(f"/channels/{body['id']}", headers=admin.headers)
    assert secret not in shown_again.text
    return {**body, "secret": secret}


def contact_message(message_id: str = "m-1", content: str = "hello", **extra: Any) -> bytes:
    payload = {
        "contact_id": "visitor-42",
        "contact_name": "Visitor 42",
        "message_id": message_id,
        "content": content,
        **extra,
    }
    return json.dumps(payload).encode()


async def post_inbound(
    client: httpx2.AsyncClient,
    channel: dict[str, Any],
    body: bytes,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    if headers is None:
        headers = standard_webhook_headers(channel["secret"], body)
    return await client.post(
        f"/webhooks/api/{channel['id']}",
        content=body,
        headers={"content-type": "application/json", **headers},
    )


async def chats_of(client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]) -> list[Any]:
    answer = await client.get(f"/channels/{channel['id']}/chats", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["chats"])


async def messages_of(client: httpx2.AsyncClient, admin: Caller, chat_id: str) -> list[Any]:
    answer = await client.get(f"/chats/{chat_id}/messages", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["messages"]))


# --- the signing tool itself (the Standard Webhooks test vector) ----------------------------


def test_standard_webhooks_vector() -> None:
    at = datetime.fromtimestamp(1674087231, UTC)
    payload = '{"type":"message.received","data":{"text":"hi"}}'
    headers = standard_webhook_headers(
        VECTOR_SECRET, payload, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", at
    )
    assert headers == {
        "webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        "webhook-timestamp": "1674087231",
        "webhook-signature": "v1,2hhrGOWX++sqOV38ba+MthZbB+k2+QIcv3yl1v9QcUI=",
    }


# --- inbound ----------------------------------------------------------------------------------


async def test_signed_message_is_stored_once(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    body = contact_message("m-1", "Hi there", meta_data={"page": "/pricing"})
    answer = await post_inbound(client, channel, body)
    assert answer.status_code == 200, answer.text
    # A retry by the client (new webhook-id and timestamp, same message_id) is a duplicate.
    assert (await post_inbound(client, channel, body)).status_code == 200

    [chat] = await chats_of(client, admin, channel)
    assert chat["external_id"] == "visitor-42"
    assert chat["name"] == "Visitor 42"
    [stored] = await messages_of(client, admin, chat["id"])
    assert stored["content"] == "Hi there"
    assert stored["sender_type"] == "CONTACT"
    assert stored["external_id"] == "m-1"
    assert stored["meta_data"] == {"page": "/pricing"}

    assert (await post_inbound(client, channel, contact_message("m-2", "again"))).status_code == 200
    assert [m["content"] for m in await messages_of(client, admin, chat["id"])] == [
        "Hi there",
        "again",
    ]


async def test_channel_with_a_given_secret(client: httpx2.AsyncClient, admin: Caller) -> None:
    created = await create_api_channel(client, admin, credentials={"secret": VECTOR_SECRET})
    assert VECTOR_SECRET not in json.dumps(created)  # a given secret is not echoed
    channel = {**created, "secret": VECTOR_SECRET}
    assert (await post_inbound(client, channel, contact_message())).status_code == 200
    assert len(await chats_of(client, admin, channel)) == 1


def _bad_headers(channel: dict[str, Any], body: bytes, how: str) -> dict[str, str]:
    good = standard_webhook_headers(channel["secret"], body)
    other_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    if how == "missing":
        return {}
    if how == "missing-signature":
        return {k: v for k, v in good.items() if k != "webhook-signature"}
    if how == "other-secret":
        return standard_webhook_headers(other_secret, body)
    if how == "tampered-body":
        return standard_webhook_headers(channel["secret"], body.replace(b"hello", b"HELLO"))
    if how == "other-id":
        return {**good, "webhook-id": "msg_someone_else"}
    if how == "stale":
        return standard_webhook_headers(
            channel["secret"], body, at=datetime.now(UTC) - timedelta(minutes=10)
        )
    if how == "future":
        return standard_webhook_headers(
            channel["secret"], body, at=datetime.now(UTC) + timedelta(minutes=10)
        )
    if how == "garbage-signature":
        return {**good, "webhook-signature": "v1,not base64!!"}
    if how == "no-version":
        return {**good, "webhook-signature": good["webhook-signature"].split(",", 1)[1]}
    if how == "bad-timestamp":
        return {**good, "webhook-timestamp": "yesterday"}
    raise AssertionError(how)


BAD_SIGNATURES = [
    "missing",
    "missing-signature",
    "other-secret",
    "tampered-body",
    "other-id",
    "stale",
    "future",
    "garbage-signature",
    "no-version",
    "bad-timestamp",
]


async def test_bad_signature_is_refused_and_nothing_stored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], subtests: Any
) -> None:
    body = contact_message(content="hello")
    for how in BAD_SIGNATURES:
        with subtests.test(how):
            answer = await post_inbound(client, channel, body, _bad_headers(channel, body, how))
            assert answer.status_code == 403, answer.text
            assert "detail" in answer.json()
            assert await chats_of(client, admin, channel) == []


UNUSABLE_BODIES = {
    "truncated-json": b'{"contact_id": "visitor-42", "content": ',
    "not-json": b"not json at all",
    "empty": b"",
    "array": b"[1, 2, 3]",
    "missing-message-id": b'{"contact_id": "v", "content": "no message id"}',
    "unknown-event": b'{"event": "typing", "contact_id": "v"}',
    "empty-contact-id": b'{"contact_id": "", "message_id": "m", "content": "x"}',
    "content-not-a-string": b'{"contact_id": "v", "message_id": "m", "content": 12}',
}


async def test_signed_but_unusable_body_is_acknowledged_and_ignored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], subtests: Any
) -> None:
    for case, body in UNUSABLE_BODIES.items():
        with subtests.test(case):
            answer = await post_inbound(client, channel, body)
            assert answer.status_code == 200, answer.text
            assert await chats_of(client, admin, channel) == []


async def test_unknown_channel_is_404(client: httpx2.AsyncClient, channel: dict[str, Any]) -> None:
    body = contact_message()
    answer = await client.post(
        "/webhooks/api/chn_doesnotexi",
        content=body,
        headers=standard_webhook_headers(channel["secret"], body),
    )
    assert answer.status_code == 404


# --- outbound ---------------------------------------------------------------------------------


async def _chat_with_callback(
    client: httpx2.AsyncClient, admin: Caller, receiver: FakePlatform
) -> tuple[dict[str, Any], str]:
    created = await create_api_channel(
        client, admin, config={"callback_url": f"{receiver.url}/hub-events?src=hub"}
    )
    channel = {**created, "secret": created["credentials"]["secret"]}
    assert (await post_inbound(client, channel, contact_message())).status_code == 200
    [chat] = await chats_of(client, admin, channel)
    return channel, chat["id"]


async def _wait_status(
    client: httpx2.AsyncClient, admin: Caller, chat_id: str, message_id: str, status: str
) -> Any:
    async def check() -> Any:
        [found] = [m for m in await messages_of(client, admin, chat_id) if m["id"] == message_id]
        assert found["delivery_status"] == status, found
        return found

    return await wait_until(check)


async def test_outbound_message_is_pushed_signed_to_the_callback(
    client: httpx2.AsyncClient, admin: Caller, receiver: FakePlatform
) -> None:
    channel, chat_id = await _chat_with_callback(client, admin, receiver)
    answer = await client.post(
        f"/chats/{chat_id}/messages",
        json={"content": "Hello from support", "meta_data": {"k": "v"}},
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    sent = answer.json()

    [request] = await receiver.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/hub-events"
    assert request.query == "src=hub"
    assert request.headers["content-type"].startswith("application/json")
    # Signed with the channel's secret: the client's Standard Webhooks library accepts it.
    payload = Webhook(channel["secret"]).verify(request.body, request.headers)
    assert payload["event"] == "message.outbound"
    assert payload["chat"]["id"] == chat_id
    assert payload["chat"]["external_id"] == "visitor-42"
    assert payload["chat"]["channel_id"] == channel["id"]
    assert payload["message"]["id"] == sent["id"]
    assert payload["message"]["content"] == "Hello from support"
    assert payload["message"]["sender_type"] == "USER"
    assert payload["message"]["meta_data"] == {"k": "v"}
    assert request.headers["webhook-id"]
    with pytest.raises(Exception):  # noqa: B017 - any verification error
        Webhook(VECTOR_SECRET).verify(request.body, request.headers)

    await _wait_status(client, admin, chat_id, sent["id"], "SENT")


async def test_outbound_retry_keeps_the_webhook_id(
    client: httpx2.AsyncClient, admin: Caller, receiver: FakePlatform
) -> None:
    receiver.script(Reply(503, body="busy"), Reply(500, body="oops"))
    channel, chat_id = await _chat_with_callback(client, admin, receiver)
    answer = await client.post(
        f"/chats/{chat_id}/messages", json={"content": "retry"}, headers=admin.headers
    )
    sent = answer.json()
    await _wait_status(client, admin, chat_id, sent["id"], "SENT")
    requests = receiver.requests()
    assert len(requests) == 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    for request in requests:
        Webhook(channel["secret"]).verify(request.body, request.headers)


async def test_outbound_client_error_fails_the_message(
    client: httpx2.AsyncClient, admin: Caller, receiver: FakePlatform
) -> None:
    receiver.script(Reply(410, json={"error": "gone"}))
    _, chat_id = await _chat_with_callback(client, admin, receiver)
    answer = await client.post(
        f"/chats/{chat_id}/messages", json={"content": "nobody home"}, headers=admin.headers
    )
    sent = answer.json()
    stored = await _wait_status(client, admin, chat_id, sent["id"], "FAILED")
    assert stored["meta_data"]["error"]["status_code"] == 410
    await asyncio.sleep(0.3)
    assert len(receiver.requests()) == 1


async def test_without_callback_url_messages_stay_readable(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    assert (await post_inbound(client, channel, contact_message())).status_code == 200
    [chat] = await chats_of(client, admin, channel)
    answer = await client.post(
        f"/chats/{chat['id']}/messages", json={"content": "read me"}, headers=admin.headers
    )
    assert answer.status_code == 201
    # Nothing to push to (the client reads replies through the API or the WebSocket): the
    # outbox settles the message instead of retrying it.
    await _wait_status(client, admin, chat["id"], answer.json()["id"], "SENT")
