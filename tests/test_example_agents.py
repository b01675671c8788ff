"""The example agents of docs/agents.md, each run as a real process against a real hub.

`examples/agent.py` (Python, `standardwebhooks`) and `examples/agent.mjs` (Node, `node:crypto`)
are started as subprocesses with the agent's secret. The hub (the `client` app, on SQLite and
PostgreSQL) delivers a signed inbound `api` message to them, and their inline reply must come
back as an AGENT message. Then each is sent forged, tampered and stale requests directly (401),
a request signed during a secret rotation (`v1,<old> v1,<new>`), and a retried delivery.

The Node test skips when `node` is not on PATH, unless `AGENTHUB_TEST_NODE=required`.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agenthub.security import new_webhook_secret
from tests.conftest import Caller
from tests.fake_platform import standard_webhook_headers
from tests.platform_helpers import post_api_message_and_wait_for_the_agent

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(params=["python", "node"])
def example(request: pytest.FixtureRequest) -> list[str]:
    """The command that runs one example agent (first among the test's fixtures, so a missing
    `node` skips before a hub is started)."""
    if request.param == "python":
        return [sys.executable, str(EXAMPLES / "agent.py")]
    node = shutil.which("node")
    if node is None:
        message = "node is not on PATH"
        if os.environ.get("AGENTHUB_TEST_NODE", "").lower() == "required":
            pytest.fail(message + " and AGENTHUB_TEST_NODE=required", pytrace=False)
        pytest.skip(message + " (AGENTHUB_TEST_NODE=required makes this a failure)")
    return [node, str(EXAMPLES / "agent.mjs")]


@contextmanager
def running(command: list[str], secret: str) -> Iterator[str]:
    """Run an example on a free port (PORT=0) and yield the URL it prints."""
    process = subprocess.Popen(
        command,
        env={**os.environ, "AGENT_WEBHOOK_SECRET": secret, "HOST": "127.0.0.1", "PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10)
        line = process.stdout.readline() if ready else ""
        found = re.search(r"listening on (http://\S+)", line)
        assert found, f"the example did not start: {line!r}"
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(10)


def signed(secret: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Request kwargs for `payload` signed as the hub signs a delivery."""
    body = json.dumps(payload)
    headers = standard_webhook_headers(secret, body, **kwargs)
    return {"content": body.encode(), "headers": {"content-type": "application/json", **headers}}


async def test_the_example_agent_answers_a_contact_through_the_hub(
    example: list[str], client: httpx2.AsyncClient, admin: Caller
) -> None:
    agent = await client.post(
        "/auth/agents",
        headers=admin.headers,
        # The real URL is known once the example listens (on a free port): set just below.
        json={"name": "example", "webhook_url": "http://127.0.0.1:9/", "buffer_time_seconds": 0},
    )
    assert agent.status_code == 201, agent.text
    agent_id, secret = agent.json()["id"], agent.json()["webhook_secret"]
    channel = await client.post(
        "/channels", headers=admin.headers, json={"name": "web chat", "platform": "api"}
    )
    assert channel.status_code == 201, channel.text
    channel_id, channel_secret = channel.json()["id"], channel.json()["credentials"]["secret"]

    with running(example, secret) as url:
        patched = await client.patch(
            f"/auth/agents/{agent_id}", headers=admin.headers, json={"webhook_url": url}
        )
        assert patched.status_code == 200, patched.text
        inbound = {
            "contact_id": "alice",
            "message_id": "web-1",
            "content": "Do you ship to Lisbon?",
        }
        messages = await post_api_message_and_wait_for_the_agent(
            client, admin, channel_id, channel_secret, inbound, timeout=10
        )
        assert [(m["sender_type"], m["content"]) for m in reversed(messages)] == [
            ("CONTACT", "Do you ship to Lisbon?"),
            ("AGENT", "echo: Do you ship to Lisbon?"),
        ]
        assert messages[0]["sender_id"] == agent_id

        await _check_signatures(url, secret)


async def _check_signatures(url: str, secret: str) -> None:
    delivery = {
        "event": "chat.messages",
        "delivery_id": "dlv_example001",
        "messages": [{"id": "msg_example001", "content": "hi", "sender_type": "CONTACT"}],
        "new_message_ids": ["msg_example001"],
    }
    good = signed(secret, delivery, msg_id="dlv_example001")
    stale = signed(secret, delivery, at=datetime.now(UTC) - timedelta(minutes=10))
    old_secret = standard_webhook_headers(new_webhook_secret(), good["content"], "dlv_example001")
    async with httpx2.AsyncClient(timeout=10) as http:
        refused = [
            await http.post(url, **signed(new_webhook_secret(), delivery)),  # forged: wrong key
            await http.post(  # tampered: the body changed after signing
                url, content=good["content"].replace(b'"hi"', b'"HI"'), headers=good["headers"]
            ),
            await http.post(url, **stale),  # replayed: older than 5 minutes
            await http.post(url, json=delivery),  # unsigned
        ]
        for response in refused:
            assert response.status_code == 401, response.text
            assert "reply" not in response.text

        # During a secret rotation the hub sends two signatures; one of them is enough.
        both = f"{old_secret['webhook-signature']} {good['headers']['webhook-signature']}"
        rotated = await http.post(
            url, content=good["content"], headers={**good["headers"], "webhook-signature": both}
        )
        assert rotated.status_code == 200, rotated.text
        assert rotated.json() == {"reply": "echo: hi"}
        retried = await http.post(url, **good)  # the same delivery again: the same answer
        assert retried.json() == rotated.json()
