"""OpenTelemetry: off unless `OTEL_*` asks (nothing of the SDK imported), and on, spans for
requests, SQL, agent attempts and platform sends, with `traceparent` carried to the agent and
to the platform, and the trace id in JSON log lines. Spans go to the SDK's in-memory exporter.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agenthub import tracing
from agenthub.app import create_app
from agenthub.hub import Hub
from agenthub.logs import JsonFormatter
from agenthub.settings import Settings
from tests.agent_server import FakeAgent, eventually, reply
from tests.conftest import Caller
from tests.fake_platform import standard_webhook_headers

pytestmark = [pytest.mark.anyio, pytest.mark.database_independent]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    assert tracing.setup(spans)
    try:
        yield spans
    finally:
        tracing.shutdown()  # the rest of the suite runs untraced


@pytest.fixture
async def traced_client(
    settings: Settings, exporter: InMemorySpanExporter
) -> AsyncIterator[tuple[httpx2.AsyncClient, Hub]]:
    app = create_app(settings)  # a new app: instrumented when it is built
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with httpx2.AsyncClient(transport=transport, base_url="http://hub.test") as http:
            yield http, app.state.hub


def test_tracing_is_off_and_not_imported_without_otel_variables() -> None:
    code = (
        "import sys\n"
        "from agenthub.app import create_app\n"
        "from agenthub.settings import Settings\n"
        "create_app(Settings(database_url='sqlite://', secret_key='k', _env_file=None))\n"
        "from agenthub import tracing\n"
        "from opentelemetry import trace\n"
        "assert not tracing.enabled()\n"
        "assert type(trace.get_tracer_provider()).__name__ == 'ProxyTracerProvider'\n"
        # (redis 8 imports the SDK's metrics modules by itself when they are installed.)
        "ours = ('opentelemetry.sdk.trace', 'opentelemetry.instrumentation',"
        " 'opentelemetry.exporter')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_environment_switches_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*tracing.ENDPOINT_VARIABLES, "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.wanted()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.wanted()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.wanted()


async def test_agent_attempts_and_sends_are_spans_and_carry_traceparent(
    traced_client: tuple[httpx2.AsyncClient, Hub],
    admin: Caller,
    agent: FakeAgent,
    exporter: InMemorySpanExporter,
) -> None:
    client, _ = traced_client
    agent.default = reply("hello")
    async with FakeAgent() as callback:  # the api channel's callback_url: the platform send
        channel = await client.post(
            "/channels",
            json={"name": "web", "platform": "api", "config": {"callback_url": callback.url}},
            headers=admin.headers,
        )
        assert channel.status_code == 201, channel.text
        created = await client.post(
            "/auth/agents",
            json={"name": "bot", "webhook_url": agent.url, "buffer_time_seconds": 0},
            headers=admin.headers,
        )
        assert created.status_code == 201, created.text
        body = json.dumps({"contact_id": "c1", "message_id": "m1", "content": "hi"})
        secret = channel.json()["credentials"]["secret"]
        answer = await client.post(
            f"/webhooks/api/{channel.json()['id']}",
            content=body,
            headers={"content-type": "application/json", **standard_webhook_headers(secret, body)},
        )
        assert answer.status_code == 200
        await eventually(lambda: agent.successes and callback.requests, message="no reply sent")
        await eventually(lambda: _named(exporter, "api send"), message="no send span")

    (attempt,) = _named(exporter, "agent.webhook POST")
    assert attempt.kind == SpanKind.CLIENT
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["server.address"] == "127.0.0.1"
    _assert_parent(agent.requests[0].headers["traceparent"], attempt)
    (send,) = _named(exporter, "api send")
    assert send.attributes["agenthub.platform"] == "api"
    _assert_parent(callback.requests[0].headers["traceparent"], send)
    server = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert "POST /webhooks/{platform}/{channel_id}" in [s.name for s in server]
    assert any(s.attributes.get("db.system") for s in exporter.get_finished_spans())


async def test_untraced_agent_requests_carry_no_traceparent(
    client: httpx2.AsyncClient, admin: Caller, agent: FakeAgent
) -> None:
    agent.default = reply("hello")
    channel = await client.post(
        "/channels", json={"name": "web", "platform": "api"}, headers=admin.headers
    )
    await client.post(
        "/auth/agents",
        json={"name": "bot", "webhook_url": agent.url, "buffer_time_seconds": 0},
        headers=admin.headers,
    )
    body = json.dumps({"contact_id": "c1", "message_id": "m1", "content": "hi"})
    secret = channel.json()["credentials"]["secret"]
    await client.post(
        f"/webhooks/api/{channel.json()['id']}",
        content=body,
        headers={"content-type": "application/json", **standard_webhook_headers(secret, body)},
    )
    await eventually(lambda: agent.successes, message="no delivery")
    assert "traceparent" not in agent.requests[0].headers


def test_json_lines_carry_the_trace_id(exporter: InMemorySpanExporter) -> None:
    record = logging.LogRecord("agenthub.test", logging.INFO, __file__, 1, "inside", (), None)
    with tracing.span("work") as span:
        line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in json.loads(JsonFormatter().format(record))  # outside any span


def _named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def _assert_parent(traceparent: str, span: Any) -> None:
    _, trace_id, parent_id, _ = traceparent.split("-")
    assert trace_id == format(span.context.trace_id, "032x")
    assert parent_id == format(span.context.span_id, "016x")
