"""A test delivery (`POST /auth/agents/{id}/test-delivery`, and the console's button): a
signed sample conversation POSTed to a real loopback agent, its answer reported and nothing
else done."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from agenthub.hub import Hub
from agenthub.models import AgentDelivery, Message, Role
from tests.conftest import Caller
from tests.console_helpers import cookie, form_of, hook, parse
from tests.fake_platform import FakePlatform, Reply

pytestmark = [pytest.mark.anyio, pytest.mark.database_independent]


@pytest.fixture
def agent_server() -> Iterator[FakePlatform]:
    with FakePlatform(default=Reply(200, json={"replies": ["Hi, test!"]})) as fake:
        yield fake


async def create_agent(client: httpx2.AsyncClient, admin: Caller, url: str) -> dict[str, Any]:
    created = await client.post(
        "/auth/agents",
        json={"name": "Probe bot", "webhook_url": url, "timeout_seconds": 2},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def test_the_agent_gets_a_signed_sample_and_its_answer_is_reported(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, agent_server: FakePlatform
) -> None:
    agent = await create_agent(client, admin, f"{agent_server.url}/hook")
    answer = await client.post(f"/auth/agents/{agent['id']}/test-delivery", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["ok"] is True
    assert result["status_code"] == 200
    assert result["error"] is None
    assert json.loads(result["response_excerpt"]) == {"replies": ["Hi, test!"]}
    [request] = agent_server.requests()
    assert request.path == "/hook"
    payload = Webhook(agent["webhook_secret"]).verify(request.body, request.headers)
    assert payload["test"] is True
    assert payload["reply_url"] is None
    assert payload["event"] == "chat.messages"
    assert payload["agent"] == {"id": agent["id"], "name": "Probe bot"}
    assert [m["sender_type"] for m in payload["messages"]] == ["CONTACT"]
    assert request.headers["webhook-id"] == result["webhook_id"]
    assert result["webhook_id"].startswith("tst_")
    # Only reported: the reply went nowhere and no delivery or message was stored.
    async with hub.db.session(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(AgentDelivery)) == 0
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_a_failing_or_unreachable_agent_is_reported_not_retried(
    client: httpx2.AsyncClient, admin: Caller, agent_server: FakePlatform, make_user: Any
) -> None:
    agent_server.script(Reply(500, body="x" * 1_000_000))
    agent = await create_agent(client, admin, agent_server.url)
    path = f"/auth/agents/{agent['id']}/test-delivery"
    failed = (await client.post(path, headers=admin.headers)).json()
    assert failed["ok"] is False
    assert failed["status_code"] == 500
    assert failed["error"] == "HTTP 500"
    assert failed["error_kind"] == "http_status"
    assert failed["response_excerpt"] == "x" * 4096  # the excerpt of the attempt log
    assert len(agent_server.requests()) == 1

    gone = await create_agent(client, admin, "http://127.0.0.1:9/hook")  # nothing listens
    refused = (
        await client.post(f"/auth/agents/{gone['id']}/test-delivery", headers=admin.headers)
    ).json()
    assert refused["ok"] is False and refused["status_code"] is None
    assert "Connect" in refused["error"] and refused["error_kind"] == "connect"

    member: Caller = await make_user(Role.MEMBER)
    assert (await client.post(path, headers=member.headers)).status_code == 403
    unknown = await client.post("/auth/agents/agt_0000000000/test-delivery", headers=admin.headers)
    assert unknown.status_code == 404


async def test_the_console_sends_a_test_delivery_and_shows_the_answer(
    client: httpx2.AsyncClient, admin: Caller, agent_server: FakePlatform
) -> None:
    agent = await create_agent(client, admin, agent_server.url)
    page = parse(await client.get("/console/admin/agents", headers=cookie(admin)))
    row = page.css_first(f'[data-agent-id="{agent["id"]}"]')
    assert row is not None
    form = hook(row, "agent-test").parent
    assert form is not None
    action = form.attributes["action"] or ""
    assert action == f"/console/admin/agents/{agent['id']}/test"
    shown = await client.post(action, headers=form_of(admin))
    assert shown.status_code == 200, shown.text
    result = hook(parse(shown), "agent-test-result")
    assert result.attributes["data-ok"] == "true"
    assert "HTTP 200" in result.text()
    assert "Hi, test!" in hook(result, "agent-test-answer").text()
    assert agent["webhook_secret"] not in shown.text
    assert (await client.post(action, headers=cookie(admin))).status_code == 403  # no Origin
