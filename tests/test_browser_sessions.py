"""Browser sessions (`POST /auth/session`, `sessions.py`): a user token in an `HttpOnly`,
`SameSite=Strict` cookie; requests with it need no bearer token, and those that change
something need the `Origin` of the hub's public URL (`http://hub.test` in the suite). `/ws`
takes the cookie too, with that `Origin`, over a real uvicorn server (tests/test_websocket.py).

Most tests put a user's token (from `make_user`, no argon2 cost) in the cookie themselves: the
cookie holds an ordinary user token, so that is what a browser would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from functools import cache
from http.cookies import SimpleCookie
from typing import Any

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from pwdlib import PasswordHash
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agenthub.hub import Hub
from agenthub.models import Role, User
from agenthub.sessions import SESSION_COOKIE, origin_of
from agenthub.settings import Settings
from tests.conftest import Caller, _empty_tables, app_for
from tests.test_websocket import (
    FRAME_TIMEOUT,
    Dashboard,
    contact_says,
    create_api_channel,
)

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]
sqlite_only = pytest.mark.database_independent

ORIGIN = "http://hub.test"  # the origin of the suite's AGENTHUB_PUBLIC_URL
PASSWORD = "browser-password"


@cache
def _password_hash() -> str:
    return PasswordHash.recommended().hash(PASSWORD)  # one real hash per process


async def make_password_user(hub: Hub, role: Role = Role.ADMIN) -> str:
    username = f"b{uuid.uuid4().hex[:10]}"
    async with hub.db.transaction() as session:
        session.add(User(username=username, password_hash=_password_hash(), role=role))
    return username


def session_cookie(response: httpx2.Response) -> Any:
    """The `agenthub_session` Set-Cookie of a response, parsed (a `Morsel`)."""
    headers = [h for h in response.headers.get_list("set-cookie") if SESSION_COOKIE in h]
    assert len(headers) == 1, response.headers
    jar: SimpleCookie = SimpleCookie()
    jar.load(headers[0])
    return jar[SESSION_COOKIE]


def with_cookie(token: str, origin: str | None = None) -> dict[str, str]:
    headers = {"Cookie": f"{SESSION_COOKIE}={token}"}
    if origin is not None:
        headers["Origin"] = origin
    return headers


# --- signing in -------------------------------------------------------------------------------


async def test_a_session_is_a_strict_httponly_cookie_and_no_token_in_the_body(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    username = await make_password_user(hub)
    answer = await client.post("/auth/session", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"user", "expires_at"}
    assert body["user"]["username"] == username
    assert answer.headers["cache-control"] == "no-store"

    cookie = session_cookie(answer)
    assert cookie.value.startswith("ah_") and cookie.value not in answer.text
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(hub.settings.user_token_ttl_hours * 3600)
    assert not cookie["secure"]  # the suite's public URL is http
    client.cookies.clear()

    me = await client.get("/auth/me", headers=with_cookie(cookie.value))
    assert me.status_code == 200 and me.json()["username"] == username


async def test_a_session_from_an_html_form(client: httpx2.AsyncClient, hub: Hub) -> None:
    username = await make_password_user(hub)
    answer = await client.post("/auth/session", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    assert session_cookie(answer).value.startswith("ah_")
    wrong = await client.post("/auth/session", data={"username": username, "password": "nope"})
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "Invalid username or password"}
    assert "set-cookie" not in wrong.headers


@sqlite_only
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"username=ana"),
        ("application/x-www-form-urlencoded", b"username=ana&password=x&password=y"),
        ("application/x-www-form-urlencoded", b"username=%FF%FE&password=x"),
        ("application/x-www-form-urlencoded", b"username=\xff&password=x"),
        ("application/x-www-form-urlencoded", b"username=ana&password=x&extra=1"),
        ("application/x-www-form-urlencoded", b"&".join([b"a=1"] * 50)),
        ("application/x-www-form-urlencoded", b""),
        ("application/json", b'{"username": "ana", "password": '),
        ("application/json", b"[" * 100_000),
        ("application/json", b'["ana", "pw"]'),
        ("application/json", b"\xff\xfe"),
        (None, b'{"username": "ana"}'),
    ],
)
async def test_a_malformed_sign_in_is_422(
    client: httpx2.AsyncClient, content_type: str | None, body: bytes
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answer = await client.post("/auth/session", content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, list) and detail
    assert all(e["loc"][0] == "body" and "input" not in e for e in detail)


async def test_another_media_type_is_415(client: httpx2.AsyncClient) -> None:
    answer = await client.post(
        "/auth/session", content=b"username=ana", headers={"content-type": "text/plain"}
    )
    assert answer.status_code == 415
    assert "detail" in answer.json()


async def test_signing_in_from_another_site_is_403(client: httpx2.AsyncClient, hub: Hub) -> None:
    """Login CSRF: a form on another site must not sign the browser in to the attacker's
    account. Without `Origin` (curl, scripts) signing in works."""
    credentials = {"username": "nobody-at-all", "password": "whatever"}
    for origin in ("https://evil.test", "null", "http://hub.test.evil.test", "https://hub.test"):
        answer = await client.post("/auth/session", json=credentials, headers={"Origin": origin})
        assert answer.status_code == 403, origin
        assert "set-cookie" not in answer.headers
    same = await client.post("/auth/session", json=credentials, headers={"Origin": ORIGIN})
    assert same.status_code == 401  # on to the password check


async def test_the_cookie_is_secure_with_an_https_public_url(settings: Settings) -> None:
    app = app_for(settings.model_copy(update={"public_url": "https://hub.example.com/"}))
    async with LifespanManager(app) as manager:
        hub: Hub = app.state.hub
        try:
            username = await make_password_user(hub)
            transport = httpx2.ASGITransport(app=manager.app)
            async with httpx2.AsyncClient(
                transport=transport, base_url="https://hub.example.com"
            ) as http:
                credentials = {"username": username, "password": PASSWORD}
                answer = await http.post("/auth/session", json=credentials)
                assert answer.status_code == 200, answer.text
                cookie = session_cookie(answer)
                assert cookie["secure"] is True
                assert cookie["httponly"] is True and cookie["samesite"].lower() == "strict"
                # The origin there is https://hub.example.com (the default port left out).
                token = cookie.value
                http.cookies.clear()
                me = f"/auth/users/{answer.json()['user']['id']}"
                for origin, status in (
                    ("https://hub.example.com", 200),
                    ("https://hub.example.com:443", 200),
                    ("http://hub.example.com", 403),
                ):
                    patch = await http.patch(
                        me, json={"email": "a@example.com"}, headers=with_cookie(token, origin)
                    )
                    assert patch.status_code == status, (origin, patch.text)
        finally:
            await _empty_tables(hub)


# --- using the cookie -------------------------------------------------------------------------


async def test_the_cookie_authenticates_reads(client: httpx2.AsyncClient, admin: Caller) -> None:
    for path in ("/auth/me", "/auth/users", "/channels"):
        answer = await client.get(path, headers=with_cookie(admin.token))
        assert answer.status_code == 200, (path, answer.text)
    bad = await client.get("/auth/me", headers=with_cookie(admin.token + "x"))
    assert bad.status_code == 401
    assert (await client.get("/auth/me")).status_code == 401


async def test_writes_with_the_cookie_need_the_public_origin(
    client: httpx2.AsyncClient, make_user: Any
) -> None:
    member: Caller = await make_user(Role.MEMBER)
    path = f"/auth/users/{member.id}"
    for origin in (
        None,
        "",
        "null",
        "https://evil.test",
        "http://hub.test:8080",
        "https://hub.test",
        "http://hub.test.evil.test",
        "http://evil.test@hub.test",
        "http://hub.test/",
    ):
        answer = await client.patch(
            path, json={"email": "x@example.com"}, headers=with_cookie(member.token, origin)
        )
        assert answer.status_code == 403, (origin, answer.text)
        assert "Origin" in answer.json()["detail"]
        refused = await client.post("/auth/logout", headers=with_cookie(member.token, origin))
        assert refused.status_code == 403, origin

    me = await client.get("/auth/me", headers=with_cookie(member.token))
    assert me.json()["email"] is None  # nothing was changed
    for origin in (ORIGIN, "HTTP://Hub.Test", "http://hub.test:80"):
        answer = await client.patch(
            path, json={"email": "me@example.com"}, headers=with_cookie(member.token, origin)
        )
        assert answer.status_code == 200, (origin, answer.text)


async def test_an_invalid_cookie_is_401_before_any_origin_check(
    client: httpx2.AsyncClient,
) -> None:
    answer = await client.post("/auth/logout", headers=with_cookie("ah_not-a-token"))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].lower().startswith("bearer")


async def test_bearer_tokens_need_no_origin_and_win_over_the_cookie(
    client: httpx2.AsyncClient, make_user: Any, admin: Caller
) -> None:
    member: Caller = await make_user(Role.MEMBER)
    path = f"/auth/users/{member.id}"
    answer = await client.patch(path, json={"email": "b@example.com"}, headers=member.headers)
    assert answer.status_code == 200, answer.text
    foreign = {**member.headers, "Origin": "https://evil.test"}
    assert (await client.patch(path, json={}, headers=foreign)).status_code == 200

    # A bearer token, when there is one, is what counts: the cookie is not looked at.
    both = {**with_cookie(admin.token), **member.headers}
    assert (await client.get("/auth/me", headers=both)).json()["id"] == member.id
    wrong_bearer = {**with_cookie(admin.token), "Authorization": "Bearer ah_wrong"}
    assert (await client.get("/auth/me", headers=wrong_bearer)).status_code == 401


async def test_an_agent_token_in_the_cookie_is_refused(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    from tests.factories import make_agent

    _, raw = await make_agent(hub)
    as_bearer = await client.get("/auth/me", headers={"Authorization": f"Bearer {raw}"})
    assert as_bearer.status_code == 403  # a valid token, but not a user's
    assert (await client.get("/auth/me", headers=with_cookie(raw))).status_code == 401


async def test_logout_revokes_the_session_and_clears_the_cookie(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    username = await make_password_user(hub)
    signed_in = await client.post(
        "/auth/session", json={"username": username, "password": PASSWORD}
    )
    token = session_cookie(signed_in).value
    client.cookies.clear()

    answer = await client.post("/auth/logout", headers=with_cookie(token, ORIGIN))
    assert answer.status_code == 204, answer.text
    cleared = session_cookie(answer)
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/"
    assert cleared["httponly"] is True and cleared["samesite"].lower() == "strict"
    client.cookies.clear()
    assert (await client.get("/auth/me", headers=with_cookie(token))).status_code == 401


async def test_logout_with_a_bearer_token_leaves_the_cookie_alone(
    client: httpx2.AsyncClient, make_user: Any
) -> None:
    one: Caller = await make_user(Role.MEMBER)
    other: Caller = await make_user(Role.MEMBER)
    answer = await client.post("/auth/logout", headers={**with_cookie(other.token), **one.headers})
    assert answer.status_code == 204
    assert "set-cookie" not in answer.headers
    assert (await client.get("/auth/me", headers=one.headers)).status_code == 401
    assert (await client.get("/auth/me", headers=with_cookie(other.token))).status_code == 200


def test_origins_are_compared_as_origins() -> None:
    assert origin_of("http://Hub.Test:80/some/path") == "http://hub.test"
    assert origin_of("https://hub.test:8443") == "https://hub.test:8443"
    assert origin_of("http://[::1]:8000") == "http://[::1]:8000"
    for junk in ("null", "", "hub.test", "ftp://hub.test", "http://hub.test:99999", "http://"):
        assert origin_of(junk) is None, junk


# --- the WebSocket ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def cookie_board(
    live: str,
    token: str,
    origin: str | None,
    query: str = "",
) -> AsyncIterator[Dashboard]:
    async with connect(
        f"ws://{live}/ws{query}",
        additional_headers={"Cookie": f"{SESSION_COOKIE}={token}"},
        origin=origin,  # type: ignore[arg-type]
        open_timeout=5,
        close_timeout=2,
    ) as ws:
        yield Dashboard(ws)


async def test_the_websocket_takes_the_cookie_from_the_public_origin(
    live: str,
    http: httpx2.AsyncClient,
    admin: Caller,
) -> None:
    channel = await create_api_channel(http, admin)
    async with cookie_board(live, admin.token, ORIGIN) as board:
        await board.send({"type": "ping"})
        assert await board.of_type("pong") == {"type": "pong"}
        await contact_says(http, channel, "hello over a cookie")
        event = await board.new_message("hello over a cookie")
        assert event["channel_id"] == channel["id"]

        # Logging the session out (with the cookie, from our origin) closes the socket.
        logout = await http.post("/auth/logout", headers=with_cookie(admin.token, ORIGIN))
        assert logout.status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(board.ws.recv(), FRAME_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def expect_closed_1008(
    live: str,
    token: str,
    origin: str | None,
    query: str = "",
) -> None:
    async with cookie_board(live, token, origin, query) as board:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(board.ws.recv(), FRAME_TIMEOUT)
    assert closed.value.rcvd is not None, "closed without a close frame"
    assert closed.value.rcvd.code == 1008, closed.value


async def test_the_websocket_refuses_the_cookie_from_elsewhere(
    live: str,
    admin: Caller,
) -> None:
    for origin in (None, "https://evil.test", "null", "http://hub.test:9999"):
        await expect_closed_1008(live, admin.token, origin)
    # A `token` parameter, even a wrong or empty one, is what counts: the cookie is not used.
    await expect_closed_1008(live, admin.token, ORIGIN, "?token=not-a-token")
    await expect_closed_1008(live, admin.token, ORIGIN, "?token=")
    await expect_closed_1008(live, admin.token + "x", ORIGIN)


def test_the_openapi_document_shows_both_ways_to_authenticate() -> None:
    from agenthub.app import create_app

    settings = Settings(database_url="sqlite://", secret_key="k", _env_file=None)
    document = create_app(settings).openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes["SessionCookie"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": schemes["SessionCookie"]["description"],
    }
    assert {"HTTPBearer": []} in document["paths"]["/auth/me"]["get"]["security"]
    assert {"SessionCookie": []} in document["paths"]["/auth/me"]["get"]["security"]
    session = document["paths"]["/auth/session"]["post"]
    assert "security" not in session
    assert set(session["requestBody"]["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
    }
    assert "access_token" not in json.dumps(document["components"]["schemas"]["SessionOut"])
