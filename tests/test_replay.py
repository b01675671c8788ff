"""Replay of failed agent deliveries: `POST /deliveries/{id}/retry` and
`POST /auth/agents/{id}/recover` (src/agenthub/delivery/replay.py).

- Through the API, against the loopback agent: a failed delivery retried once the agent is
  back is delivered once, with the same `webhook-id`, its attempt recorded as `manual`; the
  refusals (403, 404, 409, 422); a recover picks exactly the failed deliveries of its window.
- A property test of the real handlers under a fake clock, against a reference model: new
  messages, failures, retries and recovers interleave, and at every step at most one delivery
  of a (chat, agent) is due or in flight, the one the model says (the oldest waiting); in the
  end every message reached the agent exactly once.
- `kill -9` of a real `agenthub serve` while a recovered delivery is at the agent; the hub
  restarts (in this process) and nothing is lost or delivered twice.
- Migration 0005 down and up (existing attempts read as `scheduled`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from alembic import command
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, select, text, update
from sqlalchemy.orm import Session

from agenthub.app import create_app
from agenthub.delivery import replay
from agenthub.delivery.agents import (
    ClaimedAttempt,
    Outcome,
    claim_due_attempts,
    create_due_deliveries,
    record_outcome,
)
from agenthub.delivery.engine import next_work_time
from agenthub.delivery.leases import renew_leases
from agenthub.hub import Hub
from agenthub.migrate import alembic_config, upgrade_database
from agenthub.models import (
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    Channel,
    Chat,
    ChatAgentLink,
    DeliveryAttempt,
    Message,
    Role,
)
from agenthub.platforms.base import InboundMessage
from agenthub.settings import Settings
from agenthub.webhooks.service import store_contact_message
from tests.agent_server import FakeAgent, eventually, reply, respond
from tests.conftest import Caller, _empty_tables
from tests.factories import make_agent, make_channel, make_chat, make_delivery
from tests.hypothesis_budget import examples
from tests.scheduler import BASE, FakeClock, scheduler_hub
from tests.test_agent_delivery import make_world
from tests.test_crash_recovery import Agent as CrashAgent
from tests.test_crash_recovery import HubProcess, _send_until_acknowledged, _sign

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One attempt per delivery (a failure is final at once), and a runner that looks often."""
    return settings.model_copy(
        update={
            "delivery_backoff_base_seconds": 0.05,
            "delivery_max_attempts": 1,
            "job_sweep_seconds": 0.05,
        }
    )


async def _trace(client: httpx2.AsyncClient, admin: Caller, chat_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/chats/{chat_id}/deliveries", headers=admin.headers)
    assert response.status_code == 200, response.text
    return sorted(response.json(), key=lambda d: d["created_at"])


async def _settled(client: httpx2.AsyncClient, admin: Caller, chat_id: str) -> Any:
    deliveries = await _trace(client, admin, chat_id)
    return deliveries if deliveries and all(d["status"] != "pending" for d in deliveries) else None


# --- retry, through the API ---------------------------------------------------------------


async def test_a_retried_delivery_is_delivered_once_with_the_same_webhook_id(
    agent: FakeAgent, client: httpx2.AsyncClient, admin: Caller
) -> None:
    world = await make_world(client, admin, agent)
    agent.default = respond(500, {"error": "down"})
    await world.send("hello?")
    chat_id = await world.chat_id()
    (failed,) = await eventually(lambda: _settled(client, admin, chat_id), message="no failure")
    assert failed["status"] == "failed"
    assert (await world.chat(chat_id))["needs_human"] is True

    agent.default = reply("back again")
    response = await client.post(f"/deliveries/{failed['id']}/retry", headers=admin.headers)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["id"], answer["status"]) == (failed["id"], "pending")
    assert [a["trigger"] for a in answer["attempts"]] == ["scheduled"]

    (done,) = await eventually(lambda: _settled(client, admin, chat_id), message="not retried")
    assert done["status"] == "succeeded"
    assert [(a["attempt_number"], a["status_code"], a["trigger"]) for a in done["attempts"]] == [
        (1, 500, "scheduled"),
        (2, 200, "manual"),
    ]
    assert [r.headers["webhook-id"] for r in agent.requests] == [failed["id"]] * 2
    (contact_id,) = await world.contact_ids(chat_id)
    assert [r.new_message_ids for r in agent.requests] == [[contact_id]] * 2
    assert len(agent.successes) == 1 and not agent.overlaps
    assert await world.agent_texts(chat_id) == ["back again"]
    # The failure called for a person; the agent answering later does not dismiss them.
    assert (await world.chat(chat_id))["needs_human"] is True

    # Delivered now: a second retry is refused, and nothing is sent again.
    again = await client.post(f"/deliveries/{failed['id']}/retry", headers=admin.headers)
    assert again.status_code == 409
    assert again.json() == {
        "detail": "Only a failed delivery can be retried; this one is succeeded"
    }
    assert len(agent.requests) == 2


