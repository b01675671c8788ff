"""Properties of takeover and handback (`operators/takeover.py`) under a controllable clock.

One chat, two or three agents linked to it on first contact, and one more agent that is not.
A random sequence of operations drives the real handlers against the real database: contact
messages arrive (`store_contact_message`), the clock advances, the job runner makes a pass
(`create_due_deliveries` + `claim_due_attempts`, the claimed attempts staying in flight), an
attempt in flight completes (`record_outcome`: a success with or without a reply, an agent
handoff, a retryable or a final failure) or is lost (its worker died: its lease runs out), an
operator takes the chat over, someone hands it back (to the agents the takeover paused, or to
named ones), and a link is paused or resumed by hand (`set_link_active`). Nothing sleeps.

A small reference model keeps each link's state (active, paused by hand, paused by a takeover,
handed off), the chat's `needs_human` and assignment, every delivery's status, and for each
agent which contact messages it may get (those that arrived while its link was active), which
it must never get (those that were waiting in its buffer, or in a delivery waiting for its next
attempt, when its link was paused: cancelled; and those of a delivery that failed for good),
and which it may get at most once (those in an attempt that was in flight when its link was
paused: that attempt finishes, and is cancelled if it fails). After every step the database
must agree with the model; at the end the chat is handed back, the runner works until nothing
is due, and every message an agent must get is in exactly one successful delivery for it, in
order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, currently_in_test_context, example, given, note
from hypothesis import event as hypothesis_event
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import String, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.handling import handled_by_expression
from agenthub.chats.service import get_link, set_link_active
from agenthub.delivery.agents import (
    ClaimedAttempt,
    Outcome,
    buffer_due,
    claim_due_attempts,
    create_due_deliveries,
    delivery_due,
    record_outcome,
)
from agenthub.deps import Principal
from agenthub.hub import Hub
from agenthub.models import (
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    ApiToken,
    Channel,
    Chat,
    ChatAgentLink,
    ChatEvent,
    HandledBy,
    Message,
    Platform,
    Role,
    SenderType,
    User,
)
from agenthub.operators.takeover import hand_back, take_over
from agenthub.platforms.base import InboundMessage
from agenthub.security import hash_token, new_token, new_webhook_secret
from agenthub.settings import Settings
from agenthub.webhooks.service import store_contact_message
from tests.conftest import _empty_tables
from tests.hypothesis_budget import examples
from tests.scheduler import BASE, FakeClock, scheduler_hub

pytestmark = pytest.mark.anyio

MS = timedelta(milliseconds=1)
CONTACT = "+15550001234"
TIMEOUT_SECONDS = 10
# An attempt's lease as the heartbeat of the process running it keeps it renewed: past the
# agent's timeout (no heartbeat runs here, so the model claims with a lease this long).
LEASE = timedelta(seconds=TIMEOUT_SECONDS + 5)
MAX_ATTEMPTS = 3  # the third attempt's failure is final: the chat needs a human
BACKOFF_BASE_SECONDS = 1.0

# --- the world ----------------------------------------------------------------------------


def event(what: str) -> None:
    """For the statistics (`--hypothesis-show-statistics`); a no-op in the plain tests."""
    if currently_in_test_context():
        hypothesis_event(what)


@pytest.fixture
async def bare_hub(settings: Settings) -> AsyncIterator[Hub]:
    """A Hub on the test database with no job runner: the test is the scheduler."""
    overrides = {
        "delivery_max_attempts": MAX_ATTEMPTS,
        "delivery_backoff_base_seconds": BACKOFF_BASE_SECONDS,
    }
    async with scheduler_hub(settings, **overrides) as hub:
        yield hub


# --- operations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrive:
    """A contact message arrives."""


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class RunnerPass:
    """Create due deliveries and claim due attempts; the claims stay in flight."""


@dataclass(frozen=True)
class Complete:
    index: int  # which attempt in flight (modulo their number)
    result: str  # a key of RESULTS


@dataclass(frozen=True)
class Lose:
    """An attempt in flight never reports (its worker died): its lease runs out."""

    index: int


@dataclass(frozen=True)
class TakeOver:
    operator: int


@dataclass(frozen=True)
class HandBack:
    agents: tuple[int, ...] | None  # indices into all agents (the last one is not linked)


@dataclass(frozen=True)
class SetActive:
    agent: int
    active: bool


Operation = Arrive | Advance | RunnerPass | Complete | Lose | TakeOver | HandBack | SetActive

RESULTS: dict[str, Outcome] = {
    "ok": Outcome(200, 1.0),
    "reply": Outcome(200, 1.0, body={"reply": "?"}),  # the text is made unique when sent
    "handoff": Outcome(200, 1.0, body={"handoff": True}),
    "handoff+reply": Outcome(200, 1.0, body={"handoff": True, "reply": "?"}),
    "503": Outcome(503, 1.0, error="HTTP 503: busy"),
    "400": Outcome(400, 1.0, error="HTTP 400: bad"),
}


# Retryable failures twice as often: a delivery waiting for its next attempt is what a
# takeover must cancel.
RESULT_CHOICES = ["ok", "reply", "503", "503", "handoff", "handoff+reply", "400"]


@dataclass(frozen=True)
class AgentSpec:
    buffer_seconds: float
    max_buffer_seconds: float


@dataclass(frozen=True)
class Scenario:
    agents: tuple[AgentSpec, ...]  # linked on first contact; one more agent is not
    operations: tuple[Operation, ...]


agent_index = st.integers(0, 3)
OPERATIONS: dict[str, st.SearchStrategy[Operation]] = {
    "arrive": st.just(Arrive()),
    "pass": st.just(RunnerPass()),
    "complete": st.builds(Complete, st.integers(0, 2), st.sampled_from(RESULT_CHOICES)),
    "advance": st.builds(Advance, st.sampled_from([0.5, 1.0, 3.0, 10.0, 30.0])),
    "lose": st.builds(Lose, st.integers(0, 2)),
    "takeover": st.builds(TakeOver, st.integers(0, 1)),
    "handback": st.builds(
        HandBack,
        st.none() | st.lists(agent_index, max_size=2, unique=True).map(lambda x: tuple(sorted(x))),
    ),
    "set active": st.builds(SetActive, agent_index, st.booleans()),
}
# How often each kind comes: the delivery machinery turns over between the operator's moves.
WEIGHTS = {"arrive": 3, "pass": 3, "complete": 3, "advance": 2}
operations = st.sampled_from(
    [kind for kind in OPERATIONS for _ in range(WEIGHTS.get(kind, 1))]
).flatmap(OPERATIONS.__getitem__)
scenarios = st.builds(
    Scenario,
    st.lists(
        st.builds(AgentSpec, st.sampled_from([0.0, 1.0, 3.0]), st.sampled_from([2.0, 30.0])),
        min_size=2,
        max_size=3,
    ).map(tuple),
    st.lists(operations, min_size=8, max_size=30).map(tuple),
)


# --- the reference model ------------------------------------------------------------------

ACTIVE = "active"
BY_HAND = "paused by hand"
BY_TAKEOVER = "paused by takeover"
HANDED_OFF = "handed off"

PENDING = AgentDeliveryStatus.PENDING.value
SUCCEEDED = AgentDeliveryStatus.SUCCEEDED.value
FAILED = AgentDeliveryStatus.FAILED.value
CANCELLED = AgentDeliveryStatus.CANCELLED.value


@dataclass
class AgentModel:
    id: str
    state: str | None  # None: not linked to the chat
    allowed: set[str] = field(default_factory=set)  # arrived while its link was active
    dropped: set[str] = field(default_factory=set)  # never (again) in a successful delivery
    maybe: set[str] = field(default_factory=set)  # in flight when the link was paused
    delivered: list[str] = field(default_factory=list)  # in its successful deliveries, in order
    deliveries: list[str] = field(default_factory=list)  # its delivery ids, in creation order

    @property
    def must(self) -> set[str]:
        return self.allowed - self.dropped - self.maybe


@dataclass
class InFlight:
    claim: ClaimedAttempt
    agent: AgentModel
    lease_until: datetime


@dataclass
class Simulation:
    hub: Hub
    clock: FakeClock
    channel: Channel
    agents: list[AgentModel]
    operators: list[Principal]
    chat_id: str = ""
    needs_human: bool = False
    assigned: str | None = None
    events: int = 0  # timeline events of the chat
    arrivals: list[str] = field(default_factory=list)  # contact message ids, in order
    position: dict[str, int] = field(default_factory=dict)  # message id → arrival index
    status: dict[str, str] = field(default_factory=dict)  # delivery id → its status
    batches: dict[str, list[str]] = field(default_factory=dict)  # delivery id → message ids
    inflight: list[InFlight] = field(default_factory=list)  # live attempts
    lost: list[InFlight] = field(default_factory=list)  # attempts that will never report
    replies: list[tuple[str, str]] = field(default_factory=list)  # (agent id, text)

    @property
    def by_id(self) -> dict[str, AgentModel]:
        return {agent.id: agent for agent in self.agents}

    def expected_handled_by(self) -> str:
        if self.needs_human:
            return HandledBy.WAITING.value
        if any(agent.state == ACTIVE for agent in self.agents):
            return HandledBy.AGENT.value
        if self.assigned is not None:
            return HandledBy.HUMAN.value
        return HandledBy.NONE.value

    # --- the operations

    async def apply(self, op: Operation) -> None:
        match op:
            case Arrive():
                await self.arrive()
            case Advance(seconds):
                self.advance(seconds)
            case RunnerPass():
                await self.runner_pass()
            case Complete(index, result):
                if not self.inflight:
                    return
                await self.complete(self.inflight[index % len(self.inflight)], result)
            case Lose(index):
                if not self.inflight:
                    return
                self.lost.append(self.inflight.pop(index % len(self.inflight)))
                event("an attempt was lost")
            case TakeOver(operator):
                await self.take_over(operator)
            case HandBack(agents):
                await self.hand_back(agents)
            case SetActive(agent, active):
                await self.set_active(agent, active)
        await self.check(op)

    async def arrive(self) -> None:
        n = len(self.arrivals)
        inbound = InboundMessage(
            external_id=f"ext-{n}",
            contact_id=CONTACT,
            contact_name=None,
            content=f"message {n}",
            meta_data={},
        )
        async with self.hub.db.transaction() as session:
            message = await store_contact_message(session, self.hub, self.channel, inbound)
        assert message is not None
        self.chat_id = message.chat_id
        self.arrivals.append(message.id)
        self.position[message.id] = n
        for agent in self.agents:
            if agent.state == ACTIVE:
                agent.allowed.add(message.id)
        if self.assigned is not None:
            event("a contact message arrived while the chat was taken over")

    def leased(self) -> set[str]:
        """The deliveries whose current attempt holds its lease."""
        now = self.clock.now
        lost = {f.claim.delivery_id for f in self.lost if f.lease_until > now}
        return {f.claim.delivery_id for f in self.inflight} | lost

    def advance(self, seconds: float) -> None:
        """Live attempts end within their lease, as the agent's HTTP timeout ensures in
        production: the clock stops short of the earliest lease of a live attempt."""
        target = self.clock.now + timedelta(seconds=seconds)
        if self.inflight:
            target = min(target, min(f.lease_until for f in self.inflight) - MS)
        self.clock.now = max(self.clock.now, target)

    async def runner_pass(self) -> list[ClaimedAttempt]:
        now = self.clock.now
        async with self.hub.db.transaction() as session:
            await create_due_deliveries(session, now)
            claims = await claim_due_attempts(session, now, lease=LEASE)
        leased = self.leased()
        # An attempt lost while its link was paused ends once its lease has run out: the pass
        # cancels its delivery rather than starting an attempt for a paused agent.
        for flight in [f for f in self.lost if f.lease_until <= now and f.agent.state != ACTIVE]:
            self.lost.remove(flight)
            self.status[flight.claim.delivery_id] = CANCELLED
            flight.agent.dropped.update(self.batches[flight.claim.delivery_id])
            event("a lost attempt of a paused link was cancelled")
        lost = {f.claim.delivery_id: f for f in self.lost}
        for claim in claims:
            assert claim.target is not None
            assert claim.delivery_id not in leased, f"{claim} claimed while leased"
            agent = self.by_id[claim.target.agent_id]
            if claim.delivery_id in lost:
                self.lost.remove(lost[claim.delivery_id])
                event("a lost attempt's delivery was claimed again")
            assert agent.state == ACTIVE, f"an attempt started for a link {agent.state}"
            lease = now + LEASE
            self.inflight.append(InFlight(claim, agent, lease))
        return claims

    async def complete(self, flight: InFlight, result: str) -> None:
        self.inflight.remove(flight)
        claim, agent = flight.claim, flight.agent
        outcome = RESULTS[result]
        if isinstance(outcome.body, dict) and "reply" in outcome.body:
            text = f"reply {len(self.replies)} from {agent.id}"
            outcome = Outcome(200, 1.0, body={**outcome.body, "reply": text})
            self.replies.append((agent.id, text))
            if agent.state != ACTIVE:
                event("a reply to an attempt in flight when the link was paused")
        async with self.hub.db.transaction() as session:
            await record_outcome(session, self.hub, claim, outcome)
        batch = self.batches[claim.delivery_id]
        if outcome.succeeded:
            self.status[claim.delivery_id] = SUCCEEDED
            agent.delivered.extend(batch)
            if isinstance(outcome.body, dict) and outcome.body.get("handoff") is True:
                self.needs_human = True
                self.events += 1
                if agent.state == ACTIVE:
                    self._pause(agent, HANDED_OFF)
                    event("an agent handed off")
                elif agent.state == BY_TAKEOVER:
                    agent.state = HANDED_OFF  # a plain handback leaves it paused
        elif agent.state != ACTIVE:
            # Paused since the attempt started: no retry, and no human called for.
            self.status[claim.delivery_id] = CANCELLED
            agent.dropped.update(batch)
            event("an attempt in flight when its link was paused failed: cancelled")
        elif outcome.retryable and claim.attempt_number < MAX_ATTEMPTS:
            event("an attempt failed and will be retried")
        else:
            self.status[claim.delivery_id] = FAILED
            agent.dropped.update(batch)
            self.needs_human = True
            self.events += 1
            event("a delivery failed for good")

    def _pause(self, agent: AgentModel, state: str) -> None:
        """What pausing a link does: an attempt in flight finishes (its messages are delivered
        at most once), everything else not yet delivered is dropped for this agent (waiting in
        the buffer, or in a delivery waiting for its next attempt, which is cancelled)."""
        leased = self.leased()
        held = {m for d in agent.deliveries if d in leased for m in self.batches[d]}
        for message_id in agent.allowed - set(agent.delivered) - agent.dropped:
            (agent.maybe if message_id in held else agent.dropped).add(message_id)
        for delivery_id in agent.deliveries:
            if self.status[delivery_id] == PENDING and delivery_id not in leased:
                self.status[delivery_id] = CANCELLED
                event("a delivery waiting for its next attempt was cancelled")
                self.lost = [f for f in self.lost if f.claim.delivery_id != delivery_id]
        if held:
            event("a link was paused with an attempt in flight")
        agent.state = state

    async def _chat(self, session: AsyncSession) -> Chat:
        chat = await session.get(Chat, self.chat_id)
        assert chat is not None
        return chat

    async def take_over(self, operator: int) -> None:
        principal = self.operators[operator]
        assert principal.user is not None
        harmless = (
            not any(agent.state == ACTIVE for agent in self.agents)
            and not self.needs_human
            and self.assigned == principal.user.id
        )
        async with self.hub.db.transaction() as session:
            await take_over(session, self.hub, principal, await self._chat(session))
        for agent in self.agents:
            if agent.state == ACTIVE:
                self._pause(agent, BY_TAKEOVER)
        if not harmless:
            self.events += 1
        else:
            event("a takeover repeated")
        self.assigned = principal.user.id
        self.needs_human = False

    async def hand_back(self, indices: tuple[int, ...] | None) -> None:
        if indices is None:
            named = None
            resumed = [agent for agent in self.agents if agent.state == BY_TAKEOVER]
        else:
            named = _unique([self.agents[i % len(self.agents)] for i in indices])
            resumed = [agent for agent in named if agent.state != ACTIVE]
        harmless = not resumed and self.assigned is None
        agent_ids = None if named is None else [agent.id for agent in named]
        async with self.hub.db.transaction() as session:
            await hand_back(
                session, self.hub, self.operators[0], await self._chat(session), agent_ids
            )
        if harmless:
            # Nothing taken over, so no link carries a takeover's mark.
            assert not any(agent.state == BY_TAKEOVER for agent in self.agents)
            event("a handback repeated")
            return
        for agent in resumed:
            if agent.state is None:
                event("a handback linked an agent")
            elif agent.state in (BY_HAND, HANDED_OFF):
                event(f"a handback to named agents resumed one {agent.state}")
            agent.state = ACTIVE
        for agent in self.agents:
            if agent.state == BY_TAKEOVER:  # its mark is cleared: a later handback leaves it
                agent.state = BY_HAND
                event("a handback to named agents left one the takeover paused")
        self.assigned = None
        self.events += 1

    async def set_active(self, index: int, active: bool) -> None:
        agent = self.agents[index % len(self.agents)]
        if agent.state is None:
            return  # not linked: nothing to pause or resume
        harmless = (agent.state == ACTIVE) == active
        async with self.hub.db.transaction() as session:
            chat = await self._chat(session)
            link = await get_link(session, chat, agent.id)
            await set_link_active(session, self.hub, self.operators[0], chat, link, active)
        if active and agent.state != ACTIVE:
            if self.assigned is not None:
                event("a link resumed by hand while the chat was taken over")
            agent.state = ACTIVE
        elif not active and agent.state == ACTIVE:
            self._pause(agent, BY_HAND)
        elif not active and agent.state == BY_TAKEOVER:
            agent.state = BY_HAND  # paused by hand now: a handback leaves it
        if not harmless:
            self.events += 1

    # --- the checks

    async def check(self, op: Operation | None) -> None:
        now = self.clock.now
        params = {"b_chat_id": self.chat_id}
        async with self.hub.db.session(read_only=True) as session:
            chat = (await session.execute(CHAT_STATE, params)).one()
            links = {row.agent_id: row for row in await session.execute(LINKS, params)}
            deliveries = list(await session.execute(DELIVERIES, params))
            replies = None
            if op is None or isinstance(op, Complete):
                replies = [tuple(row) for row in await session.execute(REPLIES, params)]

        # Who handles the chat: the stored value is the rule's, and the model's.
        needs_human, assigned, handled_by, rule, events = chat
        assert (needs_human, assigned) == (self.needs_human, self.assigned)
        assert handled_by == rule == self.expected_handled_by(), (handled_by, rule, self.agents)
        assert events == self.events, f"{events} timeline events, expected {self.events}"
        if replies is not None:
            assert replies == self.replies

        # The links.
        for agent in self.agents:
            if agent.state is None:
                assert agent.id not in links
                continue
            link = links[agent.id]
            assert link.active == (agent.state == ACTIVE), (agent.id, agent.state, link)
            assert link.paused_by_takeover == (agent.state == BY_TAKEOVER), (agent.state, link)
            if not link.active:
                assert link.due_at is None, "a paused link's buffer is empty"

        # New deliveries: only from a runner pass, only for active links, only messages that
        # arrived while the link was active and that were not dropped.
        by_id = self.by_id
        made = set()
        for row in deliveries:
            if row.id in self.status:
                continue
            agent = by_id[row.agent_id]
            assert isinstance(op, RunnerPass), f"a delivery appeared after {op}"
            assert agent.state == ACTIVE, f"a delivery was created for a link {agent.state}"
            assert agent.id not in made, "two deliveries for one agent in one pass"
            made.add(agent.id)
            ids = list(row.message_ids)
            assert ids, "an empty delivery"
            assert set(ids) <= agent.allowed, "a message that arrived while the link was paused"
            assert not set(ids) & agent.dropped, "a message dropped when the link was paused"
            self.status[row.id] = PENDING
            self.batches[row.id] = ids
            agent.deliveries.append(row.id)

        # Every delivery's status is the model's; the leased ones are exactly those in flight.
        assert {row.id: str(row.status) for row in deliveries} == self.status
        lost = {f.claim.delivery_id for f in self.lost}
        leased = set()
        for row in deliveries:
            if row.status != PENDING:
                continue
            if row.locked_until is not None and row.locked_until > now:
                leased.add(row.id)
                continue
            # Waiting for its next attempt (or a lost attempt's lease ran out).
            assert row.locked_until is None or row.id in lost, "a live attempt's lease ran out"
            if by_id[row.agent_id].state != ACTIVE:
                # Only a lost attempt's, until the next pass cancels it.
                assert row.id in lost, f"{row.id} waits for its next attempt, its link paused"
        assert leased == self.leased()
        pending = [row.agent_id for row in deliveries if row.status == PENDING]
        assert len(pending) == len(set(pending)), "two pending deliveries for one agent"

        # Each agent's deliveries, in creation order: its messages in order, none twice.
        for agent in self.agents:
            seen = [self.position[m] for d in agent.deliveries for m in self.batches[d]]
            assert seen == sorted(set(seen)), (agent.id, seen)
            assert not set(agent.delivered) & agent.dropped

    async def finish(self) -> None:
        """Hand back, then let the runner work until nothing is due (every attempt in flight
        succeeds), and check what each agent got."""
        await self.apply(HandBack(None))
        for _ in range(100):
            while self.inflight:
                await self.complete(self.inflight[0], "ok")
                await self.check(Complete(0, "ok"))
            async with self.hub.db.session(read_only=True) as session:
                due = (await session.execute(NEXT_DUE)).one()
            times = [t for t in due if t is not None]
            if not times:
                break
            self.clock.now = max(self.clock.now, min(times))
            await self.apply(RunnerPass())
        else:
            raise AssertionError("the runner never settled")
        await self.check(None)

        async with self.hub.db.session(read_only=True) as session:
            contact = list(await session.scalars(CONTACT_MESSAGES, {"b_chat_id": self.chat_id}))
        assert contact == self.arrivals, "every contact message is in the chat, in order"
        assert PENDING not in self.status.values()
        assert not self.lost
        for agent in self.agents:
            delivered = agent.delivered
            order = [self.position[m] for m in delivered]
            assert order == sorted(set(order)), "in order, and none twice"
            # Exactly once: what arrived while the link was active and was not dropped...
            assert agent.must <= set(delivered), (agent.id, agent.must - set(delivered))
            # ... and at most once what was in flight when the link was paused; nothing else.
            assert set(delivered) <= agent.allowed - agent.dropped
            if agent.maybe & set(delivered):
                event("an attempt in flight when its link was paused was delivered")


# What the checks read after every step, built once.
CHAT_ID = bindparam("b_chat_id", type_=String())
CHAT_STATE = select(
    Chat.needs_human,
    Chat.assigned_user_id,
    Chat.handled_by,
    handled_by_expression(),
    select(func.count())
    .select_from(ChatEvent)
    .where(ChatEvent.chat_id == CHAT_ID)
    .scalar_subquery(),
).where(Chat.id == CHAT_ID)
LINKS = select(
    ChatAgentLink.agent_id,
    ChatAgentLink.active,
    ChatAgentLink.paused_by_takeover,
    ChatAgentLink.due_at,
).where(ChatAgentLink.chat_id == CHAT_ID)
DELIVERIES = select(
    AgentDelivery.id,
    AgentDelivery.agent_id,
    AgentDelivery.status,
    AgentDelivery.message_ids,
    AgentDelivery.locked_until,
).where(AgentDelivery.chat_id == CHAT_ID)
REPLIES = (
    select(Message.sender_id, Message.content)
    .where(Message.chat_id == CHAT_ID, Message.sender_type == SenderType.AGENT)
    .order_by(Message.seq)
)
CONTACT_MESSAGES = (
    select(Message.id)
    .where(Message.chat_id == CHAT_ID, Message.sender_type == SenderType.CONTACT)
    .order_by(Message.seq)
)
NEXT_DUE = select(buffer_due(), delivery_due())


def _unique(agents: list[AgentModel]) -> list[AgentModel]:
    return list({agent.id: agent for agent in agents}.values())


async def _build(hub: Hub, specs: tuple[AgentSpec, ...]) -> Simulation:
    """The channel, the agents and two operators; then the first contact message, which
    creates the chat and links the agents for new chats."""
    await _empty_tables(hub)
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    clock.now = BASE
    async with hub.db.transaction() as session:
        channel = Channel(
            name="support",
            platform=Platform.API,
            credentials_encrypted=hub.secrets.encrypt_json({"secret": new_webhook_secret()}),
            config={},
        )
        agents = [
            Agent(
                name=f"bot{n}",
                webhook_url="http://127.0.0.1:9/",
                webhook_secret_encrypted=hub.secrets.encrypt(new_webhook_secret()),
                buffer_time_seconds=spec.buffer_seconds,
                max_buffer_seconds=spec.max_buffer_seconds,
                timeout_seconds=TIMEOUT_SECONDS,
            )
            for n, spec in enumerate(specs)
        ]
        extra = Agent(
            name="helper",
            webhook_url="http://127.0.0.1:9/",
            webhook_secret_encrypted=hub.secrets.encrypt(new_webhook_secret()),
            timeout_seconds=TIMEOUT_SECONDS,
            buffer_time_seconds=0.0,
            activate_for_new_conversation=False,
        )
        users = [User(username=f"op{n}", password_hash="!", role=Role.ADMIN) for n in range(2)]
        session.add_all([channel, *agents, extra, *users])
        await session.flush()
        tokens = [ApiToken(token_hash=hash_token(new_token()), user_id=u.id) for u in users]
        session.add_all(tokens)
        await session.flush()
    sim = Simulation(
        hub,
        clock,
        channel,
        [AgentModel(agent.id, ACTIVE) for agent in agents] + [AgentModel(extra.id, None)],
        [Principal(token=token, user=user) for token, user in zip(tokens, users, strict=True)],
    )
    await sim.apply(Arrive())
    return sim


SETTINGS = hsettings(
    max_examples=examples(20),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
QUICK = (AgentSpec(0.0, 2.0), AgentSpec(1.0, 30.0))


@SETTINGS
@given(scenario=scenarios)
@example(  # in flight at takeover: the reply is stored; what came meanwhile is never new
    scenario=Scenario(
        QUICK,
        (
            RunnerPass(),
            TakeOver(0),
            Arrive(),
            Complete(0, "reply"),
            Advance(3.0),
            RunnerPass(),
            HandBack(None),
            Arrive(),
        ),
    )
)
@example(  # waiting for its next attempt at takeover: cancelled; a takeover repeated
    scenario=Scenario(
        QUICK,
        (
            RunnerPass(),
            Complete(0, "503"),
            Arrive(),
            TakeOver(1),
            TakeOver(1),
            Advance(10.0),
            RunnerPass(),
            HandBack(None),
            HandBack(None),
        ),
    )
)
@example(  # a hand-paused link stays paused; named agents are resumed, or linked
    scenario=Scenario(
        (*QUICK, AgentSpec(0.0, 2.0)),
        (
            SetActive(1, False),
            Arrive(),
            TakeOver(0),
            Arrive(),
            HandBack((0, 3)),
            Arrive(),
            TakeOver(1),
            HandBack(None),
            Arrive(),
        ),
    )
)
@example(  # by hand during a takeover: paused stays paused at handback, resumed goes on
    scenario=Scenario(
        QUICK,
        (
            RunnerPass(),
            TakeOver(0),
            SetActive(0, False),
            SetActive(1, True),
            Arrive(),
            HandBack(None),
            Arrive(),
        ),
    )
)
@example(  # an agent hands off: the takeover clears needs_human, the handback leaves it
    scenario=Scenario(
        QUICK,
        (
            Advance(1.0),
            RunnerPass(),
            Complete(0, "handoff+reply"),
            Arrive(),
            Complete(0, "400"),
            TakeOver(0),
            HandBack(None),
            Arrive(),
            HandBack((0,)),
            Arrive(),
        ),
    )
)
async def test_takeover_and_handback_keep_deliveries_exactly_once_and_in_order(
    bare_hub: Hub, scenario: Scenario
) -> None:
    sim = await _build(bare_hub, scenario.agents)
    note(repr(scenario))
    for op in scenario.operations:
        await sim.apply(op)
    await sim.finish()


# --- single paths, and two bugs it found -----------------------------------------------------


async def test_an_attempt_failing_in_flight_during_a_takeover_is_cancelled(
    bare_hub: Hub,
) -> None:
    sim = await _build(bare_hub, QUICK)
    for op in (RunnerPass(), TakeOver(0), Complete(0, "503"), Advance(10.0)):
        await sim.apply(op)
    assert await sim.runner_pass() == [], "no attempt starts while the chat is taken over"
    assert list(sim.status.values()) == [CANCELLED]
    assert not sim.needs_human


async def test_a_lost_attempt_is_not_retried_while_the_chat_is_taken_over(
    bare_hub: Hub,
) -> None:
    sim = await _build(bare_hub, QUICK)
    for op in (RunnerPass(), Lose(0), TakeOver(0), Advance(30.0), Advance(30.0)):
        await sim.apply(op)
    assert await sim.runner_pass() == [], "no attempt starts while the chat is taken over"


async def test_an_agent_handing_off_during_a_takeover_stays_paused_after_the_handback(
    bare_hub: Hub,
) -> None:
    sim = await _build(bare_hub, QUICK)
    for op in (RunnerPass(), TakeOver(0), Complete(0, "handoff"), HandBack(None)):
        await sim.apply(op)
    async with bare_hub.db.session(read_only=True) as session:
        link = await session.scalar(
            select(ChatAgentLink).where(ChatAgentLink.agent_id == sim.agents[0].id)
        )
    assert link is not None
    assert not link.active, "as when the agent hands off before the takeover"
