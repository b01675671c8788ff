"""The `openai` agent transport against a loopback OpenAI-compatible server (tests/agent_server.py
with `protocol="openai"`): the conversation as roles, the streamed reply, the handoff tool,
retries, partial replies, and a stream that breaks halfway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from agenthub.hub import Hub
from agenthub.models import Agent
from tests.agent_server import FakeAgent, eventually, reply, respond, stream
from tests.conftest import Caller
from tests.test_agent_delivery import make_world, replayed_events

pytestmark = pytest.mark.anyio


@pytest.fixture
async def llm() -> AsyncIterator[FakeAgent]:
    async with FakeAgent(protocol="openai") as server:
        yield server


async def test_a_delivery_is_one_streamed_chat_completion_with_the_history_as_roles(
    llm: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, llm)
    llm.script.append(reply("Hello, how can I help?"))
    await world.send("hi there")
    chat_id = await world.chat_id()
    deliveries = await eventually(lambda: world.settled(chat_id), message="never settled")
    assert [d["status"] for d in deliveries] == ["succeeded"], deliveries
    assert await world.agent_texts(chat_id) == ["Hello, how can I help?"]
