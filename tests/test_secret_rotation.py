"""Rotating signing secrets with a grace period (`agenthub/rotation.py`): an agent's webhook
secret (`POST /auth/agents/{id}/webhook-secret`) and an `api` channel's secret
(`POST /channels/{id}/secret`). During the grace the hub signs with both, and an `api`
channel accepts either; checked with the `standardwebhooks` library, as receivers check."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx2
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from agenthub.models import Role
from tests.conftest import Caller
from tests.fake_platform import FakePlatform, Reply, standard_webhook_headers, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]


@pytest.fixture
def receiver() -> Iterator[FakePlatform]:
    with FakePlatform(default=Reply(200, json={})) as fake:
        yield fake


def verifies(secret: str, request: Any) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


async def api_channel(client: httpx2.AsyncClient, admin: Caller, **config: Any) -> tuple[str, str]:
    created = await client.post(
        "/channels",
        json={"name": "Site", "platform": "api", "config": config},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["credentials"]["secret"]


async def inbound(client: httpx2.AsyncClient, channel_id: str, secret: str) -> int:
    body = json.dumps(
        {"contact_id": "c-1", "message_id": uuid.uuid4().hex, "content": "hello"}
    ).encode()
    answer = await client.post(
        f"/webhooks/api/{channel_id}",
        content=body,
        headers={"content-type": "application/json", **standard_webhook_headers(secret, body)},
    )
    return answer.status_code


async def test_an_agent_gets_both_signatures_during_the_grace_then_only_the_new_one(
    client: httpx2.AsyncClient, admin: Caller, receiver: FakePlatform
) -> None:
    created = await client.post(
        "/auth/agents",
        json={"name": "Rotating bot", "webhook_url": receiver.url, "buffer_time_seconds": 0},
        headers=admin.headers,
    )
    agent, old = created.json(), created.json()["webhook_secret"]
    rotate = f"/auth/agents/{agent['id']}/webhook-secret"
    rotated = await client.post(rotate, json={"grace_hours": 24}, headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != old
    until = datetime.fromisoformat(rotated.json()["previous_valid_until"])
    assert timedelta(hours=23) < until - datetime.now(until.tzinfo) <= timedelta(hours=24)
    assert new not in (await client.get(f"/auth/agents/{agent['id']}", headers=admin.headers)).text

    # A real delivery: a contact writes on a channel the agent answers by default.
    channel_id, channel_secret = await api_channel(client, admin)
    assert await inbound(client, channel_id, channel_secret) == 200
    [delivery] = await receiver.wait_for(1)
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    assert verifies(new, delivery) and verifies(old, delivery)

    # Without a grace the replaced secret stops signing at once.
    again = await client.post(rotate, json={"grace_hours": 0}, headers=admin.headers)
    newest = again.json()["webhook_secret"]
    assert again.json()["previous_valid_until"] is None
    probe = await client.post(f"/auth/agents/{agent['id']}/test-delivery", headers=admin.headers)
    assert probe.json()["ok"] is True
    test_request = receiver.requests()[-1]
    assert verifies(newest, test_request)
    assert not verifies(new, test_request) and not verifies(old, test_request)


@pytest.mark.database_independent
async def test_rotation_refusals(
    client: httpx2.AsyncClient, admin: Caller, make_user: Any, receiver: FakePlatform
) -> None:
    created = await client.post(
        "/auth/agents", json={"name": "bot", "webhook_url": receiver.url}, headers=admin.headers
    )
    rotate = f"/auth/agents/{created.json()['id']}/webhook-secret"
    default = await client.post(rotate, headers=admin.headers)  # no body: 24 hours
    until = datetime.fromisoformat(default.json()["previous_valid_until"])
    assert until - datetime.now(until.tzinfo) > timedelta(hours=23)
    channel_id, _ = await api_channel(client, admin)
    for path in (rotate, f"/channels/{channel_id}/secret"):
        for grace in (-1, 169, "a day"):
            refused = await client.post(path, json={"grace_hours": grace}, headers=admin.headers)
            assert refused.status_code == 422, (path, grace, refused.text)
            assert refused.json()["detail"][0]["loc"] == ["body", "grace_hours"]
    member: Caller = await make_user(Role.MEMBER, channels=(channel_id,))
    assert (await client.post(rotate, headers=member.headers)).status_code == 403
    assert (
        await client.post(f"/channels/{channel_id}/secret", headers=member.headers)
    ).status_code == 403
    unknown = await client.post("/auth/agents/agt_0000000000/webhook-secret", headers=admin.headers)
    assert unknown.status_code == 404
    telegram = await client.post(
        "/channels",
        json={
            "name": "tg",
            "platform": "telegram",
            "credentials": {"bot_token": "123:abc", "secret_token": "s3cret-token"},
        },
        headers=admin.headers,
    )
    assert telegram.status_code == 201, telegram.text
    not_ours = await client.post(f"/channels/{telegram.json()['id']}/secret", headers=admin.headers)
    assert not_ours.status_code == 400, not_ours.text


@pytest.mark.database_independent
async def test_an_api_channel_accepts_either_secret_during_the_grace_and_signs_with_both(
    client: httpx2.AsyncClient, admin: Caller, receiver: FakePlatform
) -> None:
    channel_id, old = await api_channel(client, admin, callback_url=receiver.url)
    rotated = await client.post(
        f"/channels/{channel_id}/secret", json={"grace_hours": 2}, headers=admin.headers
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old
    assert await inbound(client, channel_id, old) == 200
    assert await inbound(client, channel_id, new) == 200
    shown = (await client.get(f"/channels/{channel_id}", headers=admin.headers)).json()
    assert set(shown["credentials"]) == {"secret"}  # the grace's keys are the hub's own
    assert old not in json.dumps(shown) and new not in json.dumps(shown)

    chats = (await client.get(f"/channels/{channel_id}/chats", headers=admin.headers)).json()
    chat_id = chats["chats"][0]["id"]
    sent = await client.post(
        f"/chats/{chat_id}/messages", json={"content": "hi"}, headers=admin.headers
    )
    assert sent.status_code == 201
    [callback] = await receiver.wait_for(1)
    assert verifies(new, callback) and verifies(old, callback)

    # Grace 0: only the newest secret is accepted from then on.
    latest = (
        await client.post(
            f"/channels/{channel_id}/secret", json={"grace_hours": 0}, headers=admin.headers
        )
    ).json()["secret"]
    assert await inbound(client, channel_id, latest) == 200
    for stale in (new, old):
        assert await inbound(client, channel_id, stale) in (401, 403)

    async def two_messages() -> None:
        answer = await client.get(f"/chats/{chat_id}/messages", headers=admin.headers)
        contact = [m for m in answer.json()["messages"] if m["sender_type"] == "CONTACT"]
        assert len(contact) == 3  # old, new, latest: the stale ones were not stored

    await wait_until(two_messages)


@pytest.mark.database_independent
async def test_a_secret_set_by_hand_after_a_rotation_ends_the_grace(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    channel_id, old = await api_channel(client, admin)
    await client.post(f"/channels/{channel_id}/secret", headers=admin.headers)
    chosen = "whsec_" + "c2V0IGJ5IGhhbmQgZm9yIHRoaXMgdGVzdCwgMzIgYnl0ZXM="
    patched = await client.patch(
        f"/channels/{channel_id}", json={"credentials": {"secret": chosen}}, headers=admin.headers
    )
    assert patched.status_code == 200, patched.text
    assert await inbound(client, channel_id, chosen) == 200
    assert await inbound(client, channel_id, old) in (401, 403)
