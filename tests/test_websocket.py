"""`GET /ws`: dashboards' live events over a real uvicorn server and a real WebSocket client
. The app runs its lifespan (the `app_and_hub` fixture); uvicorn serves it on
127.0.0.1 in the test's event loop, and REST calls go over real HTTP to the same server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agenthub import cli
from agenthub.delivery.events import agent_health
from agenthub.hub import Hub
from agenthub.models import Role, utcnow
from agenthub.realtime import router as realtime_router
from tests.conftest import Caller, uvicorn_server
from tests.factories import make_agent
from tests.fake_platform import FakePlatform, Reply, standard_webhook_headers

# The event bus and sockets: no SQL of their own beyond what the API tests cover on both
# databases.
pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs, pytest.mark.database_independent]

Event = dict[str, Any]
FRAME_TIMEOUT = 5.0


class Dashboard:
    """A connected WebSocket client that keeps every frame it received."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Event] = []
        self._unread: list[Event] = []

    async def _receive(self, timeout: float) -> Event:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: Event = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def next(
        self, predicate: Callable[[Event], bool] = lambda e: True, timeout: float = FRAME_TIMEOUT
    ) -> Event:
        """The next frame matching `predicate` (earlier non-matching ones stay unread)."""
        for index, frame in enumerate(self._unread):
            if predicate(frame):
                del self._unread[index]
                return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no matching frame in {timeout}s; got {self.frames}")
            try:
                frame = await self._receive(remaining)
            except TimeoutError:
                continue
            if predicate(frame):
                return frame
            self._unread.append(frame)

    async def new_message(self, content: str | None = None, **match: Any) -> Event:
        def wanted(event: Event) -> bool:
            if event.get("type") != "new_message":
                return False
            if content is not None and event["message"]["content"] != content:
                return False
            return all(event.get(k) == v for k, v in match.items())

        return await self.next(wanted)

    async def of_type(self, kind: str, **match: Any) -> Event:
        return await self.next(
            lambda e: e.get("type") == kind and all(e.get(k) == v for k, v in match.items())
        )

    async def quiet_for(self, seconds: float) -> list[Event]:
        """Every frame that arrives within `seconds` (plus any still unread)."""
        got, self._unread = self._unread, []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                got.append(await self._receive(remaining))
            except TimeoutError:
                break
        return got

    async def send(self, command: Any) -> None:
        await self.ws.send(command if isinstance(command, str) else json.dumps(command))


@contextlib.asynccontextmanager
async def dashboard(live: str, token: str, **params: Any) -> AsyncIterator[Dashboard]:
    query = "&".join(f"{k}={v}" for k, v in {"token": token, **params}.items())
    async with connect(f"ws://{live}/ws?{query}", open_timeout=5, close_timeout=2) as ws:
        yield Dashboard(ws)


async def create_api_channel(
    http: httpx2.AsyncClient, admin: Caller, name: str = "web", **fields: Any
) -> dict[str, Any]:
    answer = await http.post(
        "/channels", json={"name": name, "platform": "api", **fields}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return {**body, "secret": body["credentials"]["secret"]}


_message_ids = iter(range(1, 1_000_000))


async def contact_says(
    http: httpx2.AsyncClient, channel: dict[str, Any], content: str, contact: str = "visitor-1"
) -> None:
    """An inbound message on an `api` channel, signed like the client app signs it."""
    body = json.dumps(
        {
            "contact_id": contact,
            "contact_name": contact.title(),
            "message_id": f"m-{next(_message_ids)}",
            "content": content,
        }
    ).encode()
    answer = await http.post(
        f"/webhooks/api/{channel['id']}",
        content=body,
        headers={
            "content-type": "application/json",
            **standard_webhook_headers(channel["secret"], body),
        },
    )
    assert answer.status_code == 200, answer.text


async def only_chat(http: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]) -> Any:
    answer = await http.get(f"/channels/{channel['id']}/chats", headers=admin.headers)
    [chat] = answer.json()["chats"]
    return chat


