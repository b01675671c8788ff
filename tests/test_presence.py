"""WebSocket presence (`viewing` / `typing` → `presence` events) and per-user events on the
socket (`chat_read`, per-reader unread counts in `chat_updated`).

In one process over a real uvicorn server (the fixtures of tests/test_websocket.py), then with
two real `agenthub serve` processes on one Redis: presence set on one process reaches sockets
on the other, and lapses there even when the process that set it was killed.

Presence does not touch the database beyond looking a chat up, so its in-process tests run on
SQLite only; the per-user event test reads `chat_reads` and runs on both databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from agenthub.db import sync_url
from agenthub.hub import Hub
from agenthub.models import (
    ApiToken,
    Channel,
    ChannelMember,
    Chat,
    ChatRead,
    Platform,
    Role,
    User,
)
from agenthub.runtime.presence import RedisPresence, Watcher
from agenthub.runtime.redis_events import RedisStreamEventBus
from agenthub.security import SecretBox, hash_token, new_token
from agenthub.settings import Settings
from tests.conftest import Caller
from tests.factories import make_channel, make_chat
from tests.procs import SECRET_KEY, RedisServer, ServeProcess, hub_env, scratch_database, stop_all
from tests.services import REDIS_URL, require_redis
from tests.test_websocket import Dashboard, dashboard

pytestmark = [pytest.mark.anyio]
sqlite_only = pytest.mark.database_independent

VIEWING_SECONDS = 1.5
TYPING_SECONDS = 0.3
QUIET = 0.3  # "nothing more comes": several presence sweeps (every 0.06 s here)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "presence_viewing_seconds": VIEWING_SECONDS,
            "presence_typing_seconds": TYPING_SECONDS,
        }
    )


@contextlib.asynccontextmanager
async def board(address: str, token: str) -> AsyncIterator[Dashboard]:
    """A socket whose subscription is in place (the pong comes after it)."""
    async with dashboard(address, token) as socket:
        await socket.send({"type": "ping"})
        await socket.of_type("pong")
        yield socket


async def presence(socket: Dashboard, chat: Chat) -> dict[str, Any]:
    return await socket.of_type("presence", chat_id=chat.id)


def presences(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("type") == "presence"]


@dataclass
class World:
    first: Channel
    chat: Chat  # in `first`
    elsewhere: Chat  # in another channel
    alice: Caller  # members of `first`
    bob: Caller
    outsider: Caller  # a member of the other channel only


async def world(hub: Hub, make_user: Any) -> World:
    first, second = await make_channel(hub, name="first"), await make_channel(hub, name="second")
    return World(
        first,
        await make_chat(hub, first),
        await make_chat(hub, second, external_id="+15550002222"),
        await make_user(Role.MEMBER, channels=(first.id,)),
        await make_user(Role.MEMBER, channels=(first.id,)),
        await make_user(Role.MEMBER, channels=(second.id,)),
    )


# --- one process -----------------------------------------------------------------------------


@sqlite_only
async def test_viewing_and_typing_are_announced_then_lapse(
    live: str,
    hub: Hub,
    make_user: Any,
    admin: Caller,
) -> None:
    w = await world(hub, make_user)
    chat, alice, bob = w.chat, w.alice, w.bob
    async with (
        board(live, alice.token) as mine,
        board(live, bob.token) as theirs,
        board(live, admin.token) as watching_all,
        board(live, w.outsider.token) as other_channel,
    ):
        await mine.send({"type": "viewing", "chat_id": chat.id})
        for socket in (mine, theirs, watching_all):
            event = await presence(socket, chat)
            assert event == {
                "type": "presence",
                "channel_id": chat.channel_id,
                "chat_id": chat.id,
                "viewing": [alice.id],
                "typing": [],
                "event_id": event["event_id"],
            }

        # A refresh changes nothing: nothing is announced.
        await mine.send({"type": "viewing", "chat_id": chat.id})
        assert presences(await theirs.quiet_for(QUIET)) == []

        await theirs.send({"type": "typing", "chat_id": chat.id})
        event = await presence(mine, chat)
        assert (event["viewing"], event["typing"]) == ([alice.id], [bob.id])
        await theirs.send({"type": "viewing", "chat_id": chat.id})
        event = await presence(mine, chat)
        assert event["viewing"] == sorted([alice.id, bob.id])
        # Typing lapses on its own, long before viewing.
        event = await presence(mine, chat)
        assert (event["viewing"], event["typing"]) == (sorted([alice.id, bob.id]), [])

        # Then viewing lapses for the one who stopped signalling.
        await theirs.send({"type": "viewing", "chat_id": chat.id})
        await asyncio.sleep(VIEWING_SECONDS / 2)
        await theirs.send({"type": "viewing", "chat_id": chat.id})
        event = await presence(mine, chat)
        assert (event["viewing"], event["typing"]) == ([bob.id], [])

        # The other channel's member saw none of it.
        assert presences(await other_channel.quiet_for(0.1)) == []


@sqlite_only
async def test_presence_is_per_socket_and_ends_at_disconnect(
    live: str,
    hub: Hub,
    make_user: Any,
) -> None:
    """A user with two sockets on a chat views it until both are gone; a socket views one
    chat at a time."""
    w = await world(hub, make_user)
    chat, alice = w.chat, w.alice
    other = await make_chat(hub, w.first, external_id="+15550003333")
    async with board(live, w.bob.token) as theirs:
        async with board(live, alice.token) as phone:
            async with board(live, alice.token) as laptop:
                await laptop.send({"type": "viewing", "chat_id": chat.id})
                assert (await presence(theirs, chat))["viewing"] == [alice.id]
                await phone.send({"type": "viewing", "chat_id": chat.id})
                assert presences(await theirs.quiet_for(QUIET)) == []
            # The laptop left; the phone still views the chat.
            await phone.send({"type": "viewing", "chat_id": chat.id})
            assert presences(await theirs.quiet_for(QUIET)) == []

            # The phone switches to another chat: it stops viewing the first at once.
            await phone.send({"type": "viewing", "chat_id": other.id})
            assert (await presence(theirs, chat))["viewing"] == []
            assert (await presence(theirs, other))["viewing"] == [alice.id]
        assert (await presence(theirs, other))["viewing"] == []


@sqlite_only
async def test_signals_for_chats_out_of_reach_are_refused(
    live: str,
    hub: Hub,
    make_user: Any,
    admin: Caller,
) -> None:
    w = await world(hub, make_user)
    chat, elsewhere, outsider = w.chat, w.elsewhere, w.outsider
    async with board(live, outsider.token) as intruder, board(live, admin.token) as watching_all:
        for command in (
            {"type": "viewing", "chat_id": chat.id},  # exists, in a channel not granted
            {"type": "typing", "chat_id": chat.id},
            {"type": "viewing", "chat_id": "cht_0123456789"},  # does not exist
            {"type": "viewing", "chat_id": "not-a-chat"},
            {"type": "typing"},
            {"type": "viewing", "chat_id": ["cht_0123456789"]},
        ):
            await intruder.send(command)
            error = await intruder.of_type("error")
            assert isinstance(error["detail"], str) and error["detail"], command
        assert presences(await watching_all.quiet_for(QUIET)) == []

        # Its own channel's chat is fine.
        await intruder.send({"type": "viewing", "chat_id": elsewhere.id})
        assert (await presence(watching_all, elsewhere))["viewing"] == [outsider.id]


# --- per-user events -------------------------------------------------------------------------


async def test_read_markers_and_unread_counts_are_per_user(
    live: str,
    hub: Hub,
    make_user: Any,
) -> None:
    """`chat_read` (with `user_id`) reaches only that user's sockets, without `user_id` or the
    internal keys; `chat_updated`'s `chat.unread_count` is worked out for each socket's user
    from its read marker (in the database, then as its `chat_read` events move it)."""
    w = await world(hub, make_user)
    chat, alice, bob = w.chat, w.alice, w.bob
    async with hub.db.transaction() as session:
        session.add(
            ChatRead(user_id=alice.id, chat_id=chat.id, channel_id=chat.channel_id,
                     read_seq=2, read_contact_count=2)
        )  # fmt: skip

    def updated(contact_count: int | None, placeholder: int = 0) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "chat_updated",
            "channel_id": chat.channel_id,
            "chat_id": chat.id,
            "chat": {"id": chat.id, "channel_id": chat.channel_id, "unread_count": placeholder},
            "_internal": "not for clients",
        }
        if contact_count is not None:
            event["_contact_message_count"] = contact_count
        return event

    read = {
        "type": "chat_read",
        "channel_id": chat.channel_id,
        "chat_id": chat.id,
        "unread_count": 0,
        "user_id": alice.id,
        "_read_contact_count": 5,
    }
    async with board(live, alice.token) as mine, board(live, bob.token) as theirs:
        await hub.events.publish(updated(5))
        await hub.events.publish(read)
        await hub.events.publish(updated(7))
        await hub.events.publish(updated(None, placeholder=9))

        got_mine = [await mine.of_type(kind) for kind in ("chat_updated", "chat_read")]
        got_mine += [await mine.of_type("chat_updated") for _ in range(2)]
        got_theirs = [await theirs.of_type("chat_updated") for _ in range(3)]

    assert [e["chat"]["unread_count"] for e in got_mine if e["type"] == "chat_updated"] == [
        3,
        2,
        9,
    ]
    assert [e["chat"]["unread_count"] for e in got_theirs] == [5, 7, 9]
    [mark] = [e for e in got_mine if e["type"] == "chat_read"]
    assert mark == {
        "type": "chat_read",
        "channel_id": chat.channel_id,
        "chat_id": chat.id,
        "unread_count": 0,
        "event_id": mark["event_id"],
    }
    assert [f for f in theirs.frames if f.get("type") == "chat_read"] == []
    for frame in mine.frames + theirs.frames:
        assert not [key for key in frame if key.startswith("_")], frame


# --- the Redis store -------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_presence_of_two_processes_agrees_and_announces_each_lapse_once() -> None:
    """Two stores on one stream, as two serve processes have: both sweep the same lapse, one
    event says so; lists are sorted as Python sorts them (byte order, not Redis's locale)."""
    require_redis()
    stream = f"agenthub:test-presence:{uuid.uuid4().hex}"
    buses = [RedisStreamEventBus(REDIS_URL, stream=stream) for _ in range(2)]
    stores = [RedisPresence(bus, viewing_seconds=5, typing_seconds=0.2) for bus in buses]
    upper, lower = Watcher("usr_Bbbbbbbbbb"), Watcher("usr_aaaaaaaaaa")
    try:
        for bus, store in zip(buses, stores, strict=True):
            await bus.start()
            await store.start()
        async with buses[1].subscribe() as stream_events:
            await stores[0].signal(upper, "viewing", "chn_x", "cht_x")
            await stores[1].signal(lower, "typing", "chn_x", "cht_x")
            await stores[1].signal(lower, "viewing", "chn_x", "cht_x")
            await stores[0].signal(upper, "viewing", "chn_x", "cht_x")  # a refresh: silent
            got = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2 + 0.5):
                    async for event in stream_events:
                        got.append((event["viewing"], event["typing"]))
    finally:
        for bus, store in zip(buses, stores, strict=True):
            await store.stop()
            await bus.stop()
        client = redis.from_url(REDIS_URL)
        await client.delete(*await client.keys(f"{stream}*"))
        await client.aclose()
    both = [upper.user_id, lower.user_id]
    assert both == sorted(both)
    assert got == [
        ([upper.user_id], []),
        ([upper.user_id], [lower.user_id]),
        (both, [lower.user_id]),
        (both, []),  # the lapse, swept by both stores, announced once
    ]


