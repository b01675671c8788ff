"""The console's admin pages (`agenthub/console/admin/`): channels, agents, users with their
channel grants, canned responses. Through the ASGI app with the session cookie, parsed with
selectolax; the services behind them are the API's and are tested with it."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from selectolax.lexbor import LexborNode as Node

from agenthub.models import Role
from tests.conftest import Caller
from tests.console_helpers import ORIGIN, cookie, form_of, parse
from tests.fake_platform import FakePlatform, Reply

pytestmark = [pytest.mark.anyio, pytest.mark.database_independent]

PAGES = ("channels", "agents", "users", "canned")
HOSTILE = '"><img src=x onerror=alert(1)>'


def texts(tree: HTMLParser | Node, testid: str) -> list[str]:
    return [node.text(strip=True) for node in tree.css(f'[data-testid="{testid}"]')]


def values(tree: HTMLParser, testid: str) -> list[str]:
    return [node.attributes.get("value") or "" for node in tree.css(f'[data-testid="{testid}"]')]


def label(box: Node) -> str:
    """The text of the `<label>` a checkbox sits in."""
    assert box.parent is not None
    return box.parent.text(strip=True)


async def post(
    client: httpx2.AsyncClient, caller: Caller, path: str, data: Any = None
) -> httpx2.Response:
    return await client.post(f"/console/admin/{path}", data=data or {}, headers=form_of(caller))


async def test_a_member_gets_403_on_every_page_and_post(
    client: httpx2.AsyncClient, admin: Caller, make_user: Any
) -> None:
    member: Caller = await make_user(Role.MEMBER)
    inbox = parse(await client.get("/console", headers=cookie(member)))
    assert inbox.css_first('[data-testid="nav-channels"]') is None
    for page in PAGES:
        answer = await client.get(f"/console/admin/{page}", headers=cookie(member))
        assert answer.status_code == 403, page
        assert answer.headers["content-security-policy"] == "default-src 'self'"
    posts = (
        "channels",
        "channels/chn_x/register-webhook",
        "agents",
        "agents/agt_x/token",
        "agents/agt_x/active",
        "users",
        f"users/{admin.id}/role",
        f"users/{admin.id}/active",
        f"users/{admin.id}/channels",
        "canned",
        "canned/can_x",
        "canned/can_x/delete",
    )
    for path in posts:
        answer = await post(client, member, path, {"name": "x", "role": "MEMBER"})
        assert answer.status_code == 403, path
    logged_out = await client.get("/console/admin/channels")
    assert logged_out.status_code == 303
    assert logged_out.headers["location"] == "/console/login"


async def test_admin_pages_carry_the_nav_and_the_csp(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    for page in PAGES:
        answer = await client.get(f"/console/admin/{page}", headers=cookie(admin))
        assert answer.status_code == 200, page
        assert answer.headers["content-security-policy"] == "default-src 'self'"
        tree = parse(answer)
        assert tree.css_first('[data-testid="connection-state"]') is not None
        for nav in ("nav-channels", "nav-agents", "nav-users", "nav-canned"):
            assert tree.css_first(f'[data-testid="{nav}"]') is not None
        assert "<script>" not in answer.text and "style=" not in answer.text
        assert tree.css_first('link[href="/console/static/console-admin.css"]') is not None
    script = await client.get("/console/static/console-admin.js")
    assert script.status_code == 200


async def test_a_post_without_the_hubs_origin_is_refused(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    data = {"shortcut": "hi", "content": "Hello"}
    for origin in (None, "http://evil.test"):
        answer = await client.post(
            "/console/admin/canned", data=data, headers=form_of(admin, origin)
        )
        assert answer.status_code == 403, origin
    listed = parse(await client.get("/console/admin/canned", headers=cookie(admin)))
    assert values(listed, "canned-shortcut") == []


async def test_create_api_and_telegram_channels(client: httpx2.AsyncClient, admin: Caller) -> None:
    created = await post(client, admin, "channels", {"name": HOSTILE, "platform": "api"})
    assert created.status_code == 201, created.text
    page = parse(created)
    secret = values(page, "channel-secret-once")
    assert len(secret) == 1 and secret[0].startswith("whsec_")
    assert HOSTILE not in created.text  # escaped
    assert texts(page, "channel-name") == [HOSTILE]
    [url] = values(page, "channel-created-webhook-url")
    assert url.startswith(f"{ORIGIN}/webhooks/api/")

    refused = await post(
        client,
        admin,
        "channels",
        {"name": "Bot", "platform": "telegram", "telegram.bot_token": "1"},
    )
    assert refused.status_code == 422
    assert any("secret_token" in line for line in texts(parse(refused), "admin-error"))

    telegram = {
        "name": "Bot",
        "platform": "telegram",
        "telegram.bot_token": "123:abc",
        "telegram.secret_token": "s3cret-token",
        "telegram.api_base_url": "http://127.0.0.1:9",  # nothing listens: unreachable
        "api.callback_url": "ignored: another platform's fieldset",
    }
    created = await post(client, admin, "channels", telegram)
    assert created.status_code == 201, created.text
    assert values(parse(created), "channel-secret-once") == []

    listed = await client.get("/console/admin/channels", headers=cookie(admin))
    page = parse(listed)
    assert sorted(texts(page, "channel-platform")) == ["api", "telegram"]
    urls = values(page, "channel-webhook-url")
    assert sorted(u.split("/")[4] for u in urls) == ["api", "telegram"]
    assert secret[0] not in listed.text and "123:abc" not in listed.text
    assert "s3cret-token" not in listed.text
    [row] = [r for r in page.css('[data-testid="channel-row"]') if "telegram" in r.text()]
    assert row.css_first('[data-testid="channel-register-webhook"]') is not None
    channel_id = row.attributes["data-channel-id"]
    unreachable = await post(client, admin, f"channels/{channel_id}/register-webhook")
    assert unreachable.status_code == 502
    assert "could not be reached" in " ".join(texts(parse(unreachable), "admin-error"))


async def test_an_agents_secrets_are_shown_once(client: httpx2.AsyncClient, admin: Caller) -> None:
    data = {"name": "Sales bot", "webhook_url": "http://127.0.0.1:9/hook", "timeout_seconds": "5"}
    created = await post(client, admin, "agents", data)
    assert created.status_code == 201, created.text
    page = parse(created)
    assert page.css_first('[data-testid="agent-secret-once"]') is not None
    [token] = values(page, "agent-token-once")
    [secret] = values(page, "agent-webhook-secret-once")
    assert secret.startswith("whsec_")

    listed = await client.get("/console/admin/agents", headers=cookie(admin))
    assert texts(parse(listed), "agent-name") == ["Sales bot"]
    assert 'data-testid="agent-secret-once"' not in listed.text
    assert token not in listed.text and secret not in listed.text

    # The token works for the API, a new one too; deactivating cuts them off.
    answer = await client.get("/inbox", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code != 401
    [agent_id] = [
        r.attributes["data-agent-id"] for r in parse(listed).css('[data-testid="agent-row"]')
    ]
    rotated = parse(await post(client, admin, f"agents/{agent_id}/token"))
    [new_token] = values(rotated, "agent-token-once")
    assert new_token != token and values(rotated, "agent-webhook-secret-once") == []
    off = await post(client, admin, f"agents/{agent_id}/active", {"is_active": "false"})
    assert off.status_code == 303
    answer = await client.get("/inbox", headers={"Authorization": f"Bearer {new_token}"})
    assert answer.status_code == 401

    bad = await post(client, admin, "agents", {"name": "X", "webhook_url": "not a url"})
    assert bad.status_code == 422
    assert any("webhook_url" in line for line in texts(parse(bad), "admin-error"))


async def test_create_a_user_then_grant_a_channel(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    await post(client, admin, "channels", {"name": "Web", "platform": "api"})
    await post(client, admin, "channels", {"name": "Shop", "platform": "api"})
    data = {"username": "carol", "password": "long enough password", "role": "MEMBER"}
    created = await post(client, admin, "users", data)
    assert created.status_code == 303
    assert created.headers["location"] == "/console/admin/users"
    taken = await post(client, admin, "users", data)
    assert taken.status_code == 409
    assert texts(parse(taken), "admin-error") == ["Username 'carol' is taken"]

    page = parse(await client.get("/console/admin/users", headers=cookie(admin)))
    [row] = [r for r in page.css('[data-testid="user-row"]') if "carol" in r.text()]
    user_id = row.attributes["data-user-id"]
    boxes = {label(b): b.attributes["value"] for b in row.css("input[type=checkbox]")}
    assert set(boxes) == {"Web", "Shop"}
    granted = await post(client, admin, f"users/{user_id}/channels", {"channel_id": boxes["Web"]})
    assert granted.status_code == 303
    page = parse(await client.get("/console/admin/users", headers=cookie(admin)))
    [row] = [r for r in page.css('[data-testid="user-row"]') if "carol" in r.text()]
    checked = [label(b) for b in row.css("input[type=checkbox][checked]")]
    assert checked == ["Web"]

    # The API shows the same grant; then revoke it, promote and deactivate.
    members = await client.get(f"/channels/{boxes['Web']}/members", headers=admin.headers)
    assert [m["username"] for m in members.json()] == ["carol"]
    assert (await post(client, admin, f"users/{user_id}/channels", {})).status_code == 303
    members = await client.get(f"/channels/{boxes['Web']}/members", headers=admin.headers)
    assert members.json() == []
    assert (
        await post(client, admin, f"users/{user_id}/role", {"role": "ADMIN"})
    ).status_code == 303
    assert (
        await post(client, admin, f"users/{user_id}/active", {"is_active": "false"})
    ).status_code == 303
    user = (await client.get(f"/auth/users/{user_id}", headers=admin.headers)).json()
    assert (user["role"], user["is_active"]) == ("ADMIN", False)
    last = await post(client, admin, f"users/{admin.id}/active", {"is_active": "false"})
    assert last.status_code == 409


async def test_canned_responses_crud_with_errors_in_the_form(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    created = await post(client, admin, "canned", {"shortcut": "hi", "content": HOSTILE})
    assert created.status_code == 303
    duplicate = await post(client, admin, "canned", {"shortcut": "hi", "content": "Again"})
    assert duplicate.status_code == 409
    page = parse(duplicate)
    assert texts(page, "admin-error") == ["Shortcut 'hi' is taken"]
    assert texts(page, "canned-create-content") == ["Again"]
    invalid = await post(client, admin, "canned", {"shortcut": "Bad Shortcut", "content": "x"})
    assert invalid.status_code == 422
    assert texts(parse(invalid), "admin-error")[0].startswith("shortcut:")

    listed = await client.get("/console/admin/canned", headers=cookie(admin))
    assert HOSTILE not in listed.text
    [row] = parse(listed).css('[data-testid="canned-row"]')
    canned_id = row.attributes["data-canned-id"]
    saved = await post(
        client, admin, f"canned/{canned_id}", {"shortcut": "hello", "content": "Hi!"}
    )
    assert saved.status_code == 303
    api = (await client.get("/canned-responses", headers=admin.headers)).json()
    assert [(c["shortcut"], c["content"]) for c in api] == [("hello", "Hi!")]
    assert (await post(client, admin, f"canned/{canned_id}/delete")).status_code == 303
    assert (await client.get("/canned-responses", headers=admin.headers)).json() == []
    gone = await post(client, admin, f"canned/{canned_id}/delete")
    assert gone.status_code == 404
    assert texts(parse(gone), "admin-error") == ["Canned response not found"]


async def test_register_a_telegram_webhook(client: httpx2.AsyncClient, admin: Caller) -> None:
    ok = Reply(200, json={"ok": True, "result": True, "description": "Webhook was set"})
    with FakePlatform(default=ok) as bot_api:
        telegram = {
            "name": "Bot",
            "platform": "telegram",
            "telegram.bot_token": "123:abc",
            "telegram.secret_token": "s3cret",
            "telegram.api_base_url": bot_api.url,
        }
        created = parse(await post(client, admin, "channels", telegram))
        [row] = created.css('[data-testid="channel-row"]')
        assert texts(row, "channel-register-webhook") == ["Register webhook"]
        channel_id = row.attributes["data-channel-id"]
        answer = await post(client, admin, f"channels/{channel_id}/register-webhook")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/admin/channels"
        [request] = bot_api.requests(r"/bot[^/]+/setWebhook")
        assert request.json["secret_token"] == "s3cret"
    page = parse(await client.get("/console/admin/channels", headers=cookie(admin)))
    assert texts(page, "channel-register-webhook") == ["Register again"]


async def test_rotating_secrets_from_the_agents_and_channels_pages(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    data = {"name": "Rotating bot", "webhook_url": "http://127.0.0.1:9/hook"}
    [old] = values(parse(await post(client, admin, "agents", data)), "agent-webhook-secret-once")
    listed = parse(await client.get("/console/admin/agents", headers=cookie(admin)))
    [agent_id] = [r.attributes["data-agent-id"] for r in listed.css('[data-testid="agent-row"]')]
    assert listed.css_first('[data-testid="agent-rotate-secret"]') is not None
    rotated = await post(client, admin, f"agents/{agent_id}/webhook-secret", {"grace_hours": "1"})
    assert rotated.status_code == 200, rotated.text
    page = parse(rotated)
    [new] = values(page, "agent-webhook-secret-once")
    assert new.startswith("whsec_") and new != old
    assert values(page, "agent-token-once") == []  # a rotation makes no token
    assert "old secret and the new one" in page.text()
    again = await client.get("/console/admin/agents", headers=cookie(admin))
    assert new not in again.text
    bad = await post(client, admin, f"agents/{agent_id}/webhook-secret", {"grace_hours": "999"})
    assert bad.status_code == 422
    assert any("grace_hours" in line for line in texts(parse(bad), "admin-error"))

    created = await post(client, admin, "channels", {"name": "Site", "platform": "api"})
    [secret] = values(parse(created), "channel-secret-once")
    channels = parse(await client.get("/console/admin/channels", headers=cookie(admin)))
    [channel_id] = [
        r.attributes["data-channel-id"] for r in channels.css('[data-testid="channel-row"]')
    ]
    assert channels.css_first('[data-testid="channel-rotate-secret"]') is not None
    turned = await post(client, admin, f"channels/{channel_id}/secret", {"grace_hours": "0"})
    assert turned.status_code == 200, turned.text
    [fresh] = values(parse(turned), "channel-rotated-secret-once")
    assert fresh.startswith("whsec_") and fresh != secret
    assert "no longer works" in parse(turned).text()