async def test_retry_refusals(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user: Any
) -> None:
    channel = await make_channel(hub)
    bot, agent_token = await make_agent(hub)
    chat = await make_chat(hub, channel, messages=1, agents=(bot,))
    later = datetime.now(UTC) + timedelta(hours=1)  # pending, not due: the runner leaves it
    deliveries = {
        status: await make_delivery(hub, chat.id, bot.id, status, next_attempt_at=later)
        for status in ("pending", "succeeded", "cancelled", "failed")
    }
    member = await make_user(Role.MEMBER, channels=(channel.id,))
    failed = deliveries["failed"]

    for caller in ({"Authorization": f"Bearer {agent_token}"}, member.headers):
        response = await client.post(f"/deliveries/{failed}/retry", headers=caller)
        assert response.status_code == 403, response.text
    response = await client.post("/deliveries/dlv_missing000/retry", headers=admin.headers)
    assert response.status_code == 404 and response.json() == {"detail": "Delivery not found"}
    for status in ("pending", "succeeded", "cancelled"):
        response = await client.post(
            f"/deliveries/{deliveries[status]}/retry", headers=admin.headers
        )
        assert response.status_code == 409, response.text
        assert response.json()["detail"].endswith(f"this one is {status}")

    # Paused in the chat (an operator took it over): the failure stays as it is.
    async with hub.db.transaction() as session:
        await session.execute(update(ChatAgentLink).values(active=False))
    response = await client.post(f"/deliveries/{failed}/retry", headers=admin.headers)
    assert response.status_code == 409
    assert "paused" in response.json()["detail"]
    async with hub.db.session(read_only=True) as session:
        assert (await session.get(AgentDelivery, failed)).status == "failed"  # type: ignore[union-attr]


# --- recover, through the API --------------------------------------------------------------


