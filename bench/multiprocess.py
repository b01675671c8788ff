"""(c) The production setup: `agenthub serve` x1 and x2 beside two `agenthub worker`s, on
PostgreSQL and Redis, measured like (a) and (b).

- A scratch PostgreSQL database (`agenthub_bench_<random>`, created and dropped) and one Redis
  database index (`--redis-url`, db 9 by default; flushed before and after the run).
- Nothing is pinned: the load generator, the serve processes, the workers (Celery prefork,
  `AGENTHUB_WORKER_CONCURRENCY` children each, beat embedded), PostgreSQL and Redis share the
  machine's cores, so on a two-core machine two serve processes cannot get two cores' worth.
  The report gives the machine's CPU use during the rounds to show how close to full it ran.
- Throughput: signed Twilio webhooks (no agent linked), closed loop. Rounds alternate between one
  serve process (every connection to A) and two (connections split evenly over A and B, as a load
  balancer would); B is started before each of its rounds and stopped after, so a one-process
  round carries no idle second process reading the event stream.
- Latency: a stub agent with buffer_time_seconds=0 and a dashboard WebSocket on A. With two
  processes every other webhook goes to B, so half the `new_message` events reach A's WebSocket
  through Redis Streams from the other process; every delivery is made by a Celery worker.
  After a short unmeasured warm-up, each of `--rates` (lowest first) runs with one serve process,
  then with two; past saturation the bench stops waiting for answers `ANSWER_WAIT_SECONDS` after
  the last webhook, and between runs it waits (at most `DRAIN_SECONDS`) for the workers'
  backlog. It checks that every webhook answered 200 reached the agent, and counts duplicates.
- Crash recovery: an agent with a 30 s timeout holds the first attempt of a few deliveries;
  the worker holding them is SIGKILLed (its Celery main process and its pool processes at
  once); measured is the time from the kill to each delivery's retry (same webhook-id) by the
  other worker reaching the agent. Their leases (`AGENTHUB_DELIVERY_LEASE_SECONDS`, 5 s) are no
  longer renewed, so they run out within a lease of the kill. `--crash-recovery-only` runs this
  part alone (with the processes it needs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from standardwebhooks import Webhook
from websockets.asyncio.client import connect as ws_connect

from bench import __main__ as single
from bench.wire import Connection, LoadResult, closed_loop, serve

HOST = single.HOST
# Where "platforms" reach the hub (a load balancer in production): Twilio signatures are checked
# against it, so the same signed request is valid on either serve process.
PUBLIC_URL = "https://hub.bench.invalid"
WORKER_CONCURRENCY = 2  # Celery processes per worker (the default)
ANSWER_WAIT_SECONDS = 10.0  # after the last webhook of a latency run is sent
DRAIN_SECONDS = 30.0  # at most, after a latency run, for the workers to finish its deliveries


# --- services ------------------------------------------------------------------------------


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or HOST, parts.port or default_port), timeout=1
        ):
            return True
    except OSError:
        return False


def libpq_url(url: str) -> str:
    """`postgresql+psycopg://…` (SQLAlchemy form) → `postgresql://…` (libpq form)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


class ScratchDatabase:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = libpq_url(admin_url)
        self.name = f"agenthub_bench_{secrets.token_hex(4)}"
        parts = urlsplit(self.admin_url)
        self.url = f"postgresql+psycopg://{parts.netloc}/{self.name}"
        self.hub_libpq_url = f"postgresql://{parts.netloc}/{self.name}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.encode())

    def create(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def server_version(self) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"

    def backlog(self) -> int:
        """Agent deliveries pending plus buffers waiting to become deliveries."""
        with psycopg.connect(self.hub_libpq_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM agent_deliveries WHERE status = 'pending')"
                " + (SELECT count(*) FROM chat_agents WHERE due_at IS NOT NULL)"
            ).fetchone()
        return int(row[0]) if row else 0

    def connections(self) -> int:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.name,)
            ).fetchone()
        return int(row[0]) if row else 0


# --- CPU accounting --------------------------------------------------------------------------


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by `root` and its live descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid in times:
        ancestor = pid
        while ancestor > 1:
            if ancestor == root:
                total += times[pid]
                break
            ancestor = parents.get(ancestor, 0)
    return total


