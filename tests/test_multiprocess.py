"""The production setup with real processes: two `agenthub serve` and two `agenthub worker`
(`--concurrency 2`) on one scratch PostgreSQL database and one Redis (a `redis-server` of the
test's own, which the test kills and restarts), a loopback agent server in the test.

Counted for every contact message and every agent:

- sent: acknowledged (2xx) by a serve process — a platform retries until it gets one, and so
  does this test; the hub stores each platform message id once;
- delivered: in `new_message_ids` of a successful delivery, per the database and per the agent;
- duplicated: in two *different* successful deliveries (a retry of one delivery keeps its
  `webhook-id`, which is how an agent recognises a repeat);
- lost: in none.

and, per chat and agent, deliveries never overlap in time and carry the messages in the order
they were posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from standardwebhooks import Webhook
from websockets.asyncio.client import connect

from agenthub.db import sync_url
from tests.agent_server import Action, FakeAgent, Request, eventually, reply, respond
from tests.fake_platform import standard_webhook_headers
from tests.procs import (
    RedisServer,
    ServeProcess,
    WorkerProcess,
    connections_to,
    hub_env,
    scratch_database,
    stop_all,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.multiprocess,
]

BUFFER_SECONDS = 0.3
SWEEP_SECONDS = 0.2


# --- the processes ---------------------------------------------------------------------------


@dataclass
class Cluster:
    database_url: str
    redis: RedisServer
    serves: list[ServeProcess]
    workers: list[WorkerProcess]

    def query(self, sql: str, **params: Any) -> list[Any]:
        engine = create_engine(sync_url(self.database_url), poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        finally:
            engine.dispose()

    async def aquery(self, sql: str, **params: Any) -> list[Any]:
        return await asyncio.to_thread(self.query, sql, **params)


@asynccontextmanager
async def cluster(tmp_path: Path, *, serves: int = 2, workers: int = 2) -> AsyncIterator[Cluster]:
    """Start everything (in parallel); stop everything and drop the database, whatever happens."""
    with scratch_database() as database_url:
        redis = RedisServer(tmp_path)
        processes: list[Any] = []
        try:
            redis.start()
            env = hub_env(
                database_url,
                redis.url(),
                job_sweep_seconds=SWEEP_SECONDS,
                delivery_backoff_base_seconds=0.2,
                # A killed worker's deliveries are retried once their leases (renewed every
                # second while the worker lives) run out: within 3 s of the kill.
                delivery_lease_seconds=3,
                # At most 4 connections a process: 2 serve + 4 pool processes stay far below
                # PostgreSQL's 100, beside whatever else uses the server.
                db_pool_size=2,
                public_url="http://hub.test",
            )
            hub = Cluster(
                database_url,
                redis,
                [ServeProcess(f"serve{i}", env, tmp_path) for i in range(serves)],
                [WorkerProcess(f"worker{i}", env, tmp_path, concurrency=2) for i in range(workers)],
            )
            processes = [*hub.serves, *hub.workers]
            for process in processes:
                process.spawn()
            await asyncio.gather(*(asyncio.to_thread(p.wait_ready) for p in processes))
            yield hub
        finally:
            stop_all([*processes, redis])
            for process in [*processes, redis]:
                print(f"===== {process.name} =====\n{process.log_text()[-6000:]}")


# --- the agent -------------------------------------------------------------------------------


class Agent(FakeAgent):
    """The loopback agent: verifies every delivery's signature, notes the client's port (to
    know which process a request came from), answers after `work_seconds`. The first agent
    replies (an AGENT message the hub sends on to the channel's callback), the second not."""

    def __init__(self, work_seconds: float) -> None:
        super().__init__(self.answer)
        self.work_seconds = work_seconds
        self.secrets: dict[str, str] = {}
        self.replying: str | None = None
        self.bad_signatures: list[Request] = []
        self.callbacks: list[Request] = []

    async def answer(self, request: Request) -> Action:
        if request.path == "/callback":
            self.callbacks.append(request)
            return respond(200, {})
        try:
            Webhook(self.secrets[request.agent_id or ""]).verify(request.raw, request.headers)
        except Exception:
            self.bad_signatures.append(request)
            return respond(401, {})
        if request.agent_id == self.replying:
            return reply(f"ok {len(request.new_message_ids)}", delay=self.work_seconds)
        return respond(200, {}, delay=self.work_seconds)

    async def _handle(self, request: Request, reader: Any, writer: Any) -> None:
        request.peer_port = writer.get_extra_info("peername")[1]  # type: ignore[attr-defined]
        await super()._handle(request, reader, writer)

    def deliveries(self) -> list[Request]:
        return [r for r in self.requests if r.path != "/callback"]


# --- the world and the traffic ---------------------------------------------------------------


@dataclass
class World:
    cluster: Cluster
    http: httpx2.AsyncClient
    auth: dict[str, str]
    channel_id: str
    channel_secret: str
    agent_ids: list[str]
    token: str
    # What the test sent: chat key -> our message ids in posting order; message id -> port.
    posted: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    via: dict[str, int] = field(default_factory=dict)
    inbound_retries: int = 0


async def _setup(hub: Cluster, http: httpx2.AsyncClient, agent: Agent, timeout: float) -> World:
    a = hub.serves[0].url
    credentials = {"username": "admin", "password": "multiprocess-password"}
    assert (await http.post(f"{a}/auth/signup", json=credentials)).status_code == 201
    token = (await http.post(f"{a}/auth/login", json=credentials)).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    channel = await http.post(
        f"{a}/channels",
        headers=auth,
        json={"name": "web", "platform": "api", "config": {"callback_url": agent.url + "callback"}},
    )
    assert channel.status_code == 201, channel.text
    agent_ids = []
    for name in ("first", "second"):
        created = await http.post(
            f"{hub.serves[1].url}/auth/agents",
            headers=auth,
            json={
                "name": name,
                "webhook_url": agent.url,
                "buffer_time_seconds": BUFFER_SECONDS,
                "timeout_seconds": timeout,
                "activate_for_new_conversation": True,
            },
        )
        assert created.status_code == 201, created.text
        agent.secrets[created.json()["id"]] = created.json()["webhook_secret"]
        agent_ids.append(created.json()["id"])
    agent.replying = agent_ids[0]
    return World(
        hub,
        http,
        auth,
        channel.json()["id"],
        channel.json()["credentials"]["secret"],
        agent_ids,
        token,
    )


async def _post_inbound(world: World, serve: ServeProcess, chat: str, message_id: str) -> None:
    """POST one signed message like a platform: retry until a 2xx (never a 4xx)."""
    payload = {"contact_id": chat, "message_id": message_id, "content": message_id}
    body = json.dumps(payload)
    deadline = time.monotonic() + 30
    while True:
        headers = {
            "content-type": "application/json",
            **standard_webhook_headers(world.channel_secret, body),
        }
        try:
            response = await world.http.post(
                f"{serve.url}/webhooks/api/{world.channel_id}", content=body, headers=headers
            )
            if response.is_success:
                world.posted[chat].append(message_id)
                world.via[message_id] = serve.port
                return
            assert response.status_code >= 500, response.text
        except httpx2.TransportError:
            pass
        world.inbound_retries += 1
        assert time.monotonic() < deadline, f"{message_id} never acknowledged"
        await asyncio.sleep(0.05)


async def _send(world: World, chats: range, per_chat: int, *, pause: float = 0.0) -> None:
    """`per_chat` messages to each chat: one chat's messages one after another (that is their
    order), the chats concurrently, alternating between the serve processes."""
    serves = world.cluster.serves

    async def one_chat(c: int) -> None:
        chat = f"contact-{c:03d}"
        for _ in range(per_chat):
            n = len(world.posted[chat])
            await _post_inbound(world, serves[(c + n) % len(serves)], chat, f"{chat}/m{n:02d}")
            if pause:
                await asyncio.sleep(random.uniform(0, pause))

    await asyncio.gather(*(one_chat(c) for c in chats))


class Dashboard:
    """A WebSocket client on one serve process, collecting every event."""

    def __init__(self, serve: ServeProcess, token: str) -> None:
        self.url = f"ws://127.0.0.1:{serve.port}/ws?token={token}"
        self.events: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self.closed: str | None = None
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Dashboard:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    async def _run(self) -> None:
        async with connect(self.url, max_queue=None) as ws:
            # The pong comes from the command loop, which starts once the subscription is in
            # place: no event published after this can be missed.
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong"}
            self.ready.set()
            try:
                async for raw in ws:
                    self.events.append(json.loads(raw))
            finally:
                self.closed = f"{ws.close_code} {ws.close_reason}"

    def messages(self, sender_type: str) -> set[str]:
        return {
            e["message_id"]
            for e in self.events
            if e["type"] == "new_message" and e["sender_type"] == sender_type
        }


# --- the counts ------------------------------------------------------------------------------


@dataclass
class Counts:
    sent: int
    stored: int
    delivered: int
    duplicated: int
    lost: int


async def _settled(world: World, agent: Agent) -> bool:
    """Every posted message reached both agents, and nothing is pending in the database."""
    expected = {m for ms in world.posted.values() for m in ms}
    for agent_id in world.agent_ids:
        seen = {
            r.contents[i]
            for r in agent.successes
            if r.agent_id == agent_id
            for i in r.new_message_ids
        }
        if not expected <= seen:
            return False
    pending = await world.cluster.aquery(
        "SELECT (SELECT count(*) FROM agent_deliveries WHERE status = 'pending')"
        " + (SELECT count(*) FROM outbound_sends WHERE status = 'pending')"
        " + (SELECT count(*) FROM chat_agents WHERE due_at IS NOT NULL)"
    )
    return pending[0][0] == 0


async def _count(world: World, agent: Agent) -> dict[str, Counts]:
    """Per agent, from the database; checked against the agent's own view and the order."""
    hub = world.cluster
    contacts = await hub.aquery(
        "SELECT id, chat_id, external_id, seq FROM messages WHERE sender_type = 'CONTACT'"
    )
    ours = {row.id: row.external_id for row in contacts}
    chat_key = {row.chat_id: row.external_id.split("/")[0] for row in contacts}
    sent = {m for ms in world.posted.values() for m in ms}
    assert sorted(ours.values()) == sorted(sent)  # each stored once, whatever the retries

    deliveries = await hub.aquery(
        "SELECT id, chat_id, agent_id, status, message_ids, attempt_count, created_at"
        " FROM agent_deliveries ORDER BY created_at"
    )
    assert {d.status for d in deliveries} == {"succeeded"}, Counter(d.status for d in deliveries)
    succeeded = {d.id: d for d in deliveries}

    # The agent's view: every successful delivery reached it under its id, with the same
    # messages on every attempt; nothing reached it that the hub does not know.
    answered: dict[str, list[Request]] = defaultdict(list)
    for request in agent.deliveries():
        assert request.delivery_id in succeeded, request.delivery_id
        delivery = succeeded[request.delivery_id]
        assert request.new_message_ids == list(delivery.message_ids)
        if request.succeeded:
            answered[request.delivery_id].append(request)
    assert set(answered) == set(succeeded)
    assert agent.overlaps == []  # one chat + agent: never two deliveries at once
    assert agent.bad_signatures == []

    counts = {}
    for agent_id in world.agent_ids:
        mine = [d for d in deliveries if d.agent_id == agent_id]
        in_deliveries: dict[str, set[str]] = defaultdict(set)
        order: dict[str, list[str]] = defaultdict(list)
        for delivery in mine:  # created one after another per chat: in order
            for message_id in delivery.message_ids:
                in_deliveries[ours[message_id]].add(delivery.id)
                order[chat_key[delivery.chat_id]].append(ours[message_id])
        assert dict(order) == dict(world.posted)  # per chat: exactly the posting order

        # The same from the agent's side: its successful requests in the order they came.
        seen: dict[str, list[str]] = defaultdict(list)
        firsts = sorted((rs[0] for rs in answered.values()), key=lambda r: r.started_at)
        for request in firsts:
            if request.agent_id == agent_id:
                key = chat_key[request.chat_id or ""]
                seen[key] += [request.contents[i] for i in request.new_message_ids]
        assert dict(seen) == dict(world.posted)

        delivered = {m for m in sent if in_deliveries.get(m)}
        counts[agent_id] = Counts(
            sent=len(sent),
            stored=len(ours),
            delivered=len(delivered),
            duplicated=sum(1 for m in sent if len(in_deliveries.get(m, ())) > 1),
            lost=len(sent - delivered),
        )
    return counts


async def _check_replies(world: World, agent: Agent) -> int:
    """The replying agent's answers: one AGENT message per successful delivery, each POSTed to
    the channel's callback (a retried send keeps its message id)."""
    hub = world.cluster
    replies = await hub.aquery("SELECT id FROM messages WHERE sender_type = 'AGENT'")
    first_agent = await hub.aquery(
        "SELECT count(*) FROM agent_deliveries WHERE agent_id = :a", a=world.agent_ids[0]
    )
    assert len(replies) == first_agent[0][0]
    called_back = {r.json["message"]["id"] for r in agent.callbacks}
    assert called_back == {r.id for r in replies}
    return len(replies)


# --- the tests -------------------------------------------------------------------------------


async def test_two_serves_two_workers_deliver_every_message_exactly_once_in_order(
    tmp_path: Path,
) -> None:
    chats, per_chat = 30, 6
    async with (
        asyncio.timeout(120),
        Agent(work_seconds=0.02) as agent,
        cluster(tmp_path) as hub,
        httpx2.AsyncClient(timeout=15, limits=httpx2.Limits(max_connections=60)) as http,
    ):
        world = await _setup(hub, http, agent, timeout=10)
        a, b = hub.serves
        async with Dashboard(a, world.token) as on_a, Dashboard(b, world.token) as on_b:
            started = time.monotonic()
            await _send(world, range(chats), per_chat, pause=0.3)
            sending = time.monotonic() - started
            await eventually(lambda: _settled(world, agent), timeout=60, interval=0.2)
            settled = time.monotonic() - started

            counts = await _count(world, agent)
            replies = await _check_replies(world, agent)
            sent = chats * per_chat
            for agent_id in world.agent_ids:
                assert counts[agent_id] == Counts(sent, sent, sent, 0, 0), counts[agent_id]
            assert Counter(world.via.values()) == {a.port: sent // 2, b.port: sent // 2}

            # Every process's events reach every dashboard: contact messages stored by either
            # serve process, agent replies stored by the workers.
            contacts = await hub.aquery(
                "SELECT id, external_id FROM messages WHERE sender_type = 'CONTACT'"
            )
            contact_ids = {r.id for r in contacts}
            via_a = {r.id for r in contacts if world.via[r.external_id] == a.port}
            via_b = contact_ids - via_a
            reply_ids = {r.id for r in await hub.aquery(
                "SELECT id FROM messages WHERE sender_type = 'AGENT'"
            )}  # fmt: skip
            for dashboard, other in ((on_a, via_b), (on_b, via_a)):
                assert len(other) == sent // 2
                await eventually(
                    lambda d=dashboard, o=other: o <= d.messages("CONTACT"),
                    timeout=15,
                    message="a dashboard missed the other serve process's messages",
                )
                await eventually(
                    lambda d=dashboard: (
                        d.messages("CONTACT") == contact_ids and d.messages("AGENT") == reply_ids
                    ),
                    timeout=15,
                    message=f"dashboard missed events (closed: {dashboard.closed})",
                )
                ids = [e["event_id"] for e in dashboard.events]
                assert ids == sorted(set(ids))  # increasing, no repeats
            assert on_a.closed is None and on_b.closed is None

        deliveries = len({r.delivery_id for r in agent.deliveries() if r.succeeded})
        print(
            f"sent={sent} chats={chats} counts={counts} deliveries={deliveries} "
            f"replies={replies} sending={sending:.1f}s settled={settled:.1f}s "
            f"inbound_retries={world.inbound_retries} "
            f"events_a={len(on_a.events)} events_b={len(on_b.events)}"
        )


async def test_a_worker_killed_mid_delivery_and_a_redis_restart_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    """A slow agent (0.5 s per answer, timeout 30 s); one worker SIGKILLed with deliveries in
    flight on it (their leases, renewed while it lived, run out within 3 s of the kill, not
    after the timeout; then another worker retries them under the same id); Redis SIGKILLed and
    restarted empty while messages keep arriving."""
    chats = 12
    async with (
        asyncio.timeout(120),
        Agent(work_seconds=0.5) as agent,
        cluster(tmp_path) as hub,
        httpx2.AsyncClient(timeout=15) as http,
    ):
        world = await _setup(hub, http, agent, timeout=30)
        async with Dashboard(hub.serves[0], world.token) as dashboard:
            # 1. Messages to every chat; kill a worker while it has requests at the agent.
            await _send(world, range(chats), 2)
            killed, in_flight_on_killed = await _kill_with_requests_in_flight(hub.workers, agent)
            killed_at = time.monotonic()
            assert in_flight_on_killed

            # 2. More messages with one worker left.
            await _send(world, range(chats), 2)

            # 3. Redis dies (and loses everything: queue, events, wake-ups); the serve
            #    processes still accept webhooks, the database being the record.
            hub.redis.kill()
            down, retries = time.monotonic(), world.inbound_retries
            await _send(world, range(chats), 1)
            assert world.inbound_retries == retries  # each accepted at once, Redis or not
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - down)))
            await hub.redis.astart()

            # 4. The killed worker comes back (as a process manager would restart it); more
            #    messages, which the dashboard, connected throughout, sees again.
            await killed.astart()
            before = len(dashboard.events)
            await _send(world, range(chats), 1)
            await eventually(lambda: _settled(world, agent), timeout=75, interval=0.2)

            counts = await _count(world, agent)
            await _check_replies(world, agent)
            sent = chats * 6
            for agent_id in world.agent_ids:
                assert counts[agent_id] == Counts(sent, sent, sent, 0, 0), counts[agent_id]

            # The deliveries the kill interrupted were retried under the same id and succeeded.
            attempts = {
                d.id: d.attempt_count
                for d in await hub.aquery("SELECT id, attempt_count FROM agent_deliveries")
            }
            for delivery_id in in_flight_on_killed:
                retried = [r for r in agent.deliveries() if r.delivery_id == delivery_id]
                assert len(retried) >= 2 and retried[-1].succeeded
                assert attempts[delivery_id] >= 2
                # Within about the lease (3 s) of the kill: nowhere near the 30 s timeout.
                assert retried[1].started_at - killed_at < 3 + 3, retried[1].started_at - killed_at

            phase4 = {
                f"{key}/m05" for key in world.posted
            }  # the last message of each chat, sent after Redis came back
            phase4_ids = {
                r.id
                for r in await hub.aquery(
                    "SELECT id FROM messages WHERE external_id = ANY(:ids)", ids=list(phase4)
                )
            }
            await eventually(
                lambda: phase4_ids <= dashboard.messages("CONTACT"),
                timeout=15,
                message=f"the dashboard got nothing after Redis returned ({dashboard.closed})",
            )
            assert len(dashboard.events) > before and dashboard.closed is None
        print(
            f"sent={sent} counts={counts} in_flight_on_killed={len(in_flight_on_killed)} "
            f"agent_requests={len(agent.deliveries())} "
            f"deliveries={len({r.delivery_id for r in agent.deliveries() if r.succeeded})} "
            f"inbound_retries={world.inbound_retries}"
        )


async def _kill_with_requests_in_flight(
    workers: list[WorkerProcess], agent: Agent
) -> tuple[WorkerProcess, set[str]]:
    """Wait until a worker holds requests to the agent, SIGKILL it and its children; which
    worker, and the ids of the deliveries it had in flight."""
    agent_port = int(agent.url.rsplit(":", 1)[1].strip("/"))
    deadline = time.monotonic() + 20
    while True:
        for worker in workers:
            ports = set().union(*connections_to(agent_port, worker.group_pids()).values())
            in_flight = [
                r
                for r in agent.deliveries()
                if r.finished_at is None and getattr(r, "peer_port", None) in ports
            ]
            if in_flight:
                worker.kill()
                return worker, {r.delivery_id for r in in_flight if r.delivery_id}
        assert time.monotonic() < deadline, "no worker ever had a request in flight"
        await asyncio.sleep(0.01)
