"""`python -m bench`: run the measurements and print Markdown tables (about 6.5 minutes).

(a) Inbound throughput: signed Twilio webhooks with unique MessageSids from `--connections`
    keep-alive connections (closed loop), against `agenthub serve` on SQLite (one process, no
    agent linked) and against a bare FastAPI form endpoint served the same way; rounds alternate
    between the two so background noise hits both alike.
(b) End-to-end latency at each of `--rates` messages/s for `--latency-seconds` (open loop, after a
    one-second warm-up that also creates the chats): from just before the webhook POST is written
    to the stub agent receiving the delivery (buffer_time_seconds=0) and to a dashboard
    WebSocket receiving the `new_message` event.
(c) The production setup (bench/multiprocess.py): (a) and (b) again with 1 and 2 `agenthub serve`
    processes and 2 `agenthub worker`s on PostgreSQL + Redis (skipped when they are not
    reachable, or with `--no-multiprocess`).
(d) The operator inbox at scale (bench/inbox.py): 100,000 seeded chats on SQLite and on
    PostgreSQL, server time of `GET /inbox` pages and `GET /inbox/counts` in-process, and the
    plans of their SQL (`--only inbox`: this part alone, about 3.5 minutes; `--no-inbox` skips it).
(e) The operator console (bench/console.py): with 100,000 chats seeded, the server time of the
    inbox and chat pages, the bytes of a first load and the requests per second the page makes
    in headless Chromium while events arrive (`--only console`; `--no-console` skips it).
(f) The WebSocket fan-out (bench/ws_fanout.py): 500 and 1,000 sockets on one serve process
    (and 1,000 on two, on PostgreSQL + Redis) receiving the events of 20 webhooks a second, with
    presence and agent activity (`--only websocket`; `--no-websocket` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
from standardwebhooks import Webhook
from websockets.asyncio.client import connect as ws_connect

from bench.wire import Connection, LoadResult, closed_loop, post, serve

ROOT = Path(__file__).resolve().parent.parent
AGENTHUB = str(Path(sys.executable).with_name("agenthub"))
HOST = "127.0.0.1"
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
ADMIN = {"username": "admin", "password": "bench-password"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per server")
    parser.add_argument("--round-seconds", type=float, default=6.0)
    parser.add_argument(
        "--rates",
        default="100,20",
        help="comma-separated messages/s for latency runs; the first is the target's",
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--contacts", type=int, default=100)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--only",
        choices=["throughput", "latency", "multiprocess", "inbox", "console", "websocket"],
        help="run one part",
    )
    parser.add_argument(
        "--no-multiprocess", action="store_true", help="skip (c), the PostgreSQL + Redis setup"
    )
    parser.add_argument("--no-inbox", action="store_true", help="skip (d), the inbox at scale")
    parser.add_argument("--no-console", action="store_true", help="skip (e), the console")
    parser.add_argument("--no-websocket", action="store_true", help="skip (f), the fan-out")
    from bench import console, inbox, multiprocess, ws_fanout

    multiprocess.add_arguments(parser)
    inbox.add_arguments(parser)
    console.add_arguments(parser)
    ws_fanout.add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


# --- processes -----------------------------------------------------------------------------


def pinning() -> tuple[list[str], set[int] | None]:
    """(prefix for server commands, CPUs for this process) — servers on CPU 0, load on CPU 1."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return [], None
    return ["taskset", "-c", str(cpus[0])], {cpus[1]}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    argv: list[str]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self, prefix: list[str], ready_path: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
        env.update(self.env, PYTHONPATH=str(ROOT))
        log = (self.workdir / f"{self.name}.log").open("wb")
        self.process = subprocess.Popen(
            [*prefix, *self.argv, "--port", str(self.port)],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        async with httpx2.AsyncClient() as http:
            while True:
                if self.process.poll() is not None:
                    raise SystemExit(f"{self.name} exited:\n{self.log_text()}")
                try:
                    if (await http.get(self.url + ready_path, timeout=1)).status_code < 500:
                        return
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.name} did not start:\n{self.log_text()}")
                await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server process has used so far."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        return (self.workdir / f"{self.name}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def hub_server(workdir: Path, name: str) -> Server:
    return Server(
        name,
        [AGENTHUB, "serve"],
        workdir,
        env={
            "AGENTHUB_DATABASE_URL": f"sqlite:///{workdir / name}.db",
            "AGENTHUB_SECRET_KEY": "bench-secret-key",
        },
    )


