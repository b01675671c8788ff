"""`python -m bench.ws_fanout`: the WebSocket fan-out of `GET /ws` to many dashboards.

Each case of `--ws-cases` (`PxN[/messages]`) starts a real `agenthub serve` (SQLite, pinned to
one CPU; the load on the other, as in `python -m bench`) with `--ws-users` users (one admin, the
rest members granted the channel) and an `api` channel, seeds `--ws-contacts` chats, then opens
N WebSockets the way browsers connect (permessage-deflate offered: the `websockets` library's
default extensions), spread over the users and over `--ws-client-processes` client processes
that read them with the library's Sans-I/O protocol on bare asyncio transports (a lean loop: no
task per socket).

Then `--ws-messages` signed inbound webhooks at `--ws-rate`/s (after an unmeasured warm-up
second); every `--ws-new-chat-every`-th comes from a new contact (a new chat: `chat_updated`
with each user's own unread count). The operators' mix (the default) adds a stub agent linked
to every chat (`agent_working`, `agent_done`) and `--ws-presence-sockets` sockets, one per user,
moving their `viewing` to another chat every `--ws-presence-period` seconds and signalling
`typing` every other move (`presence`). `/messages`: the webhooks' own events alone.

Latency is per frame, from just before the webhook was written to the frame's arrival at each
socket: `new_message` and `chat_updated` carry the message's text; `agent_*` frames are counted
from the last message the socket saw for their chat. `presence` frames are counted from the
last command that touched their chat, when one did in the second before (a typing signal that
lapses on its own has no command to be counted from). Frames lost: every socket sees every
event here (all users read the channel), so a socket's shortfall against the union of event ids
is loss. Hub CPU is read from /proc for the serve processes over the measured span.

P = 2 (PostgreSQL and Redis reachable, `--postgres-url` / `--redis-url` as for `python -m
bench`'s part (c)): two serve processes on the Redis event bus and one `agenthub worker` making
the deliveries, sockets and webhooks spread evenly; on two cores that case cannot be pinned.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import multiprocessing
import os
import shutil
import socket
import struct
import tempfile
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from bench import __main__ as single
from bench import multiprocess
from bench.wire import Connection, post, serve

HOST = single.HOST
MARK = b"wsbench-"  # message text: f"wsbench-{n}. …"
TARGET_P99_MS = 50.0
PRESENCE_WINDOW_S = 1.0
QUIET_SECONDS = 1.0
KINDS = (
    b"new_message",
    b"chat_updated",
    b"agent_working",
    b"agent_done",
)  # no frame for this long: the hub has sent everything


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("WebSocket fan-out (bench/ws_fanout.py)")
    group.add_argument(
        "--ws-cases",
        default="1x500/messages,1x1000/messages,1x500,1x1000,2x1000/messages,2x1000",
        help="serve processes x sockets[/messages], comma-separated (2x…: PostgreSQL + Redis); "
        "/messages: the webhooks' events alone, no agent or presence",
    )
    group.add_argument("--ws-messages", type=int, default=200, help="measured webhooks")
    group.add_argument("--ws-rate", type=float, default=20.0, help="webhooks per second")
    group.add_argument("--ws-users", type=int, default=10)
    group.add_argument("--ws-contacts", type=int, default=20, help="chats the webhooks go to")
    group.add_argument(
        "--ws-new-chat-every",
        type=int,
        default=10,
        help="every N-th webhook comes from a new contact (a new chat: `chat_updated`)",
    )
    group.add_argument("--ws-presence-sockets", type=int, default=10)
    group.add_argument(
        "--ws-presence-period",
        type=float,
        default=2.0,
        help="seconds between a presence socket's moves to another chat",
    )
    group.add_argument("--ws-client-processes", type=int, default=2)
    group.add_argument(
        "--ws-profile",
        type=Path,
        help="record the (first) serve process with py-spy into this SVG (installed apart)",
    )


# --- the client processes -------------------------------------------------------------------


def _text(data: bytes, key: bytes) -> bytes | None:
    """The string value of `key` in a JSON text, found without parsing it (any spacing)."""
    at = data.find(key)
    if at < 0:
        return None
    start = data.find(b'"', data.find(b":", at + len(key)) + 1) + 1
    return data[start : data.find(b'"', start)]


def _number(data: bytes, key: bytes) -> int:
    at = data.find(key)
    if at < 0:
        return -1
    start = data.find(b":", at) + 1
    end = start
    while data[end : end + 1] in (b" ", b"-") or data[end : end + 1].isdigit():
        end += 1
    return int(data[start:end])


def _message_number(data: bytes) -> int:
    at = data.find(MARK)
    if at < 0:
        return -1
    start = at + len(MARK)
    return int(data[start : data.find(b".", start)])


@dataclass
class Tally:
    """What one client process saw: arrivals by message number, presence arrivals, counts."""

    event_ids: set[int] = field(default_factory=set)
    numbers: array[int] = field(default_factory=lambda: array("l"))
    kinds: array[int] = field(default_factory=lambda: array("b"))  # index in KINDS
    arrivals: array[float] = field(default_factory=lambda: array("d"))  # kernel receive time
    read_at: array[float] = field(default_factory=lambda: array("d"))  # when the client read it
    presence_chats: list[bytes] = field(default_factory=list)
    presence_arrivals: array[float] = field(default_factory=lambda: array("d"))
    types: Counter[bytes] = field(default_factory=Counter)
    unattributed: int = 0
    duplicates: int = 0  # frames of an event the socket had already received


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux


class LeanSocket:
    """One dashboard: the `websockets` Sans-I/O client protocol on a raw non-blocking socket.

    Frames are timed twice: when the kernel received their packet (`SO_TIMESTAMPNS`, read with
    `recvmsg`) and when this process read them. With a thousand sockets in two processes on one
    core, a frame can wait in the kernel for the client to get round to its socket; the first
    time is when the hub's frame reached the dashboard's machine, the second adds the bench
    client's own delay."""

    def __init__(self, uri: str, tally: Tally, sock: socket.socket) -> None:
        self.protocol = ClientProtocol(
            parse_uri(uri), extensions=enable_client_permessage_deflate(None), max_size=None
        )
        self.tally = tally
        self.sock = sock
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.deflate = False
        self.frames = 0
        self.closed = False
        self.last: dict[bytes, int] = {}  # chat id → the last message number seen for it
        self.seen: set[int] = set()
        self.duplicates = 0

    def start(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 18, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        read_at = time.monotonic()
        arrived_at = read_at
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                # The kernel's wall-clock time, on the monotonic clock the webhooks are timed by.
                arrived_at = seconds + nanoseconds / 1e9 - (time.time() - read_at)
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._frame(bytes(event.data), min(arrived_at, read_at), read_at)
            elif isinstance(event, Response) and not self.opened.done():
                self.deflate = bool(self.protocol.extensions)
                self.opened.set_result(event.status_code == 101)
        self._flush()

    def _frame(self, data: bytes, now: float, read_at: float) -> None:
        tally = self.tally
        self.frames += 1
        kind = _text(data, b'"type"') or b"?"
        tally.types[kind] += 1
        event_id = _number(data, b'"event_id"')
        tally.event_ids.add(event_id)
        if event_id in self.seen:
            tally.duplicates += 1
            self.duplicates += 1
        self.seen.add(event_id)
        if kind == b"presence":
            tally.presence_chats.append(_text(data, b'"chat_id"') or b"")
            tally.presence_arrivals.append(now)
            return
        chat = _text(data, b'"chat_id"') or b""
        n = _message_number(data) if kind in (b"new_message", b"chat_updated") else -1
        if n >= 0:
            self.last[chat] = max(n, self.last.get(chat, -1))
        else:
            n = self.last.get(chat, -1)
        if n < 0:
            tally.unattributed += 1
            return
        tally.numbers.append(n)
        tally.kinds.append(KINDS.index(kind) if kind in KINDS else len(KINDS))
        tally.arrivals.append(now)
        tally.read_at.append(read_at)

    def send(self, command: dict[str, Any]) -> None:
        if not self.closed:
            self.protocol.send_text(json.dumps(command).encode())
            self._flush()

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk and not self.closed:
                with contextlib.suppress(OSError):  # commands are tiny: the buffer has room
                    self.sock.sendall(chunk)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
        if not self.opened.done():
            self.opened.set_result(False)


@dataclass
class SocketSpec:
    port: int
    token: str
    presence: bool = False


async def _open(spec: SocketSpec, tally: Tally) -> LeanSocket | None:
    loop = asyncio.get_running_loop()
    uri = f"ws://{HOST}:{spec.port}/ws?token={spec.token}"
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setblocking(False)
    try:
        await loop.sock_connect(raw, (HOST, spec.port))
    except OSError:
        raw.close()
        return None
    sock = LeanSocket(uri, tally, raw)
    sock.start()
    with contextlib.suppress(TimeoutError):
        if await asyncio.wait_for(sock.opened, 30):
            return sock
    # Not a socket of the run: one that opened late must not count frames.
    sock.close()
    sock.tally = Tally()
    return None


async def _open_all(specs: list[SocketSpec], tally: Tally) -> list[LeanSocket | None]:
    """A few handshakes at a time (each one authenticates against the database), and those
    refused while the hub was busy once more."""
    opened: list[LeanSocket | None] = [None] * len(specs)
    for _ in range(3):
        todo = [i for i, sock in enumerate(opened) if sock is None]
        for start in range(0, len(todo), 20):
            batch = todo[start : start + 20]
            for i, sock in zip(
                batch, await asyncio.gather(*(_open(specs[i], tally) for i in batch)), strict=True
            ):
                opened[i] = sock
    return opened


async def _presence(
    sock: LeanSocket, chats: list[str], offset: int, period: float, sends: list[Any]
) -> None:
    """Move `viewing` to the next chat every `period` seconds, `typing` there every other
    time; the sockets' moves spread evenly over the period."""
    await asyncio.sleep(offset * 0.37 % 1.0 * period)
    current: str | None = None
    for k in itertools.count():
        chat = chats[(offset + k) % len(chats)]
        sends.append((time.monotonic(), chat, current))
        sock.send({"type": "viewing", "chat_id": chat})
        if k % 2 == 0:
            sock.send({"type": "typing", "chat_id": chat})
        current = chat
        await asyncio.sleep(period)


async def _client_main(pipe: Pipe, specs: list[SocketSpec]) -> None:
    """Open the sockets, tell the parent; on `go` reset the counts and start the presence
    signals; on `quiet?` answer when no frame came for QUIET_SECONDS; on `stop` report."""
    tally = Tally()
    opened = await _open_all(specs, tally)
    socks = [s for s in opened if s is not None]
    pipe.send({"opened": len(socks), "deflate": sum(s.deflate for s in socks)})
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: inbox.put_nowait(pipe.recv()))
    sends: list[Any] = []
    presence: list[asyncio.Task[None]] = []
    while True:
        command = await inbox.get()
        if command["do"] == "go":
            fresh = Tally()
            tally.__dict__.update(fresh.__dict__)
            for sock in socks:
                sock.frames = sock.duplicates = 0
            presence = [
                asyncio.create_task(_presence(sock, command["chats"], i, command["period"], sends))
                for i, (sock, spec) in enumerate(zip(opened, specs, strict=True))
                if sock is not None and spec.presence
            ]
            pipe.send("going")
        elif command["do"] == "stop-presence":
            for task in presence:
                task.cancel()
            pipe.send("stopped")
        elif command["do"] == "quiet?":
            await _until_quiet(socks, command["timeout"])
            pipe.send("quiet")
        elif command["do"] == "stop":
            # The loop's reader made the pipe non-blocking: the report is too big for that.
            loop.remove_reader(pipe.fileno())
            os.set_blocking(pipe.fileno(), True)
            pipe.send(
                {
                    "frames": [s.frames for s in socks],
                    "distinct": [s.frames - s.duplicates for s in socks],
                    "closed": sum(s.closed for s in socks),
                    "event_ids": tally.event_ids,
                    "numbers": tally.numbers,
                    "kinds": tally.kinds,
                    "arrivals": tally.arrivals,
                    "read_at": tally.read_at,
                    "presence_chats": tally.presence_chats,
                    "presence_arrivals": tally.presence_arrivals,
                    "types": dict(tally.types),
                    "unattributed": tally.unattributed,
                    "duplicates": tally.duplicates,
                    "presence_sends": sends,
                }
            )
            for sock in socks:
                sock.close()
            return


