"""The audit trail (`agenthub/audit/`): changes recorded with who, from where and which
request, in the change's own transaction; refusals (failed logins, denied admin actions)
recorded too; never a secret; read back with filters and a cursor, and never changed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import Role
from tests.conftest import Caller
from tests.factories import make_agent, make_channel, make_chat

pytestmark = pytest.mark.anyio

PASSWORD = "a rather long password"


async def events(client: httpx2.AsyncClient, admin: Caller, **query: Any) -> list[Any]:
    answer = await client.get("/audit", params=query, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    found: list[Any] = answer.json()["events"]
    return found


@pytest.mark.database_independent
async def test_logins_are_recorded_with_the_address_and_request_id(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    await client.post(
        "/auth/users",
        json={"username": "mia", "password": PASSWORD, "role": "MEMBER"},
        headers=admin.headers,
    )
    wrong = await client.post(
        "/auth/login",
        json={"username": "mia", "password": "not it at all"},
        headers={"X-Request-ID": "req-wrong-1"},
    )
    assert wrong.status_code == 401
    right = await client.post(
        "/auth/login",
        json={"username": "mia", "password": PASSWORD},
        headers={"X-Request-ID": "req-right-1"},
    )
    assert right.status_code == 200
    mia_id = right.json()["user"]["id"]
    [failed] = await events(client, admin, action="login.failed")
    assert failed["outcome"] == "denied"
    assert failed["actor"] == {"type": "anonymous", "id": None}
    assert failed["target"] == {"type": "username", "id": "mia"}
    assert failed["ip"] == "127.0.0.1" and failed["request_id"] == "req-wrong-1"
    [succeeded] = await events(client, admin, action="login.succeeded")
    assert succeeded["outcome"] == "allowed"
    assert succeeded["actor"] == {"type": "user", "id": mia_id}
    assert succeeded["request_id"] == "req-right-1"
    token = right.json()["access_token"]
    out = await client.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 204
    [logout] = await events(client, admin, action="logout", actor_id=mia_id)
    assert logout["target"]["type"] == "token"
    # Without an X-Request-ID, the id the hub made up and answered with.
    assert logout["request_id"] == out.headers["x-request-id"]
    assert PASSWORD not in json.dumps(await events(client, admin))


async def test_changes_are_recorded_and_no_secret_ever_is(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller
) -> None:
    secrets: list[str] = [PASSWORD, "another long password"]
    user = (
        await client.post(
            "/auth/users",
            json={"username": "ola", "password": PASSWORD, "role": "MEMBER"},
            headers=admin.headers,
        )
    ).json()
    await client.patch(
        f"/auth/users/{user['id']}", json={"password": secrets[1]}, headers=admin.headers
    )
    await client.patch(
        f"/auth/users/{user['id']}", json={"is_active": False}, headers=admin.headers
    )
    agent = (
        await client.post(
            "/auth/agents",
            json={"name": "bot", "webhook_url": "http://127.0.0.1:9/"},
            headers=admin.headers,
        )
    ).json()
    secrets += [agent["token"], agent["webhook_secret"]]
    rotated = await client.post(f"/auth/agents/{agent['id']}/webhook-secret", headers=admin.headers)
    secrets.append(rotated.json()["webhook_secret"])
    channel = (
        await client.post(
            "/channels", json={"name": "site", "platform": "api"}, headers=admin.headers
        )
    ).json()
    secrets.append(channel["credentials"]["secret"])
    secrets.append(
        (await client.post(f"/channels/{channel['id']}/secret", headers=admin.headers)).json()[
            "secret"
        ]
    )
    patched = await client.patch(
        f"/channels/{channel['id']}",
        json={"credentials": {"secret": "whsec_dGhpcyBpcyBhIHNlY3JldCBrZXkgMTIzNDU2Nzg5MA=="}},
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    secrets.append("whsec_dGhpcyBpcyBhIHNlY3JldCBrZXkgMTIzNDU2Nzg5MA==")
    chat = await make_chat(hub, await make_channel(hub))
    await client.post(f"/chats/{chat.id}/takeover", headers=admin.headers)
    await client.post(f"/chats/{chat.id}/handback", headers=admin.headers)
    await client.delete(f"/chats/{chat.id}", headers=admin.headers)

    trail = await events(client, admin, limit=500)
    actions = [e["action"] for e in reversed(trail)]
    assert actions == [
        "user.created",
        "user.updated",
        "user.deactivated",
        "agent.created",
        "agent.token.created",
        "agent.secret.rotated",
        "channel.created",
        "channel.secret.rotated",
        "channel.updated",
        "chat.takeover",
        "chat.handback",
        "chat.deleted",
    ]
    assert all(e["actor"] == {"type": "user", "id": admin.id} for e in trail)
    by_action = {e["action"]: e for e in trail}
    assert by_action["user.updated"]["detail"] == {"fields": ["password"]}
    assert by_action["channel.updated"]["detail"]["credentials"] == ["secret"]
    assert by_action["agent.secret.rotated"]["target"] == {"type": "agent", "id": agent["id"]}
    dumped = json.dumps(trail)
    for secret in secrets:
        assert secret not in dumped
        assert secret.removeprefix("whsec_") not in dumped


@pytest.mark.database_independent
async def test_a_refused_change_leaves_no_event_and_a_denied_one_is_recorded(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user: Any
) -> None:
    taken = await client.post(
        "/auth/users",
        json={"username": "admin", "password": PASSWORD, "role": "MEMBER"},  # the admin's
        headers=admin.headers,
    )
    assert taken.status_code == 409
    member: Caller = await make_user(Role.MEMBER)
    denied = await client.post(
        "/auth/users",
        json={"username": "sneaky", "password": PASSWORD, "role": "ADMIN"},
        headers={**member.headers, "X-Request-ID": "req-sneaky"},
    )
    assert denied.status_code == 403
    _, agent_token = await make_agent(hub)
    as_agent = await client.delete(
        "/channels/chn_0000000000", headers={"Authorization": f"Bearer {agent_token}"}
    )
    assert as_agent.status_code == 403
    trail = await events(client, admin)
    assert [e["action"] for e in trail] == ["channel.deleted", "user.created"]
    agent_try, member_try = trail
    assert member_try["outcome"] == "denied" and member_try["actor"]["id"] == member.id
    assert member_try["detail"] == {"method": "POST", "path": "/auth/users"}
    assert member_try["request_id"] == "req-sneaky"
    assert agent_try["outcome"] == "denied" and agent_try["actor"]["type"] == "agent"


@pytest.mark.database_independent
async def test_filters_and_the_cursor(client: httpx2.AsyncClient, hub: Hub, admin: Caller) -> None:
    for n in range(5):
        await client.post(
            "/canned-responses",
            json={"shortcut": f"s{n}", "content": "hello"},
            headers=admin.headers,
        )
    seen: list[str] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = (await client.get("/audit", params=query, headers=admin.headers)).json()
        seen += [e["id"] for e in answer["events"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    everything = await events(client, admin)
    assert [e["id"] for e in everything] == seen  # newest first, page after page
    target = everything[0]["target"]["id"]
    assert [e["target"]["id"] for e in await events(client, admin, target_id=target)] == [target]
    assert await events(client, admin, actor_id="usr_nobody0000") == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await events(client, admin, since=future) == []
    for bad in (
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},
        {"cursor": "nope"},
        {"limit": 0},
    ):
        refused = await client.get("/audit", params=bad, headers=admin.headers)
        assert refused.status_code == 422, (bad, refused.text)
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/audit"]) == {"get"}  # nothing changes or deletes it