async def test_recover_retries_exactly_the_failed_deliveries_of_its_window_in_order(
    agent: FakeAgent, client: httpx2.AsyncClient, hub: Hub, admin: Caller
) -> None:
    agent.default = reply("ok")
    channel = await make_channel(hub)
    bot, _ = await make_agent(hub, webhook_url=agent.url)
    other, _ = await make_agent(hub, name="other", webhook_url=agent.url)
    chat = await make_chat(hub, channel, messages=3, agents=(bot, other))
    paused = await make_chat(hub, channel, external_id="+15550002222", messages=1, agents=(bot,))
    async with hub.db.transaction() as session:
        await session.execute(
            update(ChatAgentLink).where(ChatAgentLink.chat_id == paused.id).values(active=False)
        )
    ids = await _message_ids(hub, chat.id)
    t0 = datetime(2030, 1, 1, 12, tzinfo=UTC)
    make = make_delivery
    before = await make(hub, chat.id, bot.id, "failed", ids[:1], created_at=t0 - timedelta(hours=1))
    first = await make(hub, chat.id, bot.id, "failed", ids[1:2], created_at=t0)
    done = await make(
        hub, chat.id, bot.id, "succeeded", ids[2:], created_at=t0 + timedelta(hours=1)
    )
    second = await make(hub, chat.id, bot.id, "failed", ids[2:], created_at=t0 + timedelta(hours=2))
    at_until = await make(
        hub, chat.id, bot.id, "failed", ids[2:], created_at=t0 + timedelta(days=1)
    )
    others = await make(hub, chat.id, other.id, "failed", ids[1:2], created_at=t0)
    in_paused = await make(hub, paused.id, bot.id, "failed", created_at=t0)

    window = {"since": t0.isoformat(), "until": (t0 + timedelta(days=1)).isoformat()}
    response = await client.post(
        f"/auth/agents/{bot.id}/recover", json=window, headers=admin.headers
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"deliveries": 2}

    await eventually(lambda: _settled(client, admin, chat.id), message="not recovered")
    trace = {d["id"]: d for d in await _trace(client, admin, chat.id)}
    assert trace[first]["status"] == trace[second]["status"] == "succeeded"
    assert [a["trigger"] for a in trace[second]["attempts"]] == ["recover"]
    for untouched in (before, at_until, others):
        assert (trace[untouched]["status"], trace[untouched]["attempts"]) == ("failed", [])
    assert trace[done]["status"] == "succeeded"
    assert [(await _trace(client, admin, paused.id))[0][k] for k in ("id", "status")] == [
        in_paused,
        "failed",
    ]
    # One at a time, oldest first, each with its own id as its webhook-id.
    assert [r.headers["webhook-id"] for r in agent.requests] == [first, second]
    assert not agent.overlaps


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        (
            {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"},
            "until",
            "until_before_since",
        ),
        (
            {"since": "2030-01-01T00:00:00Z", "until": "2030-01-15T00:00:01Z"},
            "since",
            "window_too_long",
        ),
        ({"since": "2000-01-01T00:00:00Z"}, "since", "window_too_long"),  # until: now
        ({"since": "0001-01-01T00:00:00+05:00", "until": "0001-01-02T00:00:00Z"}, "since", None),
        ({"since": "2030-01-01T00:00:00"}, "since", "timezone_aware"),
        ({"until": "2030-01-01T00:00:00Z"}, "since", "missing"),
    ],
)
@pytest.mark.database_independent  # refused by validation, before any query
async def test_recover_refuses_a_bad_window(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, body: Any, loc: str, kind: str | None
) -> None:
    bot, _ = await make_agent(hub)
    response = await client.post(f"/auth/agents/{bot.id}/recover", json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", loc] and error.keys() == {"type", "loc", "msg"}
    if kind is not None:
        assert error["type"] == kind


async def test_recover_refusals(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user: Any
) -> None:
    window = {"since": "2030-01-01T00:00:00Z", "until": "2030-01-02T00:00:00Z"}
    bot, token = await make_agent(hub)
    member = await make_user(Role.MEMBER)
    for caller in (member.headers, {"Authorization": f"Bearer {token}"}):
        response = await client.post(f"/auth/agents/{bot.id}/recover", json=window, headers=caller)
        assert response.status_code == 403, response.text
    response = await client.post(
        "/auth/agents/agt_missing0/recover", json=window, headers=admin.headers
    )
    assert response.status_code == 404
    off, _ = await make_agent(hub, name="off", active=False)
    response = await client.post(
        f"/auth/agents/{off.id}/recover", json=window, headers=admin.headers
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "The agent is inactive: activate it first"}


async def _message_ids(hub: Hub, chat_id: str) -> list[str]:
    async with hub.db.session(read_only=True) as session:
        rows = await session.scalars(
            select(Message.id).where(Message.chat_id == chat_id).order_by(Message.seq)
        )
        return list(rows)


# --- the property: failures, retries and recovers among new messages ------------------------

MAX_ATTEMPTS = 2


LEASE = timedelta(seconds=15)


@dataclass
class PairModel:
    """One (chat, agent), as the rules have it: its pending deliveries oldest first, the one
    due (at most one), and the one whose attempt is in flight."""

    pending: list[str] = field(default_factory=list)
    due: str | None = None
    in_flight: str | None = None


@dataclass
class ReplaySim:
    hub: Hub
    clock: FakeClock
    channel: Channel
    agent_id: str
    since: datetime  # the real time the example began: `created_at` is the real clock's
    chats: dict[int, str] = field(default_factory=dict)
    messages: dict[str, list[str]] = field(default_factory=dict)  # chat id → ids in order
    pairs: dict[str, PairModel] = field(default_factory=dict)  # chat id → its model
    order: dict[str, int] = field(default_factory=dict)  # delivery id → creation rank
    batch: dict[str, list[str]] = field(default_factory=dict)  # delivery id → message ids
    chat_of: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    trigger: dict[str, str] = field(default_factory=dict)  # of the next attempt
    triggers: dict[str, list[str]] = field(default_factory=dict)  # of the attempts recorded
    successes: dict[str, int] = field(default_factory=dict)
    flying: list[ClaimedAttempt] = field(default_factory=list)

    async def arrive(self, index: int) -> None:
        inbound = InboundMessage(
            external_id=f"ext-{sum(map(len, self.messages.values()))}",
            contact_id=f"+1555000{index:04d}",
            contact_name=None,
            content="hi",
            meta_data={},
        )
        async with self.hub.db.transaction() as session:
            message = await store_contact_message(session, self.hub, self.channel, inbound)
        assert message is not None
        self.chats.setdefault(index, message.chat_id)
        self.messages.setdefault(message.chat_id, []).append(message.id)
        self.pairs.setdefault(message.chat_id, PairModel())

    async def poll(self) -> None:
        async with self.hub.db.transaction() as session:
            # What the heartbeat of the process running them does (`delivery/leases.py`): the
            # attempts in flight keep their leases, however far the clock moved.
            held = [(c.delivery_id, c.attempt_number) for c in self.flying]
            probes = [(c.delivery_id, c.attempt_number) for c in self.flying if c.probe]
            await renew_leases(session, held, self.clock.now + LEASE, probes=probes)
            await create_due_deliveries(session, self.clock.now)
            claims = await claim_due_attempts(session, self.clock.now, lease=LEASE)
        await self._observe_new()
        for claim in claims:
            pair = self.pairs[self.chat_of[claim.delivery_id]]
            # Never two attempts of a (chat, agent) at once; the one claimed is the one due.
            assert pair.in_flight is None, (claim, pair)
            assert claim.delivery_id == pair.due, (claim, pair)
            assert claim.trigger == self.trigger[claim.delivery_id]
            pair.in_flight = claim.delivery_id
            self.flying.append(claim)

    async def _observe_new(self) -> None:
        async with self.hub.db.session(read_only=True) as session:
            rows = list(await session.scalars(select(AgentDelivery)))
        for delivery in sorted(rows, key=lambda d: (d.created_at, d.id)):
            if delivery.id in self.order:
                continue
            pair = self.pairs[delivery.chat_id]
            # A new batch only once nothing of the pair is pending (retried ones included).
            assert not pair.pending, (delivery.id, pair)
            self.order[delivery.id] = len(self.order)
            self.batch[delivery.id] = list(delivery.message_ids)
            self.chat_of[delivery.id] = delivery.chat_id
            self.trigger[delivery.id] = "scheduled"
            self.triggers[delivery.id] = []
            pair.pending, pair.due = [delivery.id], delivery.id

    async def finish(self, result: str) -> None:
        if not self.flying:
            return
        claim = self.flying.pop(0)
        outcome = {
            "ok": Outcome(200, 1.0),
            "503": Outcome(503, 1.0, error="HTTP 503"),
            "400": Outcome(400, 1.0, error="HTTP 400"),
        }[result]
        async with self.hub.db.transaction() as session:
            await record_outcome(session, self.hub, claim, outcome)
        delivery_id = claim.delivery_id
        pair = self.pairs[self.chat_of[delivery_id]]
        pair.in_flight = None
        trigger, self.trigger[delivery_id] = self.trigger[delivery_id], "scheduled"
        # The breaker's probes (the agent unavailable after failures in a row) are logged as
        # such, and a failed scheduled one neither fails the delivery nor counts toward its
        # attempts (docs/agents.md, "When the agent is down").
        probes_before = self.triggers[delivery_id].count("probe")
        self.triggers[delivery_id].append("probe" if claim.probe else trigger)
        toward_limit = claim.attempt_number - probes_before
        if result == "ok":
            self.successes[delivery_id] = self.successes.get(delivery_id, 0) + 1
        elif (
            result == "503"
            and trigger == "scheduled"
            and (claim.probe or toward_limit < MAX_ATTEMPTS)
        ):
            return  # retried later, still the one due
        else:
            self.failed.append(delivery_id)
        pair.pending.remove(delivery_id)
        pair.due = self._oldest(pair.pending)

    def _oldest(self, ids: list[str]) -> str | None:
        return min(ids, key=self.order.__getitem__) if ids else None

    async def retry(self, pick: int) -> None:
        if not self.failed:
            return
        delivery_id = self.failed.pop(pick % len(self.failed))
        async with self.hub.db.transaction() as session:
            await replay.retry_delivery(session, self.hub, delivery_id)
        self._requeued([delivery_id], "manual")

    async def recover(self) -> None:
        until = datetime.now(UTC) + timedelta(minutes=1)
        async with self.hub.db.transaction() as session:
            count = await replay.recover_agent(session, self.hub, self.agent_id, self.since, until)
        assert count == len(self.failed)
        requeued, self.failed = self.failed, []
        self._requeued(requeued, "recover")

    def _requeued(self, delivery_ids: list[str], trigger: str) -> None:
        for delivery_id in delivery_ids:
            pair = self.pairs[self.chat_of[delivery_id]]
            pair.pending.append(delivery_id)
            self.trigger[delivery_id] = trigger
            if pair.in_flight is not None:
                event("a retried delivery waits for the attempt in flight")
            elif pair.due is not None and self.order[pair.due] > self.order[delivery_id]:
                event("a retried delivery goes before a later one that was due")
            if len(pair.pending) > 2:
                event("three or more deliveries of a pair pending")
            if pair.in_flight is None:
                pair.due = self._oldest(pair.pending)

    async def check(self) -> None:
        """The database agrees with the model: the same pending deliveries per (chat, agent),
        the same one due, the same one leased."""
        async with self.hub.db.session(read_only=True) as session:
            rows = list(await session.scalars(select(AgentDelivery)))
        for chat_id, pair in self.pairs.items():
            mine = [d for d in rows if d.chat_id == chat_id and d.status == "pending"]
            assert sorted(d.id for d in mine) == sorted(pair.pending), (chat_id, pair)
            due = [d.id for d in mine if d.next_attempt_at is not None]
            assert due == ([pair.due] if pair.due else []), (chat_id, pair, due)
            leased = [d.id for d in mine if d.locked_until is not None]
            assert leased == ([pair.in_flight] if pair.in_flight else [])

    async def drain(self) -> None:
        """Let everything succeed (failures recovered) until nothing is left to do."""
        for _ in range(200):
            while self.flying:
                await self.finish("ok")
            if self.failed:
                await self.recover()
            async with self.hub.db.session(read_only=True) as session:
                due = await next_work_time(session)
            if due is None and not self.flying:
                return
            self.clock.now = max(self.clock.now, due or self.clock.now)
            await self.poll()
            await self.check()
        raise AssertionError("never settled")


# The runner polls after every step (as it is woken after every change).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("message"), st.integers(0, 1)),
        st.tuples(st.just("finish"), st.sampled_from(["ok", "503", "400"])),
        st.tuples(st.just("retry"), st.integers(0, 5)),
        st.tuples(st.just("recover"), st.just(0)),
        st.tuples(st.just("wait"), st.integers(0, 10_000)),
    ),
    max_size=24,
)
FAIL_THEN_NEXT = [("message", 0), ("finish", "400"), ("message", 0)]