def bare_server(workdir: Path) -> Server:
    return Server(
        "bare", [sys.executable, "-m", "uvicorn", "bench.bare:app", "--host", HOST], workdir
    )


# --- the hub's setup through its API ---------------------------------------------------------


@asynccontextmanager
async def admin_client(hub: Server) -> AsyncIterator[httpx2.AsyncClient]:
    """An API client logged in as the admin (created on first use)."""
    async with httpx2.AsyncClient(base_url=hub.url, timeout=30) as http:
        await http.post("/auth/signup", json=ADMIN)
        token = (await http.post("/auth/login", json=ADMIN)).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


async def twilio_channel(http: httpx2.AsyncClient) -> dict[str, Any]:
    response = await http.post(
        "/channels",
        json={
            "name": "bench",
            "platform": "whatsapp_twilio",
            "credentials": {
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from_number": "whatsapp:+15550000000",
            },
            # Nothing in the bench sends to Twilio; keep it that way should an agent reply.
            "config": {"api_base_url": "http://127.0.0.1:9"},
        },
    )
    response.raise_for_status()
    channel: dict[str, Any] = response.json()
    return channel


async def stub_agent(http: httpx2.AsyncClient, port: int) -> str:
    """Register the bench's stub agent (no buffer) at `port`; returns its signing secret."""
    created = await http.post(
        "/auth/agents",
        json={
            "name": "bench-agent",
            "webhook_url": f"http://{HOST}:{port}/",
            "buffer_time_seconds": 0,
        },
    )
    created.raise_for_status()
    secret: str = created.json()["webhook_secret"]
    return secret


# --- signed Twilio webhooks ----------------------------------------------------------------