class CpuMeter:
    """CPU used between `start()` and `stop()` by the machine and by groups of processes."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def _sample(self) -> tuple[tuple[float, float], dict[str, float]]:
        return machine_busy(), {
            name: sum(tree_cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()
        }

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        (busy1, total1), used1 = self._sample()
        (busy0, total0), used0 = self._before
        result = {"machine_busy": (busy1 - busy0) / max(1.0, total1 - total0)}
        for name in used1:
            result[f"{name}_cpu_s"] = used1[name] - used0.get(name, 0.0)
        return result


# --- processes -----------------------------------------------------------------------------


def hub_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "AGENTHUB_DATABASE_URL": database_url,
        "AGENTHUB_REDIS_URL": redis_url,
        "AGENTHUB_SECRET_KEY": "bench-secret-key",
        "AGENTHUB_PUBLIC_URL": PUBLIC_URL,
        "AGENTHUB_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        # The stub agent listens on loopback: off SQLite the SSRF guard would refuse it.
        "AGENTHUB_ALLOW_PRIVATE_AGENT_URLS": "true",
        "PYTHONUNBUFFERED": "1",
    }


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
    env.update(extra, PYTHONPATH=str(single.ROOT))
    return env


class Worker:
    """One `agenthub worker` (Celery prefork, beat embedded), its log in the work directory."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name, self.workdir = name, workdir
        # Each worker its own temp dir, so nothing a worker keeps there (older versions: the
        # beat's schedule file) is shared with the other worker or another run on the machine.
        tmp = workdir / f"{name}-tmp"
        tmp.mkdir(exist_ok=True)
        self.env = clean_env({**env, "TMPDIR": str(tmp)})
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [single.AGENTHUB, "worker"],
            cwd=self.workdir,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while b" ready." not in self.log.read_bytes():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start:\n{self.log_text()}")
            await asyncio.sleep(0.2)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def problems(self) -> int:
        """Log lines at ERROR/CRITICAL or tracebacks (shutdown noise excluded)."""
        text = self.log.read_text(errors="replace")
        return sum(
            1
            for line in text.splitlines()
            if "ERROR/" in line or "CRITICAL/" in line or line.startswith("Traceback")
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # warm shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def serve_process(workdir: Path, name: str, env: dict[str, str]) -> single.Server:
    return single.Server(name, [single.AGENTHUB, "serve"], workdir, env=dict(env))


def webhooks_for(server: single.Server, channel_id: str, contacts: int) -> single.TwilioWebhooks:
    make = single.TwilioWebhooks(server, channel_id, contacts)
    make.url = PUBLIC_URL + make.path  # signed for the public URL, like behind a load balancer
    return make


def pid_of(server: single.Server) -> int:
    assert server.process is not None
    return server.process.pid


# --- (c1) throughput -------------------------------------------------------------------------


async def spread_load(
    targets: list[tuple[single.Server, Callable[[], bytes]]], connections: int, seconds: float
) -> tuple[LoadResult, list[int]]:
    """Closed loop over several servers at once, connections split evenly."""
    shares = [
        connections // len(targets) + (i < connections % len(targets)) for i in range(len(targets))
    ]
    results = await asyncio.gather(
        *(
            closed_loop(HOST, server.port, make, connections=share, seconds=seconds)
            for (server, make), share in zip(targets, shares, strict=False)
        )
    )
    statuses: dict[int, int] = {}
    for result in results:
        for status, n in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    combined = LoadResult(
        completed=sum(r.completed for r in results),
        errors=sum(r.errors for r in results),
        seconds=max(r.seconds for r in results),
        statuses=statuses,
    )
    return combined, [r.completed for r in results]


async def throughput(
    args: argparse.Namespace,
    workdir: Path,
    env: dict[str, str],
    a: single.Server,
    workers: list[Worker],
    db: ScratchDatabase,
) -> dict[str, Any]:
    async with single.admin_client(a) as http:
        channel = await single.twilio_channel(http)
    make_a = webhooks_for(a, channel["id"], args.contacts)
    await spread_load([(a, make_a)], args.connections, 2)  # warm-up, not counted
    worker_pids = [w.process.pid for w in workers if w.process is not None]
    rounds: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    peak_connections = 0
    for _ in range(args.rounds):
        for count in (1, 2):
            b: single.Server | None = None
            targets: list[tuple[single.Server, Callable[[], bytes]]] = [(a, make_a)]
            try:
                if count == 2:
                    b = serve_process(workdir, "serve-b", env)
                    await b.start([], "/readyz")
                    targets.append((b, webhooks_for(b, channel["id"], args.contacts)))
                    await spread_load(targets, args.connections, 1)  # B's warm-up
                meter = CpuMeter({"serve": [pid_of(s) for s, _ in targets], "workers": worker_pids})
                meter.start()
                result, per_server = await spread_load(
                    targets, args.connections, args.round_seconds
                )
                cpu = meter.stop()
                peak_connections = max(peak_connections, db.connections())
            finally:
                if b is not None:
                    b.stop()
            figures = {
                "rate": result.rate,
                "per_server": per_server,
                "errors": result.errors,
                "statuses": result.statuses,
                "serve_cpu_ms": cpu["serve_cpu_s"] * 1000 / max(1, result.completed),
                **cpu,
            }
            rounds[count].append(figures)
            print(
                f"  {count} x serve {result.rate:7.0f} req/s  split {per_server}  "
                f"serve CPU {figures['serve_cpu_ms']:.2f} ms/req  "
                f"machine busy {cpu['machine_busy']:4.0%}  statuses {result.statuses}  "
                f"errors {result.errors}",
                flush=True,
            )

    def median(count: int, key: str) -> float:
        values = sorted(r[key] for r in rounds[count])
        return float(values[len(values) // 2])

    return {
        "one_rps": median(1, "rate"),
        "two_rps": median(2, "rate"),
        "scaling": median(2, "rate") / median(1, "rate"),
        "one_serve_cpu_ms": median(1, "serve_cpu_ms"),
        "two_serve_cpu_ms": median(2, "serve_cpu_ms"),
        "one_machine_busy": median(1, "machine_busy"),
        "two_machine_busy": median(2, "machine_busy"),
        "errors": sum(r["errors"] for count in rounds for r in rounds[count]),
        "peak_db_connections": peak_connections,
        "rounds": rounds,
    }


# --- (c2) latency ----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    return single.percentile(values, p) if values else float("nan")


async def latency(
    args: argparse.Namespace,
    workdir: Path,
    env: dict[str, str],
    a: single.Server,
    workers: list[Worker],
    rates: list[float],
    db: ScratchDatabase,
) -> dict[str, Any]:
    """Every rate with one serve process, then every rate with two (B started once), lowest
    rate first; after each run the workers' backlog is drained before the next starts."""
    agent_seen: dict[str, float] = {}
    delivered_ids: set[str] = set()
    duplicates = 0
    secret: list[str] = []

    async def agent(path: bytes, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        nonlocal duplicates
        now = time.perf_counter()
        payload = Webhook(secret[0]).verify(body, headers)
        new_ids = set(payload["new_message_ids"])
        for message in payload["messages"]:
            if message["id"] not in new_ids:
                continue
            if message["id"] in delivered_ids:
                duplicates += 1
            delivered_ids.add(message["id"])
            agent_seen.setdefault(message["content"], now)
        return 200, b"{}"

    agent_server = await serve(agent)
    agent_port = agent_server.sockets[0].getsockname()[1]
    runs: list[dict[str, Any]] = []
    b: single.Server | None = None
    try:
        async with single.admin_client(a) as http:
            secret.append(await single.stub_agent(http, agent_port))
            # A channel of its own, created after the agent, so every chat links the agent.
            response = await http.post(
                "/channels",
                json={
                    "name": "bench-latency",
                    "platform": "whatsapp_twilio",
                    "credentials": {
                        "account_sid": single.ACCOUNT_SID,
                        "auth_token": single.AUTH_TOKEN,
                        "from_number": "whatsapp:+15550000001",
                    },
                    "config": {"api_base_url": "http://127.0.0.1:9"},
                },
            )
            response.raise_for_status()
            channel = response.json()
            token = http.headers["Authorization"].split()[1]

        worker_pids = [w.process.pid for w in workers if w.process is not None]
        # Warm-up, not measured: new chats and the workers' first passes (each Celery process
        # imports the delivery code and opens its connections on first use).
        warm = argparse.Namespace(**{**vars(args), "latency_seconds": 3.0})
        await open_loop(warm, 10.0, [a], channel["id"], token, "warm-", agent_seen)
        drain_start = time.perf_counter()
        while db.backlog() and time.perf_counter() - drain_start < DRAIN_SECONDS:
            await asyncio.sleep(0.5)
        for count in (1, 2):
            servers = [a]
            if count == 2:
                b = serve_process(workdir, "serve-b-latency", env)
                await b.start([], "/readyz")
                servers.append(b)
            for rate in sorted(rates):
                meter = CpuMeter({"serve": [pid_of(s) for s in servers], "workers": worker_pids})
                meter.start()
                run = await open_loop(
                    args, rate, servers, channel["id"], token, f"mp{count}-{rate:g}-", agent_seen
                )
                cpu = meter.stop()
                drain_start = time.perf_counter()
                while db.backlog() and time.perf_counter() - drain_start < DRAIN_SECONDS:
                    await asyncio.sleep(0.5)
                # Every webhook the hub answered 200 must reach the agent (exactly once: see
                # `duplicates`); those the bench gave up on were never acknowledged.
                accepted = run.pop("accepted_names")
                deadline = time.perf_counter() + 10
                while time.perf_counter() < deadline and any(
                    name not in agent_seen for name in accepted
                ):
                    await asyncio.sleep(0.2)
                run.update(
                    accepted=len(accepted),
                    accepted_not_delivered=sum(name not in agent_seen for name in accepted),
                    drain_seconds=time.perf_counter() - drain_start,
                    backlog_left=db.backlog(),
                    serve_processes=count,
                    serve_cpu_ms=cpu["serve_cpu_s"] * 1000 / run["total"],
                    workers_cpu_ms=cpu["workers_cpu_s"] * 1000 / run["total"],
                    machine_busy=cpu["machine_busy"],
                )
                runs.append(run)
                ag, ws = run["agent"], run["websocket"]
                print(
                    f"  {count} x serve, {rate:g} msg/s  agent p50/p99 {ag['p50']:.1f}/"
                    f"{ag['p99']:.1f} ms (missing {ag['missing']})  WebSocket p50/p99 "
                    f"{ws['p50']:.1f}/{ws['p99']:.1f} ms (missing {ws['missing']})  CPU per "
                    f"message: serve {run['serve_cpu_ms']:.1f} ms, workers "
                    f"{run['workers_cpu_ms']:.1f} ms  statuses {run['statuses']}",
                    flush=True,
                )
    finally:
        if b is not None:
            b.stop()
        agent_server.close()
    return {"runs": runs, "duplicates": duplicates}


async def open_loop(
    args: argparse.Namespace,
    rate: float,
    servers: list[single.Server],
    channel_id: str,
    token: str,
    tag: str,
    agent_seen: dict[str, float],
) -> dict[str, Any]:
    """`rate` webhooks/s for a warm-up second plus `args.latency_seconds`, message n to
    `servers[n % len(servers)]`; a WebSocket on the first server watches `new_message`.
    As in (b), another connection is opened whenever none to that server is idle."""
    makers = [webhooks_for(s, channel_id, args.contacts) for s in servers]
    warmup = int(rate)
    total = warmup + int(rate * args.latency_seconds)
    requests = [makers[n % len(makers)](f"{tag}{n}") for n in range(total)]
    idle: list[list[Connection]] = []
    for server in servers:
        idle.append(
            [
                await Connection(HOST, server.port).open()
                for _ in range(max(1, args.connections // len(servers)))
            ]
        )
    opened = sum(len(conns) for conns in idle)
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    statuses: dict[str, int] = {}
    statuses_by_n: dict[int, int] = {}
    ws_seen: dict[str, float] = {}

    async def send(n: int) -> None:
        nonlocal opened
        target = n % len(servers)
        if idle[target]:
            conn = idle[target].pop()
        else:
            conn, opened = Connection(HOST, servers[target].port), opened + 1
        try:
            sent[n] = time.perf_counter()
            response = await conn.request(requests[n])
            acked[n] = time.perf_counter() - sent[n]
            statuses_by_n[n] = response.status
            key = str(response.status)
        except (OSError, asyncio.IncompleteReadError) as exc:
            conn.close()  # reopened on next use
            key = type(exc).__name__
        finally:
            idle[target].append(conn)
        statuses[key] = statuses.get(key, 0) + 1

    async with ws_connect(f"ws://{HOST}:{servers[0].port}/ws?token={token}") as ws:

        async def watch() -> None:
            async for frame in ws:
                event = json.loads(frame)
                if event.get("type") == "new_message" and event["sender_type"] == "CONTACT":
                    ws_seen.setdefault(event["preview"], time.perf_counter())

        watcher = asyncio.create_task(watch())
        start = time.perf_counter()
        tasks = []
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(n)))
        offered = total / (time.perf_counter() - start)
        # Past saturation the answers queue up without bound: stop waiting after a while (the
        # bench must end), count what is unanswered, and let `drain` wait out the backlog.
        _, unanswered = await asyncio.wait(tasks, timeout=ANSWER_WAIT_SECONDS)
        for task in unanswered:
            task.cancel()
        await asyncio.gather(*unanswered, return_exceptions=True)
        names = [f"{tag}{n}" for n in range(total)]
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and not all(
            name in agent_seen and name in ws_seen for name in names
        ):
            await asyncio.sleep(0.05)
        watcher.cancel()
    for conns in idle:
        for conn in conns:
            conn.close()

    measured = range(warmup, total)

    def stats(seen: dict[str, float]) -> dict[str, float]:
        ms = [(seen[f"{tag}{n}"] - sent[n]) * 1000 for n in measured if f"{tag}{n}" in seen]
        return {
            "p50": percentile(ms, 50),
            "p90": percentile(ms, 90),
            "p99": percentile(ms, 99),
            "max": max(ms, default=float("nan")),
            "missing": len(measured) - len(ms),
        }

    ack_ms = [acked[n] * 1000 for n in measured if n in acked]
    accepted = [f"{tag}{n}" for n in range(total) if statuses_by_n.get(n) == 200]
    return {
        "accepted_names": accepted,  # popped by the caller
        "rate": rate,
        "messages": len(measured),
        "total": total,
        "send_span_rate": offered,
        "connections": opened,
        "unanswered": len(unanswered),
        "statuses": statuses,
        "agent": stats(agent_seen),
        "websocket": stats(ws_seen),
        "ack": {"p50": percentile(ack_ms, 50), "p99": percentile(ack_ms, 99)},
    }


# --- (c3) crash recovery ----------------------------------------------------------------------

CRASH_DELIVERIES = 6  # chats with a delivery in flight at the kill
CRASH_AGENT_TIMEOUT = 30.0  # seconds: a lease of timeout + margin would hold them this long


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sorted(tree)


def connections_to(port: int, pids: list[int]) -> int:
    """How many established loopback TCP connections to `port` the processes hold."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    held = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


async def crash_recovery(a: single.Server, workers: list[Worker]) -> dict[str, Any]:
    """SIGKILL the worker holding deliveries in flight; time from the kill to their retries."""
    killed = asyncio.Event()
    first_seen: dict[str, float] = {}
    retried_at: dict[str, float] = {}
    secret: list[str] = []

    async def agent(path: bytes, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        Webhook(secret[0]).verify(body, headers)
        webhook_id = headers["webhook-id"]
        if webhook_id in first_seen:
            retried_at.setdefault(webhook_id, time.perf_counter())
            return 200, b"{}"
        first_seen[webhook_id] = time.perf_counter()
        await killed.wait()  # held until the kill; the survivors' answers then go out
        return 200, b"{}"

    agent_server = await serve(agent)
    agent_port = agent_server.sockets[0].getsockname()[1]
    try:
        async with single.admin_client(a) as http:
            # Only this agent takes the new chats: the earlier parts' agents are gone.
            for old in (await http.get("/auth/agents")).json():
                await http.patch(f"/auth/agents/{old['id']}", json={"is_active": False})
            created = await http.post(
                "/auth/agents",
                json={
                    "name": "bench-crash-agent",
                    "webhook_url": f"http://{HOST}:{agent_port}/",
                    "buffer_time_seconds": 0,
                    "timeout_seconds": CRASH_AGENT_TIMEOUT,
                },
            )
            created.raise_for_status()
            secret.append(created.json()["webhook_secret"])
            channel = await single.twilio_channel(http)
        make = webhooks_for(a, channel["id"], CRASH_DELIVERIES)
        conn = await Connection(HOST, a.port).open()
        for n in range(CRASH_DELIVERIES):
            response = await conn.request(make(f"crash-{n}"))
            assert response.status == 200, response.status
        conn.close()
        deadline = time.perf_counter() + 30
        while len(first_seen) < CRASH_DELIVERIES:
            if time.perf_counter() > deadline:
                raise SystemExit(f"only {len(first_seen)} deliveries reached the crash agent")
            await asyncio.sleep(0.02)
        trees = {w.name: process_tree(w.process.pid) for w in workers if w.process is not None}
        held = {name: connections_to(agent_port, pids) for name, pids in trees.items()}
        victim = max(held, key=lambda name: held[name])
        for pid in trees[victim]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        killed.set()
        deadline = killed_at + CRASH_AGENT_TIMEOUT + 15
        while len(retried_at) < held[victim] and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # any retry of a delivery that was not lost would show now
    finally:
        agent_server.close()
    recoveries = sorted(t - killed_at for t in retried_at.values())
    return {
        "agent_timeout": CRASH_AGENT_TIMEOUT,
        "in_flight": len(first_seen),
        "on_killed_worker": held[victim],
        "retried": len(recoveries),
        "recovery_seconds": recoveries,
        "killed": victim,
    }


# --- the whole part --------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path, rates: list[float]) -> dict[str, Any] | None:
    if not reachable(args.postgres_url, 5432) or not reachable(args.redis_url, 6379):
        print(
            f"(c) skipped: PostgreSQL ({args.postgres_url}) or Redis ({args.redis_url}) "
            "is not reachable",
            flush=True,
        )
        return None
    print(
        f"(c) production setup: PostgreSQL + Redis ({args.redis_url}), 2 workers; "
        f"1 and 2 serve processes",
        flush=True,
    )
    # Unpin: (a) and (b) pin this process to one CPU, and children inherit that.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
    db = ScratchDatabase(args.postgres_url)
    store = redis.Redis.from_url(args.redis_url)
    db.create()
    store.flushdb()
    versions = (db.server_version(), str(store.info("server")["redis_version"]))
    env = hub_env(db.url, args.redis_url)
    workers = [Worker(f"worker-{i}", workdir, env) for i in (1, 2)]
    a = serve_process(workdir, "serve-a", env)
    try:
        migrate = subprocess.run(
            [single.AGENTHUB, "migrate"], env=clean_env(env), capture_output=True, check=False
        )
        if migrate.returncode != 0:
            raise SystemExit(f"agenthub migrate failed:\n{migrate.stdout.decode()}")
        for worker in workers:
            worker.start()
        await a.start([], "/readyz")
        for worker in workers:
            await worker.ready()
        t = lat = None
        if not args.crash_recovery_only:
            t = await throughput(args, workdir, env, a, workers, db)
            lat = await latency(args, workdir, env, a, workers, rates, db)
        problems = {w.name: w.problems() for w in workers}
        # Last: it kills a worker.
        crash = await crash_recovery(a, workers)
        print(
            f"  crash recovery: SIGKILL of {crash['killed']} with {crash['on_killed_worker']} "
            f"deliveries in flight (agent timeout {CRASH_AGENT_TIMEOUT:g} s); retried after "
            + ", ".join(f"{s:.2f}" for s in crash["recovery_seconds"])
            + " s",
            flush=True,
        )
    finally:
        a.stop()
        for worker in workers:
            worker.stop()
        try:
            db.drop()
        finally:
            store.flushdb()
            store.close()
    return {
        "postgres_version": versions[0],
        "redis_version": versions[1],
        "worker_concurrency": WORKER_CONCURRENCY,
        "cpus": os.cpu_count(),
        "load_average": load_average,
        "throughput": t,
        "latency": lat,
        "crash_recovery": crash,
        "worker_log_problems": problems,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="(c) an admin connection; a scratch database is created beside it and dropped",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/9",
        help="(c) a Redis database index nothing else uses: it is flushed",
    )
    parser.add_argument(
        "--crash-recovery-only",
        action="store_true",
        help="(c) only the crash-recovery measurement (a worker SIGKILLed mid-delivery)",
    )
    parser.add_argument(
        "--cpu-per-message",
        action="store_true",
        help="(c) only: CPU per delivered message, in-process serve against serve + workers",
    )


def report(c: dict[str, Any]) -> str:
    """The (c) section: a table with one column per number of serve processes, and notes."""
    crash = c["crash_recovery"]
    recoveries = crash["recovery_seconds"]
    crash_line = (
        f"(c) crash recovery: `agenthub worker` SIGKILLed with {crash['on_killed_worker']} of "
        f"{crash['in_flight']} deliveries in flight (agent timeout {crash['agent_timeout']:g} s, "
        f"lease 5 s renewed every 1.7 s): {crash['retried']} retried by the other worker, same "
        f"webhook-id, "
        + (
            f"{min(recoveries):.2f}-{max(recoveries):.2f} s after the kill"
            if recoveries
            else "none"
        )
        + f" (a lease of timeout + margin held them {crash['agent_timeout'] + 5:g} s)."
    )
    if c["throughput"] is None:
        return crash_line
    t, lat = c["throughput"], c["latency"]
    by = {(r["serve_processes"], r["rate"]): r for r in lat["runs"]}
    rates = sorted({r["rate"] for r in lat["runs"]}, reverse=True)

    def ms(figures: dict[str, float]) -> str:
        return f"{figures['p50']:.1f} / {figures['p99']:.1f} ({figures['max']:.0f})"

    lines = [
        f"(c) production setup: PostgreSQL {c['postgres_version']} (scratch database), "
        f"Redis {c['redis_version']}, 2 x `agenthub worker` (Celery prefork, concurrency "
        f"{c['worker_concurrency']} each, beat embedded); nothing pinned: the load generator, "
        f"the serve processes, the workers, PostgreSQL and Redis share {c['cpus']} CPUs; "
        f"load average before (c) {c['load_average']}",
        "",
        "| measurement | 1 x serve | 2 x serve |",
        "|---|---|---|",
        f"| (c) inbound Twilio webhooks (no agent linked) | {t['one_rps']:.0f} req/s "
        f"| {t['two_rps']:.0f} req/s |",
        f"| (c) scaling, 2 / 1 serve processes | | **{t['scaling']:.2f}** |",
        f"| (c) serve CPU per webhook (all serve processes) | {t['one_serve_cpu_ms']:.2f} ms "
        f"| {t['two_serve_cpu_ms']:.2f} ms |",
        f"| (c) CPU the serve processes got, in cores (rate x CPU per webhook) "
        f"| {t['one_rps'] * t['one_serve_cpu_ms'] / 1000:.2f} "
        f"| {t['two_rps'] * t['two_serve_cpu_ms'] / 1000:.2f} |",
        f"| (c) machine CPU busy during those rounds (all processes, all users) "
        f"| {t['one_machine_busy']:.0%} | {t['two_machine_busy']:.0%} |",
    ]
    for rate in rates:
        one, two = by[(1, rate)], by[(2, rate)]
        lines += [
            f"| (c) webhook → agent receipt at {rate:g} msg/s, p50 / p99 (max), ms "
            f"| {ms(one['agent'])} | {ms(two['agent'])} |",
            f"| (c) webhook → WebSocket `new_message` on A at {rate:g} msg/s, p50 / p99 "
            f"(max), ms | {ms(one['websocket'])} | {ms(two['websocket'])} |",
            f"| (c) webhook answered at {rate:g} msg/s, p50 / p99, ms | "
            f"{one['ack']['p50']:.1f} / {one['ack']['p99']:.1f} | "
            f"{two['ack']['p50']:.1f} / {two['ack']['p99']:.1f} |",
            f"| (c) CPU per message at {rate:g} msg/s, serve + workers, ms "
            f"| {one['serve_cpu_ms']:.1f} + {one['workers_cpu_ms']:.1f} "
            f"| {two['serve_cpu_ms']:.1f} + {two['workers_cpu_ms']:.1f} |",
        ]
    lines += [
        "",
        f"(c) throughput: median of {len(t['rounds'][1])} rounds each, alternating; rounds "
        + "; ".join(
            f"{count} x serve "
            + ", ".join(f"{r['rate']:.0f}" for r in t["rounds"][count])
            + " req/s"
            for count in (1, 2)
        )
        + f"; errors {t['errors']}; peak PostgreSQL connections to the scratch database "
        f"{t['peak_db_connections']}.",
    ]
    for run in lat["runs"]:
        lines.append(
            f"(c) latency, {run['serve_processes']} x serve at {run['rate']:g}/s: "
            f"{run['messages']} messages measured (sent at {run['send_span_rate']:.0f}/s over "
            f"{run['connections']} connections), statuses {run['statuses']}, unanswered after "
            f"{ANSWER_WAIT_SECONDS:g} s {run['unanswered']} (given up, never acknowledged), "
            f"missing at the agent {run['agent']['missing']}, at the WebSocket "
            f"{run['websocket']['missing']}; answered 200 but not delivered to the agent "
            f"{run['accepted_not_delivered']} of {run['accepted']}; "
            f"backlog drained in {run['drain_seconds']:.0f} s"
            + (f" ({run['backlog_left']} left)" if run["backlog_left"] else "")
            + "."
        )
    lines.append(
        f"(c) messages delivered to the agent more than once: {lat['duplicates']}; "
        f"error lines in the worker logs: {c['worker_log_problems']}."
    )
    lines.append(crash_line)
    return "\n".join(lines)


# --- (c4) CPU per delivered message, in-process against Celery ---------------------------------

CPU_RUN_SECONDS = 8.0  # of open-loop load per rate and mode (after a 1 s unmeasured ramp)
CPU_SETTLE_SECONDS = 15.0  # at most, after a run, for every accepted message to reach the agent


async def cpu_per_message(args: argparse.Namespace, workdir: Path, rates: list[float]) -> Any:
    """The same load, database and agent stub in both job runtimes, and the CPU all the hub's
    processes used per message delivered: (i) one `agenthub serve` in-process (no Redis) on
    PostgreSQL; (ii) one serve (Celery wake-ups, Redis events) beside two `agenthub worker`s
    as in (c). The agent (buffer 0) answers `200 {}`, as in (c). CPU is counted from the
    first webhook of a run until every accepted message has reached the agent."""
    if not reachable(args.postgres_url, 5432) or not reachable(args.redis_url, 6379):
        print("(c) CPU per message skipped: PostgreSQL or Redis is not reachable", flush=True)
        return None
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    print("(c) CPU per delivered message: in-process serve against serve + 2 workers", flush=True)
    db = ScratchDatabase(args.postgres_url)
    store = redis.Redis.from_url(args.redis_url)
    db.create()
    store.flushdb()
    celery_env = hub_env(db.url, args.redis_url)
    inproc_env = {k: v for k, v in celery_env.items() if k != "AGENTHUB_REDIS_URL"}
    agent_seen: dict[str, float] = {}
    secret: list[str] = []

    async def agent(path: bytes, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        now = time.perf_counter()
        payload = Webhook(secret[0]).verify(body, headers)
        new_ids = set(payload["new_message_ids"])
        for message in payload["messages"]:
            if message["id"] in new_ids:
                agent_seen.setdefault(message["content"], now)
        return 200, b"{}"

    agent_server = await serve(agent)
    agent_port = agent_server.sockets[0].getsockname()[1]
    rows: list[dict[str, Any]] = []
    channel_id = token = ""
    try:
        migrate = subprocess.run(
            [single.AGENTHUB, "migrate"], env=clean_env(inproc_env), capture_output=True
        )
        if migrate.returncode != 0:
            raise SystemExit(f"agenthub migrate failed:\n{migrate.stdout.decode()}")
        for mode in ("in-process", "celery"):
            env = celery_env if mode == "celery" else inproc_env
            workers = (
                [Worker(f"cpu-worker-{i}", workdir, env) for i in (1, 2)]
                if mode == "celery"
                else []
            )
            server = serve_process(workdir, f"cpu-serve-{mode}", env)
            try:
                for worker in workers:
                    worker.start()
                await server.start([], "/readyz")
                for worker in workers:
                    await worker.ready()
                async with single.admin_client(server) as http:
                    token = http.headers["Authorization"].split()[1]
                    if not secret:
                        secret.append(await single.stub_agent(http, agent_port))
                        channel_id = (await single.twilio_channel(http))["id"]
                load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
                # Unmeasured warm-up: the chats, the first passes in every process.
                warm = argparse.Namespace(**{**vars(args), "latency_seconds": 2.0})
                await open_loop(warm, 10.0, [server], channel_id, token, f"w{mode}-", agent_seen)
                await asyncio.sleep(1.0)
                pids = {"serve": [pid_of(server)]}
                if workers:
                    pids["workers"] = [w.process.pid for w in workers if w.process is not None]
                for rate in sorted(rates):
                    tag = f"cpu-{mode}-{rate:g}-"
                    meter = CpuMeter(pids)
                    run_args = argparse.Namespace(
                        **{**vars(args), "latency_seconds": CPU_RUN_SECONDS}
                    )
                    counts0 = activity(db, store)
                    meter.start()
                    run = await open_loop(
                        run_args, rate, [server], channel_id, token, tag, agent_seen
                    )
                    accepted = run.pop("accepted_names")
                    deadline = time.perf_counter() + CPU_SETTLE_SECONDS
                    while time.perf_counter() < deadline and any(
                        name not in agent_seen for name in accepted
                    ):
                        await asyncio.sleep(0.05)
                    cpu = meter.stop()
                    await asyncio.sleep(0.6)  # PostgreSQL's counters lag a little
                    counts = {k: v - counts0[k] for k, v in activity(db, store).items()}
                    delivered = sum(name in agent_seen for name in accepted)
                    per = {
                        group: cpu[f"{group}_cpu_s"] * 1000 / max(1, delivered) for group in pids
                    }
                    row = {
                        "mode": mode,
                        "rate": rate,
                        "sent": run["total"],
                        "accepted": len(accepted),
                        "delivered": delivered,
                        "cpu_ms": per,
                        "total_ms": sum(per.values()),
                        "agent_p50": run["agent"]["p50"],
                        "agent_p99": run["agent"]["p99"],
                        "machine_busy": cpu["machine_busy"],
                        "load_average": load_average,
                        "per_message": {k: v / max(1, delivered) for k, v in counts.items()},
                    }
                    rows.append(row)
                    print(
                        f"  {mode:10} {rate:5g} msg/s  delivered {delivered}/{run['total']}  "
                        + "  ".join(f"{g} {v:.2f}" for g, v in per.items())
                        + f"  = {row['total_ms']:.2f} CPU ms/message  agent p50/p99 "
                        f"{row['agent_p50']:.1f}/{row['agent_p99']:.1f} ms  machine busy "
                        f"{row['machine_busy']:.0%}  load {load_average}  per message: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in row["per_message"].items()),
                        flush=True,
                    )
                    load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
            finally:
                server.stop()
                for worker in workers:
                    worker.stop()
    finally:
        agent_server.close()
        try:
            db.drop()
        finally:
            store.flushdb()
            store.close()
    return rows


def activity(db: ScratchDatabase, store: redis.Redis) -> dict[str, float]:
    """Counters so far: PostgreSQL transactions on the scratch database, and Redis commands
    (LPUSH: Celery tasks sent; BRPOP: fetches by the workers; XADD: events published)."""
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (db.name,),
        ).fetchone()
    stats = store.info("commandstats")
    counts = {"transactions": float(row[0]) if row else 0.0}
    for command in ("lpush", "brpop", "xadd"):
        counts[command] = float(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
    return counts


def cpu_report(rows: list[dict[str, Any]]) -> str:
    base = {r["rate"]: r["total_ms"] for r in rows if r["mode"] == "in-process"}
    lines = [
        "| mode | rate, msg/s | delivered | CPU ms/message: serve | workers | total "
        "| ratio to in-process | per message: Celery tasks sent, DB transactions "
        "| agent p50 / p99, ms | load average before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["rate"], r["mode"] != "in-process")):
        workers = r["cpu_ms"].get("workers")
        lines.append(
            f"| {r['mode']} | {r['rate']:g} | {r['delivered']}/{r['sent']} "
            f"| {r['cpu_ms']['serve']:.2f} | "
            + (f"{workers:.2f}" if workers is not None else "-")
            + f" | {r['total_ms']:.2f} | {r['total_ms'] / base[r['rate']]:.2f} x "
            f"| {r['per_message']['lpush']:.2f}, {r['per_message']['transactions']:.2f} "
            f"| {r['agent_p50']:.1f} / {r['agent_p99']:.1f} | {r['load_average']} |"
        )
    return "\n".join(lines)