# --- two serve processes on Redis ------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.multiprocess
async def test_presence_crosses_serve_processes_and_outlives_a_killed_one(
    tmp_path: Path,
) -> None:
    with scratch_database() as database_url:
        redis = RedisServer(tmp_path)
        env = hub_env(
            database_url, redis.url(), presence_viewing_seconds=30, presence_typing_seconds=0.5
        )
        serves = [ServeProcess(f"serve{i}", env, tmp_path) for i in range(2)]
        try:
            redis.start()
            for serve in serves:
                serve.spawn()
            # The rows go straight into the database while the processes start.
            seed = asyncio.create_task(asyncio.to_thread(_seed, database_url))
            await asyncio.gather(seed, *(asyncio.to_thread(s.wait_ready) for s in serves))
            async with asyncio.timeout(30):
                await _across_processes(seed.result(), *serves)
        finally:
            stop_all([*serves, redis])
            for process in [*serves, redis]:
                print(f"===== {process.name} =====\n{process.log_text()[-4000:]}")


async def _across_processes(seed: Seed, one: ServeProcess, two: ServeProcess) -> None:
    on_one, on_two = f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"
    async with board(on_two, seed.member_token) as watcher:
        async with board(on_one, seed.admin_token) as viewer:
            await viewer.send({"type": "viewing", "chat_id": seed.chat_id})
            seen = await watcher.of_type("presence", chat_id=seed.chat_id)
            assert seen["channel_id"] == seed.channel_id
            assert (seen["viewing"], seen["typing"]) == ([seed.admin_id], [])
        # Disconnecting on process one clears it on process two.
        gone = await watcher.of_type("presence", chat_id=seed.chat_id)
        assert (gone["viewing"], gone["typing"]) == ([], [])

        # Typing set through process one, which is then killed: process two's sweep ends it.
        async with board(on_one, seed.admin_token) as typist:
            await typist.send({"type": "typing", "chat_id": seed.chat_id})
            typing = await watcher.of_type("presence", chat_id=seed.chat_id)
            assert typing["typing"] == [seed.admin_id]
            one.kill()
        lapsed = await watcher.of_type("presence", chat_id=seed.chat_id)
        assert (lapsed["viewing"], lapsed["typing"]) == ([], [])
        assert presences(await watcher.quiet_for(QUIET)) == []  # announced once


@dataclass
class Seed:
    admin_id: str
    admin_token: str
    member_token: str
    channel_id: str
    chat_id: str


def _seed(database_url: str) -> Seed:
    """An admin, a member granted an `api` channel, a chat in it; the users' tokens."""
    engine = create_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            channel = Channel(
                name="web",
                platform=Platform.API,
                credentials_encrypted=SecretBox(SECRET_KEY).encrypt_json({}),
                config={},
            )
            admin, member = (
                User(username=name, password_hash="!unusable", role=role, is_active=True)
                for name, role in (("admin", Role.ADMIN), ("bob", Role.MEMBER))
            )
            session.add_all([channel, admin, member])
            session.flush()
            chat = Chat(channel_id=channel.id, external_id="ana", name="Ana", message_seq=0)
            tokens = {user.id: new_token() for user in (admin, member)}
            session.add_all(
                [chat, ChannelMember(channel_id=channel.id, user_id=member.id)]
                + [
                    ApiToken(token_hash=hash_token(t), user_id=u, name="t")
                    for u, t in tokens.items()
                ]
            )
            session.flush()
            return Seed(admin.id, tokens[admin.id], tokens[member.id], channel.id, chat.id)
    finally:
        engine.dispose()
