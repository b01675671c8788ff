"""The process's one fan-out of events to its WebSockets (`realtime/fanout.py`, `frames.py`).

What the per-socket tests in test_websocket.py cannot show: a socket that stops reading holds
up nobody else and is closed with 1013 once it fell too far behind; events queued behind a step
that waits (re-checking access) still come out in order; frames are built once per event and
written straight to sockets served as `serve` serves them; and `run_eagerly`, which lets the
fan-out send without a task per socket, behaves like a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agenthub.delivery.events import ACCESS_CHANGED
from agenthub.hub import Hub
from agenthub.realtime import fanout, frames
from agenthub.realtime.fanout import run_eagerly
from tests.conftest import Caller, uvicorn_server

pytestmark = [pytest.mark.anyio, pytest.mark.database_independent]

TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def socket_of(address: str, token: str, **options: Any) -> AsyncIterator[ClientConnection]:
    async with connect(f"ws://{address}/ws?token={token}", open_timeout=5, **options) as ws:
        yield ws


async def frames_until(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    got = []
    async with asyncio.timeout(TIMEOUT):
        while len(got) < count:
            got.append(json.loads(await ws.recv()))
    return got


def event(n: int, size: int = 0) -> dict[str, Any]:
    return {"type": "new_message", "channel_id": "chn_fanout0001", "n": n, "pad": "x" * size}


async def test_a_socket_that_stops_reading_holds_up_no_other_and_is_closed_with_1013(
    live: str, hub: Hub, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout.Client, "backlog_limit", 20)
    # The stalled client's receive buffer is small and its library stops reading after one
    # frame, so the hub's side fills up after a few of these 20 KB events.
    stalled_sock = socket.socket()
    stalled_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled_sock.connect(("127.0.0.1", int(live.rsplit(":", 1)[1])))
    async with (
        socket_of(live, admin.token) as reader,
        socket_of(live, admin.token, sock=stalled_sock, max_queue=1) as stalled,
    ):
        await _until_registered(hub, 2)
        got = []
        for batch in range(60):  # in batches the reading socket keeps up with
            for n in range(batch * 5, batch * 5 + 5):
                await hub.events.publish(event(n, 20_000))
            got += await frames_until(reader, 5)
        assert [f["n"] for f in got] == list(range(300))
        # The stalled socket's queue stayed bounded while the other got everything.
        for client in hub.fanout._clients:
            assert len(client._backlog or ()) <= 20

        # Reading again, it gets what was on its way, then the hub's 1013: it fell behind.
        received = []
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    received.append(json.loads(await stalled.recv())["n"])
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert received == list(range(len(received))) and len(received) < 300


async def test_events_behind_a_step_that_waits_come_out_in_order(
    live: str, hub: Hub, admin: Caller
) -> None:
    async with socket_of(live, admin.token) as ws:
        await _until_registered(hub, 1)
        # The user's access changed (it did not: the socket re-checks, from the database,
        # and goes on); the events published meanwhile wait behind the re-check.
        await hub.events.publish({"type": ACCESS_CHANGED, "user_id": admin.id})
        for n in range(100):
            await hub.events.publish(event(n))
        got = await frames_until(ws, 100)
        assert [f["n"] for f in got] == list(range(100))
        ids = [f["event_id"] for f in got]
        assert ids == sorted(ids) and len(set(ids)) == 100


async def test_frames_are_built_once_per_event_and_written_directly(
    live: str, app_and_hub: tuple[object, Hub], hub: Hub, admin: Caller
) -> None:
    frames.text_frame.cache_clear()
    async with socket_of(live, admin.token) as one, socket_of(live, admin.token) as two:
        await _until_registered(hub, 2)
        await hub.events.publish(event(1))
        assert (await frames_until(one, 1))[0]["n"] == (await frames_until(two, 1))[0]["n"] == 1
    info = frames.text_frame.cache_info()
    assert (info.misses, info.hits) == (1, 1)

    # A socket that negotiated compression (uvicorn's default, not `serve`'s) takes the
    # ordinary path: the shared frame would be wrong for it.
    app, _ = app_and_hub
    frames.text_frame.cache_clear()
    async with uvicorn_server(app) as compressed, socket_of(compressed, admin.token) as ws:
        assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
        await _until_registered(hub, 1)
        await hub.events.publish(event(2))
        assert (await frames_until(ws, 1))[0]["n"] == 2
    assert frames.text_frame.cache_info().currsize == 0


async def test_events_that_queued_meanwhile_go_to_each_socket_in_one_write(
    live: str, hub: Hub, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    write = frames.DirectFrames.write

    def counting(self: frames.DirectFrames, texts: list[str]) -> bool:
        writes.append(len(texts))
        return write(self, texts)

    monkeypatch.setattr(frames.DirectFrames, "write", counting)
    async with socket_of(live, admin.token) as one, socket_of(live, admin.token) as two:
        await _until_registered(hub, 2)
        for n in range(5):  # no await gives the fan-out a turn in between
            await hub.events.publish(event(n))
        for ws in (one, two):
            assert [f["n"] for f in await frames_until(ws, 5)] == list(range(5))
    assert writes == [5, 5]


async def _until_registered(hub: Hub, count: int) -> None:
    """Until `count` sockets are live in the fan-out (their catch-up done)."""
    async with asyncio.timeout(TIMEOUT):
        while sum(c._backlog is None for c in hub.fanout._clients) < count:
            await asyncio.sleep(0.01)


# --- run_eagerly -----------------------------------------------------------------------------


async def test_a_coroutine_that_never_waits_runs_to_its_end_at_once() -> None:
    done = []

    async def quick() -> None:
        done.append("ran")

    assert run_eagerly(quick()) is None
    assert done == ["ran"]


async def test_a_coroutine_that_waits_is_finished_by_the_awaitable_it_returns() -> None:
    steps = []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)  # a bare yield, as asyncio.sleep(0) makes
        steps.append("after")

    rest = run_eagerly(waits())
    assert rest is not None and steps == ["before"]
    finishing = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    gate.set_result("opened")
    await asyncio.wait_for(finishing, 1)
    assert steps == ["before", "opened", "after"]


async def test_errors_come_out_where_they_would_from_a_task() -> None:
    async def fails_at_once() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        run_eagerly(fails_at_once())

    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def fails_later() -> None:
        await gate

    rest = run_eagerly(fails_later())
    assert rest is not None
    gate.set_exception(ConnectionResetError("later"))
    with pytest.raises(ConnectionResetError, match="later"):
        await rest


async def test_cancelling_the_rest_closes_the_coroutine() -> None:
    cleaned = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def held() -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    rest = run_eagerly(held())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
