"""The operator console at scale: its pages' server time, its first load, its requests under
a stream of events.

- Seeds the world of bench/inbox.py (`--console-chats` chats, 20 channels, 10 users), plus one
  `api` channel the bench can sign webhooks for, granted to the member of 5 channels, with one
  chat that has a realistic timeline (50 messages from the contact, the agent and the member,
  notes, events: assignment, takeover, agent links) and is the chat the pages open.
- Server time (the app in this process behind `httpx2.ASGITransport`, timed by the ASGI
  wrapper of bench/inbox.py, the session cookie as a browser sends it): the inbox page, the
  chat page, and the fragments and API call the page refetches when events arrive, as the
  admin and as the member; SQLite and PostgreSQL (a scratch database, as bench/inbox.py).
- Then a real `agenthub serve` on the SQLite database and headless Chromium (Debian's binaries,
  given to Selenium): the bytes of a first load (Resource Timing `transferSize` of the document
  and of everything it fetched, cache cleared), and the requests per second the page makes,
  open on the inbox with the chat open, while signed webhooks arrive at each of
  `--console-rates` events/s (new contacts, known contacts, and the open chat's contact).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import gzip
import json
import os
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import create_engine
from standardwebhooks import Webhook
from websockets.asyncio.client import connect as ws_connect

from agenthub.app import create_app
from agenthub.ids import new_id
from agenthub.migrate import upgrade_database
from agenthub.models import Base, HandledBy, SenderType, utcnow
from agenthub.security import SecretBox
from agenthub.sessions import SESSION_COOKIE
from agenthub.settings import Settings
from bench import __main__ as single
from bench import inbox
from bench.multiprocess import reachable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TARGET_PAGE_MS = 50.0
TARGET_FIRST_LOAD = 200 * 1024
CALLERS = {"admin": "admin-a", "member (6 ch)": "member-5"}
TIMELINE_CONTACT = "timeline-contact"
# Of the events, the share from the open chat's contact, and the pool of other contacts
# (the first message of each creates its chat, the others update it).
OPEN_CHAT_SHARE = 0.1
CONTACTS = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--console-chats", type=int, default=100_000, help="chats to seed")
    parser.add_argument(
        "--console-samples", type=int, default=200, help="timed requests per page and caller"
    )
    parser.add_argument(
        "--console-backends", default="sqlite,postgresql", help="comma-separated backends"
    )
    parser.add_argument(
        "--console-rates", default="5,50,100", help="events/s while the page is counted"
    )
    parser.add_argument(
        "--console-seconds", type=float, default=20.0, help="seconds counted at each rate"
    )
    parser.add_argument("--no-console-browser", action="store_true", help="server times only")


# --- the extra rows: the bench's channel and the chat with a timeline --------------------------


@dataclass
class Extra:
    """Rows added to the seeded world, and what the bench needs to know about them."""

    rows: dict[str, list[dict[str, Any]]]
    channel_id: str
    secret: str  # the channel's Standard Webhooks key, to sign inbound webhooks with
    chat_id: str
    items: dict[str, int] = field(default_factory=dict)


TEXTS = (
    "Hi, my order #4411 has not arrived yet. Can you check where it is?",
    "Thanks, that helps.",
    "Let me look that up for you. One moment please.",
    "The courier says it is at the depot; it should reach you tomorrow.",
    "Can I change the delivery address to my office instead?",
    "ok",
)


def build_extra(world: inbox.World, now: datetime) -> Extra:
    member = world.user_ids["member-5"]
    agent = next(a for a in world.rows["agents"] if a["is_active"])["id"]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    # A channel with an empty default-agent list: the webhooks' new chats get no agent, so
    # nothing is delivered to the seeded agents' unreachable URLs.
    channel = {
        **world.rows["channels"][0],
        "id": new_id("chn"),
        "name": "web-chat",
        "platform": "api",
        "credentials_encrypted": SecretBox(inbox.SECRET_KEY).encrypt_json({"secret": secret}),
        "default_agents_listed": True,
    }
    start = now - timedelta(hours=3)
    # Handled by a human: assigned to the member, the agent paused by a takeover.
    chat = {
        **world.rows["chats"][0],
        "id": new_id("cht"),
        "channel_id": channel["id"],
        "external_id": TIMELINE_CONTACT,
        "name": "Dana Timeline",
        "assigned_user_id": member,
        "needs_human": False,
        "needs_human_reason": None,
        "needs_human_since": None,
        "handled_by": HandledBy.HUMAN.value,
        "created_at": start,
    }
    link = {
        "id": new_id("cag"),
        "chat_id": chat["id"],
        "agent_id": agent,
        "active": False,
        "paused_by_takeover": True,
        "created_at": start,
        "delivered_seq": 0,
        "waiting_since": None,
        "last_arrival_at": None,
        "due_at": None,
    }
    rows = {
        "channels": [channel],
        "channel_members": [{"channel_id": channel["id"], "user_id": member, "created_at": now}],
        "chats": [chat],
        "chat_agents": [link],
        **timeline_rows(chat, world.user_ids["admin-a"], member, agent, start),
    }
    items = {k: len(rows[k]) for k in ("messages", "notes", "chat_events")}
    return Extra(rows, channel["id"], secret, chat["id"], items)


def timeline_rows(
    chat: dict[str, Any], admin: str, member: str, agent: str, start: datetime
) -> dict[str, list[dict[str, Any]]]:
    """50 messages (the agent first, then the member, the contact throughout), with notes
    and events among them, in one `seq` order; the chat's summary columns follow the last."""
    rng = random.Random(11)
    notes = {12: admin, 25: member, 31: member, 40: admin, 44: member, 48: member}
    events = {
        8: ("handoff", "agent", agent),
        9: ("assigned", "user", admin),
        10: ("takeover", "user", member),
        27: ("agent_paused", "user", member),
        35: ("agent_resumed", "user", member),
        36: ("agent_paused", "user", member),
    }
    rows: dict[str, list[dict[str, Any]]] = {"messages": [], "notes": [], "chat_events": []}
    at = start
    for n in range(1, 51):
        at += timedelta(seconds=rng.randint(20, 300))
        sender = SenderType.CONTACT if n % 2 or n > 45 else SenderType.AGENT if n < 10 else None
        sender = sender or SenderType.USER
        ids = {SenderType.CONTACT: None, SenderType.AGENT: agent, SenderType.USER: member}
        base = {"id": new_id("msg"), "chat_id": chat["id"], "seq": next_seq(rows)}
        rows["messages"].append(
            {
                **base,
                "channel_id": chat["channel_id"],
                "content": rng.choice(TEXTS),
                "sender_type": sender.value,
                "sender_id": ids[sender],
                "external_id": f"ext-{n}",
                "delivery_status": "DELIVERED" if sender == SenderType.CONTACT else "READ",
                "timestamp": at,
                "meta_data": {},
            }
        )
        if n in events:
            kind, actor_type, actor = events[n]
            rows["chat_events"].append(
                {
                    "id": new_id("evt"),
                    "chat_id": chat["id"],
                    "seq": next_seq(rows),
                    "event": kind,
                    "actor_type": actor_type,
                    "actor_id": actor,
                    "detail": {},
                    "created_at": at + timedelta(seconds=5),
                }
            )
        if n in notes:
            rows["notes"].append(
                {
                    "id": new_id("nte"),
                    "chat_id": chat["id"],
                    "seq": next_seq(rows),
                    "user_id": notes[n],
                    "content": "Customer is a repeat buyer; offer free shipping next time.",
                    "created_at": at + timedelta(seconds=10),
                }
            )
    last = rows["messages"][-1]
    chat.update(
        message_seq=next_seq(rows) - 1,
        contact_message_count=sum(m["sender_id"] is None for m in rows["messages"]),
        last_message=last["content"],
        last_message_ts=last["timestamp"],
        last_sender_type=last["sender_type"],
        activity_at=last["timestamp"],
    )
    return rows


