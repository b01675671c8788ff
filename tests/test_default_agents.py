"""Which agents a channel's new chats get (`default_agent_ids`): the rule through real signed
`api` webhooks, the API that sets the list, and migration 0003 up and down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from alembic import command
from sqlalchemy import create_engine, event, inspect, select, text

from agenthub.channels import default_agents
from agenthub.hub import Hub
from agenthub.migrate import alembic_config, upgrade_database
from agenthub.models import Channel, Chat, ChatAgentLink
from agenthub.platforms.base import InboundMessage
from agenthub.webhooks.service import Arrival, store_contact_messages
from tests.conftest import Caller
from tests.factories import make_agent, make_channel
from tests.platform_helpers import post_api_message
from tests.procs import scratch_database

pytestmark = pytest.mark.anyio

Json = dict[str, Any]


@pytest.fixture
async def agents(hub: Hub) -> dict[str, str]:
    """name → id: the rule's cases in one world."""
    cases: dict[str, dict[str, Any]] = {
        "greeter": {},  # active, activate_for_new_conversation (the default)
        "sales": {"activate_for_new_conversation": False},
        "retired": {"active": False},
    }
    made = {name: (await make_agent(hub, name=name, **fields))[0] for name, fields in cases.items()}
    return {name: agent.id for name, agent in made.items()}


async def new_api_channel(client: httpx2.AsyncClient, admin: Caller, **fields: Any) -> Json:
    answer = await client.post(
        "/channels", json={"name": "web", "platform": "api", **fields}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    body: Json = answer.json()
    return {**body, "secret": body["credentials"]["secret"]}


async def first_contact(client: httpx2.AsyncClient, channel: Json, contact: str) -> None:
    inbound = {"contact_id": contact, "message_id": f"{contact}-1", "content": "hello"}
    await post_api_message(client, channel["id"], channel["secret"], inbound)


async def linked_agents(
    client: httpx2.AsyncClient, admin: Caller, channel: Json
) -> dict[str, set[str]]:
    """contact → the ids of the agents linked to its chat."""
    chats = await client.get(f"/channels/{channel['id']}/chats", headers=admin.headers)
    assert chats.status_code == 200, chats.text
    linked = {}
    for chat in chats.json()["chats"]:
        links = await client.get(f"/chats/{chat['id']}/agents", headers=admin.headers)
        linked[chat["external_id"]] = {link["agent_id"] for link in links.json()}
    return linked


# --- the rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listed", "linked"),
    [
        pytest.param(None, {"greeter"}, id="null-is-the-hub-wide-rule"),
        pytest.param(["sales", "greeter"], {"sales", "greeter"}, id="a-list-even-opted-out"),
        pytest.param([], set(), id="an-empty-list-links-none"),
        pytest.param(["retired", "sales"], {"sales"}, id="inactive-ones-are-skipped"),
    ],
)
async def test_a_first_contact_gets_the_channels_agents(
    client: httpx2.AsyncClient,
    admin: Caller,
    agents: dict[str, str],
    listed: list[str] | None,
    linked: set[str],
) -> None:
    ids = None if listed is None else [agents[name] for name in listed]
    channel = await new_api_channel(client, admin, default_agent_ids=ids)
    assert channel["default_agent_ids"] == ids
    await first_contact(client, channel, "visitor-1")
    assert await linked_agents(client, admin, channel) == {
        "visitor-1": {agents[name] for name in linked}
    }


async def test_one_burst_over_several_channels_follows_each_channels_rule(
    client: httpx2.AsyncClient, admin: Caller, agents: dict[str, str]
) -> None:
    sales_only = await new_api_channel(client, admin, default_agent_ids=[agents["sales"]])
    hub_wide = await new_api_channel(client, admin)
    nobody = await new_api_channel(client, admin, default_agent_ids=[])
    channels = [sales_only, hub_wide, nobody]
    # Concurrent first contacts: the intake stores them in shared batches.
    await asyncio.gather(
        *(first_contact(client, c, f"visitor-{n}") for c in channels for n in range(4))
    )
    expected = [{agents["sales"]}, {agents["greeter"]}, set()]
    for channel, agent_ids in zip(channels, expected, strict=True):
        assert await linked_agents(client, admin, channel) == {
            f"visitor-{n}": agent_ids for n in range(4)
        }


@contextmanager
def counting_statements(hub: Hub) -> Iterator[list[str]]:
    """The statements this task runs (not the job runner's sweep, which may share the engine)."""
    statements: list[str] = []
    task = asyncio.current_task()

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if asyncio.current_task() is task:
            statements.append(statement)

    engine = hub.db.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_linking_costs_the_same_statements_for_one_new_chat_or_many(hub: Hub) -> None:
    listed = await make_channel(hub, name="listed")
    unlisted = await make_channel(hub, name="unlisted")
    agent, _ = await make_agent(hub, activate_for_new_conversation=False)
    everywhere, _ = await make_agent(hub, name="everywhere")
    async with hub.db.transaction() as session:
        channel = await session.get(Channel, listed.id)
        assert channel is not None
        await default_agents.set_list(session, channel, [agent.id], ("default_agent_ids",))

    async def store(arrivals: list[Arrival]) -> int:
        with counting_statements(hub) as statements:
            async with hub.db.transaction() as session:
                await store_contact_messages(session, hub, arrivals)
        return len(statements)

    def arrival(channel_id: str, contact: str) -> Arrival:
        message = InboundMessage(external_id=f"{contact}-m", contact_id=contact, content="hi")
        return Arrival(channel_id, message, hub.clock())

    one = await store([arrival(listed.id, "solo")])
    many = await store([arrival(c.id, f"c{n}") for c in (listed, unlisted) for n in range(10)])
    assert many == one
    async with hub.db.transaction() as session:
        links = (
            await session.execute(select(Chat.channel_id, ChatAgentLink.agent_id).join(Chat))
        ).all()
    assert sorted(links) == sorted(
        [(listed.id, agent.id)] * 11 + [(unlisted.id, everywhere.id)] * 10
    )