def assert_increasing(events: list[Event]) -> None:
    ids = [e["event_id"] for e in events if "event_id" in e]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids


# --- handshake --------------------------------------------------------------------------------


async def expect_refused(live: str, query: str) -> None:
    async with connect(f"ws://{live}/ws{query}", open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)
    assert closed.value.rcvd is not None, "closed without a close frame"
    assert closed.value.rcvd.code == 1008, closed.value


async def test_invalid_tokens_are_refused_with_1008(
    live: str, http: httpx2.AsyncClient, make_user: Any, admin: Caller
) -> None:
    revoked: Caller = await make_user(Role.MEMBER)
    assert (await http.post("/auth/logout", headers=revoked.headers)).status_code == 204
    assert (await http.get("/auth/me", headers=revoked.headers)).status_code == 401
    deactivated: Caller = await make_user(Role.MEMBER, active=False)

    for query in (
        "",
        "?token=",
        "?token=not-a-token",
        f"?token={admin.token}x",
        f"?token={revoked.token}",
        f"?token={deactivated.token}",
    ):
        await expect_refused(live, query)

    # A valid token still gets in.
    async with dashboard(live, admin.token) as board:
        await board.send({"type": "ping"})
        assert await board.of_type("pong") == {"type": "pong"}


# --- events -----------------------------------------------------------------------------------


async def test_admin_receives_new_message_events(
    live: str, http: httpx2.AsyncClient, admin: Caller
) -> None:
    channel = await create_api_channel(http, admin)
    long_text = "Olá! " + "x" * 150
    async with dashboard(live, admin.token) as board:
        await contact_says(http, channel, long_text)
        event = await board.new_message(long_text)
        created = await board.of_type("chat_updated")

        chat = await only_chat(http, admin, channel)
        answer = await http.get(f"/chats/{chat['id']}/messages", headers=admin.headers)
        [stored] = answer.json()["messages"]
        assert isinstance(event["event_id"], int)
        assert event["channel_id"] == channel["id"]
        assert event["chat_id"] == chat["id"]
        assert event["message_id"] == stored["id"]
        assert event["sender_type"] == "CONTACT"
        assert event["preview"] == long_text[:100]
        assert event["timestamp"] == stored["timestamp"]
        assert event["message"] == stored
        assert created["chat_id"] == chat["id"] and created["channel_id"] == channel["id"]
        assert created["chat"]["external_id"] == "visitor-1"

        # The hub's own messages are announced too.
        answer = await http.post(
            f"/chats/{chat['id']}/messages", json={"content": "Hi!"}, headers=admin.headers
        )
        assert answer.status_code == 201
        mine = await board.new_message("Hi!")
        assert mine["sender_type"] == "USER"
        assert mine["message_id"] == answer.json()["id"]
        assert mine["preview"] == "Hi!"
        assert mine["event_id"] > event["event_id"]
        assert_increasing(board.frames)


async def test_member_sees_only_its_channels(
    live: str, http: httpx2.AsyncClient, admin: Caller, make_user: Any
) -> None:
    granted = await create_api_channel(http, admin, "granted")
    other = await create_api_channel(http, admin, "other")
    member: Caller = await make_user(Role.MEMBER, channels=(granted["id"],))
    outsider: Caller = await make_user(Role.MEMBER)

    async with (
        dashboard(live, admin.token) as admin_board,
        dashboard(live, member.token) as member_board,
        dashboard(live, outsider.token) as outsider_board,
    ):
        # Asking for more does not widen what a member may see.
        await member_board.send({"type": "subscribe", "channel_ids": [granted["id"], other["id"]]})
        await member_board.of_type("subscribed")

        await contact_says(http, granted, "a1")
        await contact_says(http, other, "b1")
        await contact_says(http, granted, "a2")

        for content, channel in (("a1", granted), ("b1", other), ("a2", granted)):
            assert (await admin_board.new_message(content))["channel_id"] == channel["id"]
        assert (await member_board.new_message("a1"))["channel_id"] == granted["id"]
        assert (await member_board.new_message("a2"))["channel_id"] == granted["id"]
        # b1 was published between a1 and a2: had the member been sent it, it would be here.
        leaked = [
            f
            for f in member_board.frames + await member_board.quiet_for(0.3)
            if f.get("channel_id") == other["id"]
        ]
        assert leaked == []
        assert [f for f in await outsider_board.quiet_for(0.3) if "channel_id" in f] == []
        assert_increasing(member_board.frames)