def twilio_signature(url: str, params: dict[str, str]) -> str:
    payload = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(
        hmac.new(AUTH_TOKEN.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()


class TwilioWebhooks:
    """Builds signed inbound WhatsApp messages for one channel, each with a new MessageSid."""

    def __init__(self, server: Server, channel_id: str, contacts: int) -> None:
        self.path = f"/webhooks/whatsapp_twilio/{channel_id}"
        self.url = server.url + self.path  # the hub's public URL defaults to where it listens
        self.host = f"{HOST}:{server.port}"
        self.contacts = contacts
        self.count = 0

    def __call__(self, body: str | None = None) -> bytes:
        self.count += 1
        sid = "SM" + uuid.uuid4().hex
        number = f"+1555{self.count % self.contacts:07d}"
        params = {
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ProfileName": f"Contact {self.count % self.contacts}",
            "MessageType": "text",
            "SmsSid": sid,
            "WaId": number[1:],
            "SmsStatus": "received",
            "Body": body or f"Hello, this is message {self.count}",
            "To": "whatsapp:+15550000000",
            "NumSegments": "1",
            "ReferralNumMedia": "0",
            "MessageSid": sid,
            "AccountSid": ACCOUNT_SID,
            "From": f"whatsapp:{number}",
            "ApiVersion": "2010-04-01",
        }
        return post(
            self.path,
            self.host,
            urlencode(params).encode(),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio_signature(self.url, params),
                "User-Agent": "TwilioProxy/1.1",
            },
        )


# --- (a) throughput ------------------------------------------------------------------------


async def throughput(args: argparse.Namespace, prefix: list[str], workdir: Path) -> dict[str, Any]:
    hub, bare = hub_server(workdir, "hub-throughput"), bare_server(workdir)
    try:
        await hub.start(prefix, "/readyz")
        await bare.start(prefix, "/docs")
        async with admin_client(hub) as http:
            channel = await twilio_channel(http)
        # The hub must see a new MessageSid every time (it stores each message once), so its
        # requests are signed as they go; the bare endpoint stores nothing, so it gets the same
        # kind of requests from a pre-signed pool and the load generator keeps ahead of it.
        bare_pool = itertools.cycle(
            [TwilioWebhooks(bare, channel["id"], args.contacts)() for _ in range(2000)]
        )
        loads: dict[str, tuple[Server, Callable[[], bytes]]] = {
            "hub": (hub, TwilioWebhooks(hub, channel["id"], args.contacts)),
            "bare": (bare, lambda: next(bare_pool)),
        }
        results: dict[str, list[LoadResult]] = {"hub": [], "bare": []}
        cpu_ms: dict[str, list[float]] = {"hub": [], "bare": []}
        for server, make in loads.values():  # warm-up, not counted
            await closed_loop(HOST, server.port, make, connections=args.connections, seconds=2)
        for _ in range(args.rounds):
            for name, (server, make) in loads.items():
                cpu_before = server.cpu_seconds()
                result = await closed_loop(
                    HOST,
                    server.port,
                    make,
                    connections=args.connections,
                    seconds=args.round_seconds,
                )
                cpu = server.cpu_seconds() - cpu_before
                results[name].append(result)
                cpu_ms[name].append(cpu * 1000 / max(1, result.completed))
                print(
                    f"  {name:5} {result.rate:8.0f} req/s  {cpu_ms[name][-1]:6.2f} CPU ms/req  "
                    f"server CPU {cpu / result.seconds:4.0%}  statuses {result.statuses}  "
                    f"errors {result.errors}",
                    flush=True,
                )
    finally:
        hub.stop()
        bare.stop()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    def rate(name: str) -> float:
        return median([r.rate for r in results[name]])

    return {
        "hub_rps": rate("hub"),
        "bare_rps": rate("bare"),
        "ratio": rate("hub") / rate("bare"),
        "hub_cpu_ms": median(cpu_ms["hub"]),
        "bare_cpu_ms": median(cpu_ms["bare"]),
        "cpu_ratio": median(cpu_ms["bare"]) / median(cpu_ms["hub"]),
        "hub_errors": sum(r.errors for r in results["hub"]),
        "bare_errors": sum(r.errors for r in results["bare"]),
        "hub_statuses": [r.statuses for r in results["hub"]],
    }


# --- (b) latency ---------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def latency(
    args: argparse.Namespace, prefix: list[str], workdir: Path, rate: float
) -> dict[str, Any]:
    hub = hub_server(workdir, f"hub-latency-{rate:g}")
    agent_seen: dict[int, float] = {}
    ws_seen: dict[int, float] = {}
    secret: list[str] = []

    def number(content: str) -> int | None:
        return int(content[4:]) if content.startswith("lat-") else None

    async def agent(path: bytes, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        now = time.perf_counter()
        payload = Webhook(secret[0]).verify(body, headers)
        new_ids = set(payload["new_message_ids"])
        for message in payload["messages"]:
            n = number(message["content"]) if message["id"] in new_ids else None
            if n is not None:
                agent_seen.setdefault(n, now)
        return 200, b"{}"

    agent_server = await serve(agent)
    agent_port = agent_server.sockets[0].getsockname()[1]
    try:
        await hub.start(prefix, "/readyz")
        async with admin_client(hub) as http:
            channel = await twilio_channel(http)
            secret.append(await stub_agent(http, agent_port))
            token = http.headers["Authorization"].split()[1]

        make = TwilioWebhooks(hub, channel["id"], args.contacts)
        warmup = int(rate)  # one second: also creates the chats
        total = warmup + int(rate * args.latency_seconds)
        requests = [make(f"lat-{n}") for n in range(total)]
        # Like a platform, open another connection whenever none is idle: the hub's queueing
        # shows in the latency instead of being hidden in the load generator.
        idle = [await Connection(HOST, hub.port).open() for _ in range(args.connections)]
        opened = len(idle)
        sent: dict[int, float] = {}
        acked: dict[int, float] = {}
        statuses: dict[int | str, int] = {}

        async def send(n: int) -> None:
            nonlocal opened
            if idle:
                conn = idle.pop()
            else:
                conn, opened = Connection(HOST, hub.port), opened + 1
            try:
                sent[n] = time.perf_counter()
                response = await conn.request(requests[n])
                acked[n] = time.perf_counter() - sent[n]
                statuses[response.status] = statuses.get(response.status, 0) + 1
            except (OSError, asyncio.IncompleteReadError) as exc:
                conn.close()  # reopened on next use
                name = type(exc).__name__
                statuses[name] = statuses.get(name, 0) + 1
            finally:
                idle.append(conn)

        async with ws_connect(f"ws://{HOST}:{hub.port}/ws?token={token}") as ws:

            async def watch() -> None:
                async for frame in ws:
                    event = json.loads(frame)
                    if event.get("type") == "new_message" and event["sender_type"] == "CONTACT":
                        n = number(event["preview"])
                        if n is not None:
                            ws_seen.setdefault(n, time.perf_counter())

            watcher = asyncio.create_task(watch())
            cpu_before = hub.cpu_seconds()
            start = time.perf_counter()
            tasks = []
            for n in range(total):
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(n)))
            offered = total / (time.perf_counter() - start)
            await asyncio.gather(*tasks)
            deadline = time.perf_counter() + 10
            while (len(agent_seen) < total or len(ws_seen) < total) and (
                time.perf_counter() < deadline
            ):
                await asyncio.sleep(0.05)
            cpu_ms = (hub.cpu_seconds() - cpu_before) * 1000 / total
            watcher.cancel()
    finally:
        hub.stop()
        agent_server.close()

    measured = range(warmup, total)

    def stats(seen: dict[int, float]) -> dict[str, float]:
        ms = [(seen[n] - sent[n]) * 1000 for n in measured if n in seen]
        return {
            "p50": percentile(ms, 50),
            "p90": percentile(ms, 90),
            "p99": percentile(ms, 99),
            "max": max(ms),
            "missing": len(measured) - len(ms),
        }

    ack_ms = [acked[n] * 1000 for n in measured if n in acked]
    return {
        "messages": len(measured),
        "rate": rate,
        "send_span_rate": offered,
        "connections": opened,
        "hub_cpu_ms_per_message": cpu_ms,
        "statuses": statuses,
        "agent": stats(agent_seen),
        "websocket": stats(ws_seen),
        "ack": {"p50": percentile(ack_ms, 50), "p99": percentile(ack_ms, 99), "max": max(ack_ms)},
    }


