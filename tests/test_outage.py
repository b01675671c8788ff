"""The database going away mid-run, for real: a `agenthub serve` on PostgreSQL reached through
a loopback TCP proxy (`tests/tcp_proxy.py`) that the test cuts and restores; the machine's
server itself is never touched.

While it is cut, inbound webhooks answer 503 with `Retry-After` (never a 500, never a 2xx for a
message that was not stored), and the sender retries them as platforms do. Once it is back,
the hub reconnects by itself, with no restart, and every acknowledged message reaches the agent
exactly once. The figures this measures are in docs/operations.md.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import make_url

from agenthub.migrate import upgrade_database
from tests.conftest import _scratch_postgres_database
from tests.fake_platform import FakePlatform, Reply, standard_webhook_headers
from tests.procs import RedisServer, ServeProcess, WorkerProcess, hub_env, stop_all
from tests.services import require_postgres
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.multiprocess, pytest.mark.postgres]

MESSAGES = 20
CUT_AT = 6
CUT_SECONDS = 1.0


def send_until_stored(
    http: httpx2.Client, channel: dict[str, Any], n: int, log: list[tuple[float, int]]
) -> None:
    """One contact message, sent again after every refusal (as a platform retries)."""
    body = json.dumps(
        {"contact_id": f"c-{n % 4}", "message_id": f"m-{n}", "content": f"message {n}"}
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        headers = standard_webhook_headers(channel["credentials"]["secret"], body)
        answer = http.post(
            f"/webhooks/api/{channel['id']}",
            content=body,
            headers={"content-type": "application/json", **headers},
        )
        log.append((time.monotonic(), answer.status_code))
        if answer.status_code < 300:
            return
        assert answer.status_code == 503, answer.text  # never a 500
        assert answer.headers["retry-after"].isdigit()
        time.sleep(0.2)
    raise AssertionError(f"message {n} was never stored")


def test_a_database_cut_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    require_postgres()
    with (
        _scratch_postgres_database() as direct_url,
        FakePlatform(default=Reply(200, json={})) as agent,
    ):
        upgrade_database(direct_url)
        target = make_url(direct_url)
        with TcpProxy(target.port or 5432) as proxy:
            proxied = target.set(port=proxy.port).render_as_string(hide_password=False)
            env = hub_env(
                proxied,
                delivery_lease_seconds=1,
                job_sweep_seconds=0.2,
                delivery_backoff_base_seconds=0.2,
            )
            serve = ServeProcess("serve", env, tmp_path)
            serve.start()
            try:
                figures = run_through_a_cut(serve, proxy, agent)
            finally:
                serve.stop()
                print(serve.log.read_text()[-4000:])  # shown when the test fails
    print("outage figures:", figures)
    assert figures["acknowledged_during_cut"] == 0
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["refused_with_503"] > 0


def run_through_a_cut(serve: ServeProcess, proxy: TcpProxy, agent: FakePlatform) -> dict[str, Any]:
    with httpx2.Client(base_url=serve.url, timeout=10) as http:
        credentials = {"username": "admin", "password": "an outage test password"}
        assert http.post("/auth/signup", json=credentials).status_code == 201
        token = http.post("/auth/login", json=credentials).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        channel = http.post("/channels", json={"name": "site", "platform": "api"}, headers=auth)
        created = http.post(
            "/auth/agents",
            json={
                "name": "bot",
                "webhook_url": agent.url,
                "buffer_time_seconds": 0,
                "timeout_seconds": 2,
            },
            headers=auth,
        )
        assert channel.status_code == 201 and created.status_code == 201
        log: list[tuple[float, int]] = []
        window: dict[str, float] = {}

        def restore() -> None:
            proxy.restore()
            window["restored"] = time.monotonic()

        for n in range(MESSAGES):
            if n == CUT_AT:
                proxy.cut()
                window["cut"] = time.monotonic()
                threading.Timer(CUT_SECONDS, restore).start()
            send_until_stored(http, channel.json(), n, log)
        drained = wait_for_every_message(agent)
    cut_at, restored_at = window["cut"], window["restored"]
    counts = Counter(delivered_ids(agent))
    return {
        "acknowledged_during_cut": sum(
            1 for at, status in log if cut_at <= at < restored_at and status < 300
        ),
        "refused_with_503": sum(1 for _, status in log if status == 503),
        "lost": MESSAGES - len(counts),
        "duplicated": sum(c - 1 for c in counts.values()),
        "drain_seconds": round(drained - restored_at, 2),
    }


def delivered_ids(agent: FakePlatform) -> list[str]:
    """The contact messages the agent got, once per delivery (a delivery's retries carry the
    same `webhook-id` and are counted once)."""
    by_delivery: dict[str, list[str]] = {}
    for request in agent.requests():
        payload = json.loads(request.body)
        contents = {m["id"]: m["content"] for m in payload["messages"]}
        by_delivery[request.headers["webhook-id"]] = [
            contents[i] for i in payload["new_message_ids"]
        ]
    return [content for contents in by_delivery.values() for content in contents]


def wait_for_every_message(agent: FakePlatform, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(set(delivered_ids(agent))) >= MESSAGES:
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"{len(set(delivered_ids(agent)))} of {MESSAGES} delivered")


@pytest.mark.redis
def test_a_redis_cut_on_serve_processes_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Serve reaches Redis (events, the job queue) through the proxy; the worker directly (a
    worker surviving a Redis restart is tests/test_job_runners.py's). While Redis is cut, a
    stored message's wake-up cannot be queued: the workers' sweep finds it."""
    require_postgres()
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with (
            _scratch_postgres_database() as url,
            FakePlatform(default=Reply(200, json={})) as agent,
            TcpProxy(redis.port) as proxy,
        ):
            upgrade_database(url)
            settings = {"delivery_lease_seconds": 1, "job_sweep_seconds": 0.2}
            serve_env = hub_env(url, f"redis://127.0.0.1:{proxy.port}/0", **settings)
            worker_env = hub_env(url, redis.url(0), **settings)
            serve = ServeProcess("serve", serve_env, tmp_path)
            worker = WorkerProcess("worker", worker_env, tmp_path, concurrency=1)
            for process in (serve, worker):
                process.start()
            try:
                figures = run_through_a_cut(serve, proxy, agent)
            finally:
                stop_all([serve, worker])
                print(serve.log.read_text()[-4000:])
    finally:
        redis.stop()
    print("redis outage figures:", figures)
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    # The messages are the database's: serve keeps storing (and acknowledging) them.
    assert figures["refused_with_503"] == 0 and figures["acknowledged_during_cut"] > 0