def next_seq(rows: dict[str, list[dict[str, Any]]]) -> int:
    """Messages, notes and events share the chat's `seq`."""
    return sum(len(v) for v in rows.values()) + 1


def seed_extra(url: str, extra: Extra) -> None:
    """Insert the extra rows (after the world: their foreign keys point into it)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for name, rows in extra.rows.items():
            conn.execute(Base.metadata.tables[name].insert(), rows)
    engine.dispose()


def prepare(backend: str, url: str, world: inbox.World, extra: Extra) -> float:
    """Migrate, seed, check the invariants of bench/inbox.py; returns the seconds it took."""
    started = time.perf_counter()
    upgrade_database(url)
    (inbox.seed_sqlite if backend == "sqlite" else inbox.seed_postgres)(url, world)
    seed_extra(url, extra)
    broken = inbox.check_invariants(url)
    if any(broken.values()):
        raise SystemExit(f"console {backend}: seeded rows break invariants: {broken}")
    return time.perf_counter() - started


# --- server time, in process ----------------------------------------------------------------


@dataclass
class Case:
    label: str
    caller: str
    path: str
    expect: tuple[str, int] | None = None  # a marker the answer must hold, at least so often
    samples: list[float] = field(default_factory=list)
    size: int = 0


def make_cases(extra: Extra) -> list[Case]:
    chat = f"/console/chats/{extra.chat_id}"
    fragment = f"/console/fragments/chats/{extra.chat_id}"
    row = ('data-testid="chat-row"', inbox.PAGE)
    item = ('data-testid="timeline-item"', inbox.PAGE)
    cases = []
    for caller in CALLERS:
        cases += [
            Case("inbox page `GET /console`", caller, "/console", row),
            Case("chat page `GET /console/chats/{id}`", caller, chat, item),
            Case(
                "inbox list fragment (refetched on events)", caller, "/console/fragments/inbox", row
            ),
            Case("chat fragment (a click on a row)", caller, fragment, item),
            Case("timeline fragment (refetched on events)", caller, fragment + "/timeline", item),
            Case("chat header fragment (refetched on events)", caller, fragment + "/header"),
            Case("`GET /inbox/counts` (refetched on events)", caller, "/inbox/counts"),
        ]
    return cases


def app_settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        secret_key=inbox.SECRET_KEY,
        redis_url=None,
        log_level="WARNING",
        _env_file=None,
    )


async def server_times(url: str, world: inbox.World, extra: Extra, samples: int) -> list[Case]:
    app = create_app(app_settings(url))
    timer = inbox.ServerTimer(app)
    cases = make_cases(extra)
    rng = random.Random(7)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=timer)
        async with httpx2.AsyncClient(transport=transport, base_url="http://hub.bench") as http:

            async def get(case: Case) -> float:
                cookie = f"{SESSION_COOKIE}={world.tokens[CALLERS[case.caller]]}"
                response = await http.get(case.path, headers={"Cookie": cookie})
                check(case, response)
                case.size = len(response.content)
                return timer.last * 1000

            # Warm-up rounds, then the timed ones: each case once per round, shuffled.
            for round_number in range(5 + samples):
                order = list(cases)
                rng.shuffle(order)
                for case in order:
                    ms = await get(case)
                    if round_number >= 5:
                        case.samples.append(ms)
    return cases


def check(case: Case, response: httpx2.Response) -> None:
    """A page that answers fast but wrong (a redirect to the login form, an empty list) must
    not pass for a fast page."""
    if response.status_code != 200:
        raise SystemExit(f"{case.path} as {case.caller}: {response.status_code}")
    if case.expect is not None:
        marker, count = case.expect
        found = response.text.count(marker)
        if found < count:
            raise SystemExit(f"{case.path} as {case.caller}: {found} x {marker}, not {count}")


def case_figures(cases: list[Case]) -> list[dict[str, Any]]:
    return [
        {
            "label": c.label,
            "caller": c.caller,
            "path": c.path,
            "p50": inbox.percentile(c.samples, 50),
            "p99": inbox.percentile(c.samples, 99),
            "max": max(c.samples),
            "samples": len(c.samples),
            "bytes": c.size,
        }
        for c in cases
    ]


# --- the browser ----------------------------------------------------------------------------


def make_driver() -> webdriver.Chrome:
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    # Both binaries given: Selenium Manager has nothing to look for, so it downloads nothing.
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


ENTRIES_JS = """
const all = [...performance.getEntriesByType('navigation'),
             ...performance.getEntriesByType('resource')];
