"""Bad input is a 4xx with a JSON `detail`, never a 500, and stores nothing."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from tests.conftest import Caller
from tests.factories import make_agent, make_channel, make_chat

pytestmark = pytest.mark.anyio

TELEGRAM = {"bot_token": "123:abc", "secret_token": "s3cret"}


def assert_error(response: httpx2.Response, *statuses: int) -> Any:
    """The response is one of `statuses` (any 4xx if none given) with a JSON `detail`."""
    request = f"{response.request.method} {response.request.url}"
    if statuses:
        assert response.status_code in statuses, (
            f"{request} -> {response.status_code} {response.text}"
        )
    else:
        assert 400 <= response.status_code < 500, (
            f"{request} -> {response.status_code} {response.text}"
        )
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and body.get("detail"), body
    return body["detail"]


async def counts(client: httpx2.AsyncClient, admin: Caller, chat_id: str) -> dict[str, int]:
    """How many rows the API shows of each kind, to prove a refused request stored nothing."""

    async def size(url: str, key: str | None = None) -> int:
        response = await client.get(url, params={"limit": 200}, headers=admin.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        return len(body[key] if key else body)

    channels = (await client.get("/channels", params={"limit": 200}, headers=admin.headers)).json()
    chats = 0
    for channel in channels:
        chats += await size(f"/channels/{channel['id']}/chats", "chats")
    return {
        "channels": len(channels),
        "chats": chats,
        "agents": await size("/auth/agents"),
        "users": await size("/auth/users"),
        "messages": await size(f"/chats/{chat_id}/messages", "messages"),
        "chat_agents": len(
            (await client.get(f"/chats/{chat_id}/agents", headers=admin.headers)).json()
        ),
    }


@pytest.fixture
async def world(hub: Hub, admin: Caller) -> dict[str, str]:
    channel = await make_channel(hub)
    agent, _ = await make_agent(hub)
    chat = await make_chat(hub, channel, messages=2)
    return {"channel_id": channel.id, "chat_id": chat.id, "agent_id": agent.id}


@pytest.mark.database_independent
async def test_malformed_json_and_wrong_bodies(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> None:
    before = await counts(client, admin, world["chat_id"])
    json_headers = {**admin.headers, "Content-Type": "application/json"}
    chat_messages = f"/chats/{world['chat_id']}/messages"
    bad_bodies: list[tuple[str, bytes]] = [
        ("/channels", b'{"name": "x", "platform": "api"'),  # truncated
        ("/channels", b"{'name': 'x'}"),  # not JSON
        ("/channels", b""),  # empty
        ("/channels", b"null"),
        ("/channels", b'["name", "platform"]'),  # an array, not an object
        ("/channels", b'"a string"'),
        ("/auth/agents", b'{"name": "a", "webhook_url": "http://a.test"} trailing'),
        (chat_messages, b'{"content": "hi"'),
        (chat_messages, b"\xff\xfe\xfa not utf-8 \x80"),  # not UTF-8 at all
        (chat_messages, b'{"content": "\xff\xfe"}'),  # invalid UTF-8 inside a string
        (chat_messages, b"[" * 100_000 + b"]" * 100_000),  # nesting deeper than any parser likes
    ]
    for url, content in bad_bodies:
        assert_error(await client.post(url, content=content, headers=json_headers), 400, 422)

    # A form body or plain text where JSON is expected.
    assert_error(
        await client.post(chat_messages, data={"content": "hi"}, headers=admin.headers), 422
    )
    assert_error(
        await client.post(
            chat_messages,
            content=b"hi",
            headers={**admin.headers, "Content-Type": "text/plain"},
        ),
        400,
        422,
    )
    assert await counts(client, admin, world["chat_id"]) == before


@pytest.mark.database_independent
@pytest.mark.parametrize(
    ("url", "body"),
    [
        # wrong types
        ("/channels", {"name": 5, "platform": "api"}),
        ("/channels", {"name": "x", "platform": "api", "credentials": "secret"}),
        ("/channels", {"name": "x", "platform": "api", "config": ["a"]}),
        ("/channels", {"name": "x", "platform": "api", "is_active": "maybe"}),
        ("/channels", {"name": ["x"], "platform": "api"}),
        (
            "/auth/agents",
            {"name": "a", "webhook_url": "http://a.test", "buffer_time_seconds": "abc"},
        ),
        ("/auth/agents", {"name": "a", "webhook_url": "http://a.test", "history_msg_count": 1.5}),
        ("/auth/agents", {"name": "a", "webhook_url": 42}),
        ("/auth/users", {"username": "bob", "password": 12345678}),
        # missing required fields
        ("/channels", {"platform": "api"}),
        ("/channels", {"name": "x"}),
        ("/auth/agents", {"name": "a"}),
        ("/auth/users", {"username": "bob"}),
        # oversize strings
        ("/channels", {"name": "x" * 10_000, "platform": "api"}),
        ("/auth/agents", {"name": "x" * 10_000, "webhook_url": "http://a.test"}),
        ("/auth/agents", {"name": "a", "webhook_url": "http://a.test/" + "p" * 10_000}),
        ("/auth/users", {"username": "u" * 10_000, "password": "long-enough"}),
        ("/auth/users", {"username": "bob", "password": "p" * 10_000}),
        ("/auth/users", {"username": "bob", "password": "long-enough", "email": "a@" + "b" * 300}),
        # blank or malformed strings
        ("/channels", {"name": "   ", "platform": "api"}),
        ("/auth/users", {"username": "bob smith", "password": "long-enough"}),
        ("/auth/users", {"username": "bob", "password": "short"}),
        ("/auth/agents", {"name": "a", "webhook_url": "not a url"}),
        ("/auth/agents", {"name": "a", "webhook_url": "ftp://files.test/"}),
        # invalid enum values
        ("/channels", {"name": "x", "platform": "myspace"}),
        ("/channels", {"name": "x", "platform": "API"}),
        ("/auth/users", {"username": "bob", "password": "long-enough", "role": "GOD"}),
        ("/auth/users", {"username": "bob", "password": "long-enough", "role": "admin"}),
        # out-of-range numbers (NaN and infinities included)
        ("/auth/agents", {"name": "a", "webhook_url": "http://a.test", "buffer_time_seconds": -1}),
        ("/auth/agents", {"name": "a", "webhook_url": "http://a.test", "timeout_seconds": 0}),
        (
            "/auth/agents",
            {"name": "a", "webhook_url": "http://a.test", "history_msg_count": 10**40},
        ),
        # unknown fields
        ("/channels", {"name": "x", "platform": "api", "bogus": 1}),
        ("/channels", {"name": "x", "platform": "api", "credentials": {"secrett": "typo"}}),
        ("/auth/agents", {"name": "a", "webhook_url": "http://a.test", "webhookurl": "x"}),
        ("/auth/users", {"username": "bob", "password": "long-enough", "is_admin": True}),
        # oversize JSON objects
        ("/channels", {"name": "x", "platform": "api", "config": {"k": "v" * 20_000}}),
        # agents for new chats: not a list, not ids, unknown, too many
        ("/channels", {"name": "x", "platform": "api", "default_agent_ids": "agt_a"}),
        ("/channels", {"name": "x", "platform": "api", "default_agent_ids": [5]}),
        ("/channels", {"name": "x", "platform": "api", "default_agent_ids": ["agt_missing000"]}),
        ("/channels", {"name": "x", "platform": "api", "default_agent_ids": ["agt_a"] * 201}),
    ],
)
async def test_invalid_create_bodies_are_422(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str], url: str, body: object
) -> None:
    before = await counts(client, admin, world["chat_id"])
    assert_error(await client.post(url, json=body, headers=admin.headers), 422)
    assert await counts(client, admin, world["chat_id"]) == before


@pytest.mark.database_independent
async def test_nan_and_infinity_are_refused(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> None:
    # Python's json module accepts these tokens; the API must not store them.
    before = await counts(client, admin, world["chat_id"])
    headers = {**admin.headers, "Content-Type": "application/json"}
    for field, token in (
        ("buffer_time_seconds", "NaN"),
        ("max_buffer_seconds", "Infinity"),
        ("timeout_seconds", "-Infinity"),
        ("timeout_seconds", "NaN"),
    ):
        content = f'{{"name": "a", "webhook_url": "http://a.test", "{field}": {token}}}'.encode()
        assert_error(await client.post("/auth/agents", content=content, headers=headers), 422)
    assert await counts(client, admin, world["chat_id"]) == before


async def test_invalid_updates_are_refused_and_change_nothing(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> None:
    chat_url = f"/chats/{world['chat_id']}"
    channel_url = f"/channels/{world['channel_id']}"
    agent_url = f"/auth/agents/{world['agent_id']}"
    chat_before = (await client.get(chat_url, headers=admin.headers)).json()
    channel_before = (await client.get(channel_url, headers=admin.headers)).json()
    agent_before = (await client.get(agent_url, headers=admin.headers)).json()

    for url, body, statuses in [
        (chat_url, {"nme": "typo"}, (422,)),
        (chat_url, {"name": "x" * 10_000}, (422,)),
        (chat_url, {"assigned_user_id": 5}, (422,)),
        (chat_url, {"assigned_user_id": "usr_missing00"}, (400,)),
        (chat_url, {"needs_human": "perhaps"}, (422,)),
        (channel_url, {"name": ""}, (422,)),
        (channel_url, {"platform": "telegram"}, (422,)),  # not changeable
        (channel_url, {"config": {"api_base_url": "not a url"}}, (422,)),
        (channel_url, {"config": {"callback_url": "ftp://x"}}, (422,)),
        (channel_url, {"config": {"callback_url": "http://["}}, (422,)),  # urlsplit refuses it
        (channel_url, {"config": {"api_base_url": "http://a:99999"}}, (422,)),
        (channel_url, {"credentials": {"secret": "not-a-whsec"}}, (400, 422)),
        (channel_url, {"credentials": {"unknown": "x"}}, (400, 422)),
        (channel_url, {"default_agent_ids": ["agt_missing000"]}, (422,)),
        (channel_url, {"default_agent_ids": [world["agent_id"], ""]}, (422,)),
        (channel_url, {"default_agent_ids": {"a": 1}}, (422,)),
        (agent_url, {"timeout_seconds": 1000}, (422,)),
        (agent_url, {"webhook_url": "javascript:alert(1)"}, (422,)),
        (agent_url, {"id": "agt_other0000"}, (422,)),
        (f"{chat_url}/agents/{world['agent_id']}", {"active": "yes please"}, (422,)),
    ]:
        assert_error(await client.patch(url, json=body, headers=admin.headers), *statuses)

    assert (await client.get(chat_url, headers=admin.headers)).json() == chat_before
    assert (await client.get(channel_url, headers=admin.headers)).json() == channel_before
    assert (await client.get(agent_url, headers=admin.headers)).json() == agent_before


async def test_oversize_message_and_meta_data(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> None:
    before = await counts(client, admin, world["chat_id"])
    url = f"/chats/{world['chat_id']}/messages"
    for body in (
        {"content": "x" * 40_000},
        {"content": "hi", "meta_data": {"blob": "x" * 20_000}},
        {"content": "hi", "meta_data": "not an object"},
        {"content": None},
        {"content": "hi", "sender_type": "CONTACT"},  # the sender is the token's owner
    ):
        assert_error(await client.post(url, json=body, headers=admin.headers), 422)
    assert await counts(client, admin, world["chat_id"]) == before


@pytest.mark.database_independent
async def test_bodies_over_one_megabyte_are_413(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> None:
    before = await counts(client, admin, world["chat_id"])
    url = f"/chats/{world['chat_id']}/messages"
    big = b'{"content": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    headers = {**admin.headers, "Content-Type": "application/json"}
    # Declared length over the limit: refused before reading.
    detail = assert_error(await client.post(url, content=big, headers=headers), 413)
    assert "larger" in detail

    # No Content-Length (chunked): refused while reading.
    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    assert_error(await client.post(url, content=chunks(), headers=headers), 413)
    # Over the limit on an endpoint that would otherwise be a 404 or 401, too.
    assert_error(await client.post("/channels/chn_nope000000", content=big, headers=headers), 413)
    assert await counts(client, admin, world["chat_id"]) == before


async def test_unknown_ids_are_404_with_detail(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> None:
    chat, agent, channel = world["chat_id"], world["agent_id"], world["channel_id"]
    h = admin.headers
    for response in [
        await client.get("/channels/chn_missing000", headers=h),
        await client.patch("/channels/chn_missing000", json={"name": "x"}, headers=h),
        await client.delete("/channels/chn_missing000", headers=h),
        await client.get("/channels/chn_missing000/chats", headers=h),
        await client.get("/channels/chn_missing000/members", headers=h),
        await client.get("/chats/cht_missing000", headers=h),
        await client.patch("/chats/cht_missing000", json={"name": "x"}, headers=h),
        await client.delete("/chats/cht_missing000", headers=h),
        await client.get("/chats/cht_missing000/messages", headers=h),
        await client.post("/chats/cht_missing000/messages", json={"content": "x"}, headers=h),
        await client.get("/chats/cht_missing000/agents", headers=h),
        await client.get("/chats/cht_missing000/deliveries", headers=h),
        await client.post(f"/chats/{chat}/agents", json={"agent_id": "agt_missing000"}, headers=h),
        await client.patch(f"/chats/{chat}/agents/{agent}", json={"active": False}, headers=h),
        await client.delete(f"/chats/{chat}/agents/agt_missing000", headers=h),
        await client.get("/auth/agents/agt_missing000", headers=h),
        await client.patch("/auth/agents/agt_missing000", json={"name": "x"}, headers=h),
        await client.delete("/auth/agents/agt_missing000", headers=h),
        await client.get("/auth/agents/agt_missing000/tokens", headers=h),
        await client.post("/auth/agents/agt_missing000/tokens", headers=h),
        await client.delete(f"/auth/agents/{agent}/tokens/tkn_missing000", headers=h),
        await client.get("/auth/users/usr_missing000", headers=h),
        await client.patch("/auth/users/usr_missing000", json={"email": "a@b.c"}, headers=h),
        await client.delete("/auth/users/usr_missing000", headers=h),
        await client.post(f"/channels/{channel}/members/usr_missing000", headers=h),
        await client.delete(f"/channels/{channel}/members/usr_missing000", headers=h),
        # ids of the wrong kind, odd characters and very long ids are just unknown ids
        await client.get(f"/channels/{chat}", headers=h),
        await client.get(f"/chats/{channel}", headers=h),
        await client.get("/chats/" + "c" * 5_000, headers=h),
        await client.get("/channels/%F0%9F%98%80%20'%22;--", headers=h),
        await client.get("/auth/agents/..%2F..%2Fetc%2Fpasswd", headers=h),
    ]:
        assert_error(response, 404)


@pytest.mark.database_independent
async def test_unknown_routes_and_methods(client: httpx2.AsyncClient, admin: Caller) -> None:
    assert_error(await client.get("/nope", headers=admin.headers), 404)
    assert_error(await client.put("/channels", json={}, headers=admin.headers), 405)


@pytest.mark.database_independent
@pytest.mark.parametrize(
    "query",
    [
        {"limit": -1},
        {"limit": 0},
        {"limit": 100_000},
        {"limit": "ten"},
        {"limit": "1e3"},
        {"limit": 2**70},
        {"offset": -5},
        {"offset": 10**30},
        {"offset": "first"},
    ],
)
async def test_bad_paging_parameters_are_422(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str], query: dict[str, object]
) -> None:
    for url in (
        "/channels",
        "/auth/users",
        "/auth/agents",
        f"/channels/{world['channel_id']}/chats",
    ):
        assert_error(await client.get(url, params=query, headers=admin.headers), 422)
    if "limit" in query:
        for url in (f"/chats/{world['chat_id']}/messages", f"/chats/{world['chat_id']}/deliveries"):
            assert_error(await client.get(url, params=query, headers=admin.headers), 422)


async def test_huge_but_allowed_offset_is_an_empty_page(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> None:
    params = {"offset": 1_000_000}
    chats = await client.get(
        f"/channels/{world['channel_id']}/chats", params=params, headers=admin.headers
    )
    assert chats.status_code == 200, chats.text
    assert chats.json() == {"chats": [], "total_count": 1, "has_more": False}
    for url in ("/channels", "/auth/users", "/auth/agents"):
        response = await client.get(url, params=params, headers=admin.headers)
        assert response.status_code == 200 and response.json() == [], response.text


@pytest.mark.database_independent
async def test_bad_filters(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> None:
    url = f"/channels/{world['channel_id']}/chats"
    h = admin.headers
    assert_error(await client.get(url, params={"assigned": "sometimes"}, headers=h), 422)
    assert_error(await client.get(url, params={"q": "x" * 10_000}, headers=h), 422)
    assert_error(await client.get(url, params={"assigned_user_id": "u" * 100}, headers=h), 422)
    # LIKE wildcards are literal; no match, and certainly no error.
    for q in ("%", "_", "\\", "%_%", "' OR 1=1 --"):
        response = await client.get(url, params={"q": q}, headers=h)
        assert response.status_code == 200 and response.json()["total_count"] == 0, (
            q,
            response.text,
        )

    messages = f"/chats/{world['chat_id']}/messages"
    assert_error(await client.get(messages, params={"before": "msg_missing000"}, headers=h), 400)
    assert_error(await client.get(messages, params={"before": "m" * 1_000}, headers=h), 422)


async def test_nul_characters_are_refused_not_500(
    app_and_hub: tuple[object, Hub],
    client: httpx2.AsyncClient,
    admin: Caller,
    world: dict[str, str],
) -> None:
    """PostgreSQL cannot store U+0000 in text; the API must say so with a 4xx (or store it)."""
    before = await counts(client, admin, world["chat_id"])
    # A 500 is an answer here, not an exception, so every offending request is listed.
    transport = httpx2.ASGITransport(app=app_and_hub[0], raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://hub.test") as lenient:
        server_errors = await _send_nul_requests(lenient, admin, world)
    assert not server_errors, "5xx:\n" + "\n".join(server_errors)
    after = await counts(client, admin, world["chat_id"])
    # Storing it was allowed (SQLite can); on refusal nothing may have been stored.
    assert after["channels"] - before["channels"] in (0, 1)
    assert after["users"] == before["users"]


async def _send_nul_requests(
    client: httpx2.AsyncClient, admin: Caller, world: dict[str, str]
) -> list[str]:
    h = admin.headers
    chat, channel = world["chat_id"], world["channel_id"]
    server_errors: list[str] = []
    for response in [
        await client.post("/channels", json={"name": "a\x00b", "platform": "api"}, headers=h),
        await client.post(
            "/auth/agents", json={"name": "\x00", "webhook_url": "http://a.test"}, headers=h
        ),
        await client.post(f"/chats/{chat}/messages", json={"content": "nul \x00"}, headers=h),
        await client.patch(f"/chats/{chat}", json={"name": "\x00"}, headers=h),
        await client.get(f"/channels/{channel}/chats", params={"q": "\x00"}, headers=h),
        await client.get(
            f"/channels/{channel}/chats", params={"assigned_user_id": "\x00"}, headers=h
        ),
        await client.get("/channels/chn_%00", headers=h),
        await client.get("/chats/cht_%00/messages", headers=h),
        await client.get(f"/chats/{chat}/messages", params={"before": "msg_\x00"}, headers=h),
        await client.post(f"/chats/{chat}/agents", json={"agent_id": "agt_\x00"}, headers=h),
        await client.post("/auth/login", json={"username": "a\x00", "password": "whatever"}),
    ]:
        if response.status_code >= 500:
            server_errors.append(f"{response.request.method} {response.request.url}")
        elif response.status_code >= 400:
            assert_error(response)
    return server_errors
