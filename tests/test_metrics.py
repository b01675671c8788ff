"""`GET /metrics`: the counters the hub's paths move, the gauges read from the database at
scrape time, the optional bearer token, and prometheus-client's multiprocess mode with the
processes of a real `agenthub serve --workers 2` adding up in one scrape.

In the test process prometheus-client runs in its single-process mode (no
`PROMETHEUS_MULTIPROC_DIR`): the counters are process-wide, so tests compare before and after.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import update

from agenthub import metrics
from agenthub.hub import Hub
from agenthub.models import Agent, utcnow
from agenthub.settings import Settings
from tests.agent_server import FakeAgent, eventually, reply
from tests.conftest import Caller, app_for
from tests.factories import make_agent, make_channel, make_chat, make_delivery
from tests.fake_platform import standard_webhook_headers
from tests.procs import RedisServer, ServeProcess, hub_env, stop_all

pytestmark = pytest.mark.anyio


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def api_channel(client: httpx2.AsyncClient, admin: Caller) -> tuple[str, str]:
    answer = await client.post(
        "/channels", json={"name": "web", "platform": "api"}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["credentials"]["secret"]


async def post_inbound(
    client: httpx2.AsyncClient, channel_id: str, secret: str, message_id: str, **extra: str
) -> int:
    body = json.dumps({"contact_id": "+15550001111", "message_id": message_id, "content": "hi"})
    headers = {"content-type": "application/json", **standard_webhook_headers(secret, body)}
    headers.update(extra)
    answer = await client.post(f"/webhooks/api/{channel_id}", content=body, headers=headers)
    return answer.status_code


async def test_the_hot_paths_count_and_one_scrape_shows_them(
    client: httpx2.AsyncClient, admin: Caller, agent: FakeAgent
) -> None:
    agent.default = reply("hello")
    channel_id, secret = await api_channel(client, admin)
    created = await client.post(
        "/auth/agents",
        json={"name": "bot", "webhook_url": agent.url, "buffer_time_seconds": 0},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    inbound = "agenthub_inbound_webhooks_total"
    before = {
        outcome: value(inbound, platform="api", outcome=outcome)
        for outcome in ("stored", "duplicate", "bad_signature", "not_found")
    }
    attempts = value("agenthub_agent_attempts_total", transport="webhook", outcome="success")
    latency = value("agenthub_contact_to_agent_seconds_count")

    assert await post_inbound(client, channel_id, secret, "m1") == 200
    assert await post_inbound(client, channel_id, secret, "m1") == 200  # the platform's retry
    assert await post_inbound(client, channel_id, "whsec_" + "A" * 32, "m2") == 403
    assert await post_inbound(client, "chn_missing", secret, "m3") == 404
    await eventually(lambda: agent.successes, message="no delivery")
    await eventually(
        lambda: value("agenthub_contact_to_agent_seconds_count") == latency + 1,
        message="the answer was not measured",
    )

    for outcome, count in before.items():
        assert value(inbound, platform="api", outcome=outcome) == count + 1, outcome
    assert value("agenthub_agent_attempts_total", transport="webhook", outcome="success") == (
        attempts + 1
    )
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples = scraped(answer.text)
    assert samples[(inbound, frozenset({("platform", "api"), ("outcome", "stored")}))] >= 1
    assert ("agenthub_due_backlog", frozenset({("kind", "delivery")})) in samples
    assert ("agenthub_oldest_due_seconds", frozenset({("kind", "send")})) in samples
    assert ("agenthub_websocket_clients", frozenset()) in samples
    # No label carries a chat, contact or message.
    labels = {label for name, key in samples if name.startswith("agenthub_") for label, _ in key}
    assert labels <= {"platform", "outcome", "transport", "kind", "agent", "le"}, labels


async def test_database_gauges_are_read_at_scrape_time(hub: Hub) -> None:
    channel = await make_channel(hub)
    bot, _ = await make_agent(hub)
    chat = await make_chat(hub, channel, agents=(bot,))
    # Due in an hour (so the job runner leaves it alone); read "two hours from now".
    due = utcnow() + timedelta(hours=1)
    await make_delivery(hub, chat.id, bot.id, "pending", next_attempt_at=due)
    async with hub.db.transaction() as session:
        await session.execute(
            update(Agent).where(Agent.id == bot.id).values(health_state="unavailable")
        )

    gauges = await metrics.read_database_gauges(hub, now=due + timedelta(hours=1))
    assert gauges.backlog == {"delivery": 1, "send": 0}
    assert gauges.oldest_seconds["delivery"] == pytest.approx(3600, abs=1)
    assert gauges.oldest_seconds["send"] == 0
    assert gauges.unavailable_agents == [bot.id]
    text = metrics.render(gauges).decode()
    assert f'agenthub_agent_unavailable{{agent="{bot.id}"}} 1.0' in text
    assert 'agenthub_due_backlog{kind="delivery"} 1.0' in text
    assert (await metrics.read_database_gauges(hub)).backlog["delivery"] == 0  # not due yet


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[httpx2.AsyncClient]:
    app = app_for(settings.model_copy(update={"metrics_token": SecretStr("scrape-me")}))
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx2.AsyncClient(transport=transport, base_url="http://hub.test") as http:
            yield http


@pytest.mark.database_independent
async def test_a_metrics_token_is_required_when_set(guarded: httpx2.AsyncClient) -> None:
    assert (await guarded.get("/metrics")).status_code == 401
    wrong = await guarded.get("/metrics", headers={"Authorization": "Bearer scrape-you"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    right = await guarded.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert right.status_code == 200
    assert "agenthub_inbound_webhooks_total" in right.text or "agenthub_due_backlog" in right.text


@pytest.mark.database_independent
async def test_the_websocket_gauge_follows_the_block(client: httpx2.AsyncClient) -> None:
    before = value("agenthub_websocket_clients")
    with metrics.websocket_client():
        assert value("agenthub_websocket_clients") == before + 1
    assert value("agenthub_websocket_clients") == before
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


# --- several processes --------------------------------------------------------------------


def _inbound_by_pid(directory: Path) -> dict[str, float]:
    """What each process's counter file holds for the stored inbound webhooks."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        counts[path.stem] = sum(
            v for key, v, *_ in values if "agenthub_inbound_webhooks_total" in key
        )
    return counts