return all.map((e) => ({
  name: e.name, type: e.initiatorType || 'navigation', start: e.startTime,
  transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize,
  status: e.responseStatus || 0,
}));
"""


def signed_in_page(driver: webdriver.Chrome, base: str, token: str, path: str) -> None:
    """Open `path` as the owner of `token`, cache cleared; returns once the page is live and
    its first fetches are done."""
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    # The seeded admin's token as the session cookie, as the login form would set it; on a page
    # of the hub's origin with nothing to fetch.
    driver.get(base + "/readyz")
    driver.add_cookie(
        {
            "name": SESSION_COOKIE,
            "value": token,
            "path": "/",
            "httpOnly": True,
            "sameSite": "Strict",
        }
    )
    driver.get(base + path)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "const e = document.getElementById('connection-state');"
            "return e && e.dataset.state === 'open';"
        )
    )
    time.sleep(2)  # the page's own first fetches (counts, /auth/me, the read marker)


def first_load(driver: webdriver.Chrome, base: str, token: str, path: str) -> dict[str, Any]:
    signed_in_page(driver, base, token, path)
    entries = driver.execute_script(ENTRIES_JS)
    resources = [
        {
            "url": e["name"],
            "path": urlsplit(e["name"]).path,
            "type": e["type"],
            "transfer": e["transfer"],
            "encoded": e["encoded"],
            "decoded": e["decoded"],
        }
        for e in entries
    ]
    return {
        "path": path,
        "resources": resources,
        "transfer": sum(r["transfer"] for r in resources),
        "encoded": sum(r["encoded"] for r in resources),
        "decoded": sum(r["decoded"] for r in resources),
    }


# What a first load would weigh with compression: the GETs fetched again and gzipped (the
# `fetch` entries are a few hundred bytes of JSON, and one of them is a POST, so left as sent).
GZIPPED_TYPES = ("navigation", "link", "script", "xmlhttprequest")


async def add_gzip_sizes(load: dict[str, Any], token: str) -> None:
    cookie = {"Cookie": f"{SESSION_COOKIE}={token}"}
    async with httpx2.AsyncClient(timeout=30) as http:
        for r in load["resources"]:
            r["gzip"] = r["encoded"]
            if r["type"] in GZIPPED_TYPES:
                body = (await http.get(r["url"], headers=cookie)).content
                r["gzip"] = len(gzip.compress(body, 6))
    load["gzip"] = sum(r["gzip"] for r in load["resources"])


class Webhooks:
    """Signed `api` webhooks: from the open chat's contact, a known contact, or a new one."""

    def __init__(self, extra: Extra, seed: int) -> None:
        self.path = f"/webhooks/api/{extra.channel_id}"
        self.signer = Webhook(extra.secret)
        self.rng = random.Random(seed)
        self.count = 0

    def __call__(self) -> tuple[str, dict[str, str]]:
        self.count += 1
        contact = (
            TIMELINE_CONTACT
            if self.rng.random() < OPEN_CHAT_SHARE
            else f"web-{self.rng.randrange(CONTACTS)}"
        )
        body = json.dumps(
            {
                "contact_id": contact,
                "contact_name": f"Visitor {contact}",
                "message_id": f"bench-{secrets.token_hex(8)}",
                "content": f"Hello, this is event {self.count}",
            }
        )
        msg_id = f"msg_{secrets.token_hex(8)}"
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(msg_id, now, body),
        }
        return body, headers


