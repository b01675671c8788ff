"""The example agent (`agenthub pingpong`) and `agenthub send-test`, on real loopback sockets.

- the agent app under uvicorn on a free port: signed delivery → `pong: …`, bad signature → 401,
  API mode (`--token --hub`) → `200 {}` and the reply POSTed with the agent's token;
- the real `agenthub pingpong` and `agenthub send-test` commands as subprocesses;
- the full loop: the hub (the `client` fixture app, on SQLite and PostgreSQL) delivers a signed
  inbound `api` message to pingpong, whose inline reply becomes an AGENT message.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agenthub.pingpong import answer_for, create_pingpong_app, pong_text
from agenthub.security import new_webhook_secret
from tests.conftest import Caller
from tests.fake_platform import standard_webhook_headers
from tests.platform_helpers import post_api_message_and_wait_for_the_agent

pytestmark = pytest.mark.anyio

AGENTHUB = str(Path(sys.executable).with_name("agenthub"))


def bound_socket() -> socket.socket:
    """A socket on a free loopback port, bound now so nothing else can take the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}/"


@contextmanager
def serve_in_thread(app: Any, sock: socket.socket | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread, on `sock` or a free loopback port."""
    sock = sock or bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def delivery(
    *, chat_id: str = "cht_test000001", reply_url: str | None = None, new: int = 2
) -> dict[str, Any]:
    messages = [
        {"id": "msg_old0000001", "content": "earlier", "sender_type": "CONTACT"},
        {"id": "msg_pong000001", "content": "pong: earlier", "sender_type": "AGENT"},
        {"id": "msg_new0000001", "content": "hello", "sender_type": "CONTACT"},
        {"id": "msg_new0000002", "content": "how are you?", "sender_type": "CONTACT"},
        {"id": "msg_user000001", "content": "(an operator typing)", "sender_type": "USER"},
    ]
    body: dict[str, Any] = {
        "event": "chat.messages",
        "delivery_id": f"dlv_{uuid.uuid4().hex[:10]}",
        "agent": {"id": "agt_test000001", "name": "pingpong"},
        "chat": {"id": chat_id, "name": "Alice", "external_id": "alice", "channel_id": "chn_x"},
        "messages": messages,
        "new_message_ids": ["msg_new0000001", "msg_new0000002"][:new],
    }
    if reply_url:
        body["reply_url"] = reply_url
    return body


def signed(secret: str, payload: dict[str, Any], webhook_id: str | None = None) -> dict[str, Any]:
    """Request kwargs for a delivery signed like the hub signs it (Standard Webhooks)."""
    body = json.dumps(payload)
    webhook_id = webhook_id or payload.get("delivery_id") or f"msg_{uuid.uuid4().hex}"
    headers = standard_webhook_headers(secret, body, webhook_id)
    return {"content": body.encode(), "headers": {"content-type": "application/json", **headers}}


def test_pong_text_uses_the_last_new_message() -> None:
    assert pong_text(delivery()) == "pong: how are you?"
    assert pong_text(delivery(new=1)) == "pong: hello"
    assert pong_text({"messages": [], "new_message_ids": []}) == "pong: "
    assert pong_text({"messages": "junk"}) == "pong: "


def test_the_message_buttons_gets_two_buttons_and_a_tap_is_ponged() -> None:
    payload = delivery()
    payload["messages"][3]["content"] = " Buttons "  # the newest new message
    assert answer_for(payload) == {
        "text": "Ping or pong?",
        "buttons": [{"id": "ping", "title": "Ping"}, {"id": "pong", "title": "Pong"}],
    }
    payload["messages"][3]["content"] = "Pong"  # the tap comes back as the button's title
    assert answer_for(payload) == {"text": "pong: Pong"}


async def test_signed_delivery_gets_an_inline_pong() -> None:
    secret = new_webhook_secret()
    with serve_in_thread(create_pingpong_app(secret)) as url:
        async with httpx2.AsyncClient() as http:
            response = await http.post(url, **signed(secret, delivery()))
    assert response.status_code == 200
    assert response.json() == {"reply": "pong: how are you?"}


async def test_bad_or_missing_signature_is_401() -> None:
    secret = new_webhook_secret()
    payload = delivery()
    with serve_in_thread(create_pingpong_app(secret)) as url:
        async with httpx2.AsyncClient() as http:
            wrong_key = await http.post(url, **signed(new_webhook_secret(), payload))
            request = signed(secret, payload)
            tampered = await http.post(
                url,
                content=request["content"].replace(b"hello", b"HELLO"),
                headers=request["headers"],
            )
            garbage = await http.post(
                url,
                content=request["content"],
                headers={**request["headers"], "webhook-signature": "v1nocomma"},
            )
            unsigned = await http.post(url, json=payload)
            stale = signed(secret, payload)
            old = int(stale["headers"]["webhook-timestamp"]) - 3600
            stale["headers"]["webhook-timestamp"] = str(old)
            too_old = await http.post(url, **stale)
    for response in (wrong_key, tampered, garbage, unsigned, too_old):
        assert response.status_code == 401, response.text
        assert "reply" not in response.text


class FakeHub:
    """Records the agent's `POST /chats/{id}/messages` calls."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str | None, Any]] = []
        self.app = Starlette(
            routes=[Route("/chats/{chat_id}/messages", self.receive, methods=["POST"])]
        )

    async def receive(self, request: Request) -> JSONResponse:
        self.posts.append(
            (request.url.path, request.headers.get("authorization"), await request.json())
        )
        return JSONResponse({"id": "msg_created001"}, status_code=201)

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while len(self.posts) < count:
                await anyio.sleep(0.02)


async def test_api_mode_answers_at_once_and_posts_the_reply_with_the_token() -> None:
    secret, token = new_webhook_secret(), "ah_agent-token-for-test"
    fake = FakeHub()
    with serve_in_thread(fake.app) as hub_url:
        app = create_pingpong_app(secret, token=token, hub_url=hub_url.rstrip("/"))
        with serve_in_thread(app) as url:
            async with httpx2.AsyncClient() as http:
                # reply_url wins when the delivery carries one
                first = delivery(
                    chat_id="cht_replyurl01", reply_url=f"{hub_url}chats/cht_replyurl01/messages"
                )
                response = await http.post(url, **signed(secret, first))
                assert response.status_code == 200
                assert response.json() == {}
                await fake.wait_for(1)
                # a retry of the same delivery (same webhook-id) is not answered twice
                retry = await http.post(url, **signed(secret, first))
                assert retry.status_code == 200
                # without reply_url: <hub>/chats/<id>/messages
                second = delivery(chat_id="cht_nourl00001", new=1)
                assert (await http.post(url, **signed(secret, second))).status_code == 200
                await fake.wait_for(2)
                await anyio.sleep(0.2)
    assert fake.posts == [
        ("/chats/cht_replyurl01/messages", f"Bearer {token}", {"content": "pong: how are you?"}),
        ("/chats/cht_nourl00001/messages", f"Bearer {token}", {"content": "pong: hello"}),
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_pingpong_command() -> None:
    secret, port = new_webhook_secret(), _free_port()
    process = subprocess.Popen(
        [AGENTHUB, "pingpong", "--port", str(port), "--secret", secret],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in first_line
        url = f"http://127.0.0.1:{port}/"
        async with httpx2.AsyncClient() as http:
            response = await _post_once_up(http, url, signed(secret, delivery(new=1)))
            assert response.status_code == 200
            assert response.json() == {"reply": "pong: hello"}
            bad = await http.post(url, **signed(new_webhook_secret(), delivery()))
            assert bad.status_code == 401
    finally:
        process.terminate()
        process.wait(10)


async def _post_once_up(http: httpx2.AsyncClient, url: str, request: Any) -> httpx2.Response:
    """POST as soon as the freshly started command listens."""
    with anyio.fail_after(15):
        while True:
            try:
                return await http.post(url, **request)
            except httpx2.ConnectError:
                await anyio.sleep(0.05)


async def test_the_pingpong_command_takes_its_secrets_from_the_environment() -> None:
    """`AGENTHUB_PINGPONG_SECRET`, `_TOKEN` and `_HUB` instead of flags, so that no secret
    shows on the command line (`ps` shows it to every user of the machine)."""
    secret, token, port = new_webhook_secret(), "ah_agent-token-from-env", _free_port()
    fake = FakeHub()
    with serve_in_thread(fake.app) as hub_url:
        env = {
            **os.environ,
            "AGENTHUB_PINGPONG_SECRET": secret,
            "AGENTHUB_PINGPONG_TOKEN": token,
            "AGENTHUB_PINGPONG_HUB": hub_url,
        }
        argv = [AGENTHUB, "pingpong", "--port", str(port)]
        process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            assert process.stdout is not None
            assert "replies through the API" in process.stdout.readline()
            async with httpx2.AsyncClient() as http:
                payload = delivery(chat_id="cht_envvars001", new=1)  # no reply_url: uses the hub
                response = await _post_once_up(
                    http, f"http://127.0.0.1:{port}/", signed(secret, payload)
                )
            assert response.status_code == 200 and response.json() == {}
            await fake.wait_for(1)
        finally:
            process.terminate()
            process.wait(10)
    assert fake.posts == [
        ("/chats/cht_envvars001/messages", f"Bearer {token}", {"content": "pong: hello"})
    ]


def test_pingpong_refuses_a_malformed_secret() -> None:
    result = subprocess.run(
        [AGENTHUB, "pingpong", "--secret", "not-a-whsec!"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "whsec_" in result.stdout + result.stderr


async def test_send_test_signs_an_api_inbound_message() -> None:
    secret = new_webhook_secret()
    received: list[Any] = []

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        received.append((request.url.path, Webhook(secret).verify(body, dict(request.headers))))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/webhooks/api/{channel}", receive, methods=["POST"])])
    with serve_in_thread(app) as url:
        result = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [
                    AGENTHUB,
                    "send-test",
                    "--hub",
                    url,
                    "--channel",
                    "chn_test000001",
                    "--secret",
                    secret,
                    "--contact",
                    "alice",
                    "--name",
                    "Alice",
                    "--text",
                    "hi there",
                    "--message-id",
                    "web-42",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
        )
    assert result.returncode == 0, result.stderr
    assert "200" in result.stdout
    assert received == [
        (
            "/webhooks/api/chn_test000001",
            {
                "contact_id": "alice",
                "message_id": "web-42",
                "content": "hi there",
                "contact_name": "Alice",
            },
        )
    ]


@pytest.mark.database_independent
async def test_full_loop_hub_to_pingpong_and_back(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    """A signed inbound `api` message → the hub delivers it → pong → an AGENT message."""
    sock = bound_socket()
    agent = await client.post(
        "/auth/agents",
        headers=admin.headers,
        json={"name": "pingpong", "webhook_url": url_of(sock), "buffer_time_seconds": 0},
    )
    assert agent.status_code == 201, agent.text
    channel = await client.post(
        "/channels", headers=admin.headers, json={"name": "web chat", "platform": "api"}
    )
    assert channel.status_code == 201, channel.text
    channel_id, channel_secret = channel.json()["id"], channel.json()["credentials"]["secret"]

    with serve_in_thread(create_pingpong_app(agent.json()["webhook_secret"]), sock):
        inbound = {
            "contact_id": "alice",
            "contact_name": "Alice",
            "message_id": "web-1",
            "content": "ping 1",
        }
        messages = await post_api_message_and_wait_for_the_agent(
            client, admin, channel_id, channel_secret, inbound
        )
        assert [(m["sender_type"], m["content"]) for m in reversed(messages)] == [
            ("CONTACT", "ping 1"),
            ("AGENT", "pong: ping 1"),
        ]
        agent_message = messages[0]
        assert agent_message["sender_id"] == agent.json()["id"]

        # The `buttons` trick: an inline reply object with two buttons, stored as such; the
        # contact's tap comes back (on an `api` channel, as the client reports it) and is ponged.
        say = conversation(client, admin, channel_id, channel_secret)
        question = (await say("buttons", 2))[-1]
        tap = {"reply_to": {"id": "pong", "message_id": question["id"]}}
        answer = (await say("Pong", 3, meta_data=tap))[-1]
    assert question["content"] == "Ping or pong?"
    assert question["meta_data"]["buttons"] == [
        {"id": "ping", "title": "Ping"},
        {"id": "pong", "title": "Pong"},
    ]
    assert answer["content"] == "pong: Pong"


def conversation(
    client: httpx2.AsyncClient, admin: Caller, channel_id: str, channel_secret: str
) -> Any:
    """`say(text, count)`: alice writes `text`; her chat's AGENT messages, oldest first, once
    there are `count` of them."""

    async def say(text: str, count: int, **fields: Any) -> list[dict[str, Any]]:
        inbound = {
            "contact_id": "alice",
            "message_id": f"web-{uuid.uuid4().hex}",
            "content": text,
            **fields,
        }
        messages = await post_api_message_and_wait_for_the_agent(
            client, admin, channel_id, channel_secret, inbound
        )
        with anyio.fail_after(15):
            while len([m for m in messages if m["sender_type"] == "AGENT"]) < count:
                await anyio.sleep(0.05)
                chat_id = messages[0]["chat_id"]
                page = await client.get(f"/chats/{chat_id}/messages", headers=admin.headers)
                messages = page.json()["messages"]
        return [m for m in reversed(messages) if m["sender_type"] == "AGENT"]

    return say


# --- `agenthub pingpong --a2a` -------------------------------------------------------------


async def test_the_pingpong_a2a_command_serves_a_card_and_pongs_over_json_rpc() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [AGENTHUB, "pingpong", "--a2a", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    rpc = {
        "jsonrpc": "2.0",
        "id": "1",
        "method": "SendMessage",
        "params": {
            "message": {
                "messageId": "dlv_test000001",
                "contextId": "cht_test000001",
                "role": "ROLE_USER",
                "parts": [{"text": "hello"}],
            }
        },
    }
    try:
        assert process.stdout is not None
        assert f"A2A agent listening on {url}" in process.stdout.readline()
        async with httpx2.AsyncClient() as http:
            with anyio.fail_after(15):
                while True:
                    try:
                        card = await http.get(url + ".well-known/agent-card.json")
                        break
                    except httpx2.ConnectError:
                        await anyio.sleep(0.05)
            assert card.status_code == 200
            assert card.json()["capabilities"] == {"streaming": True}
            assert card.json()["supportedInterfaces"][0]["url"] == url
            answer = await http.post(url, json=rpc, headers={"A2A-Version": "1.0"})
        task = answer.json()["result"]["task"]
        assert task["status"]["state"] == "TASK_STATE_COMPLETED"
        assert task["artifacts"][0]["parts"] == [{"text": "pong: hello"}]
    finally:
        process.terminate()
        process.wait(10)


def test_pingpong_without_a2a_still_needs_its_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AGENTHUB_PINGPONG_SECRET"}
    result = subprocess.run(
        [AGENTHUB, "pingpong"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode != 0
    assert "--secret" in result.stdout + result.stderr


@pytest.mark.database_independent
async def test_full_loop_hub_to_pingpong_over_a2a(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    """The hub streams from the A2A pingpong; `ask` leaves a task waiting for input, which the
    contact's next message completes; `buttons` come back as buttons."""
    from agenthub.pingpong_a2a import create_pingpong_a2a_app

    sock = bound_socket()
    url = url_of(sock)
    agent = await client.post(
        "/auth/agents",
        headers=admin.headers,
        json={
            "name": "pingpong",
            "transport": "a2a",
            "a2a": {"url": url},
            "buffer_time_seconds": 0,
        },
    )
    assert agent.status_code == 201, agent.text
    channel = await client.post(
        "/channels", headers=admin.headers, json={"name": "web chat", "platform": "api"}
    )
    assert channel.status_code == 201, channel.text
    channel_id, channel_secret = channel.json()["id"], channel.json()["credentials"]["secret"]

    say = conversation(client, admin, channel_id, channel_secret)
    with serve_in_thread(create_pingpong_a2a_app(url), sock):
        assert [m["content"] for m in await say("ping 1", 1)] == ["pong: ping 1"]
        assert [m["content"] for m in await say("ask", 2)][-1] == "What is your name?"
        assert [m["content"] for m in await say("Ana", 3)][-1] == "pong: nice to meet you, Ana"
        last = (await say("buttons", 4))[-1]
    assert last["content"] == "Ping or pong?"
    assert [b["title"] for b in last["meta_data"]["buttons"]] == ["Ping", "Pong"]