async def _until_quiet(socks: list[LeanSocket], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        total = sum(s.frames for s in socks)
        if total == last:
            return
        last = total
        await asyncio.sleep(QUIET_SECONDS)


def _client_process(pipe: Pipe, specs: list[SocketSpec]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_client_main(pipe, specs))
    else:
        uvloop.run(_client_main(pipe, specs))


class Clients:
    """The client processes (children of this one, so on the load CPU too)."""

    def __init__(self, specs: list[SocketSpec], processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.processes = []
        for i in range(processes):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_client_process, args=(theirs, specs[i::processes]), daemon=True
            )
            process.start()
            self.pipes.append(mine)
            self.processes.append(process)

    async def ask(self, command: dict[str, Any], timeout: float = 120) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(command)
        return [await self._recv(pipe, timeout) for pipe in self.pipes]

    async def _recv(self, pipe: Pipe, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not pipe.poll():
            if time.monotonic() > deadline:
                raise SystemExit("a client process did not answer")
            await asyncio.sleep(0.01)
        return pipe.recv()

    async def ready(self) -> list[Any]:
        return [await self._recv(pipe, 300) for pipe in self.pipes]

    def cpu_seconds(self) -> float:
        return sum(multiprocess.tree_cpu_seconds(p.pid or 0) for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


# --- the hub's world ----------------------------------------------------------------------


@dataclass
class World:
    channel_id: str
    secret: str
    tokens: list[str]
    chats: list[str] = field(default_factory=list)


@dataclass
class Case:
    """`PxN` (P serve processes, N sockets), the operators' mix (agent and presence events);
    `PxN/messages`: the webhooks' own events only (no agent linked, no presence signals)."""

    processes: int
    sockets: int
    operators: bool

    @classmethod
    def parse(cls, text: str) -> Case:
        size, _, mix = text.partition("/")
        processes, sockets = (int(x) for x in size.split("x"))
        if mix not in ("", "messages"):
            raise SystemExit(f"unknown mix {mix!r} in {text!r}")
        return cls(processes, sockets, operators=mix == "")

    @property
    def mix(self) -> str:
        return "operators" if self.operators else "messages"


async def build_world(hub: single.Server, users: int, agent_port: int | None) -> World:
    async with single.admin_client(hub) as http:
        channel = await http.post("/channels", json={"name": "ws-bench", "platform": "api"})
        channel.raise_for_status()
        channel_id = channel.json()["id"]
        if agent_port is not None:
            await single.stub_agent(http, agent_port)
        tokens = [http.headers["Authorization"].split()[1]]
        for i in range(1, users):
            login = {"username": f"operator{i}", "password": "bench-password"}
            created = await http.post("/auth/users", json=login)
            created.raise_for_status()
            grant = await http.post(f"/channels/{channel_id}/members/{created.json()['id']}")
            grant.raise_for_status()
            answer = await http.post("/auth/login", json=login)
            tokens.append(answer.json()["access_token"])
    return World(channel_id, channel.json()["credentials"]["secret"], tokens)


async def chat_ids(hub: single.Server) -> list[str]:
    async with single.admin_client(hub) as http:
        page = await http.get("/inbox", params={"limit": "100"})
        page.raise_for_status()
        return [chat["id"] for chat in page.json()["chats"]]


def webhook(
    server: single.Server, world: World, n: int, contacts: int, new_every: int = 0
) -> bytes:
    """A signed inbound `api` message: message n to contact n % contacts, or, every
    `new_every`-th, from a contact never seen before."""
    contact = f"new-{n}" if new_every and n % new_every == 0 else str(n % contacts)
    body = json.dumps(
        {
            "contact_id": f"contact-{contact}",
            "contact_name": f"Contact {contact}",
            "message_id": f"ws-{uuid.uuid4().hex}",
            "content": f"{MARK.decode()}{n}. Hello, where is my order?",
        }
    )
    message_id = f"msg_{uuid.uuid4().hex}"
    signature = Webhook(world.secret).sign(message_id, datetime.now(UTC), body)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": signature,
    }
    return post(
        f"/webhooks/api/{world.channel_id}", f"{HOST}:{server.port}", body.encode(), headers
    )


async def send_webhooks(
    servers: list[single.Server], requests: list[bytes], first: int, rate: float
) -> tuple[dict[int, float], Counter[str]]:
    """Open loop at `rate`: request i to servers[i % len]; a new connection when none is idle
    (as in `python -m bench` (b)). Returns the send times by message number and the statuses."""
    idle = [[await Connection(HOST, s.port).open() for _ in range(4)] for s in servers]
    sent: dict[int, float] = {}
    statuses: Counter[str] = Counter()

    async def send(i: int) -> None:
        pool = idle[i % len(servers)]
        conn = pool.pop() if pool else Connection(HOST, servers[i % len(servers)].port)
        try:
            sent[first + i] = time.monotonic()
            statuses[str((await conn.request(requests[i])).status)] += 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            conn.close()
            statuses[type(exc).__name__] += 1
        finally:
            pool.append(conn)

    start = time.monotonic()
    tasks = []
    for i in range(len(requests)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)
    for pool in idle:
        for conn in pool:
            conn.close()
    return sent, statuses


# --- one case -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    return single.percentile(values, p) if values else float("nan")


def summarize(ms: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms, default=float("nan")),
        "frames": len(ms),
    }


def presence_latencies(results: list[dict[str, Any]]) -> list[float]:
    """Each presence arrival from the last command that touched its chat (within a second)."""
    touched: dict[bytes, list[float]] = {}
    for result in results:
        for at, chat, previous in result["presence_sends"]:
            for c in (chat, previous):
                if c is not None:
                    touched.setdefault(c.encode(), []).append(at)
    for times in touched.values():
        times.sort()
    ms = []
    for result in results:
        for chat, arrival in zip(
            result["presence_chats"], result["presence_arrivals"], strict=True
        ):
            times = touched.get(chat, [])
            i = bisect.bisect_right(times, arrival) - 1
            if i >= 0 and arrival - times[i] < PRESENCE_WINDOW_S:
                ms.append((arrival - times[i]) * 1000)
    return ms


def tally_case(results: list[dict[str, Any]], sent: dict[int, float], first: int) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {}
    as_read: list[float] = []
    names = [k.decode() for k in KINDS] + ["other"]
    for result in results:
        for n, kind, arrival, read_at in zip(
            result["numbers"], result["kinds"], result["arrivals"], result["read_at"], strict=True
        ):
            if n >= first and n in sent:
                by_kind.setdefault(names[kind], []).append((arrival - sent[n]) * 1000)
                as_read.append((read_at - sent[n]) * 1000)
    ms = [x for values in by_kind.values() for x in values]
    union: set[int] = set().union(*(r["event_ids"] for r in results))
    frames = [f for r in results for f in r["frames"]]
    types: Counter[str] = Counter()
    for r in results:
        types.update({k.decode(): v for k, v in r["types"].items()})
    return {
        "messages": summarize(ms),
        "as_read": summarize(as_read),
        "by_kind": {kind: summarize(values) for kind, values in by_kind.items()},
        "presence": summarize(presence_latencies(results)),
        "events": len(union),
        "frames": sum(frames),
        "lost": sum(len(union) - f for r in results for f in r["distinct"]),
        "closed": sum(r["closed"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "types": dict(types),
    }


async def run_case(
    args: argparse.Namespace,
    servers: list[single.Server],
    world: World,
    case: Case,
    profile: Path | None = None,
) -> dict[str, Any]:
    sockets = case.sockets
    presence = args.ws_presence_sockets if case.operators else 0
    specs = [
        SocketSpec(
            servers[i % len(servers)].port,
            world.tokens[i % len(world.tokens)],
            presence=i < presence,
        )
        for i in range(sockets)
    ]
    clients = Clients(specs, args.ws_client_processes)
    try:
        ready = await clients.ready()
        opened = sum(r["opened"] for r in ready)
        deflate = sum(r["deflate"] for r in ready)
        print(f"  {opened}/{sockets} sockets open ({deflate} with permessage-deflate)", flush=True)
        if opened < sockets:
            raise SystemExit(f"only {opened} of {sockets} WebSockets opened")
        rate, warmup = args.ws_rate, int(args.ws_rate)
        total = warmup + args.ws_messages
        requests = [
            webhook(
                servers[i % len(servers)],
                world,
                10_000 + i,
                args.ws_contacts,
                args.ws_new_chat_every,
            )
            for i in range(total)
        ]
        # Warm-up second: each socket looks up its user's read marker of each chat once.
        await send_webhooks(servers, requests[:warmup], 10_000, rate)
        await clients.ask({"do": "quiet?", "timeout": 60})
        await clients.ask({"do": "go", "chats": world.chats, "period": args.ws_presence_period})
        spy = start_profile(servers[0], profile, args.ws_messages / rate) if profile else None
        cpu_before = [s.cpu_seconds() for s in servers]
        clients_before = clients.cpu_seconds()
        started = time.monotonic()
        sent, statuses = await send_webhooks(servers, requests[warmup:], 10_000 + warmup, rate)
        await clients.ask({"do": "stop-presence"})
        await clients.ask({"do": "quiet?", "timeout": 120})
        span = time.monotonic() - started - QUIET_SECONDS
        cpu = [s.cpu_seconds() - b for s, b in zip(servers, cpu_before, strict=True)]
        client_cpu = (clients.cpu_seconds() - clients_before) / span
        results = await clients.ask({"do": "stop"})
        if spy is not None:
            spy.wait(60)
    finally:
        clients.stop()
    figures = tally_case(results, sent, 10_000 + warmup)
    figures.update(
        serve_processes=len(servers),
        sockets=sockets,
        opened=opened,
        deflate=deflate,
        statuses=dict(statuses),
        span_seconds=span,
        hub_cpu=[c / span for c in cpu],
        client_cpu=client_cpu,
        us_per_frame=sum(cpu) * 1e6 / max(1, figures["frames"]),
        rate=rate,
        mix=case.mix,
    )
    return figures


def start_profile(server: single.Server, svg: Path, seconds: float) -> Any:
    import subprocess

    py_spy = shutil.which("py-spy") or str(Path(single.AGENTHUB).with_name("py-spy"))
    assert server.process is not None
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "-p",
            str(server.process.pid),
            "-d",
            str(int(seconds) + 1),
            "-o",
            str(svg),
            "-f",
            "raw" if svg.suffix == ".txt" else "flamegraph",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(svg.with_suffix(".log"), "w"),  # the child keeps it
    )


# --- the setups ---------------------------------------------------------------------------


def agent_port(agent: asyncio.Server, case: Case) -> int | None:
    return int(agent.sockets[0].getsockname()[1]) if case.operators else None


async def one_process(
    args: argparse.Namespace, prefix: list[str], workdir: Path, case: Case
) -> dict[str, Any]:
    hub = single.hub_server(workdir, f"hub-ws-{case.sockets}-{case.mix}")
    agent = await serve(_agent_answer)
    try:
        await hub.start(prefix, "/readyz")
        world = await build_world(hub, args.ws_users, agent_port(agent, case))
        await seed_chats([hub], world, args)
        svg = args.ws_profile
        if svg is not None:
            svg = svg.with_name(f"{svg.stem}-{case.sockets}-{case.mix}{svg.suffix}")
        return await run_case(args, [hub], world, case, svg)
    finally:
        hub.stop()
        agent.close()


async def two_processes(args: argparse.Namespace, workdir: Path, case: Case) -> dict[str, Any]:
    db = multiprocess.ScratchDatabase(args.postgres_url)
    import redis

    store = redis.Redis.from_url(args.redis_url)
    db.create()
    store.flushdb()
    env = multiprocess.hub_env(db.url, args.redis_url)
    # Signed for the listening address of each process: not behind a load balancer here.
    env.pop("AGENTHUB_PUBLIC_URL")
    worker = multiprocess.Worker("ws-worker", workdir, env)
    servers = [multiprocess.serve_process(workdir, f"serve-ws-{x}", env) for x in "ab"]
    agent = await serve(_agent_answer)
    try:
        for server in servers:
            await server.start([], "/readyz")
        worker.start()
        await worker.ready()
        world = await build_world(servers[0], args.ws_users, agent_port(agent, case))
        await seed_chats(servers, world, args)
        return await run_case(args, servers, world, case)
    finally:
        for server in servers:
            server.stop()
        worker.stop()
        agent.close()
        try:
            db.drop()
        finally:
            store.flushdb()
            store.close()


async def _agent_answer(path: bytes, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    return 200, b"{}"  # takes the delivery, does not reply


async def seed_chats(servers: list[single.Server], world: World, args: argparse.Namespace) -> None:
    """One message per contact, before any socket: the chats exist, with their agent."""
    requests = [webhook(servers[0], world, n, args.ws_contacts) for n in range(args.ws_contacts)]
    _, statuses = await send_webhooks(servers[:1], requests, 0, args.ws_rate)
    if set(statuses) != {"200"}:
        raise SystemExit(f"seeding the chats failed: {dict(statuses)}")
    await asyncio.sleep(1)
    world.chats = await chat_ids(servers[0])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix, load_cpus = single.pinning()
    load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
    workdir = Path(tempfile.mkdtemp(prefix="agenthub-bench-ws-"))
    cases = []
    try:
        for text in [c.strip() for c in args.ws_cases.split(",") if c.strip()]:
            case = Case.parse(text)
            print(
                f"websocket fan-out: {case.sockets} sockets, {case.processes} serve process(es), "
                f"{case.mix} mix",
                flush=True,
            )
            if case.processes == 1:
                if load_cpus:
                    os.sched_setaffinity(0, load_cpus)
                cases.append(await one_process(args, prefix, workdir, case))
            elif multiprocess.reachable(args.postgres_url, 5432) and multiprocess.reachable(
                args.redis_url, 6379
            ):
                with contextlib.suppress(OSError):  # nothing pinned in this case
                    os.sched_setaffinity(0, range(os.cpu_count() or 1))
                cases.append(await two_processes(args, workdir, case))
            else:
                print("  skipped: PostgreSQL or Redis not reachable", flush=True)
            print("  " + _line(cases[-1]) if cases else "", flush=True)
    except BaseException:
        print(f"failed; the servers' logs are in {workdir}", flush=True)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return {"load_average": load_average, "pinned": bool(load_cpus), "cases": cases}


def _line(c: dict[str, Any]) -> str:
    m = c["messages"]
    return (
        f"p50 {m['p50']:.1f} p99 {m['p99']:.1f} max {m['max']:.1f} ms, lost {c['lost']}, "
        f"hub CPU {sum(c['hub_cpu']):.0%}, {c['us_per_frame']:.1f} µs/frame, "
        f"clients' CPU {c['client_cpu']:.0%}, {c['types']}"
    )


# --- report -------------------------------------------------------------------------------


def report(d: dict[str, Any]) -> str:
    lines = [
        f"WebSocket fan-out: load average before {d['load_average']}; "
        + ("hub pinned to CPU 0, clients on CPU 1 (one serve process)" if d["pinned"] else ""),
        "",
        "| serve processes | sockets | events | frames/s | p50 | p99 | max | as read: p50 / p99 "
        "| presence p99 | lost | hub CPU | µs per frame | target p99 < 50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in d["cases"]:
        m, p, r = c["messages"], c["presence"], c["as_read"]
        cpu = " + ".join(f"{x:.0%}" for x in c["hub_cpu"])
        verdict = "met" if m["p99"] < TARGET_P99_MS and c["lost"] == 0 else "**missed**"
        lines.append(
            f"| {c['serve_processes']} | {c['opened']:,} | {c['mix']} "
            f"| {c['frames'] / c['span_seconds']:,.0f} "
            f"| {m['p50']:.1f} ms | {m['p99']:.1f} ms | {m['max']:.1f} ms "
            f"| {r['p50']:.1f} / {r['p99']:.1f} ms | {p['p99']:.1f} ms "
            f"| {c['lost']} | {cpu} | {c['us_per_frame']:.1f} | {verdict} |"
        )
    lines.append("")
    for c in d["cases"]:
        lines.append(
            f"- {c['serve_processes']} x {c['opened']:,} sockets ({c['deflate']:,} negotiated "
            f"permessage-deflate): {c['events']} events, {c['frames']:,} frames "
            f"({', '.join(f'{k} {v:,}' for k, v in sorted(c['types'].items()))}), "
            f"webhooks {c['statuses']}, sockets closed by the hub {c['closed']}, "
            f"duplicate frames {c['duplicates']}, "
            f"clients' CPU {c['client_cpu']:.0%} of their core; p50 / p99 by frame: "
            + ", ".join(
                f"{kind} {m['p50']:.1f} / {m['p99']:.1f} ms" for kind, m in c["by_kind"].items()
            )
            + "."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_fanout", description=__doc__)
    add_arguments(parser)
    multiprocess.add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    d = asyncio.run(run(args))
    print()
    print(report(d))
    if args.json:
        args.json.write_text(json.dumps(d, indent=2, default=str))


if __name__ == "__main__":
    main()