async def send_events(
    http: httpx2.AsyncClient, make: Webhooks, rate: float, seconds: float
) -> Counter[int | str]:
    """Open loop: one webhook every 1/rate s, whatever the hub's answers take."""
    statuses: Counter[int | str] = Counter()

    async def send() -> None:
        body, headers = make()
        try:
            statuses[(await http.post(make.path, content=body, headers=headers)).status_code] += 1
        except httpx2.HTTPError as exc:
            statuses[type(exc).__name__] += 1

    tasks = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send()))
    await asyncio.gather(*tasks)
    return statuses


async def count_ws_events(url: str, token: str, stop: asyncio.Event) -> Counter[str]:
    """The events the hub pushes to an admin's dashboard meanwhile (what the page gets)."""
    seen: Counter[str] = Counter()
    ws_url = url.replace("http://", "ws://") + f"/ws?token={token}"
    async with ws_connect(ws_url) as ws:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                frame = await asyncio.wait_for(ws.recv(), 0.2)
                seen[json.loads(frame).get("type", "?")] += 1
    return seen


async def page_requests(
    driver: webdriver.Chrome,
    hub: single.Server,
    token: str,
    make: Webhooks,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """The requests the open page makes while `rate` events/s arrive for `seconds`."""
    t0 = await asyncio.to_thread(
        driver.execute_script,
        "performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings();"
        " return performance.now();",
    )
    stop = asyncio.Event()
    watcher = asyncio.create_task(count_ws_events(hub.url, token, stop))
    async with httpx2.AsyncClient(base_url=hub.url, timeout=30) as http:
        statuses = await send_events(http, make, rate, seconds)
    await asyncio.sleep(1.5)  # the refetches coalesced at the end of the window
    stop.set()
    events = await watcher
    entries = await asyncio.to_thread(driver.execute_script, ENTRIES_JS)
    window = [e for e in entries if t0 <= e["start"] <= t0 + seconds * 1000]
    by_path = Counter(request_kind(e["name"]) for e in window)
    return {
        "rate": rate,
        "seconds": seconds,
        "webhooks": dict(statuses),
        "ws_events": dict(events),
        "requests": len(window),
        "rps": len(window) / seconds,
        "bytes_per_second": sum(e["transfer"] for e in window) / seconds,
        "by_path": {k: v / seconds for k, v in by_path.most_common()},
        "statuses": dict(Counter(e["status"] for e in window)),
    }


def request_kind(url: str) -> str:
    """A request's path with the open chat's id left out, so they add up by kind."""
    path = urlsplit(url).path
    parts = ["{id}" if p.startswith("cht_") else p for p in path.split("/")]
    return "/".join(parts)


async def browser_part(
    workdir: Path, url: str, world: inbox.World, extra: Extra, args: argparse.Namespace
) -> dict[str, Any]:
    hub = single.Server(
        "console-hub",
        [single.AGENTHUB, "serve"],
        workdir,
        env={"AGENTHUB_DATABASE_URL": url, "AGENTHUB_SECRET_KEY": inbox.SECRET_KEY},
    )
    # The browser's origin: the session cookie and `/ws` check it.
    hub.env["AGENTHUB_PUBLIC_URL"] = hub.url
    token = world.tokens["admin-a"]
    driver = await asyncio.to_thread(make_driver)
    try:
        await hub.start([], "/readyz")
        loads = []
        for path in ("/console", f"/console/chats/{extra.chat_id}"):
            loads.append(await asyncio.to_thread(first_load, driver, hub.url, token, path))
            await add_gzip_sizes(loads[-1], token)
        await asyncio.to_thread(
            signed_in_page, driver, hub.url, token, f"/console/chats/{extra.chat_id}"
        )
        make = Webhooks(extra, seed=3)
        runs = []
        for rate in [float(r) for r in args.console_rates.split(",") if r.strip()]:
            print(f"console: {rate:g} events/s for {args.console_seconds:g} s", flush=True)
            runs.append(await page_requests(driver, hub, token, make, rate, args.console_seconds))
            await asyncio.sleep(2)
        return {"first_loads": loads, "event_runs": runs}
    finally:
        await asyncio.to_thread(driver.quit)
        hub.stop()


# --- the run --------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    now = utcnow()
    world = inbox.build_world(args.console_chats, seed=42, now=now)
    extra = build_extra(world, now)
    results: dict[str, Any] = {
        "load_average": load_average,
        "chats": args.console_chats,
        "timeline": extra.items,
        "backends": [],
    }
    backends = [b.strip() for b in args.console_backends.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="agenthub-bench-console-"))
    try:
        for backend in backends:
            result = await run_backend(backend, workdir, world, extra, args)
            if result is not None:
                results["backends"].append(result)
        missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
        if missing and not args.no_console_browser:
            print(f"console: browser part skipped, {' and '.join(missing)} missing", flush=True)
        elif not args.no_console_browser:
            # On the SQLite file the server times used (seeded here if they did not).
            url = f"sqlite:///{workdir / 'console.db'}"
            if "sqlite" not in backends:
                prepare("sqlite", url, world, extra)
            results["browser"] = await browser_part(workdir, url, world, extra, args)
    except BaseException:
        print(f"console: failed; the hub's log is in {workdir}", flush=True)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    return results