@pytest.fixture
async def bare_hub(settings: Settings) -> AsyncIterator[Hub]:
    async with scheduler_hub(settings, delivery_max_attempts=MAX_ATTEMPTS) as hub:
        yield hub


@hsettings(
    max_examples=examples(10),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=steps)
# A retry while the next delivery of the pair is in flight: it waits for that attempt.
@example(script=[*FAIL_THEN_NEXT, ("retry", 0), ("finish", "ok"), ("finish", "ok")])
# ...while the next one waits for its backoff retry: the retried (older) one goes first.
@example(script=[*FAIL_THEN_NEXT, ("finish", "503"), ("retry", 0), ("finish", "ok")])
# A recover of two failures of one pair, a failed retry, and messages meanwhile.
@example(
    script=[
        *FAIL_THEN_NEXT,
        ("finish", "400"),
        ("message", 0),
        ("message", 1),
        ("recover", 0),
        ("finish", "503"),
        ("message", 0),
        ("finish", "ok"),
    ]
)
async def test_retries_and_recovers_keep_every_message_once_and_in_order(
    bare_hub: Hub, script: list[tuple[str, Any]]
) -> None:
    sim = await _simulation(bare_hub)
    for op, arg in script:
        if op == "message":
            await sim.arrive(arg)
        elif op == "finish":
            await sim.finish(arg)
        elif op == "retry":
            await sim.retry(arg)
        elif op == "recover":
            await sim.recover()
        else:
            sim.clock.now += timedelta(milliseconds=arg)
        await sim.poll()
        await sim.check()
    await sim.drain()

    async with bare_hub.db.session(read_only=True) as session:
        deliveries = list(await session.scalars(select(AgentDelivery)))
        attempts = list(
            await session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.attempt_number))
        )
    assert all(d.status == AgentDeliveryStatus.SUCCEEDED for d in deliveries)
    assert all(sim.successes[d.id] == 1 for d in deliveries)  # each answered once
    for chat_id, message_ids in sim.messages.items():
        batches = sorted(
            (sim.order[d.id], d.message_ids) for d in deliveries if d.chat_id == chat_id
        )
        # Every message in exactly one delivery, and the deliveries in message order.
        assert [m for _, ids in batches for m in ids] == message_ids
    for delivery in deliveries:
        recorded = [a.trigger for a in attempts if a.delivery_id == delivery.id]
        assert recorded == sim.triggers[delivery.id]