# --- setting the list -----------------------------------------------------------------------------


async def test_patch_sets_keeps_and_clears_the_list(
    client: httpx2.AsyncClient, admin: Caller, agents: dict[str, str]
) -> None:
    channel = await new_api_channel(client, admin)
    assert channel["default_agent_ids"] is None
    url = f"/channels/{channel['id']}"
    greeter, sales = agents["greeter"], agents["sales"]

    patched = await client.patch(
        url, json={"default_agent_ids": [sales, greeter, sales]}, headers=admin.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["default_agent_ids"] == [sales, greeter]  # deduplicated, in order
    renamed = await client.patch(url, json={"name": "renamed"}, headers=admin.headers)
    assert renamed.json()["default_agent_ids"] == [sales, greeter]  # absent: unchanged
    listing = await client.get("/channels", headers=admin.headers)
    assert [c["default_agent_ids"] for c in listing.json()] == [[sales, greeter]]

    emptied = await client.patch(url, json={"default_agent_ids": []}, headers=admin.headers)
    assert emptied.json()["default_agent_ids"] == []
    cleared = await client.patch(url, json={"default_agent_ids": None}, headers=admin.headers)
    assert cleared.json()["default_agent_ids"] is None
    assert (await client.get(url, headers=admin.headers)).json()["default_agent_ids"] is None


async def test_unknown_agent_ids_are_422_naming_the_field_and_the_id(
    client: httpx2.AsyncClient, admin: Caller, agents: dict[str, str]
) -> None:
    channel = await new_api_channel(client, admin, default_agent_ids=[agents["sales"]])
    url = f"/channels/{channel['id']}"
    unknown = ["agt_missing000", "not an id\x00"]

    refused = await client.patch(
        url,
        json={"default_agent_ids": [agents["greeter"], *unknown], "name": "changed"},
        headers=admin.headers,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == [
        {
            "type": "unknown_agent",
            "loc": ["body", "default_agent_ids", index],
            "msg": f"No agent has the id {agent_id!r}",
        }
        for index, agent_id in enumerate(unknown, start=1)
    ]
    after = (await client.get(url, headers=admin.headers)).json()
    assert after["default_agent_ids"] == [agents["sales"]] and after["name"] == "web"

    created = await client.post(
        "/channels",
        json={"name": "x", "platform": "api", "default_agent_ids": ["agt_missing000"]},
        headers=admin.headers,
    )
    assert created.status_code == 422, created.text
    assert created.json()["detail"][0]["loc"] == ["body", "default_agent_ids", 0]
    assert len((await client.get("/channels", headers=admin.headers)).json()) == 1


async def test_a_deleted_agent_leaves_the_lists(
    client: httpx2.AsyncClient, admin: Caller, agents: dict[str, str]
) -> None:
    only_sales = await new_api_channel(client, admin, default_agent_ids=[agents["sales"]])
    both = await new_api_channel(
        client, admin, default_agent_ids=[agents["sales"], agents["greeter"]]
    )
    deleted = await client.delete(f"/auth/agents/{agents['sales']}", headers=admin.headers)
    assert deleted.status_code == 204, deleted.text

    shown = {
        c["id"]: c["default_agent_ids"]
        for c in (await client.get("/channels", headers=admin.headers)).json()
    }
    # An emptied list stays a list: that channel's new chats get no agent, not every agent.
    assert shown == {only_sales["id"]: [], both["id"]: [agents["greeter"]]}
    await first_contact(client, only_sales, "visitor-1")
    assert await linked_agents(client, admin, only_sales) == {"visitor-1": set()}


# --- migration 0003 -------------------------------------------------------------------------------


def _migrate_down_and_up(url: str) -> None:
    """At head with a listed channel: down to 0002 (the channel stays, its list goes), up
    again (the channel back on the hub-wide rule), and the models match the migrations."""
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO agents (id, name, webhook_url, webhook_secret_encrypted, "
                    "is_active, buffer_time_seconds, max_buffer_seconds, history_msg_count, "
                    "recent_msg_window_minutes, activate_for_new_conversation, timeout_seconds, "
                    "created_at) VALUES ('agt_0000000001', 'a', 'http://a.test/', 'x', true, 3, "
                    "30, 40, 1440, true, 10, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO channels (id, name, platform, credentials_encrypted, config, "
                    "is_active, created_at, default_agents_listed) VALUES ('chn_0000000001', "
                    "'c', 'api', 'x', '{}', true, CURRENT_TIMESTAMP, true)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO channel_default_agents (channel_id, agent_id, position) "
                    "VALUES ('chn_0000000001', 'agt_0000000001', 0)"
                )
            )
        command.downgrade(config, "0002")
        schema = inspect(engine)
        assert "channel_default_agents" not in schema.get_table_names()
        assert "default_agents_listed" not in {c["name"] for c in schema.get_columns("channels")}
        upgrade_database(url)
        with engine.connect() as conn:
            listed = conn.scalar(text("SELECT default_agents_listed FROM channels"))
        assert listed in (False, 0)
        command.check(config)  # no difference left between the models and the migrations
    finally:
        engine.dispose()


def test_migration_0003_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade_database(url)
    _migrate_down_and_up(url)


def test_migration_0003_on_postgresql() -> None:
    with scratch_database() as url:
        _migrate_down_and_up(url)
