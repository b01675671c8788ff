"""Signup, login, logout, tokens and deactivation — through the real API and database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from agenthub.models import Role
from agenthub.settings import Settings
from tests.conftest import Caller, _empty_tables, app_for

pytestmark = pytest.mark.anyio

SETUP_TOKEN = "setup-t0ken-for-tests"


async def test_first_signup_is_admin_then_signup_closes(client: httpx2.AsyncClient) -> None:
    first = await client.post("/auth/signup", json={"username": "root", "password": "s3cret-pass"})
    assert first.status_code == 201, first.text
    assert first.json()["role"] == "ADMIN"
    assert "password" not in first.text and "hash" not in first.text

    second = await client.post("/auth/signup", json={"username": "eve", "password": "s3cret-pass"})
    assert second.status_code == 403


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of a hub with `AGENTHUB_SETUP_TOKEN` set."""
    app = app_for(settings.model_copy(update={"setup_token": SecretStr(SETUP_TOKEN)}))
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        try:
            async with httpx2.AsyncClient(transport=transport, base_url="http://hub.test") as http:
                yield http
        finally:
            await _empty_tables(app.state.hub)


async def test_with_a_setup_token_signup_needs_it(guarded: httpx2.AsyncClient) -> None:
    root = {"username": "root", "password": "s3cret-pass"}
    missing = await guarded.post("/auth/signup", json=root)
    assert missing.status_code == 403
    assert "X-Setup-Token" in missing.json()["detail"]
    wrong = await guarded.post("/auth/signup", json=root, headers={"X-Setup-Token": "guess"})
    assert wrong.status_code == 403
    assert "does not match" in wrong.json()["detail"]
    # Not ASCII (bytes on the wire): still a clean 403, not a 500 from the comparison.
    non_ascii = await guarded.post(
        "/auth/signup", json=root, headers={"X-Setup-Token": "é".encode()}
    )
    assert non_ascii.status_code == 403

    right = await guarded.post("/auth/signup", json=root, headers={"X-Setup-Token": SETUP_TOKEN})
    assert right.status_code == 201, right.text
    assert right.json()["role"] == "ADMIN"
    # The token opens the first signup only: afterwards signup is closed as without one.
    eve = {"username": "eve", "password": "s3cret-pass"}
    again = await guarded.post("/auth/signup", json=eve, headers={"X-Setup-Token": SETUP_TOKEN})
    assert again.status_code == 403 and "closed" in again.json()["detail"]


async def test_without_a_setup_token_signup_ignores_the_header(
    client: httpx2.AsyncClient,
) -> None:
    root = {"username": "root", "password": "s3cret-pass"}
    signup = await client.post("/auth/signup", json=root, headers={"X-Setup-Token": "anything"})
    assert signup.status_code == 201, signup.text


async def test_setup_token_header_is_documented(client: httpx2.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/auth/signup"]["post"]
    [header] = [p for p in operation["parameters"] if p["in"] == "header"]
    assert header["name"] == "X-Setup-Token" and header["required"] is False
    assert "AGENTHUB_SETUP_TOKEN" in header["description"]


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