async def test_ping_pong_and_bad_commands(live: str, admin: Caller) -> None:
    async with dashboard(live, admin.token) as board:
        await board.send({"type": "ping"})
        assert await board.of_type("pong") == {"type": "pong"}
        await board.send("this is not json")
        assert (await board.of_type("error"))["detail"]
        await board.send({"type": "dance"})
        assert (await board.of_type("error"))["detail"]
        await board.send([1, 2])
        assert (await board.of_type("error"))["detail"]
        await board.send({"type": "ping"})
        assert await board.of_type("pong") == {"type": "pong"}


async def test_subscribe_narrows_the_stream(
    live: str, http: httpx2.AsyncClient, admin: Caller
) -> None:
    first = await create_api_channel(http, admin, "first")
    second = await create_api_channel(http, admin, "second")
    async with dashboard(live, admin.token) as board:
        await board.send({"type": "subscribe", "channel_ids": [first["id"]]})
        assert (await board.of_type("subscribed"))["channel_ids"] == [first["id"]]
        await contact_says(http, second, "not for me")
        await contact_says(http, first, "for me")
        event = await board.new_message("for me")
        assert event["channel_id"] == first["id"]
        assert [f for f in board.frames if f.get("channel_id") == second["id"]] == []

        await board.send({"type": "subscribe", "channel_ids": [second["id"]]})
        await board.of_type("subscribed")
        await contact_says(http, first, "now ignored")
        await contact_says(http, second, "now wanted")
        assert (await board.new_message("now wanted"))["channel_id"] == second["id"]
        assert [
            f for f in board.frames if f.get("message", {}).get("content") == "now ignored"
        ] == []


async def test_reconnect_replays_missed_events_then_goes_live(
    live: str, http: httpx2.AsyncClient, admin: Caller
) -> None:
    channel = await create_api_channel(http, admin)
    async with dashboard(live, admin.token) as board:
        await contact_says(http, channel, "m1")
        seen = (await board.new_message("m1"))["event_id"]

    # Disconnected: these happen while nobody watches.
    await contact_says(http, channel, "m2")
    await contact_says(http, channel, "m3")

    async with dashboard(live, admin.token, last_event_id=seen) as board:
        m2 = await board.new_message("m2")
        m3 = await board.new_message("m3")
        replayed = list(board.frames)
        assert all(e["event_id"] > seen for e in replayed)
        assert [e["message"]["content"] for e in replayed if e["type"] == "new_message"] == [
            "m2",
            "m3",
        ]
        assert m2["event_id"] < m3["event_id"]

        await contact_says(http, channel, "m4")  # live again
        m4 = await board.new_message("m4")
        assert m4["event_id"] > m3["event_id"]
        assert_increasing(board.frames)

    # From the start of the buffer: everything, in order.
    async with dashboard(live, admin.token, last_event_id=0) as board:
        contents = []
        for expected in ("m1", "m2", "m3", "m4"):
            contents.append((await board.new_message(expected))["message"]["content"])
        assert_increasing(board.frames)
        first_ids = [e["event_id"] for e in board.frames if e["type"] == "new_message"]
        assert first_ids[0] < seen + 1

    # Without last_event_id: live only, no replay.
    async with dashboard(live, admin.token) as board:
        assert [f for f in await board.quiet_for(0.3) if f.get("type") == "new_message"] == []