# --- report --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def report(
    info: dict[str, str], pinned: bool, a: dict[str, Any] | None, bs: list[dict[str, Any]]
) -> str:
    lines = [
        f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
        f"load average before the run {info['load_average']}, "
        + ("servers pinned to CPU 0, load on CPU 1" if pinned else "not pinned"),
        "",
        "| measurement | result | target |",
        "|---|---|---|",
    ]
    notes = []
    if a is not None:
        target_a = "met" if a["ratio"] >= 1 / 3 else "MISSED"
        lines += [
            f"| (a) inbound Twilio webhooks, `agenthub serve` on SQLite | {a['hub_rps']:.0f} req/s"
            " | |",
            f"| (a) bare FastAPI form endpoint, same uvicorn | {a['bare_rps']:.0f} req/s | |",
            f"| (a) hub / bare | {a['ratio']:.2f} | ≥ 0.33: {target_a} |",
            f"| (a) server CPU per request, hub / bare | {a['hub_cpu_ms']:.2f} / "
            f"{a['bare_cpu_ms']:.2f} ms (bare/hub {a['cpu_ratio']:.2f}) | |",
        ]
        notes.append(
            f"(a) median of the rounds; errors: hub {a['hub_errors']}, bare {a['bare_errors']}."
        )
    for i, b in enumerate(bs):
        ag, ws, ack = b["agent"], b["websocket"], b["ack"]
        target_b = "met" if ag["p99"] < 50 and ag["missing"] == 0 else "MISSED"
        target = f"p99 < 50 ms: {target_b}" if i == 0 else ""
        at = f"at {b['rate']:g} msg/s"
        lines += [
            f"| (b) webhook → agent receipt {at}, p50 / p99 (max) | {ag['p50']:.1f} / "
            f"{ag['p99']:.1f} ms ({ag['max']:.1f}) | {target} |",
            f"| (b) webhook → WebSocket `new_message` {at}, p50 / p99 (max) | {ws['p50']:.1f} / "
            f"{ws['p99']:.1f} ms ({ws['max']:.1f}) | |",
            f"| (b) webhook answered (TwiML) {at}, p50 / p99 | {ack['p50']:.1f} / "
            f"{ack['p99']:.1f} ms | |",
        ]
        notes.append(
            f"(b) {b['messages']} messages at {b['rate']:g}/s "
            f"(sent at {b['send_span_rate']:.0f}/s over up to {b['connections']} connections), "
            f"hub CPU {b['hub_cpu_ms_per_message']:.1f} ms per message (inbound, delivery, "
            f"WebSocket), statuses {b['statuses']}, "
            f"missing at the agent {ag['missing']}, at the WebSocket {ws['missing']}."
        )
    return "\n".join([*lines, "", *notes])


