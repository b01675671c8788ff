"""`agent_working` / `agent_done`: the delivery engine tells dashboards when an agent is busy
with a chat, against a real loopback agent (tests/agent_server.py) and the hub's event bus."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.settings import Settings
from tests.agent_server import FakeAgent, reply, respond
from tests.conftest import Caller
from tests.test_agent_delivery import World, make_world

pytestmark = pytest.mark.anyio

Event = dict[str, Any]
ACTIVITY = ("agent_working", "agent_done")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "delivery_backoff_base_seconds": 0.05,
            "delivery_max_attempts": 2,
            "job_sweep_seconds": 0.05,
        }
    )


async def events_until_done(world: World, hub: Hub, content: str, attempts: int) -> list[Event]:
    """Send `content`, then every event the bus carries until the `attempts`-th `agent_done`."""
    got: list[Event] = []
    async with hub.events.subscribe() as stream, asyncio.timeout(5):
        await world.send(content)
        async for event in stream:
            got.append(event)
            if sum(e["type"] == "agent_done" for e in got) == attempts:
                return got
    raise AssertionError(f"the bus stopped: {got}")


def expected(world: World, chat_id: str, delivery_id: str, **extra: Any) -> Event:
    return {
        "channel_id": world.channel_id,
        "chat_id": chat_id,
        "agent_id": world.agent_id,
        "delivery_id": delivery_id,
        **extra,
    }


def without_ids(events: list[Event]) -> list[Event]:
    return [{k: v for k, v in e.items() if k != "event_id"} for e in events]


async def test_a_delivery_is_announced_as_working_then_delivered(
    client: httpx2.AsyncClient, admin: Caller, agent: FakeAgent, hub: Hub
) -> None:
    agent.default = reply("on it")
    world = await make_world(client, admin, agent)
    got = await events_until_done(world, hub, "hello", attempts=1)
    chat_id = await world.chat_id()
    [delivery] = await world.deliveries(chat_id)
    assert without_ids([e for e in got if e["type"] in ACTIVITY]) == [
        expected(world, chat_id, delivery["id"], type="agent_working"),
        expected(world, chat_id, delivery["id"], type="agent_done", outcome="delivered"),
    ]
    # The reply comes before the agent stops "working".
    kinds = [(e["type"], e.get("sender_type")) for e in got]
    assert kinds.index(("new_message", "AGENT")) < kinds.index(("agent_done", None))


async def test_failed_attempts_are_announced_as_retrying_then_failed(
    client: httpx2.AsyncClient, admin: Caller, agent: FakeAgent, hub: Hub
) -> None:
    agent.default = respond(500, {"error": "down"})
    world = await make_world(client, admin, agent)
    got = await events_until_done(world, hub, "hello", attempts=2)
    chat_id = await world.chat_id()
    [delivery] = await world.deliveries(chat_id)
    done = {"type": "agent_done"}
    assert without_ids([e for e in got if e["type"] in ACTIVITY]) == [
        expected(world, chat_id, delivery["id"], type="agent_working"),
        expected(world, chat_id, delivery["id"], **done, outcome="retrying"),
        expected(world, chat_id, delivery["id"], type="agent_working"),
        expected(world, chat_id, delivery["id"], **done, outcome="failed"),
    ]
    assert [e["type"] for e in got].index("agent_delivery_failed") < len(got) - 1
