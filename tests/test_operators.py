"""The operator side of the API: who handles a chat, the inbox, takeover and handback, read
markers, notes and the timeline — through the public API, against a real loopback agent."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import Role
from agenthub.settings import Settings
from tests.agent_server import FakeAgent, Request, eventually, reply, respond
from tests.conftest import Caller
from tests.factories import make_agent, make_channel, make_chat
from tests.fake_platform import FakePlatform, Reply
from tests.test_agent_delivery import World, make_world
from tests.test_api_channel import _chat_with_callback

pytestmark = pytest.mark.anyio

# Long enough for the job runner (sweeping every 0.05 s) to have started any delivery it would.
QUIET = 0.4


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "delivery_backoff_base_seconds": 0.05,
            "delivery_max_attempts": 3,
            "job_sweep_seconds": 0.05,
        }
    )


@pytest.fixture
def receiver() -> Any:
    """An `api` channel's callback endpoint (where the hub pushes outbound messages)."""
    with FakePlatform(default=Reply(200, json={"received": True})) as fake:
        yield fake


@pytest.fixture
async def world(client: httpx2.AsyncClient, admin: Caller, agent: FakeAgent) -> World:
    return await make_world(client, admin, agent)


async def post(world: World, path: str, caller: Caller | None = None, **body: Any) -> Any:
    headers = (caller or world.admin).headers
    response = await world.client.post(path, json=body or None, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def get(world: World, path: str, caller: Caller | None = None, **params: Any) -> Any:
    headers = (caller or world.admin).headers
    response = await world.client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def delivered(agent: FakeAgent, count: int) -> list[Request]:
    async def done() -> list[Request] | None:
        return agent.successes if len(agent.successes) >= count else None

    return await eventually(done)


async def timeline_events(world: World, chat_id: str) -> list[dict[str, Any]]:
    items = (await get(world, f"/chats/{chat_id}/timeline", limit=200))["items"]
    return [item for item in reversed(items) if item["kind"] == "event"]


# --- takeover and handback ---------------------------------------------------------------------


async def test_takeover_pauses_the_agents_and_handback_resumes_them_with_history(
    world: World, agent: FakeAgent
) -> None:
    await world.send("hello")
    await delivered(agent, 1)
    chat_id = await world.chat_id()
    assert (await world.chat(chat_id))["handled_by"] == "agent"

    taken = await post(world, f"/chats/{chat_id}/takeover")
    assert taken["handled_by"] == "human" and taken["assigned_user_id"] == world.admin.id
    links = await get(world, f"/chats/{chat_id}/agents")
    assert [link["active"] for link in links] == [False]

    await world.send("are you a person?")
    await asyncio.sleep(QUIET)
    assert len(agent.requests) == 1, "no delivery starts while a human holds the chat"

    # Repeating is harmless: still taken over, no second event.
    again = await post(world, f"/chats/{chat_id}/takeover")
    assert again["handled_by"] == "human"

    back = await post(world, f"/chats/{chat_id}/handback")
    assert back["handled_by"] == "agent" and back["assigned_user_id"] is None
    await post(world, f"/chats/{chat_id}/handback")  # harmless too

    await world.send("thanks")
    (_, resumed) = await delivered(agent, 2)
    contact = await world.contact_ids(chat_id)
    assert resumed.new_message_ids == [contact[-1]], "only what came after the handback is new"
    assert contact[1] in resumed.contents, "what came meanwhile is in the history"

    events = [(e["event"], e["actor"]) for e in await timeline_events(world, chat_id)]
    assert events == [
        ("takeover", {"type": "user", "id": world.admin.id}),
        ("handback", {"type": "user", "id": world.admin.id}),
    ]


async def test_a_delivery_in_flight_at_takeover_finishes_and_its_reply_is_sent(
    world: World, agent: FakeAgent
) -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> Any:
        await release.wait()
        return reply("sorry for the wait")

    agent.handler = slow
    # Room for the takeover to be made while the attempt waits (0.5 s failed it once in CI).
    patched = await world.client.patch(
        f"/auth/agents/{world.agent_id}", json={"timeout_seconds": 10}, headers=world.admin.headers
    )
    assert patched.status_code == 200, patched.text
    await world.send("hello")
    await eventually(lambda: agent.requests or None)
    chat_id = await world.chat_id()
    await post(world, f"/chats/{chat_id}/takeover")
    release.set()

    async def answered() -> list[str] | None:
        return await world.agent_texts(chat_id) or None

    assert await eventually(answered) == ["sorry for the wait"]
    assert (await world.chat(chat_id))["handled_by"] == "human"


async def test_handback_to_named_agents_links_them(
    world: World, agent: FakeAgent, hub: Hub
) -> None:
    await world.send("hello")
    await delivered(agent, 1)
    chat_id = await world.chat_id()
    await post(world, f"/chats/{chat_id}/takeover")
    other, _ = await make_agent(hub, name="helper", webhook_url=agent.url)
    back = await post(world, f"/chats/{chat_id}/handback", agent_ids=[other.id])
    assert back["handled_by"] == "agent"
    links = {
        link["agent_id"]: link["active"] for link in await get(world, f"/chats/{chat_id}/agents")
    }
    assert links == {world.agent_id: False, other.id: True}
    unknown = await world.client.post(
        f"/chats/{chat_id}/handback", json={"agent_ids": ["agt_nope"]}, headers=world.admin.headers
    )
    assert unknown.status_code == 422, unknown.text


async def test_a_handoff_needs_a_human_with_its_reason_until_taken_over(
    world: World, agent: FakeAgent
) -> None:
    agent.default = respond(200, {"handoff": True, "handoff_reason": "asks for a refund"})
    await world.send("I want my money back")
    await delivered(agent, 1)
    chat_id = await world.chat_id()

    async def waiting() -> dict[str, Any] | None:
        chat = await world.chat(chat_id)
        return chat if chat["handled_by"] == "waiting" else None

    chat = await eventually(waiting)
    assert chat["needs_human"] is True and chat["needs_human_reason"] == "agent_handoff"
    assert chat["needs_human_since"] is not None
    inbox = await get(world, "/inbox", view="needs_human")
    assert [c["id"] for c in inbox["chats"]] == [chat_id]
    (handoff,) = await timeline_events(world, chat_id)
    assert handoff["event"] == "handoff" and handoff["detail"]["reason"] == "asks for a refund"
    assert handoff["actor"] == {"type": "agent", "id": world.agent_id}

    taken = await post(world, f"/chats/{chat_id}/takeover")
    assert taken["needs_human"] is False and taken["needs_human_reason"] is None
    assert taken["needs_human_since"] is None and taken["handled_by"] == "human"


async def test_a_failed_delivery_needs_a_human_and_shows_in_the_timeline(
    world: World, agent: FakeAgent
) -> None:
    agent.default = respond(400, {"error": "bad"})
    await world.send("hello")
    chat_id = await world.chat_id()

    async def failed() -> dict[str, Any] | None:
        chat = await world.chat(chat_id)
        return chat if chat["needs_human"] else None

    chat = await eventually(failed)
    assert chat["needs_human_reason"] == "delivery_failed" and chat["handled_by"] == "waiting"
    (event,) = await timeline_events(world, chat_id)
    assert event["event"] == "delivery_failed" and event["actor"]["type"] == "system"
    assert event["detail"]["agent_id"] == world.agent_id


async def test_takeover_out_of_reach_is_404_and_agents_get_403(
    client: httpx2.AsyncClient, hub: Hub, make_user: Any, admin: Caller
) -> None:
    channel = await make_channel(hub)
    bot, bot_token = await make_agent(hub)
    chat = await make_chat(hub, channel, messages=1, agents=(bot,))
    outsider: Caller = await make_user(Role.MEMBER)
    for action in ("takeover", "handback", "read", "notes"):
        body = {"content": "x"} if action == "notes" else None
        answer = await client.post(
            f"/chats/{chat.id}/{action}", json=body, headers=outsider.headers
        )
        assert answer.status_code == 404, (action, answer.text)
    agent_headers = {"Authorization": f"Bearer {bot_token}"}
    answer = await client.post(f"/chats/{chat.id}/takeover", headers=agent_headers)
    assert answer.status_code == 403
    assert (await client.get("/inbox", headers=agent_headers)).status_code == 403


# --- the inbox ---------------------------------------------------------------------------------


async def test_inbox_views_counts_scoping_and_cursor(
    client: httpx2.AsyncClient, hub: Hub, make_user: Any, admin: Caller
) -> None:
    sales, support = await make_channel(hub, name="sales"), await make_channel(hub, name="support")
    bot, _ = await make_agent(hub)
    member: Caller = await make_user(Role.MEMBER, channels=(support.id,))
    by_agent = await make_chat(
        hub, sales, external_id="+1001", name="Ana", messages=2, agents=(bot,)
    )
    idle = await make_chat(hub, sales, external_id="+1002", name="Bruno", messages=1)
    mine = await make_chat(hub, support, external_id="+1003", name="Carla", messages=3)
    quiet = await make_chat(hub, support, external_id="tg:77", name=None, messages=0)
    assign = await client.patch(
        f"/chats/{mine.id}", json={"assigned_user_id": member.id}, headers=admin.headers
    )
    assert assign.status_code == 200 and assign.json()["handled_by"] == "human"

    async def ids(caller: Caller, **params: Any) -> list[str]:
        response = await client.get("/inbox", params=params, headers=caller.headers)
        assert response.status_code == 200, response.text
        return [chat["id"] for chat in response.json()["chats"]]

    newest_first = [quiet.id, mine.id, idle.id, by_agent.id]  # a chat without messages: created
    assert await ids(admin) == newest_first
    assert await ids(admin, view="agent") == [by_agent.id]
    assert await ids(admin, view="unassigned") == [quiet.id, idle.id, by_agent.id]
    assert await ids(member, view="mine") == [mine.id]
    assert await ids(member) == [quiet.id, mine.id], "a member sees its channels only"
    assert await ids(admin, channel_id=sales.id) == [idle.id, by_agent.id]
    assert await ids(admin, q="BRU") == [idle.id]
    assert await ids(admin, q="tg:") == [quiet.id]

    page = (await client.get("/inbox", params={"limit": 1}, headers=admin.headers)).json()
    row = page["chats"][0]
    assert row["channel"] == {"id": support.id, "name": "support", "platform": "api"}
    assert row["unread_count"] == 0 and row["handled_by"] == "none"
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/inbox", params=params, headers=admin.headers)).json()
        seen += [chat["id"] for chat in page["chats"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == newest_first

    counts = (await client.get("/inbox/counts", headers=admin.headers)).json()
    assert counts == {
        "all": 4,
        "needs_human": 0,
        "mine": 0,
        "unassigned": 3,
        "agent": 1,
        "unread": 3,
    }
    counts = (await client.get("/inbox/counts", headers=member.headers)).json()
    assert counts == {
        "all": 2,
        "needs_human": 0,
        "mine": 1,
        "unassigned": 1,
        "agent": 0,
        "unread": 1,
    }
    other = await client.get(
        "/inbox/counts", params={"channel_id": sales.id}, headers=member.headers
    )
    assert other.status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"view": "everything"},
        {"cursor": "not-a-cursor"},
        {"cursor": "W10"},  # valid base64 of "[]"
        {"limit": 0},
        {"channel_id": "x" * 17},
    ],
)
async def test_inbox_bad_parameters_are_422(
    client: httpx2.AsyncClient, admin: Caller, params: dict[str, Any]
) -> None:
    response = await client.get("/inbox", params=params, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


# --- read markers ------------------------------------------------------------------------------


async def test_read_markers_count_each_users_unread_contact_messages(
    client: httpx2.AsyncClient, hub: Hub, make_user: Any, admin: Caller
) -> None:
    channel = await make_channel(hub)
    chat = await make_chat(hub, channel, messages=3)
    other_chat = await make_chat(hub, channel, external_id="+1999", messages=1)
    reader: Caller = await make_user(Role.MEMBER, channels=(channel.id,))
    messages = (await client.get(f"/chats/{chat.id}/messages", headers=admin.headers)).json()
    oldest_first = [m["id"] for m in reversed(messages["messages"])]

    async def unread(caller: Caller) -> int:
        return int(
            (await client.get(f"/chats/{chat.id}", headers=caller.headers)).json()["unread_count"]
        )

    assert await unread(reader) == 3, "a chat never opened has every contact message unread"
    marked = await client.post(
        f"/chats/{chat.id}/read", json={"message_id": oldest_first[1]}, headers=reader.headers
    )
    assert marked.json() == {"chat_id": chat.id, "unread_count": 1}
    # A marker only moves forward.
    await client.post(
        f"/chats/{chat.id}/read", json={"message_id": oldest_first[0]}, headers=reader.headers
    )
    assert await unread(reader) == 1
    assert (await client.post(f"/chats/{chat.id}/read", headers=reader.headers)).json()[
        "unread_count"
    ] == 0
    assert await unread(reader) == 0 and await unread(admin) == 3, "markers are per user"

    counts = (await client.get("/inbox/counts", headers=reader.headers)).json()
    assert counts["unread"] == 1  # other_chat
    await client.post(
        f"/chats/{chat.id}/messages", json={"content": "reply"}, headers=admin.headers
    )
    assert await unread(reader) == 0, "operators' and agents' messages are not unread"

    async with hub.db.transaction() as session:  # a new contact message
        from agenthub.chats.service import add_message
        from agenthub.models import Chat, SenderType

        loaded = await session.get(Chat, chat.id)
        assert loaded is not None
        await add_message(
            session, loaded, content="again", sender_type=SenderType.CONTACT, sender_id="+1"
        )
    assert await unread(reader) == 1
    counts = (await client.get("/inbox/counts", headers=reader.headers)).json()
    assert counts["unread"] == 2

    foreign = (await client.get(f"/chats/{other_chat.id}/messages", headers=admin.headers)).json()
    wrong = await client.post(
        f"/chats/{chat.id}/read",
        json={"message_id": foreign["messages"][0]["id"]},
        headers=reader.headers,
    )
    assert wrong.status_code == 422, wrong.text


# --- notes and the timeline --------------------------------------------------------------------


async def test_timeline_merges_messages_notes_and_events_and_pages_back(
    world: World, agent: FakeAgent
) -> None:
    await world.send("first")
    await delivered(agent, 1)
    chat_id = await world.chat_id()
    note = await post(world, f"/chats/{chat_id}/notes", content="VIP customer")
    assert note["id"].startswith("nte_") and note["user_id"] == world.admin.id
    await post(world, f"/chats/{chat_id}/takeover")
    await post(world, f"/chats/{chat_id}/messages", content="hi, a human here")

    everything = (await get(world, f"/chats/{chat_id}/timeline"))["items"]
    kinds = [item["kind"] for item in reversed(everything)]
    assert kinds == ["message", "note", "event", "message"]
    assert (
        everything[1]["event"] == "takeover" and everything[2]["note"]["content"] == "VIP customer"
    )

    pages, before = [], None
    while True:
        params = {"limit": 1, **({"before": before} if before else {})}
        page = await get(world, f"/chats/{chat_id}/timeline", **params)
        pages += [item["id"] for item in page["items"]]
        if not page["has_more"]:
            break
        before = page["items"][-1]["id"]
    assert pages == [item["id"] for item in everything]

    for bad in ({"before": "msg_doesnotexi"}, {"before": "garbage"}, {"limit": 500}):
        response = await world.client.get(
            f"/chats/{chat_id}/timeline", params=bad, headers=world.admin.headers
        )
        assert response.status_code == 422, (bad, response.text)


@pytest.mark.parametrize("content", ["", "   ", "x" * 8193])
async def test_a_note_with_empty_or_oversized_content_is_422(
    world: World, agent: FakeAgent, content: str
) -> None:
    await world.send("hello")
    chat_id = await world.chat_id()
    response = await world.client.post(
        f"/chats/{chat_id}/notes", json={"content": content}, headers=world.admin.headers
    )
    assert response.status_code == 422, response.text


async def test_a_note_never_reaches_the_messages_list_or_an_agent(
    world: World, agent: FakeAgent
) -> None:
    secret = "internal: customer owes 3 invoices"
    await world.send("hello")
    await delivered(agent, 1)
    chat_id = await world.chat_id()
    await post(world, f"/chats/{chat_id}/notes", content=secret)
    await world.send("still there?")
    (_, second) = await delivered(agent, 2)
    assert secret not in second.raw.decode(), "a note leaked into an agent payload"
    for headers in (world.admin.headers, {"Authorization": f"Bearer {world.agent_token}"}):
        listed = await world.client.get(f"/chats/{chat_id}/messages", headers=headers)
        assert listed.status_code == 200 and secret not in listed.text, "a note leaked"
    agent_view = await world.client.get(
        f"/chats/{chat_id}/timeline", headers={"Authorization": f"Bearer {world.agent_token}"}
    )
    assert agent_view.status_code == 403


async def test_an_attempt_failing_after_the_takeover_is_not_retried(
    world: World, agent: FakeAgent
) -> None:
    release = asyncio.Event()

    async def failing(request: Request) -> Any:
        await release.wait()
        return respond(503, {"error": "busy"})

    agent.handler = failing
    await world.send("hello")
    await eventually(lambda: agent.requests or None)
    chat_id = await world.chat_id()
    await post(world, f"/chats/{chat_id}/takeover")
    release.set()

    (delivery,) = await eventually(lambda: world.settled(chat_id))
    assert delivery["status"] == "cancelled" and delivery["attempt_count"] == 1
    await asyncio.sleep(QUIET)
    assert len(agent.requests) == 1, "a paused agent gets no retry"
    chat = await world.chat(chat_id)
    assert chat["needs_human"] is False and chat["handled_by"] == "human"


async def test_a_note_never_reaches_the_platform(
    client: httpx2.AsyncClient, admin: Caller, receiver: FakePlatform
) -> None:
    """An `api` channel pushes every outbound message to its callback URL: the note must not
    be among them, and the reply sent after it goes alone."""
    _, chat_id = await _chat_with_callback(client, admin, receiver)
    secret = "internal: refund approved by finance"
    noted = await client.post(
        f"/chats/{chat_id}/notes", json={"content": secret}, headers=admin.headers
    )
    assert noted.status_code == 201, noted.text
    sent = await client.post(
        f"/chats/{chat_id}/messages", json={"content": "All sorted!"}, headers=admin.headers
    )
    assert sent.status_code == 201, sent.text
    [request] = await receiver.wait_for(1)
    assert "All sorted!" in request.body.decode()
    await asyncio.sleep(QUIET)
    assert all(secret not in r.body.decode() for r in receiver.requests()), "a note leaked"