@pytest.mark.multiprocess
@pytest.mark.redis
async def test_the_processes_of_serve_add_up_in_every_scrape(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by a previous run")
    redis = RedisServer(tmp_path)
    env = hub_env(
        f"sqlite:///{tmp_path / 'hub.db'}", redis.url(), serve_workers=2, metrics_dir=directory
    )
    serve = ServeProcess("serve", env, tmp_path)
    try:
        redis.start()
        await serve.astart()
        assert not (directory / "counter_999999.db").exists()  # wiped at start
        secret = "whsec_" + "B" * 32
        channel_id = await _channel_through_the_api(serve.url, secret)
        sent = 0
        key = (
            "agenthub_inbound_webhooks_total",
            frozenset({("platform", "api"), ("outcome", "stored")}),
        )
        # A new connection per request (`Connection: close`), so that the kernel hands them to
        # both processes; until both have counted.
        close = {"Connection": "close"}
        async with httpx2.AsyncClient(base_url=serve.url, headers=close, timeout=10) as http:
            while len([n for n in _inbound_by_pid(directory).values() if n]) < 2:
                assert sent < 200, _inbound_by_pid(directory)
                assert await post_inbound(http, channel_id, secret, uuid.uuid4().hex) == 200
                sent += 1
            for _ in range(4):  # whichever process answers
                assert scraped((await http.get("/metrics")).text)[key] == sent
    finally:
        stop_all([serve, redis])


async def _channel_through_the_api(url: str, secret: str) -> str:
    """An admin (first signup) and an api channel whose secret is `secret`."""
    async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
        user = {"username": "admin", "password": "metrics-password"}
        assert (await http.post("/auth/signup", json=user)).status_code == 201
        token = (await http.post("/auth/login", json=user)).json()["access_token"]
        channel = await http.post(
            "/channels",
            json={"name": "web", "platform": "api", "credentials": {"secret": secret}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert channel.status_code == 201, channel.text
        return str(channel.json()["id"])