async def run(args: argparse.Namespace) -> None:
    # The parts after (c) place their own processes: only (a) to (c) pin this one.
    unpinned = args.no_pin or args.only in ("inbox", "console", "websocket")
    prefix, load_cpus = ([], None) if unpinned else pinning()
    every_cpu = os.sched_getaffinity(0)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    info = machine()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="agenthub-bench-"))
    try:
        a = None
        if args.only in (None, "throughput"):
            print(
                f"(a) throughput: {args.rounds} x {args.round_seconds:g} s per server, "
                f"{args.connections} connections",
                flush=True,
            )
            a = await throughput(args, prefix, workdir)
        bs = []
        for rate in rates if args.only in (None, "latency") else []:
            print(f"(b) latency: {rate:g} msg/s for {args.latency_seconds:g} s", flush=True)
            bs.append(await latency(args, prefix, workdir, rate))
        c = cpu_rows = None
        if args.only in (None, "multiprocess") and not args.no_multiprocess:
            from bench import multiprocess

            if args.cpu_per_message:
                cpu_rows = await multiprocess.cpu_per_message(args, workdir, rates)
            else:
                c = await multiprocess.run(args, workdir, rates)
        d = None
        if args.only == "inbox" or (args.only is None and not args.no_inbox):
            from bench import inbox

            d = await inbox.run(args)
        os.sched_setaffinity(0, every_cpu)
        e = f = None
        if args.only == "console" or (args.only is None and not args.no_console):
            from bench import console

            e = await console.run(args)
        if args.only == "websocket" or (args.only is None and not args.no_websocket):
            from bench import ws_fanout

            f = await ws_fanout.run(args)
    except BaseException:
        print(f"failed; the servers' logs are in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print()
    if a is not None or bs:
        print(report(info, bool(load_cpus), a, bs))
    if c is not None:
        from bench import multiprocess

        print()
        print(multiprocess.report(c))
    if cpu_rows:
        from bench import multiprocess

        print()
        print(multiprocess.cpu_report(cpu_rows))
    if d is not None:
        from bench import inbox

        print()
        print(inbox.report(d, plans=args.inbox_plans))
    if e is not None:
        from bench import console

        print()
        print(console.report(e))
    if f is not None:
        from bench import ws_fanout

        print()
        print(ws_fanout.report(f))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "throughput": a,
                    "latency": bs,
                    "multiprocess": c,
                    "cpu_per_message": cpu_rows,
                    "inbox": d,
                    "console": e,
                    "websocket": f,
                },
                indent=2,
                default=str,
            )
        )


def main() -> None:
    args = parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))  # a leaner event loop for the load generator


if __name__ == "__main__":
    main()