async def run_backend(
    backend: str, workdir: Path, world: inbox.World, extra: Extra, args: argparse.Namespace
) -> dict[str, Any] | None:
    if backend == "sqlite":
        return await measure_backend(
            backend, f"sqlite:///{workdir / 'console.db'}", world, extra, args
        )
    if backend != "postgresql":
        raise SystemExit(f"unknown backend {backend!r}")
    if not reachable(args.postgres_url, 5432):
        print(f"console: postgresql skipped, {args.postgres_url} not reachable", flush=True)
        return None
    scratch = inbox.ScratchPostgres(args.postgres_url)
    scratch.create()
    try:
        result = await measure_backend(backend, scratch.url, world, extra, args)
        result["version"] = scratch.version()
        return result
    finally:
        scratch.drop()


async def measure_backend(
    backend: str, url: str, world: inbox.World, extra: Extra, args: argparse.Namespace
) -> dict[str, Any]:
    seconds = prepare(backend, url, world, extra)
    print(f"console {backend}: seeded in {seconds:.1f} s; timing the pages", flush=True)
    gc.collect()
    cases = await server_times(url, world, extra, args.console_samples)
    return {"backend": backend, "seed_seconds": seconds, "cases": case_figures(cases)}


# --- report ---------------------------------------------------------------------------------