async def test_status_and_chat_updated_events(
    live: str, http: httpx2.AsyncClient, admin: Caller, make_user: Any, hub: Hub
) -> None:
    with FakePlatform() as receiver:
        channel = await create_api_channel(http, admin, config={"callback_url": receiver.url})
        member: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))
        await contact_says(http, channel, "hello")
        chat = await only_chat(http, admin, channel)

        async with dashboard(live, admin.token) as board, dashboard(live, member.token) as mine:
            # Assignment.
            answer = await http.patch(
                f"/chats/{chat['id']}", json={"assigned_user_id": member.id}, headers=admin.headers
            )
            assert answer.status_code == 200, answer.text
            for watcher in (board, mine):
                event = await watcher.of_type("chat_updated", chat_id=chat["id"])
                assert event["channel_id"] == channel["id"]
                assert event["chat"]["assigned_user_id"] == member.id
                assert event["chat"]["id"] == chat["id"]

            # Agent links.
            agent, _ = await make_agent(hub, name="helper", activate_for_new_conversation=False)
            answer = await http.post(
                f"/chats/{chat['id']}/agents", json={"agent_id": agent.id}, headers=admin.headers
            )
            assert answer.status_code == 201, answer.text
            await board.of_type("chat_updated", chat_id=chat["id"])
            answer = await http.patch(
                f"/chats/{chat['id']}/agents/{agent.id}",
                json={"active": False},
                headers=admin.headers,
            )
            assert answer.status_code == 200, answer.text
            await board.of_type("chat_updated", chat_id=chat["id"])
            answer = await http.delete(
                f"/chats/{chat['id']}/agents/{agent.id}", headers=admin.headers
            )
            assert answer.status_code == 204, answer.text
            await board.of_type("chat_updated", chat_id=chat["id"])

            # An outgoing message: announced, then its status as the platform took it.
            answer = await http.post(
                f"/chats/{chat['id']}/messages", json={"content": "on it"}, headers=member.headers
            )
            assert answer.status_code == 201, answer.text
            message_id = answer.json()["id"]
            for watcher in (board, mine):
                await watcher.new_message("on it", message_id=message_id, sender_type="USER")
                status = await watcher.of_type("message_status", message_id=message_id)
                assert status == {
                    "type": "message_status",
                    "event_id": status["event_id"],
                    "channel_id": channel["id"],
                    "chat_id": chat["id"],
                    "message_id": message_id,
                    "delivery_status": "SENT",
                }
            await receiver.wait_for(1)