async def _simulation(hub: Hub) -> ReplaySim:
    await _empty_tables(hub)
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    clock.now = BASE
    channel = await make_channel(hub)
    agent, _ = await make_agent(hub, buffer_time_seconds=0, timeout_seconds=10)
    return ReplaySim(hub, clock, channel, agent.id, since=datetime.now(UTC) - timedelta(minutes=1))


# --- kill -9 while a recovered delivery is in flight ----------------------------------------


@dataclass
class FlakyAgent:
    """Fails every delivery until `back`; then SIGKILLs the hub on the first one it gets,
    before answering, leaves unanswered any other the dying hub sent, and once `restarted`
    answers (`pong <delivery id>`)."""

    hub: Any
    back: bool = False
    restarted: bool = False
    chosen: bool = False
    killed: threading.Event = field(default_factory=threading.Event)
    seen: list[tuple[str, int]] = field(default_factory=list)  # (webhook-id, status; 0: none)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        payload = json.loads(body)
        assert headers["webhook-id"] == payload["delivery_id"]
        with self.lock:
            kill = self.back and not self.chosen
            self.chosen = self.chosen or kill
            status = 500 if not self.back else 200 if self.restarted else 0
            self.seen.append((headers["webhook-id"], status))
        if kill:
            self.hub.kill()
            self.killed.set()
        if status == 0:
            return 0, None
        if status == 500:
            return 500, {"error": "down"}
        return 200, {"reply": f"pong {payload['delivery_id']}"}

    def statuses(self, webhook_id: str) -> list[int]:
        return [status for seen_id, status in self.seen if seen_id == webhook_id]

    protocol = "webhook"  # answered as tests/test_crash_recovery.py's agent answers
    encode = CrashAgent.encode