def report(d: dict[str, Any]) -> str:
    t = d["timeline"]
    lines = [
        f"console: {d['chats']:,} chats seeded as in bench/inbox.py, plus the open chat "
        f"({t['messages']} messages, {t['notes']} notes, {t['chat_events']} events); "
        f"load average before: {d['load_average']}.",
    ]
    for b in d["backends"]:
        lines += server_table(b)
    if "browser" in d:
        lines += first_load_table(d["browser"]["first_loads"])
        lines += events_table(d["browser"]["event_runs"])
    return "\n".join(lines)


def server_table(b: dict[str, Any]) -> list[str]:
    version = f" {b['version']}" if "version" in b else ""
    lines = [
        "",
        f"**{b['backend']}{version}**: server time per request, ms, over "
        f"{b['cases'][0]['samples']} requests per row",
        "",
        "| request | caller | p50 | p99 | max | HTML/JSON bytes | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in b["cases"]:
        target = ""
        if c["path"] == "/console":
            verdict = "met" if c["p99"] < TARGET_PAGE_MS else "**MISSED**"
            target = f"p99 < {TARGET_PAGE_MS:g}: {verdict}"
        lines.append(
            f"| {c['label']} | {c['caller']} | {c['p50']:.1f} | {c['p99']:.1f} | "
            f"{c['max']:.1f} | {c['bytes']:,} | {target} |"
        )
    return lines


def first_load_table(loads: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "First load in headless Chromium, cache cleared (Resource Timing; transferred = headers "
        "+ body as sent; the WebSocket is not counted; gzipped: the same GET fetched again and "
        "compressed by the bench, what compression would send):",
        "",
        "| page | resource | initiator | transferred | body | body gzipped (-6) | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for load in loads:
        page = load["path"].split("/chats/")[0] + (
            "/chats/{id}" if "/chats/" in load["path"] else ""
        )
        for r in load["resources"]:
            lines.append(
                f"| `{page}` | `{request_kind(r['path'])}` | {r['type']} | {r['transfer']:,} | "
                f"{r['encoded']:,} | {r['gzip']:,} | |"
            )
        verdict = "met" if load["transfer"] < TARGET_FIRST_LOAD else "**MISSED**"
        lines.append(
            f"| `{page}` | **total**, {len(load['resources'])} requests | | "
            f"**{load['transfer']:,}** | {load['encoded']:,} | {load['gzip']:,} | "
            f"< 200 KB: {verdict} |"
        )
    return lines


def events_table(runs: list[dict[str, Any]]) -> list[str]:
    kinds = sorted({k for r in runs for k in r["by_path"]})
    lines = [
        "",
        "Requests per second the page makes (admin, inbox with the chat open) while signed "
        "webhooks arrive; counted over the window from Resource Timing:",
        "",
        "| events/s sent | webhook answers | WebSocket events/s | page requests/s | page KB/s | "
        + " | ".join(f"`{k}`" for k in kinds)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(kinds),
    ]
    for r in runs:
        ws = sum(r["ws_events"].values()) / r["seconds"]
        lines.append(
            f"| {r['rate']:g} | {r['webhooks']} | {ws:.1f} | **{r['rps']:.1f}** | "
            f"{r['bytes_per_second'] / 1024:.0f} | "
            + " | ".join(f"{r['by_path'].get(k, 0):.2f}" for k in kinds)
            + " |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    from bench import multiprocess

    multiprocess.add_arguments(parser)  # --postgres-url, as `python -m bench` has it
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    d = asyncio.run(run(args))
    print()
    print(report(d))
    if args.json:
        args.json.write_text(json.dumps(d, indent=2, default=str))


if __name__ == "__main__":
    main()
