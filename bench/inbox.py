"""(d) The operator inbox at scale: `GET /inbox` and `GET /inbox/counts` over 100,000 chats.

- Seeds (bulk Core inserts on SQLite, COPY on PostgreSQL, into a schema made by the migrations)
  `--inbox-chats` chats over 20 channels of skewed sizes, 4 agents (one inactive) with their
  chat links, and 10 users (2 admins, 8 members granted 1 to 10 channels), each with read
  markers on a share of the chats it can read, some caught up and some behind. The mix of
  `handled_by` (waiting / agent / human / none), assignments and links follows the rule of
  `chats/handling.py`, and the bench checks it and the read-marker invariants in SQL after
  seeding (with the app's own `handled_by_expression`). No `messages` rows: the inbox reads only
  the chats' summary columns.
- Runs the real app in this process (its lifespan, job runner included) behind
  `httpx2.ASGITransport`, and times each request from the moment the app is called until it
  returns (an ASGI wrapper around the app): routing, auth, the SQL, serialisation. Requests are
  sequential; each round runs every case once, in a shuffled order, after unmeasured warm-up
  rounds.
- Cases: the first page (limit 50) of each view for an admin, a member of 5 channels and a
  member of 1 small channel; a deep page of each view (`next_cursor` followed `--inbox-depth`
  pages, then that page timed over and over) for the admin and the 5-channel member; the counts
  for each of them, and for one channel.
- Then each case's SQL (captured as the app ran it, parameters included) is timed on its own
  (the DBAPI connection, no app) and explained: SQLite `EXPLAIN QUERY PLAN`, PostgreSQL
  `EXPLAIN (ANALYZE, BUFFERS)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import psycopg
from sqlalchemy import and_, create_engine, event, func, not_, or_, select
from sqlalchemy.engine import make_url

from agenthub.app import create_app
from agenthub.chats.handling import handled_by_expression
from agenthub.ids import new_id
from agenthub.migrate import upgrade_database
from agenthub.models import (
    Base,
    ChannelMember,
    Chat,
    ChatRead,
    HandledBy,
    NeedsHumanReason,
    Role,
    SenderType,
    User,
    utcnow,
)
from agenthub.security import SecretBox, hash_token, new_token
from agenthub.settings import Settings
from bench.multiprocess import libpq_url, reachable

SECRET_KEY = "bench-secret-key"
CHANNELS = 20
VIEWS = ("all", "needs_human", "mine", "unassigned", "agent")
PAGE = 50
TARGET_FIRST_PAGE_MS = 20.0
TARGET_COUNTS_MS = 50.0
WEEKS = 8
# Tables in the order their foreign keys allow.
TABLES = (
    "users",
    "api_tokens",
    "channels",
    "channel_members",
    "agents",
    "chats",
    "chat_agents",
    "chat_reads",
)


@dataclass(frozen=True)
class UserSpec:
    name: str
    role: Role
    channels: int  # how many channels a member is granted (admins read all)
    read_share: float  # share of the chats it can read that it has a read marker on
    caught_up_share: float  # of those markers (chats with contact messages): all read


USERS = (
    UserSpec("admin-a", Role.ADMIN, 0, 0.40, 0.65),
    UserSpec("admin-b", Role.ADMIN, 0, 0.05, 0.40),
    UserSpec("member-5", Role.MEMBER, 5, 0.60, 0.70),
    UserSpec("member-1", Role.MEMBER, 1, 0.85, 0.80),
    UserSpec("member-2", Role.MEMBER, 2, 0.50, 0.60),
    UserSpec("member-3", Role.MEMBER, 3, 0.50, 0.60),
    UserSpec("member-4", Role.MEMBER, 4, 0.70, 0.75),
    UserSpec("member-6", Role.MEMBER, 6, 0.40, 0.50),
    UserSpec("member-8", Role.MEMBER, 8, 0.30, 0.50),
    UserSpec("member-10", Role.MEMBER, 10, 0.20, 0.40),
)
# Who the requests are made as: an admin, a typical member, a member of one small channel.
CALLERS = {"admin": "admin-a", "member (5 ch)": "member-5", "member (1 ch)": "member-1"}
DEEP_CALLERS = ("admin", "member (5 ch)")
# The member of one channel gets a small one (by size rank, 0 = busiest).
SMALL_CHANNEL_RANK = 14


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inbox-chats", type=int, default=100_000, help="(d) chats to seed")
    parser.add_argument(
        "--inbox-samples", type=int, default=200, help="(d) timed requests per case"
    )
    parser.add_argument(
        "--inbox-depth", type=int, default=200, help="(d) the deep page: pages followed"
    )
    parser.add_argument(
        "--inbox-backends", default="sqlite,postgresql", help="(d) comma-separated backends"
    )
    parser.add_argument(
        "--inbox-plans", action="store_true", help="(d) also print every query plan in full"
    )


# --- the seeded world ------------------------------------------------------------------------


@dataclass
class World:
    """The rows to insert, table by table, and what the bench needs to know about them."""

    rows: dict[str, list[dict[str, Any]]]
    user_ids: dict[str, str]
    tokens: dict[str, str]  # user name -> raw bearer token
    channel_ids: list[str]  # by size rank
    member_channels: dict[str, list[int]]  # user name -> channel ranks
    # Per chat, for the expected counts: channel rank, handled_by, assignee name, contact count.
    chat_facts: list[tuple[int, str, str | None, int]]
    caught_up: dict[str, list[int]]  # user name -> channel rank of each caught-up marker
    summary: dict[str, Any]

    def expected_counts(self, user: str, channel: int | None) -> dict[str, int]:
        """What `GET /inbox/counts` must answer, worked out in Python from the seed."""
        spec = next(s for s in USERS if s.name == user)
        readable = None if spec.role == Role.ADMIN else set(self.member_channels[user])
        counts = dict.fromkeys(("all", "needs_human", "mine", "unassigned", "agent"), 0)
        with_contact = 0
        for rank, handled_by, assignee, contact in self.chat_facts:
            if (readable is not None and rank not in readable) or (
                channel is not None and rank != channel
            ):
                continue
            counts["all"] += 1
            counts["needs_human"] += handled_by == HandledBy.WAITING
            counts["mine"] += assignee == user
            counts["unassigned"] += assignee is None
            counts["agent"] += handled_by == HandledBy.AGENT
            with_contact += contact > 0
        caught = sum(
            1
            for rank in self.caught_up[user]
            if (readable is None or rank in readable) and (channel is None or rank == channel)
        )
        return {**counts, "unread": with_contact - caught}


def build_world(chats: int, seed: int, now: datetime) -> World:
    rng = random.Random(seed)
    box = SecretBox(SECRET_KEY)
    day = timedelta(days=1)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}

    # Channels of skewed sizes: the busiest gets about 12 % of the chats, the quietest 2 %.
    weights = [1 / (rank + 1) ** 0.7 for rank in range(CHANNELS)]
    cumulative = [sum(weights[: i + 1]) for i in range(CHANNELS)]
    platforms = ("whatsapp_twilio", "telegram", "whatsapp_cloud", "whapi", "api")
    channel_ids = [new_id("chn") for _ in range(CHANNELS)]
    credentials = box.encrypt_json({})
    for rank, channel_id in enumerate(channel_ids):
        rows["channels"].append(
            {
                "id": channel_id,
                "name": f"channel-{rank:02}",
                "platform": platforms[rank % len(platforms)],
                "credentials_encrypted": credentials,
                "config": {},
                "is_active": True,
                "created_at": now - 120 * day,
                "default_agents_listed": False,
            }
        )

    # Users: tokens with `last_used_at` ahead, so the once-a-minute `last_used_at` write of
    # `deps.authenticate` (its own write transaction) stays out of the timings.
    user_ids = {spec.name: new_id("usr") for spec in USERS}
    tokens = {spec.name: new_token() for spec in USERS}
    member_channels: dict[str, list[int]] = {}
    for spec in USERS:
        rows["users"].append(
            {
                "id": user_ids[spec.name],
                "username": spec.name,
                "email": None,
                "password_hash": "!unusable",
                "role": spec.role.value,
                "is_active": True,
                "created_at": now - 100 * day,
            }
        )
        rows["api_tokens"].append(
            {
                "id": new_id("tkn"),
                "token_hash": hash_token(tokens[spec.name]),
                "name": "bench",
                "user_id": user_ids[spec.name],
                "agent_id": None,
                "created_at": now - day,
                "expires_at": None,
                "revoked_at": None,
                "last_used_at": now + 30 * day,
            }
        )
        if spec.role == Role.MEMBER:
            granted = (
                [SMALL_CHANNEL_RANK]
                if spec.channels == 1
                else sorted(rng.sample(range(CHANNELS), spec.channels))
            )
            member_channels[spec.name] = granted
            rows["channel_members"] += [
                {"channel_id": channel_ids[r], "user_id": user_ids[spec.name], "created_at": now}
                for r in granted
            ]
    admins = [s.name for s in USERS if s.role == Role.ADMIN]
    # Who may be assigned a chat of each channel: admins, and members granted it (twice: the
    # members do most of the handling).
    assignees = [
        admins + [m for m, granted in member_channels.items() if r in granted for m in (m, m)]
        for r in range(CHANNELS)
    ]

    # Agents: three active, each the usual agent of some channels, and one retired.
    agent_ids = [new_id("agt") for _ in range(4)]
    for i, (agent_id, name) in enumerate(
        zip(agent_ids, ("sales", "support", "faq", "retired"), strict=True)
    ):
        rows["agents"].append(
            {
                "id": agent_id,
                "name": f"agent-{name}",
                "webhook_url": "http://127.0.0.1:9/",
                "webhook_secret_encrypted": box.encrypt("whsec_" + secrets.token_hex(16)),
                "previous_webhook_secret_encrypted": None,  # no rotation under way
                "previous_webhook_secret_until": None,
                "health_state": "healthy",  # the delivery breaker closed
                "health_since": None,
                "health_last_error": None,
                "consecutive_failures": 0,
                "next_probe_at": None,
                "is_active": i < 3,
                "buffer_time_seconds": 3.0,
                "max_buffer_seconds": 30.0,
                "history_msg_count": 40,
                "recent_msg_window_minutes": 1440,
                "activate_for_new_conversation": i < 3,
                "timeout_seconds": 10.0,
                "created_at": now - 110 * day,
            }
        )
    retired = agent_ids[3]

    def link(chat: dict[str, Any], agent_id: str, active: bool, by_takeover: bool) -> None:
        rows["chat_agents"].append(
            {
                "id": new_id("cag"),
                "chat_id": chat["id"],
                "agent_id": agent_id,
                "active": active,
                "paused_by_takeover": by_takeover,
                "created_at": chat["created_at"],
                "delivered_seq": chat["message_seq"],
                "waiting_since": None,
                "last_arrival_at": None,
                "due_at": None,
            }
        )

    reasons = list(NeedsHumanReason)
    texts = (
        "Hi, is my order on its way?",
        "Thanks!",
        "Can I change the delivery address to the one I gave you last week?",
        "ok",
        "I would like to speak to a person, please.",
        "Your refund has been processed and should reach your account in 3-5 working days.",
    )
    chat_facts: list[tuple[int, str, str | None, int]] = []
    chat_rows = rows["chats"]
    span = WEEKS * 7 * day
    for n in range(chats):
        rank = min(CHANNELS - 1, _bisect(cumulative, rng.random() * cumulative[-1]))
        kind = rng.random()
        handled_by = (
            HandledBy.WAITING
            if kind < 0.07
            else HandledBy.AGENT
            if kind < 0.62
            else HandledBy.HUMAN
            if kind < 0.82
            else HandledBy.NONE
        )
        # Activity over the last 8 weeks, most of it recent; chats waiting for a human are
        # younger still.
        mean_days = 2 if handled_by == HandledBy.WAITING else 7
        age = timedelta(days=rng.expovariate(1 / mean_days))
        if age > span:
            age = span * rng.random()
        activity_at = now - age - timedelta(microseconds=rng.randrange(1_000_000))
        empty = rng.random() < 0.015  # created, nothing said yet
        if empty:
            contact = replies = 0
        else:
            contact = 0 if rng.random() < 0.02 else 1 + min(499, int(rng.expovariate(1 / 9)))
            replies = max(0 if contact else 1, round(contact * rng.uniform(0.5, 1.2)))
        events = 0 if handled_by in (HandledBy.AGENT, HandledBy.NONE) else rng.randint(1, 3)
        message_seq = 0 if empty else contact + replies + events
        sender = (
            None
            if empty
            else SenderType.CONTACT
            if contact
            and rng.random() < {"waiting": 0.9, "agent": 0.45, "human": 0.5}.get(handled_by, 0.7)
            else SenderType.AGENT
            if handled_by in (HandledBy.AGENT, HandledBy.WAITING, HandledBy.NONE)
            else SenderType.USER
        )
        created_at = activity_at if empty else activity_at - 30 * day * rng.random()
        assignee = None
        if handled_by == HandledBy.HUMAN or (
            rng.random() < {"waiting": 0.15, "agent": 0.03}.get(handled_by, 0.0)
        ):
            assignee = rng.choice(assignees[rank])
        waiting = handled_by == HandledBy.WAITING
        chat: dict[str, Any] = {
            "id": new_id("cht"),
            "channel_id": channel_ids[rank],
            "external_id": f"+1555{n:07d}",
            "name": None if rng.random() < 0.1 else f"Contact {n}",
            "assigned_user_id": user_ids[assignee] if assignee else None,
            "last_message": None if empty else rng.choice(texts),
            "last_message_ts": None if empty else activity_at,
            "last_sender_type": sender.value if sender else None,
            "needs_human": waiting,
            "needs_human_reason": rng.choice(reasons).value if waiting else None,
            "needs_human_since": activity_at - timedelta(hours=2 * rng.random())
            if waiting
            else None,
            "handled_by": handled_by.value,
            "message_seq": message_seq,
            "contact_message_count": contact,
            "activity_at": activity_at,
            "created_at": created_at,
        }
        chat_rows.append(chat)
        usual = agent_ids[rank % 3]
        roll = rng.random()
        if handled_by == HandledBy.WAITING:
            if roll < 0.75:  # handed off, still linked
                link(chat, usual, True, False)
        elif handled_by == HandledBy.AGENT:
            link(chat, usual, True, False)
            if roll < 0.05:  # a second agent, sometimes paused
                link(chat, agent_ids[(rank + 1) % 3], rng.random() < 0.5, False)
        elif handled_by == HandledBy.HUMAN:
            if roll < 0.7:  # taken over from the agent
                link(chat, usual, False, True)
            elif roll < 0.8:
                link(chat, retired, True, False)
        elif roll < 0.3:  # an agent paused by an operator, nobody assigned
            link(chat, usual, False, False)
        elif roll < 0.4:
            link(chat, retired, True, False)
        chat_facts.append((rank, handled_by.value, assignee, contact))

    # Read markers: each user on a share of the chats it can read (members: also on a channel
    # they have lost since, which the counts must leave out).
    by_rank: list[list[int]] = [[] for _ in range(CHANNELS)]
    for i, (rank, *_) in enumerate(chat_facts):
        by_rank[rank].append(i)
    caught_up: dict[str, list[int]] = {}
    for spec in USERS:
        caught_up[spec.name] = []
        if spec.role == Role.ADMIN:
            shares = {r: spec.read_share for r in range(CHANNELS)}
        else:
            granted = member_channels[spec.name]
            former = rng.choice([r for r in range(CHANNELS) if r not in granted])
            shares = {r: spec.read_share for r in granted} | {former: 0.1}
        for rank, share in shares.items():
            for i in by_rank[rank]:
                if rng.random() >= share:
                    continue
                chat = chat_rows[i]
                contact = int(chat["contact_message_count"])
                seq = int(chat["message_seq"])
                read_at: datetime
                if contact == 0:
                    read_count, read_seq, read_at = 0, seq, chat["activity_at"]
                elif rng.random() < spec.caught_up_share:
                    read_count, read_seq = contact, seq
                    read_at = chat["activity_at"] + (now - chat["activity_at"]) * rng.random()
                else:
                    read_count = rng.randrange(contact)
                    read_seq = read_count + (seq - contact) * read_count // contact
                    read_at = chat["activity_at"] - timedelta(minutes=rng.uniform(1, 4000))
                is_caught_up = 0 < contact <= read_count
                if is_caught_up:
                    caught_up[spec.name].append(rank)
                rows["chat_reads"].append(
                    {
                        "user_id": user_ids[spec.name],
                        "chat_id": chat["id"],
                        "channel_id": chat["channel_id"],
                        "read_seq": read_seq,
                        "read_contact_count": read_count,
                        "caught_up": is_caught_up,
                        "read_at": read_at,
                    }
                )

    for name, table_rows in rows.items():
        columns = set(Base.metadata.tables[name].c.keys())
        assert all(set(row) == columns for row in table_rows[:1]), name
    mix = {h.value: sum(1 for f in chat_facts if f[1] == h.value) for h in HandledBy}
    summary = {
        "chats": chats,
        "channel_sizes": [len(ids) for ids in by_rank],
        "handled_by": mix,
        "assigned": sum(1 for f in chat_facts if f[2] is not None),
        "chat_agents": len(rows["chat_agents"]),
        "chat_reads": len(rows["chat_reads"]),
        "caught_up_markers": sum(len(v) for v in caught_up.values()),
        "member_channels": {
            m: {"channels": len(g), "chats": sum(len(by_rank[r]) for r in g)}
            for m, g in member_channels.items()
        },
    }
    return World(
        rows, user_ids, tokens, channel_ids, member_channels, chat_facts, caught_up, summary
    )


def _bisect(cumulative: list[float], x: float) -> int:
    lo, hi = 0, len(cumulative)
    while lo < hi:
        mid = (lo + hi) // 2
        if cumulative[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


# --- seeding -------------------------------------------------------------------------------


def seed_sqlite(url: str, world: World) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        for name in TABLES:
            table = Base.metadata.tables[name]
            rows = world.rows[name]
            for start in range(0, len(rows), 20_000):
                conn.execute(table.insert(), rows[start : start + 20_000])
    engine.dispose()


def seed_postgres(url: str, world: World) -> None:
    with psycopg.connect(libpq_url(url)) as conn:
        with conn.cursor() as cur:
            for name in TABLES:
                rows = world.rows[name]
                columns = list(rows[0])
                quoted = ", ".join(f'"{c}"' for c in columns)
                with cur.copy(f"COPY {name} ({quoted}) FROM STDIN".encode()) as copy:
                    for row in rows:
                        copy.write_row(
                            [json.dumps(v) if isinstance(v, dict) else v for v in row.values()]
                        )
        conn.commit()
    # The state autovacuum would reach soon after: statistics, and a visibility map that lets
    # the counts read their covering index without visiting the table.
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(b"VACUUM ANALYZE")


def check_invariants(url: str) -> dict[str, int]:
    """Rows breaking what the app relies on (all must be 0)."""
    engine = create_engine(url)
    member = and_(User.id == Chat.assigned_user_id, User.role == Role.MEMBER.value)
    granted = (
        select(ChannelMember.channel_id)
        .where(ChannelMember.user_id == Chat.assigned_user_id)
        .correlate(Chat)
    )
    caught = and_(
        Chat.contact_message_count > 0, Chat.contact_message_count <= ChatRead.read_contact_count
    )
    on_chat = Chat.id == ChatRead.chat_id
    checks = {
        "handled_by != the rule": select(func.count())
        .select_from(Chat)
        .where(Chat.handled_by != handled_by_expression()),
        "activity_at missing": select(func.count()).where(Chat.activity_at.is_(None)),
        "caught_up != (0 < contact <= read)": select(func.count())
        .select_from(ChatRead)
        .join(Chat, on_chat)
        .where(
            or_(
                and_(ChatRead.caught_up.is_(True), not_(caught)),
                and_(ChatRead.caught_up.is_(False), caught),
            )
        ),
        "read past the chat": select(func.count())
        .select_from(ChatRead)
        .join(Chat, on_chat)
        .where(
            or_(
                ChatRead.read_contact_count > Chat.contact_message_count,
                ChatRead.read_seq > Chat.message_seq,
                ChatRead.channel_id != Chat.channel_id,
            )
        ),
        "assigned to a member without the channel": select(func.count())
        .select_from(Chat)
        .join(User, member)
        .where(Chat.channel_id.not_in(granted)),
    }
    with engine.connect() as conn:
        found = {name: int(conn.scalar(query) or 0) for name, query in checks.items()}
    engine.dispose()
    return found


# --- the app, timed ------------------------------------------------------------------------


ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class ServerTimer:
    """ASGI wrapper: how long the app took over the last HTTP request, call to return."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.last = time.perf_counter() - start