@pytest.mark.multiprocess
async def test_kill_9_during_a_recovered_delivery_loses_and_duplicates_nothing(
    tmp_path: Path, crash_database_url: str
) -> None:
    """`agenthub serve` fails two deliveries (agent down), recovers them, and is killed while
    the first recovered one is at the agent. The hub then restarts, in this process (to spare
    a second process start), on the same database: it resumes that delivery, with the same
    webhook-id, still as the recover's attempt; a new message goes after it."""
    hub = HubProcess(crash_database_url, tmp_path)
    hub.env["AGENTHUB_DELIVERY_MAX_ATTEMPTS"] = "1"
    agent = FlakyAgent(hub)
    # The crash test's HTTP agent server, answering with this agent's `handle`.
    with CrashAgent.serving(agent) as agent_url:  # type: ignore[arg-type]
        with httpx2.Client(timeout=10) as http:
            try:
                hub.start()
                world = _fail_recover_and_kill(http, hub, agent, agent_url)
            finally:
                hub.stop()
                print(hub.log.read_text())  # shown when the test fails
        settings = Settings(
            database_url=crash_database_url,
            secret_key=hub.env["AGENTHUB_SECRET_KEY"],
            allow_private_agent_urls=True,
            job_sweep_seconds=0.1,
            delivery_max_attempts=1,
            freeze_memory_after_startup=False,
            _env_file=None,  # type: ignore[call-arg]
        )
        agent.restarted = True
        async with LifespanManager(create_app(settings)) as manager:
            transport = httpx2.ASGITransport(app=manager.app)  # type: ignore[arg-type]
            async with httpx2.AsyncClient(transport=transport, base_url="http://hub") as client:
                await _check_after_restart(client, agent, world)