async def test_agent_delivery_failed_event(
    live: str, http: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    with FakePlatform(default=Reply(400, json={"error": "bad request"})) as agent_endpoint:
        agent, _ = await make_agent(
            hub, webhook_url=f"{agent_endpoint.url}/hook", buffer_time_seconds=0.0
        )
        channel = await create_api_channel(http, admin)
        async with dashboard(live, admin.token) as board:
            await contact_says(http, channel, "anyone there?")
            await agent_endpoint.wait_for(1)
            failed = await board.of_type("agent_delivery_failed")
            chat = await only_chat(http, admin, channel)
            assert failed["channel_id"] == channel["id"]
            assert failed["chat_id"] == chat["id"]
            assert failed["agent_id"] == agent.id
            assert failed["delivery_id"].startswith("dlv_")
            assert failed["error"]
            updated = await board.next(
                lambda e: e.get("type") == "chat_updated" and e["chat"]["needs_human"]
            )
            assert updated["chat_id"] == chat["id"]


async def test_revoked_token_stops_the_stream(
    live: str, http: httpx2.AsyncClient, admin: Caller, make_user: Any
) -> None:
    channel = await create_api_channel(http, admin)
    other: Caller = await make_user(Role.ADMIN)
    async with dashboard(live, other.token) as board:
        await board.send({"type": "ping"})
        await board.of_type("pong")
        assert (await http.post("/auth/logout", headers=other.headers)).status_code == 204
        await contact_says(http, channel, "after logout")
        try:
            got = await board.quiet_for(1.0)
        except ConnectionClosed:
            return  # cut off: fine
        assert [f for f in got if f.get("type") == "new_message"] == []


# --- fan-out to many sockets ------------------------------------------------------------------


async def test_sockets_share_each_events_text_and_keep_their_users_unread_counts(
    live: str, http: httpx2.AsyncClient, make_user: Any, admin: Caller, monkeypatch: Any
) -> None:
    channel = await create_api_channel(http, admin)
    await contact_says(http, channel, "one")
    await contact_says(http, channel, "two")
    chat = await only_chat(http, admin, channel)
    reader: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))
    colleague: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))
    serialised: list[Event] = []
    dumps = realtime_router.json.dumps

    def counting_dumps(payload: Any, **options: Any) -> str:
        if isinstance(payload, dict) and payload.get("type") == "chat_updated":
            serialised.append(payload)
        return dumps(payload, **options)

    monkeypatch.setattr(realtime_router.json, "dumps", counting_dumps)
    async with (
        dashboard(live, reader.token) as mine,
        dashboard(live, reader.token) as my_other_tab,
        dashboard(live, colleague.token) as theirs,
        dashboard(live, colleague.token) as their_other_tab,
    ):
        read = await http.post(f"/chats/{chat['id']}/read", headers=reader.headers)
        assert read.json()["unread_count"] == 0
        for board in (mine, my_other_tab):
            await board.of_type("chat_read", chat_id=chat["id"])
        renamed = await http.patch(
            f"/chats/{chat['id']}", json={"name": "Ana"}, headers=admin.headers
        )
        assert renamed.status_code == 200
        got = {}
        for name, board in (
            ("mine", mine),
            ("my_other_tab", my_other_tab),
            ("theirs", theirs),
            ("their_other_tab", their_other_tab),
        ):
            got[name] = await board.of_type("chat_updated", chat_id=chat["id"])
    assert got["mine"] == got["my_other_tab"]
    assert got["mine"]["chat"]["unread_count"] == 0
    assert got["theirs"] == got["their_other_tab"]
    assert got["theirs"]["chat"]["unread_count"] == 2
    assert {**got["mine"], "chat": None} == {**got["theirs"], "chat": None}
    # Four sockets, two distinct texts: each serialised once.
    assert sorted(e["chat"]["unread_count"] for e in serialised) == [0, 2]


def serve_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The keyword arguments `agenthub serve` gives uvicorn.run (which is not called)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'hub.db'}")
    # `serve` exports the metrics directory to its children: undone after the test.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: captured.update(kwargs))
    result = CliRunner().invoke(cli.app, ["serve", "--port", "0"])
    assert result.exit_code == 0, result.output
    return {k: v for k, v in captured.items() if k.startswith("ws")}


async def test_serve_declines_permessage_deflate(
    app_and_hub: tuple[object, Hub],
    admin: Caller,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _ = app_and_hub
    options = serve_options(tmp_path, monkeypatch)
    assert options == {"ws_per_message_deflate": False}
    # The client offers permessage-deflate, as browsers do: uvicorn's default takes it...
    async with (
        uvicorn_server(app) as default,
        connect(f"ws://{default}/ws?token={admin.token}") as ws,
    ):
        assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
    # ...and `serve`'s options decline it; the events still flow.
    async with (
        uvicorn_server(app, **options) as served,
        connect(f"ws://{served}/ws?token={admin.token}") as ws,
    ):
        assert ws.protocol.extensions == []
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)) == {"type": "pong"}


async def test_an_agents_health_goes_to_admins_sockets_alone(
    live: str, hub: Hub, admin: Caller, make_user: Any
) -> None:
    member: Caller = await make_user(Role.MEMBER)
    async with (
        dashboard(live, admin.token) as admin_board,
        dashboard(live, member.token) as member_board,
    ):
        # An admin's `subscribe` to some channels does not hide it: it belongs to none.
        await admin_board.send({"type": "subscribe", "channel_ids": ["chn_elsewhere0"]})
        await admin_board.of_type("subscribed")
        await hub.events.publish(
            agent_health("agt_down000000", "unavailable", utcnow(), "HTTP 503")
        )
        seen = await admin_board.of_type("agent_health")
        assert seen["agent_id"] == "agt_down000000" and seen["state"] == "unavailable"
        assert "_admins_only" not in seen
        assert [
            f for f in await member_board.quiet_for(0.3) if f.get("type") == "agent_health"
        ] == []
