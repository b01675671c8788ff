"""No secret reaches the logs: real `agenthub serve` and `agenthub worker` processes (PostgreSQL,
a Redis of the test's own), both at DEBUG so that everything they can log is logged, go through
a signup and login, WebSocket connections with `?token=` (a user's, and an agent's, which is
refused), an inbound Telegram message, its delivery to a loopback agent, and the agent's reply
sent by the worker to a fake Bot API (`/bot<token>/sendMessage`). Then the whole output of both
processes is searched for every secret the run handled.

serve runs two processes: with `--workers N`, uvicorn's child processes configure their logging
themselves, and they are the ones that answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.agent_server import FakeAgent, reply
from tests.fake_platform import FakePlatform, Recorded, Reply, wait_until
from tests.procs import RedisServer, ServeProcess, WorkerProcess, hub_env, scratch_database

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.multiprocess,
]

PASSWORD = "pw-" + secrets.token_urlsafe(12)
SETUP_TOKEN = "setup-" + secrets.token_urlsafe(12)
# The shape of a real bot token: the bot's id, a colon, 35 characters.
BOT_TOKEN = f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(26)[:35]}"
TELEGRAM_SECRET = "tg-" + secrets.token_urlsafe(12)


@contextlib.contextmanager
def fake_bot_api() -> Iterator[FakePlatform]:
    """Answers `sendMessage` for BOT_TOKEN like the Bot API does."""
    fake = FakePlatform(default=Reply(404, json={"ok": False, "error_code": 404}))
    ids = itertools.count(1000)

    def send(request: Recorded, _: dict[str, str]) -> Reply:
        chat = {"id": request.json["chat_id"], "type": "private"}
        result = {"message_id": next(ids), "date": 1700000000, "chat": chat}
        return Reply(200, json={"ok": True, "result": result})

    fake.route("POST", rf"/bot{BOT_TOKEN}/sendMessage", send)
    with fake:
        yield fake


async def exercise(hub: str, agent: FakeAgent, bot_api: FakePlatform) -> dict[str, str]:
    """Everything that handles a secret; returns the secrets it handled, by name."""
    async with httpx2.AsyncClient(base_url=hub, timeout=10) as http:
        signup = await http.post(
            "/auth/signup",
            json={"username": "admin", "password": PASSWORD},
            headers={"X-Setup-Token": SETUP_TOKEN},
        )
        assert signup.status_code == 201, signup.text
        login = await http.post("/auth/login", json={"username": "admin", "password": PASSWORD})
        user_token = login.json()["access_token"]
        http.headers["Authorization"] = f"Bearer {user_token}"
        created = await http.post(
            "/auth/agents",
            json={"name": "echo", "webhook_url": agent.url, "buffer_time_seconds": 0},
        )
        assert created.status_code == 201, created.text
        agent_token, webhook_secret = created.json()["token"], created.json()["webhook_secret"]
        channel = await http.post("/channels", json=_telegram_channel(bot_api))
        assert channel.status_code == 201, channel.text
        ws = hub.replace("http", "ws", 1)
        await _websocket_ping(f"{ws}/ws?token={user_token}")
        await _websocket_refused(f"{ws}/ws?token={agent_token}")
        inbound = await http.post(
            f"/webhooks/telegram/{channel.json()['id']}",
            json=_telegram_update(),
            headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET},
        )
        assert inbound.status_code == 200, inbound.text
    # The delivery reaches the agent, whose inline reply the worker sends to the Bot API.
    await bot_api.wait_for(1, path=rf"/bot{BOT_TOKEN}/sendMessage", timeout=15)
    return {
        "password": PASSWORD,
        "setup token": SETUP_TOKEN,
        "user token": user_token,
        "agent token": agent_token,
        "agent webhook_secret": webhook_secret,
        "bot token": BOT_TOKEN,
        "bot token's secret part": BOT_TOKEN.split(":", 1)[1],
        "telegram secret_token": TELEGRAM_SECRET,
    }


def _telegram_channel(bot_api: FakePlatform) -> dict[str, Any]:
    return {
        "name": "bot",
        "platform": "telegram",
        "credentials": {"bot_token": BOT_TOKEN, "secret_token": TELEGRAM_SECRET},
        "config": {"api_base_url": bot_api.url},
    }


def _telegram_update() -> dict[str, Any]:
    contact = {"id": 4242, "first_name": "Ana", "type": "private"}
    message = {"message_id": 1, "from": contact, "chat": contact, "date": 1700000000, "text": "hi"}
    return {"update_id": 1, "message": message}


async def _websocket_ping(url: str) -> None:
    async with connect(url) as socket:
        await socket.send('{"type": "ping"}')
        assert '"pong"' in str(await asyncio.wait_for(socket.recv(), 10))


async def _websocket_refused(url: str) -> None:
    """An agent's token is no dashboard's: refused, and the refusal is logged too."""
    with contextlib.suppress(ConnectionClosed, InvalidStatus):
        async with connect(url) as socket:
            await asyncio.wait_for(socket.recv(), 10)


async def test_no_secret_reaches_the_output_of_serve_or_worker(tmp_path: Path) -> None:
    with scratch_database() as database_url, fake_bot_api() as bot_api:
        async with FakeAgent() as agent:
            agent.default = reply("pong")
            redis = RedisServer(tmp_path)
            env = hub_env(
                database_url,
                redis.url(),
                log_level="DEBUG",
                setup_token=SETUP_TOKEN,
                serve_workers=2,  # AGENTHUB_SERVE_WORKERS, i.e. `serve --workers 2`
                job_sweep_seconds=0.2,
                db_pool_size=2,
            )
            serve = ServeProcess("serve", env, tmp_path)
            worker = WorkerProcess("worker", env, tmp_path, concurrency=1)
            try:
                redis.start()
                for process in (serve, worker):
                    process.spawn()
                await asyncio.gather(*(asyncio.to_thread(p.wait_ready) for p in (serve, worker)))
                handled = await exercise(serve.url, agent, bot_api)
                await wait_until(lambda: _sent_line_logged(worker))
            finally:
                # Killed, not stopped: every line is written as it is logged (unbuffered), and
                # a graceful shutdown, which handles no secret, would cost seconds.
                for process in (serve, worker):
                    process.kill()
                redis.stop()
    output = {p.name: p.log_text() for p in (serve, worker, redis)}
    leaks = [
        f"the {name} in the {process}'s output"
        for name, value in handled.items()
        for process, text in output.items()
        if value in text
    ]
    assert not leaks, "\n".join(leaks) + "\n" + "\n".join(output.values())[-8000:]
    # The lines that carried secrets are there, redacted: the test did see them.
    assert '"WebSocket /ws?token=[redacted]" [accepted]' in output["serve"]
    assert "/bot[redacted]/sendMessage" in output["worker"]


def _sent_line_logged(worker: WorkerProcess) -> None:
    """At DEBUG the worker logs its Bot API request: the line the redaction must rewrite."""
    assert "sendMessage" in worker.log_text()


async def test_json_logs_are_one_object_per_line_with_request_ids_and_no_secret(
    tmp_path: Path,
) -> None:
    """`AGENTHUB_LOG_FORMAT=json`, one serve process on SQLite that also runs the jobs (so
    the Bot API call is logged by it), at DEBUG: the same exercise, plus requests that carry
    a secret in an `Authorization` header and a bot token in the path."""
    with fake_bot_api() as bot_api:
        async with FakeAgent() as agent:
            agent.default = reply("pong")
            env = hub_env(
                f"sqlite:///{tmp_path / 'hub.db'}",
                log_level="DEBUG",
                log_format="json",
                setup_token=SETUP_TOKEN,
                job_sweep_seconds=0.2,
            )
            serve = ServeProcess("serve", env, tmp_path)
            try:
                await serve.astart()
                handled = await exercise(serve.url, agent, bot_api)
                async with httpx2.AsyncClient(base_url=serve.url, timeout=10) as http:
                    given = await http.get(
                        "/auth/me",
                        headers={
                            "Authorization": f"Bearer {handled['user token']}",
                            "X-Request-ID": "req-from-the-proxy",
                        },
                    )
                    assert given.headers["x-request-id"] == "req-from-the-proxy"
                    made = await http.get(f"/bot{BOT_TOKEN}/getMe")
                    assert len(made.headers["x-request-id"]) == 32  # generated
                await wait_until(lambda: _logged(serve, "/getMe"))
            finally:
                serve.kill()
    output = serve.log_text()
    leaks = [name for name, value in handled.items() if value in output]
    assert not leaks, f"{leaks} in the output:\n{output[-8000:]}"
    lines = [line for line in output.splitlines() if line and not line.startswith("--- serve")]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert access and all(r["request_id"] for r in access)
    (proxied,) = [r for r in access if r["request_id"] == "req-from-the-proxy"]
    assert proxied["path"] == "/auth/me"
    sockets = [r for r in records if "WebSocket /ws?token=[redacted]" in r["message"]]
    assert sockets and all(r["request_id"] for r in sockets)
    assert any("/bot[redacted]/sendMessage" in r["message"] for r in records)
    assert any("/bot[redacted]/getMe" in r["message"] for r in access)


def _logged(serve: ServeProcess, text: str) -> None:
    assert text in serve.log_text()