@pytest.fixture
def crash_database_url(tmp_path: Path) -> str:
    """SQLite only: a killed process on PostgreSQL is tests/test_crash_recovery.py's (the same
    lease and claim code); what this test adds is the recover's attempt surviving it."""
    return f"sqlite:///{tmp_path / 'hub.db'}"


def _fail_recover_and_kill(
    http: httpx2.Client, hub: HubProcess, agent: FlakyAgent, agent_url: str
) -> dict[str, Any]:
    credentials = {"username": "admin", "password": "replay-test-password"}
    assert http.post(f"{hub.url}/auth/signup", json=credentials).status_code == 201
    token = http.post(f"{hub.url}/auth/login", json=credentials).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    created = http.post(
        f"{hub.url}/auth/agents",
        headers=auth,
        json={"name": "flaky", "webhook_url": agent_url, "buffer_time_seconds": 0},
    ).json()
    channel = http.post(
        f"{hub.url}/channels", headers=auth, json={"name": "web", "platform": "api"}
    ).json()
    world = {"auth": auth, "agent_id": created["id"], "channel": channel}
    since = datetime.now(UTC) - timedelta(minutes=1)
    # The agent is down: each chat's delivery fails (one attempt, then failed).
    for i, contact in enumerate(("a", "b")):
        _send_until_acknowledged(http, hub, *_inbound(channel, i, contact))
    deadline = time.monotonic() + 20
    while not _all_failed(http, hub.url, world, 2):
        assert time.monotonic() < deadline, "the deliveries did not fail"
        time.sleep(0.05)
    # Back: recover. The first recovered delivery to reach it kills the hub mid-attempt.
    agent.back = True
    recover = http.post(
        f"{hub.url}/auth/agents/{created['id']}/recover",
        headers=auth,
        json={"since": since.isoformat()},
    )
    assert (recover.status_code, recover.json()) == (202, {"deliveries": 2}), recover.text
    assert agent.killed.wait(20), "no recovered delivery reached the agent"
    return world


def _inbound(channel: dict[str, Any], i: int, contact: str) -> tuple[str, dict[str, Any]]:
    inbound = {"contact_id": contact, "message_id": f"m{i}", "content": f"message {i}"}
    request = _sign(channel["credentials"]["secret"], inbound, f"msg_inbound_{i}")
    return f"/webhooks/api/{channel['id']}", request


def _all_failed(http: httpx2.Client, url: str, world: dict[str, Any], count: int) -> bool:
    channel_id, auth = world["channel"]["id"], world["auth"]
    chats = http.get(f"{url}/channels/{channel_id}/chats", headers=auth).json()["chats"]
    statuses = [
        d["status"]
        for chat in chats
        for d in http.get(f"{url}/chats/{chat['id']}/deliveries", headers=auth).json()
    ]
    return statuses == ["failed"] * count