@dataclass
class Case:
    group: str  # "first page", "deep page", "counts"
    label: str
    caller: str
    params: dict[str, str]
    path: str = "/inbox"
    note: str = ""
    samples: list[float] = field(default_factory=list)
    statements: list[tuple[str, Any]] = field(default_factory=list)
    sql_ms: float | None = None
    plans: list[str] = field(default_factory=list)
    plan_flags: str = ""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


@contextlib.contextmanager
def capture_statements(engines: list[Any]) -> Iterator[list[tuple[str, Any]]]:
    """The statements run on behalf of the current task (the request: ASGITransport serves it
    in-task), leaving out the job runner's sweep that shares the engine."""
    statements: list[tuple[str, Any]] = []
    task = asyncio.current_task()

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if asyncio.current_task() is task:
            statements.append((statement, parameters))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def inbox_statements(statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The inbox's own SQL among a request's statements (not auth, not the channel check)."""
    return [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().upper().startswith("SELECT")
        and ("FROM chats" in sql or "FROM chat_reads" in sql)
    ]


async def measure(backend: str, url: str, world: World, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(
        database_url=url,
        secret_key=SECRET_KEY,
        redis_url=None,
        log_level="WARNING",
        _env_file=None,
    )
    app = create_app(settings)
    timer = ServerTimer(app)
    cases = make_cases(world)
    rng = random.Random(7)
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        transport = httpx2.ASGITransport(app=timer)
        async with httpx2.AsyncClient(transport=transport, base_url="http://hub.bench") as http:

            async def get(case: Case) -> httpx2.Response:
                token = world.tokens[CALLERS[case.caller]]
                response = await http.get(
                    case.path, params=case.params, headers={"Authorization": f"Bearer {token}"}
                )
                if response.status_code != 200:
                    raise SystemExit(f"{case.path} {case.params}: {response.status_code}")
                return response

            # Counts: the app's answers against the seed.
            for case in cases:
                if case.group == "counts":
                    channel = case.params.get("channel_id")
                    rank = world.channel_ids.index(channel) if channel else None
                    expected = world.expected_counts(CALLERS[case.caller], rank)
                    got = (await get(case)).json()
                    if got != expected:
                        raise SystemExit(f"counts {case.caller}: {got} != expected {expected}")
            # Deep pages: follow next_cursor, timing every page on the way and checking that
            # each chat comes once and belongs in the view.
            walks: dict[str, list[float]] = {}
            for case in cases:
                if case.group != "deep page":
                    continue
                params = dict(case.params)
                page, walk, seen = 1, walks.setdefault(case.caller, []), set[str]()
                while page < args.inbox_depth + 1:
                    body = (await get(Case("", "", case.caller, params))).json()
                    walk.append(timer.last * 1000)
                    check_page(world, case, body["chats"], seen)
                    if not body["has_more"]:
                        break
                    page += 1
                    params["cursor"] = body["next_cursor"]
                case.params = params
                case.note = f"page {page} ({(page - 1) * PAGE:,} chats in)"
            for case in cases:
                if case.group == "first page":
                    check_page(world, case, (await get(case)).json()["chats"], set())
            # Warm-up rounds, then the timed rounds (each case once per round, shuffled).
            for round_number in range(5 + args.inbox_samples):
                order = list(cases)
                rng.shuffle(order)
                for case in order:
                    await get(case)
                    if round_number >= 5:
                        case.samples.append(timer.last * 1000)
            # The SQL each case ran, for the plans.
            engines = [engine.sync_engine for engine in hub.db.engines]
            for case in cases:
                with capture_statements(engines) as statements:
                    await get(case)
                case.statements = inbox_statements(statements)
    explain(backend, url, cases)
    return {
        "backend": backend,
        "cases": [
            {
                "group": c.group,
                "label": c.label,
                "caller": c.caller,
                "note": c.note,
                "p50": percentile(c.samples, 50),
                "p99": percentile(c.samples, 99),
                "max": max(c.samples),
                "samples": len(c.samples),
                "sql_ms": c.sql_ms,
                "plan_flags": c.plan_flags,
                "plans": c.plans,
                "statements": [s for s, _ in c.statements],
            }
            for c in cases
        ],
        "walks": {
            caller: {"pages": len(w), "p50": percentile(w, 50), "p99": percentile(w, 99)}
            for caller, w in walks.items()
        },
    }


def check_page(world: World, case: Case, chats: list[dict[str, Any]], seen: set[str]) -> None:
    """Every chat of a page is readable by the caller, in the view, and not seen before."""
    user = CALLERS[case.caller]
    readable = {world.channel_ids[r] for r in world.member_channels.get(user, range(CHANNELS))}
    view = case.params["view"]
    for chat in chats:
        ok = chat["channel_id"] in readable and chat["id"] not in seen
        ok = (
            ok
            and {
                "all": True,
                "needs_human": chat["handled_by"] == HandledBy.WAITING,
                "mine": chat["assigned_user_id"] == world.user_ids[user],
                "unassigned": chat["assigned_user_id"] is None,
                "agent": chat["handled_by"] == HandledBy.AGENT,
            }[view]
        )
        if not ok:
            raise SystemExit(f"{case.caller} view={view}: chat {chat['id']} should not be there")
        seen.add(chat["id"])


def make_cases(world: World) -> list[Case]:
    cases = []
    for caller in CALLERS:
        for view in VIEWS:
            cases.append(Case("first page", view, caller, {"view": view, "limit": str(PAGE)}))
    for caller in DEEP_CALLERS:
        for view in VIEWS:
            cases.append(Case("deep page", view, caller, {"view": view, "limit": str(PAGE)}))
    busiest_of_member = world.channel_ids[world.member_channels[CALLERS["member (5 ch)"]][0]]
    for caller in CALLERS:
        cases.append(Case("counts", "all channels", caller, {}, path="/inbox/counts"))
    cases.append(
        Case(
            "counts",
            "channel-00 (busiest)",
            "admin",
            {"channel_id": world.channel_ids[0]},
            path="/inbox/counts",
        )
    )
    cases.append(
        Case(
            "counts",
            "one of its channels",
            "member (5 ch)",
            {"channel_id": busiest_of_member},
            path="/inbox/counts",
        )
    )
    return cases


# --- plans ---------------------------------------------------------------------------------


def explain(backend: str, url: str, cases: list[Case]) -> None:
    """Time each case's SQL alone (median of 20 runs) and keep its plan."""
    if backend == "sqlite":
        path = make_url(url).database
        assert path
        conn: Any = sqlite3.connect(path)
    else:
        conn = psycopg.connect(libpq_url(url), autocommit=True)
    try:
        for case in cases:
            total = 0.0
            flags = []
            for sql, params in case.statements:
                runs = []
                for _ in range(20):
                    start = time.perf_counter()
                    conn.execute(sql, params).fetchall()
                    runs.append((time.perf_counter() - start) * 1000)
                total += sorted(runs)[len(runs) // 2]
                if backend == "sqlite":
                    plan = sqlite_plan(conn, sql, params)
                else:
                    plan = postgres_plan(conn, sql, params)
                case.plans.append(plan)
                flags.append(plan_flags(backend, plan))
            case.sql_ms = total
            case.plan_flags = " + ".join(flags)
    finally:
        conn.close()


def sqlite_plan(conn: sqlite3.Connection, sql: str, params: Any) -> str:
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return "\n".join(lines)


def postgres_plan(conn: psycopg.Connection[Any], sql: str, params: Any) -> str:
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def plan_flags(backend: str, plan: str) -> str:
    """The plan in a few words: which index of chats / chat_reads it reads, and any full
    scan or sort."""
    found: list[str] = []

    def add(word: str) -> None:
        if word not in found:
            found.append(word)

    for line in plan.splitlines():
        text = line.strip().lstrip("-> ").strip()
        if backend == "sqlite":
            words = text.split()
            if len(words) >= 2 and words[1] in ("chats", "chat_reads"):
                if " INDEX " in text:
                    index = words[words.index("INDEX") + 1]
                    if words[0] == "SCAN":  # the whole index in order (a LIMIT may stop it)
                        index = ("whole " if "COVERING" in words else "walk ") + index
                    add(index.replace("sqlite_autoindex_chat_reads_1", "pk_chat_reads"))
                elif words[0] == "SCAN":
                    add(f"FULL SCAN {words[1]}")
                else:
                    add(text)
            elif "TEMP B-TREE" in text:
                add("SORT (temp b-tree)")
        else:
            if text.startswith("Bitmap Index Scan on "):
                add("bitmap " + text.split()[4])
            elif text.startswith("Bitmap Heap Scan"):
                continue
            elif " on chats" in text or " on chat_reads" in text:
                if "Seq Scan" in text:
                    add("SEQ SCAN " + text.split(" on ")[1].split()[0])
                elif " using " in text:
                    kind = "index-only " if "Index Only" in text else ""
                    add(kind + text.split(" using ")[1].split()[0])
                else:
                    add(text.split("  ")[0])
            elif text.startswith(("Sort ", "Incremental Sort", "Top-N")):
                add("SORT")
    return ", ".join(found)


# --- the run -------------------------------------------------------------------------------


class ScratchPostgres:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = libpq_url(admin_url)
        self.name = f"agenthub_bench_inbox_{secrets.token_hex(3)}"
        self.url = (
            make_url(self.admin_url)
            .set(drivername="postgresql+psycopg", database=self.name)
            .render_as_string(hide_password=False)
        )

    def _admin(self, sql: str) -> list[Any]:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return list(cursor.fetchone() or ()) if cursor.description else []

    def create(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def version(self) -> str:
        return str(self._admin("SHOW server_version")[0]).split()[0]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # The requests run one at a time in this process: give it (and aiosqlite's thread) every CPU.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    now = utcnow()
    world = build_world(args.inbox_chats, seed=42, now=now)
    built = time.perf_counter() - started
    print(
        f"(d) inbox: {args.inbox_chats:,} chats, {world.summary['chat_reads']:,} read markers, "
        f"{world.summary['chat_agents']:,} agent links (built in {built:.1f} s)",
        flush=True,
    )
    results: dict[str, Any] = {
        "load_average": load_average,
        "seed": world.summary,
        "backends": [],
    }
    backends = [b.strip() for b in args.inbox_backends.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="agenthub-bench-inbox-"))
    try:
        for backend in backends:
            if backend == "sqlite":
                url = f"sqlite:///{workdir / 'inbox.db'}"
                results["backends"].append(
                    await run_backend(backend, url, world, args, seed_sqlite)
                )
            elif backend == "postgresql":
                if not reachable(args.postgres_url, 5432):
                    print(f"(d) postgresql skipped: {args.postgres_url} not reachable", flush=True)
                    continue
                scratch = ScratchPostgres(args.postgres_url)
                scratch.create()
                try:
                    result = await run_backend(backend, scratch.url, world, args, seed_postgres)
                    result["version"] = scratch.version()
                    results["backends"].append(result)
                finally:
                    scratch.drop()
            else:
                raise SystemExit(f"unknown backend {backend!r}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    return results


async def run_backend(
    backend: str,
    url: str,
    world: World,
    args: argparse.Namespace,
    seed: Callable[[str, World], None],
) -> dict[str, Any]:
    started = time.perf_counter()
    upgrade_database(url)
    migrated = time.perf_counter()
    seed(url, world)
    seeded = time.perf_counter()
    broken = check_invariants(url)
    if any(broken.values()):
        raise SystemExit(f"(d) {backend}: seeded rows break invariants: {broken}")
    print(
        f"(d) {backend}: migrated in {migrated - started:.1f} s, seeded in "
        f"{seeded - migrated:.1f} s, invariants hold; measuring",
        flush=True,
    )
    gc.collect()
    result = await measure(backend, url, world, args)
    result["seed_seconds"] = seeded - migrated
    result["seconds"] = time.perf_counter() - started
    print(f"(d) {backend}: done in {result['seconds']:.0f} s", flush=True)
    return result


# --- report --------------------------------------------------------------------------------


def report(d: dict[str, Any], plans: bool = True) -> str:
    seed = d["seed"]
    mix = seed["handled_by"]
    members = ", ".join(
        f"{m} {v['channels']} ch / {v['chats']:,} chats" for m, v in seed["member_channels"].items()
    )
    lines = [
        f"(d) inbox at scale: {seed['chats']:,} chats over {CHANNELS} channels "
        f"(sizes {min(seed['channel_sizes']):,} to {max(seed['channel_sizes']):,}); handled_by "
        + ", ".join(f"{k} {v:,}" for k, v in mix.items())
        + f"; {seed['assigned']:,} assigned; {seed['chat_agents']:,} agent links; "
        f"{seed['chat_reads']:,} read markers ({seed['caught_up_markers']:,} caught up); "
        f"members: {members}. Load average before: {d['load_average']}.",
    ]
    for b in d["backends"]:
        version = f" {b['version']}" if "version" in b else ""
        lines += [
            "",
            f"**{b['backend']}{version}** (seeded in {b['seed_seconds']:.1f} s; server time per "
            f"request over {b['cases'][0]['samples']} requests per case, ms)",
            "",
            "| request | caller | p50 | p99 | max | SQL alone | target | plan (index of chats / "
            "chat_reads) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in b["cases"]:
            target = ""
            if c["group"] in ("first page", "counts"):
                limit = TARGET_FIRST_PAGE_MS if c["group"] == "first page" else TARGET_COUNTS_MS
                verdict = "met" if c["p99"] < limit else "**MISSED**"
                target = f"p99 < {limit:g}: {verdict}"
            name = {
                "first page": f"`/inbox?view={c['label']}` first page",
                "deep page": f"`/inbox?view={c['label']}` {c['note']}",
                "counts": f"`/inbox/counts` {c['label']}",
            }[c["group"]]
            sql = f"{c['sql_ms']:.2f}" if c["sql_ms"] is not None else ""
            lines.append(
                f"| {name} | {c['caller']} | {c['p50']:.1f} | {c['p99']:.1f} | {c['max']:.1f} "
                f"| {sql} | {target} | {c['plan_flags']} |"
            )
        walks = "; ".join(
            f"{caller}: {w['pages']} pages, p50 {w['p50']:.1f} / p99 {w['p99']:.1f} ms"
            for caller, w in b["walks"].items()
        )
        lines += ["", f"Walking `next_cursor` page after page (all views): {walks}."]
    if plans:
        for b in d["backends"]:
            lines += ["", f"Plans, {b['backend']}:"]
            seen: set[str] = set()
            for c in b["cases"]:
                for statement, plan in zip(c["statements"], c["plans"], strict=True):
                    key = plan if b["backend"] == "sqlite" else statement + c["caller"]
                    if key in seen:
                        continue
                    seen.add(key)
                    lines += [f"- {c['group']} {c['label']} ({c['caller']}):", _indent(plan)]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines())
