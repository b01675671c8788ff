"""Listings cost a fixed number of SQL statements, whatever the page size (no N+1)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy import event, select

from agenthub.chats.service import add_message
from agenthub.hub import Hub
from agenthub.models import (
    Agent,
    AgentDelivery,
    Channel,
    Chat,
    ChatAgentLink,
    DeliveryAttempt,
    Role,
    SenderType,
    User,
    utcnow,
)
from tests.conftest import Caller
from tests.factories import make_agent, make_channel

pytestmark = pytest.mark.anyio

ROWS = 50
# Auth (token + owner) plus the listing itself; generous, but a per-row query would blow it.
MAX_STATEMENTS = 10


@contextmanager
def count_statements(hub: Hub) -> Iterator[list[str]]:
    """The statements run on behalf of the current task (the request, served in-task by the
    ASGI transport), leaving out the background job sweep that shares the engine."""
    statements: list[str] = []
    task = asyncio.current_task()

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if asyncio.current_task() is task:
            statements.append(statement)

    engines = [engine.sync_engine for engine in hub.db.engines]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
    assert statements, "no statement seen: is the request served in another task?"


async def _big_world(hub: Hub) -> dict[str, str]:
    """ROWS of everything: users, agents, channels, chats in one channel, messages in one chat,
    deliveries (with two attempts each) in one chat."""
    channel = await make_channel(hub, name="busy")
    now = utcnow()
    async with hub.db.transaction() as session:
        session.add_all(
            User(username=f"user{n:03}", password_hash="!unusable", role=Role.MEMBER)
            for n in range(ROWS)
        )
        session.add_all(
            Agent(name=f"agent{n}", webhook_url="http://127.0.0.1:9/", webhook_secret_encrypted="x")
            for n in range(ROWS)
        )
        session.add_all(
            Channel(
                name=f"channel{n}",
                platform="api",
                credentials_encrypted=hub.secrets.encrypt_json({}),
            )
            for n in range(ROWS)
        )
        chats = [
            Chat(
                channel_id=channel.id,
                external_id=f"+1555000{n:04}",
                name=f"contact {n}",
                message_seq=0,
                last_message_ts=now - timedelta(minutes=n),
            )
            for n in range(ROWS)
        ]
        session.add_all(chats)
        await session.flush()
        chat = chats[0]
        for n in range(ROWS + 1):
            await add_message(
                session,
                chat,
                content=f"m{n}",
                sender_type=SenderType.CONTACT,
                sender_id=chat.external_id,
                external_id=f"ext-{n}",
            )
        agent = Agent(
            name="deliveree", webhook_url="http://127.0.0.1:9/", webhook_secret_encrypted="x"
        )
        session.add(agent)
        await session.flush()
        deliveries = [
            AgentDelivery(
                chat_id=chat.id,
                agent_id=agent.id,
                status="failed",
                message_ids=[],
                created_at=now - timedelta(seconds=n),
            )
            for n in range(ROWS)
        ]
        session.add_all(deliveries)
        await session.flush()
        session.add_all(
            DeliveryAttempt(delivery_id=d.id, attempt_number=k, status_code=500, error="boom")
            for d in deliveries
            for k in (1, 2)
        )
    return {"channel_id": channel.id, "chat_id": chat.id}


LISTINGS = [
    ("/channels", None),
    ("/auth/users", None),
    ("/auth/agents", None),
    ("/channels/{channel_id}/chats", "chats"),
    ("/chats/{chat_id}/messages", "messages"),
    ("/chats/{chat_id}/deliveries", None),
    ("/inbox", "chats"),
    ("/chats/{chat_id}/timeline", "items"),
]


async def test_listings_run_the_same_queries_for_1_and_50_rows(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller
) -> None:
    ids = await _big_world(hub)
    # The first request also stamps the token's last use (once a minute): keep it out of the count.
    assert (await client.get("/auth/me", headers=admin.headers)).status_code == 200

    for template, key in LISTINGS:
        url = template.format(**ids)
        per_size = {}
        for limit in (1, ROWS):
            with count_statements(hub) as statements:
                response = await client.get(url, params={"limit": limit}, headers=admin.headers)
            assert response.status_code == 200, (url, response.text)
            body = response.json()
            rows = body[key] if key else body
            assert len(rows) == limit, (url, limit, len(rows))
            per_size[limit] = list(statements)
        assert len(per_size[1]) == len(per_size[ROWS]), (url, per_size)
        assert len(per_size[ROWS]) <= MAX_STATEMENTS, (url, per_size[ROWS])

    # Deliveries carry their attempts, still without a query per delivery.
    deliveries = await client.get(
        f"/chats/{ids['chat_id']}/deliveries", params={"limit": ROWS}, headers=admin.headers
    )
    assert all(len(d["attempts"]) == 2 for d in deliveries.json())
    assert [a["attempt_number"] for a in deliveries.json()[0]["attempts"]] == [1, 2]


async def test_member_and_agent_listings_are_also_flat(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user
) -> None:
    """Scoped callers add a subquery, never a query per row."""
    ids = await _big_world(hub)
    async with hub.db.transaction() as session:
        every_channel = tuple(await session.scalars(select(Channel.id)))
    member: Caller = await make_user(Role.MEMBER, channels=every_channel)
    agent, agent_token = await make_agent(hub)
    async with hub.db.transaction() as session:
        session.add(ChatAgentLink(chat_id=ids["chat_id"], agent_id=agent.id, active=True))
    agent_headers = {"Authorization": f"Bearer {agent_token}"}

    cases = [
        (member.headers, "/channels/{channel_id}/chats", "chats"),
        (member.headers, "/chats/{chat_id}/messages", "messages"),
        (member.headers, "/channels", None),
        (member.headers, "/inbox", "chats"),
        (member.headers, "/chats/{chat_id}/timeline", "items"),
        (agent_headers, "/chats/{chat_id}/messages", "messages"),
    ]
    for headers in (member.headers, agent_headers):
        assert (await client.get(f"/chats/{ids['chat_id']}", headers=headers)).status_code == 200
    for headers, template, key in cases:
        url = template.format(**ids)
        sizes = []
        for limit in (1, ROWS):
            with count_statements(hub) as statements:
                response = await client.get(url, params={"limit": limit}, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            assert len(body[key] if key else body) == limit
            sizes.append(len(statements))
        assert sizes[0] == sizes[1] <= MAX_STATEMENTS, (url, sizes)


async def _page_through(
    client: httpx2.AsyncClient, url: str, headers: dict[str, str], limit: int, **params: Any
) -> tuple[list[str], list[dict[str, Any]]]:
    ids: list[str] = []
    pages = []
    offset = 0
    while True:
        response = await client.get(
            url, params={"limit": limit, "offset": offset, **params}, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        ids += [chat["id"] for chat in page["chats"]]
        offset += limit
        if not page["has_more"]:
            return ids, pages
        assert len(pages) < 100


async def test_chat_pagination_total_count_and_has_more(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user
) -> None:
    channel = await make_channel(hub)
    other = await make_channel(hub, name="other")
    assignee: Caller = await make_user(Role.MEMBER, channels=(channel.id,))
    now = utcnow()
    async with hub.db.transaction() as session:
        chats = [
            Chat(
                channel_id=channel.id,
                external_id=f"+1555{n:04}",
                name=f"contact {n}",
                message_seq=0,
                last_message_ts=now - timedelta(minutes=n) if n < 5 else None,
                assigned_user_id=assignee.id if n % 3 == 0 else None,
            )
            for n in range(7)
        ]
        session.add_all(chats)
        # Chats of another channel never leak into the count.
        session.add(Chat(channel_id=other.id, external_id="+1999", message_seq=0))
    url = f"/channels/{channel.id}/chats"

    ids, pages = await _page_through(client, url, admin.headers, limit=3)
    assert [p["total_count"] for p in pages] == [7, 7, 7]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert [len(p["chats"]) for p in pages] == [3, 3, 1]
    assert len(ids) == len(set(ids)) == 7
    assert set(ids) == {chat.id for chat in chats}
    # Newest activity first; chats without any message come last.
    assert ids[:5] == [chat.id for chat in chats[:5]]
    assert set(ids[5:]) == {chats[5].id, chats[6].id}

    # Exactly filling the last page: has_more turns false on it, not one page later.
    ids, pages = await _page_through(client, url, admin.headers, limit=7)
    assert len(pages) == 1 and pages[0]["has_more"] is False and len(ids) == 7

    # An offset past the end: empty, but the total is still right.
    past = await client.get(url, params={"offset": 50}, headers=admin.headers)
    assert past.json() == {"chats": [], "total_count": 7, "has_more": False}

    # Filters count what they filter.
    assigned_ids, pages = await _page_through(client, url, admin.headers, limit=2, assigned="true")
    assert pages[0]["total_count"] == 3 and len(assigned_ids) == 3
    assert set(assigned_ids) == {chats[n].id for n in (0, 3, 6)}
    assert [p["has_more"] for p in pages] == [True, False]
    unassigned_ids, pages = await _page_through(
        client, url, admin.headers, limit=2, assigned="false"
    )
    assert pages[0]["total_count"] == 4 and set(unassigned_ids).isdisjoint(assigned_ids)
    by_user, pages = await _page_through(
        client, url, admin.headers, limit=10, assigned_user_id=assignee.id
    )
    assert set(by_user) == set(assigned_ids) and pages[0]["total_count"] == 3
    searched, pages = await _page_through(client, url, admin.headers, limit=1, q="CONTACT 1")
    assert pages[0]["total_count"] == 1 and searched == [chats[1].id]
