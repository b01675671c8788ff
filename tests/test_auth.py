"""Signup, login, logout, tokens and deactivation — through the real API and database."""

from __future__ import annotations

import httpx2
import pytest

from agenthub.models import Role
from tests.conftest import Caller

pytestmark = pytest.mark.anyio


async def test_first_signup_is_admin_then_signup_closes(client: httpx2.AsyncClient) -> None:
    first = await client.post("/auth/signup", json={"username": "root", "password": "s3cret-pass"})
    assert first.status_code == 201, first.text
    assert first.json()["role"] == "ADMIN"
    assert "password" not in first.text and "hash" not in first.text

    second = await client.post("/auth/signup", json={"username": "eve", "password": "s3cret-pass"})
    assert second.status_code == 403


async def test_login_me_logout(client: httpx2.AsyncClient) -> None:
    await client.post("/auth/signup", json={"username": "root", "password": "s3cret-pass"})
    bad = await client.post("/auth/login", json={"username": "root", "password": "wrong-pass"})
    assert bad.status_code == 401
    unknown = await client.post("/auth/login", json={"username": "nobody", "password": "x" * 8})
    assert unknown.status_code == 401

    login = await client.post("/auth/login", json={"username": "root", "password": "s3cret-pass"})
    assert login.status_code == 200
    body = login.json()
    assert body["token_type"] == "bearer" and body["user"]["username"] == "root"
    headers = {"Authorization": f"Bearer {body['access_token']}"}

    me = await client.get("/auth/me", headers=headers)
    assert me.status_code == 200 and me.json()["id"] == body["user"]["id"]

    assert (await client.post("/auth/logout", headers=headers)).status_code == 204
    assert (await client.get("/auth/me", headers=headers)).status_code == 401


async def test_deactivating_a_user_cuts_its_token_at_once(
    client: httpx2.AsyncClient, admin: Caller, make_user
) -> None:
    member: Caller = await make_user(Role.MEMBER)
    assert (await client.get("/auth/me", headers=member.headers)).status_code == 200
    patched = await client.patch(
        f"/auth/users/{member.id}", json={"is_active": False}, headers=admin.headers
    )
    assert patched.status_code == 200 and patched.json()["is_active"] is False
    assert (await client.get("/auth/me", headers=member.headers)).status_code == 401


async def test_member_cannot_raise_its_own_role(
    client: httpx2.AsyncClient, admin: Caller, make_user
) -> None:
    member: Caller = await make_user(Role.MEMBER)
    raised = await client.patch(
        f"/auth/users/{member.id}", json={"role": "ADMIN"}, headers=member.headers
    )
    assert raised.status_code == 403
    me = await client.get("/auth/me", headers=member.headers)
    assert me.json()["role"] == "MEMBER"
    # It may still change its own email.
    ok = await client.patch(
        f"/auth/users/{member.id}", json={"email": "m@example.com"}, headers=member.headers
    )
    assert ok.status_code == 200 and ok.json()["email"] == "m@example.com"


async def test_last_admin_cannot_demote_itself(client: httpx2.AsyncClient, admin: Caller) -> None:
    response = await client.patch(
        f"/auth/users/{admin.id}", json={"role": "MEMBER"}, headers=admin.headers
    )
    assert response.status_code == 409
    assert (
        await client.delete(f"/auth/users/{admin.id}", headers=admin.headers)
    ).status_code == 409


async def test_agent_tokens_create_list_revoke(client: httpx2.AsyncClient, admin: Caller) -> None:
    created = await client.post(
        "/auth/agents",
        json={"name": "bot", "webhook_url": "http://127.0.0.1:9/hook"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["webhook_secret"].startswith("whsec_")
    assert agent["buffer_time_seconds"] == 3 and agent["max_buffer_seconds"] == 30
    agent_headers = {"Authorization": f"Bearer {agent['token']}"}

    shown = await client.get(f"/auth/agents/{agent['id']}", headers=admin.headers)
    assert "webhook_secret" not in shown.json() and "token" not in shown.json()

    extra = await client.post(
        f"/auth/agents/{agent['id']}/tokens", json={"name": "ci"}, headers=admin.headers
    )
    assert extra.status_code == 201
    listed = await client.get(f"/auth/agents/{agent['id']}/tokens", headers=admin.headers)
    assert {t["name"] for t in listed.json()} == {"default", "ci"}
    assert all("token" not in t for t in listed.json())

    # An agent token works on agent endpoints (here: a chat it is not linked to is 404)...
    assert (await client.get("/chats/cht_missing000", headers=agent_headers)).status_code == 404
    default_id = next(t["id"] for t in listed.json() if t["name"] == "default")
    revoked = await client.delete(
        f"/auth/agents/{agent['id']}/tokens/{default_id}", headers=admin.headers
    )
    assert revoked.status_code == 204
    # ...and stops working the moment it is revoked.
    assert (await client.get("/chats/cht_missing000", headers=agent_headers)).status_code == 401


async def test_deactivated_agent_loses_access(client: httpx2.AsyncClient, admin: Caller) -> None:
    agent = (
        await client.post(
            "/auth/agents",
            json={"name": "bot", "webhook_url": "http://127.0.0.1:9/hook"},
            headers=admin.headers,
        )
    ).json()
    headers = {"Authorization": f"Bearer {agent['token']}"}
    assert (await client.get("/chats/cht_missing000", headers=headers)).status_code == 404
    await client.patch(
        f"/auth/agents/{agent['id']}", json={"is_active": False}, headers=admin.headers
    )
    assert (await client.get("/chats/cht_missing000", headers=headers)).status_code == 401