async def _check_after_restart(
    client: httpx2.AsyncClient, agent: FlakyAgent, world: dict[str, Any]
) -> None:
    path, request = _inbound(world["channel"], 2, "a")  # a new message, after the restart
    assert (await client.post(path, **request)).status_code == 200
    chats = await eventually(lambda: _settled_chats(client, world, 3), message="not settled")

    deliveries = [d for c in chats for d in c["deliveries"]]
    assert all(d["status"] == "succeeded" for d in deliveries), deliveries
    delivered = [m for d in deliveries for m in d["message_ids"]]
    contacts = [m["id"] for c in chats for m in c["messages"] if m["sender_type"] == "CONTACT"]
    assert sorted(delivered) == sorted(contacts) and len(contacts) == 3  # each exactly once
    replies = [m["content"] for c in chats for m in c["messages"] if m["sender_type"] == "AGENT"]
    assert sorted(replies) == sorted(f"pong {d['id']}" for d in deliveries)  # each stored once
    # The recovered deliveries: one webhook-id for all their attempts (failed; maybe lost with
    # the hub; answered after the restart). A lost attempt left no row; the resumed one is
    # still the recover's. The first one to reach the agent was lost.
    recovered = [d for d in deliveries if len(d["attempts"]) == 2]
    assert len(recovered) == 2
    for delivery in recovered:
        assert agent.statuses(delivery["id"]) in ([500, 200], [500, 0, 200])
        assert [a["trigger"] for a in delivery["attempts"]] == ["scheduled", "recover"]
    assert [status for _, status in agent.seen][2] == 0
    (new,) = [d for d in deliveries if d not in recovered]
    assert agent.statuses(new["id"]) == [200]
    # In chat a, the new message's delivery went after the recovered one.
    (chat_a,) = [c for c in chats if len(c["deliveries"]) == 2]
    older, newer = sorted(chat_a["deliveries"], key=lambda d: d["created_at"])
    answered = [w for w, status in agent.seen if status == 200]
    assert answered.index(older["id"]) < answered.index(newer["id"])


async def _settled_chats(
    client: httpx2.AsyncClient, world: dict[str, Any], count: int
) -> list[dict[str, Any]] | None:
    """The chats with their deliveries and messages, once `count` deliveries exist and none
    is pending."""
    auth = world["auth"]
    response = await client.get(f"/channels/{world['channel']['id']}/chats", headers=auth)
    chats = []
    for chat in response.json()["chats"]:
        trace = (await client.get(f"/chats/{chat['id']}/deliveries", headers=auth)).json()
        messages = (await client.get(f"/chats/{chat['id']}/messages", headers=auth)).json()
        if any(d["status"] == "pending" for d in trace):
            return None
        chats.append({**chat, "deliveries": trace, "messages": messages["messages"]})
    return chats if sum(len(c["deliveries"]) for c in chats) == count else None


# --- migration 0005 ---------------------------------------------------------------------------


def _migrate_down_and_up(url: str) -> None:
    """An attempt made before 0005 reads as `scheduled` after it; the models match."""
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        with Session(engine) as session, session.begin():
            agent = Agent(name="a", webhook_url="http://a.test/", webhook_secret_encrypted="x")
            channel = Channel(name="c", platform="api", credentials_encrypted="x")
            session.add_all([agent, channel])
            session.flush()
            chat = Chat(channel_id=channel.id, external_id="+1", message_seq=0)
            session.add(chat)
            session.flush()
            delivery = AgentDelivery(chat_id=chat.id, agent_id=agent.id, status="failed")
            session.add(delivery)
            session.flush()
            session.add(
                DeliveryAttempt(delivery_id=delivery.id, attempt_number=1, trigger="manual")
            )
        command.downgrade(config, "0004")
        columns = {c["name"] for c in inspect(engine).get_columns("delivery_attempts")}
        assert "trigger" not in columns
        upgrade_database(url)
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT trigger FROM delivery_attempts")) == "scheduled"
        command.check(config)  # no difference left between the models and the migrations
    finally:
        engine.dispose()


def test_migration_0005_down_and_up(tmp_path: Path) -> None:
    # On SQLite, whose batch mode rebuilds the tables; every PostgreSQL test database is
    # migrated up through 0005 too.
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade_database(url)
    _migrate_down_and_up(url)
