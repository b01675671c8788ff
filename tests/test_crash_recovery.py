"""`kill -9` the hub while a delivery is in flight; restart it on the same database.

Real processes: `agenthub serve` runs as a subprocess (in-process jobs, the default mode), the
agent is a loopback HTTP server in this test. The agent SIGKILLs the hub when the first delivery
reaches it, before answering, so that delivery is in flight when the hub dies. The test then
restarts the hub (as a supervisor would) and checks, counting every contact message:

- sent: acknowledged by the hub (a platform retries until it gets a 2xx; so does this test),
- delivered: in `new_message_ids` of a successful delivery, per the hub and as the agent saw it,
- duplicated: in two *different* successful deliveries (a retry of one delivery keeps its
  `webhook-id`, which is how an agent recognises it),
- lost: in none,

and that every agent reply — including those produced after the restart — is stored once.
Runs on a SQLite file and on a scratch PostgreSQL database with a webhook agent, and on SQLite
with an `openai` and an `a2a` agent (the same agent answering as an OpenAI-compatible streaming
server, or as an A2A agent without a card: the engine is the same for every transport).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from standardwebhooks import Webhook

from tests.conftest import _scratch_postgres_database
from tests.fake_platform import standard_webhook_headers
from tests.services import require_postgres

pytestmark = pytest.mark.multiprocess

AGENTHUB = str(Path(sys.executable).with_name("agenthub"))
MESSAGES, CHATS = 20, 5
AGENT_WORK_SECONDS = 0.2  # the agent "thinks" this long, so deliveries overlap the kill
IN_FLIGHT_AT_KILL = 3  # deliveries waiting for the agent when the hub is killed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HubProcess:
    """`agenthub serve` on a fixed port and database; can be SIGKILLed and started again."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log = workdir / "hub.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
        self.env.update(
            AGENTHUB_DATABASE_URL=database_url,
            AGENTHUB_SECRET_KEY="crash-recovery-test-key",
            AGENTHUB_JOB_SWEEP_SECONDS="0.1",
            AGENTHUB_DELIVERY_BACKOFF_BASE_SECONDS="0.1",
            AGENTHUB_ALLOW_PRIVATE_AGENT_URLS="true",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            assert self.process is None or self.process.poll() is not None
            self.starts += 1
            with self.log.open("ab") as log:
                log.write(f"\n--- start #{self.starts} ---\n".encode())
                self.process = subprocess.Popen(
                    [AGENTHUB, "serve", "--port", str(self.port)],
                    env=self.env,
                    cwd=self.workdir,  # no stray .env; the SQLite key file stays in tmp
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        deadline = time.monotonic() + 60
        while True:
            assert self.alive, f"the hub exited at start:\n{self.log.read_text()}"
            try:
                if httpx2.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, f"the hub did not start:\n{self.log.read_text()}"
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        with self.lock:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        with self.lock:
            if self.alive:
                assert self.process is not None
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)


@dataclass
class Receipt:
    webhook_id: str
    new_message_ids: list[str]
    contents: dict[str, str]  # new message id -> content
    answered: bool = False
    reply: str | None = None


@dataclass
class Agent:
    """A loopback agent: verifies each delivery, kills the hub on the first one, replies inline."""

    hub: HubProcess
    protocol: str = "webhook"  # or "openai": the hub's ids in headers, the reply streamed
    secret: str = ""
    receipts: list[Receipt] = field(default_factory=list)
    killed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight_at_kill: int = 0
    chosen: bool = False  # the first delivery has been picked to die with the hub

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        receipt = self._receipt(headers, body)
        with self.lock:
            self.receipts.append(receipt)
            first, self.chosen = not self.chosen, True
        if first:
            # Let a few more deliveries (other chats) get in flight too, then kill the hub
            # before answering: it dies with all of them waiting for the agent.
            deadline = time.monotonic() + 5
            while len(self.receipts) < IN_FLIGHT_AT_KILL and time.monotonic() < deadline:
                time.sleep(0.01)
            self.in_flight_at_kill = len(self.receipts)
            self.hub.kill()
            self.killed.set()
            return 0, None
        time.sleep(AGENT_WORK_SECONDS)
        receipt.reply = "pong: " + " | ".join(receipt.contents[i] for i in receipt.new_message_ids)
        receipt.answered = True
        return 200, {"reply": receipt.reply}

    def _receipt(self, headers: dict[str, str], body: bytes) -> Receipt:
        if self.protocol == "a2a":
            # The new messages are the message's text parts, each naming its message.
            parts = json.loads(body)["params"]["message"]["parts"]
            contents = {p["metadata"]["message_id"]: p["text"] for p in parts}
            return Receipt(headers["agenthub-delivery-id"], list(contents), contents)
        if self.protocol == "openai":
            # The new messages are the newest contact messages, at the end of the roles.
            new_ids = headers["agenthub-message-ids"].split(",")
            users = [m["content"] for m in json.loads(body)["messages"] if m["role"] == "user"]
            contents = dict(zip(new_ids, users[-len(new_ids) :], strict=True))
            return Receipt(headers["agenthub-delivery-id"], new_ids, contents)
        payload = Webhook(self.secret).verify(body, headers)  # the hub signs every attempt
        assert headers["webhook-id"] == payload["delivery_id"]
        new_ids = payload["new_message_ids"]
        contents = {m["id"]: m["content"] for m in payload["messages"] if m["id"] in new_ids}
        assert list(contents) == new_ids  # new messages are in the history, oldest first
        return Receipt(headers["webhook-id"], new_ids, contents)

    def encode(self, answer: dict[str, Any]) -> tuple[str, bytes]:
        """The answer's content type and body: JSON, or an OpenAI-compatible event stream."""
        if self.protocol == "a2a":
            message = {
                "messageId": "r1",
                "role": "ROLE_AGENT",
                "parts": [{"text": answer["reply"]}],
            }
            rpc = {"jsonrpc": "2.0", "id": "1", "result": {"message": message}}
            return "application/json", json.dumps(rpc).encode()
        if self.protocol != "openai":
            return "application/json", json.dumps(answer).encode()
        chunk = {"choices": [{"index": 0, "delta": {"content": answer["reply"]}}]}
        return "text/event-stream", f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()

    @contextmanager
    def serving(self) -> Iterator[str]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # an A2A agent's card: this one has none
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer = agent.handle(headers, body)
                if not status:
                    self.close_connection = True  # no answer at all
                    return
                assert answer is not None
                content_type, data = agent.encode(answer)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the hub died while we worked: it will ask again
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture(
    params=[
        ("sqlite", "webhook"),
        ("postgresql", "webhook"),
        ("sqlite", "openai"),
        ("sqlite", "a2a"),
    ],
    ids=["sqlite", "postgresql", "sqlite-openai", "sqlite-a2a"],
)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(database URL, agent transport)."""
    database, protocol = request.param
    if database == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}", protocol
        return
    require_postgres()
    with _scratch_postgres_database() as url:
        yield url, protocol


def _sign(secret: str, payload: dict[str, Any], webhook_id: str) -> dict[str, Any]:
    body = json.dumps(payload)
    headers = standard_webhook_headers(secret, body, webhook_id)
    return {"content": body.encode(), "headers": {"content-type": "application/json", **headers}}


def _send_until_acknowledged(
    http: httpx2.Client, hub: HubProcess, path: str, request: dict[str, Any]
) -> int:
    """POST like a platform does: retry until a 2xx, restarting the hub if it died."""
    failures = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if not hub.alive:
            hub.start()
        try:
            response = http.post(hub.url + path, **request)
            if response.is_success:
                return failures
            assert response.status_code >= 500, response.text  # never a 4xx for a good request
        except httpx2.TransportError:
            pass
        failures += 1
        time.sleep(0.05)
    raise AssertionError("the hub never acknowledged the message")


def test_kill_9_during_a_delivery_loses_and_duplicates_nothing(
    case: tuple[str, str], tmp_path: Path
) -> None:
    database_url, protocol = case
    hub = HubProcess(database_url, tmp_path)
    agent = Agent(hub, protocol)
    with agent.serving() as agent_url, httpx2.Client(timeout=10) as http:
        try:
            hub.start()
            _run_scenario(http, hub, agent, agent_url)
        finally:
            hub.stop()
            print(hub.log.read_text())  # shown when the test fails


def _run_scenario(http: httpx2.Client, hub: HubProcess, agent: Agent, agent_url: str) -> None:
    credentials = {"username": "admin", "password": "crash-test-password"}
    assert http.post(f"{hub.url}/auth/signup", json=credentials).status_code == 201
    token = http.post(f"{hub.url}/auth/login", json=credentials).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    reached: dict[str, Any] = {"webhook_url": agent_url}
    if agent.protocol == "openai":
        settings = {"base_url": agent_url, "api_key": "sk-crash", "model": "m"}
        reached = {"transport": "openai", "openai": settings}
    elif agent.protocol == "a2a":
        reached = {"transport": "a2a", "a2a": {"url": agent_url}}
    created = http.post(
        f"{hub.url}/auth/agents",
        headers=auth,
        json={"name": "crash-test", "buffer_time_seconds": 0, **reached},
    )
    assert created.status_code == 201, created.text
    agent.secret = created.json()["webhook_secret"]
    channel = http.post(
        f"{hub.url}/channels", headers=auth, json={"name": "web", "platform": "api"}
    ).json()
    channel_secret = channel["credentials"]["secret"]

    # 20 messages over 5 chats; the first delivery kills the hub, so most are sent while it is
    # down or restarting (and retried, as platforms do — deduplicated on message_id).
    sent: dict[str, str] = {}  # contact message id (ours) -> content
    retried = 0
    for i in range(MESSAGES):
        inbound = {
            "contact_id": f"contact-{i % CHATS}",
            "message_id": f"m{i}",
            "content": f"message {i}",
        }
        request = _sign(channel_secret, inbound, f"msg_inbound_{i}")
        retried += _send_until_acknowledged(http, hub, f"/webhooks/api/{channel['id']}", request)
        sent[f"m{i}"] = f"message {i}"
    assert agent.killed.wait(30), "no delivery reached the agent"
    if not hub.alive:
        hub.start()
    assert hub.starts == 2

    # Wait until the agent has answered a delivery for every message, and things settle.
    deadline = time.monotonic() + 60
    while True:
        answered = {c for r in agent.receipts if r.answered for c in r.contents.values()}
        if answered >= set(sent.values()) and _all_settled(http, hub, channel["id"], auth):
            break
        assert time.monotonic() < deadline, f"not all delivered: {sorted(answered)}"
        time.sleep(0.1)

    # The hub's view: every delivery succeeded; count each contact message.
    chats = http.get(f"{hub.url}/channels/{channel['id']}/chats", headers=auth).json()["chats"]
    assert len(chats) == CHATS
    deliveries: dict[str, dict[str, Any]] = {}
    contact_ids: dict[str, str] = {}  # hub message id -> our message id
    agent_messages: list[str] = []
    for chat in chats:
        for delivery in http.get(
            f"{hub.url}/chats/{chat['id']}/deliveries?limit=200", headers=auth
        ).json():
            deliveries[delivery["id"]] = delivery
        messages = http.get(
            f"{hub.url}/chats/{chat['id']}/messages?limit=200", headers=auth
        ).json()["messages"]
        for message in messages:
            if message["sender_type"] == "CONTACT":
                contact_ids[message["id"]] = message["external_id"]
            elif message["sender_type"] == "AGENT":
                agent_messages.append(message["content"])
    succeeded = {d: v for d, v in deliveries.items() if v["status"] == "succeeded"}
    assert len(succeeded) == len(deliveries), deliveries

    in_deliveries: dict[str, set[str]] = {}
    for delivery_id, delivery in succeeded.items():
        for message_id in delivery["message_ids"]:
            in_deliveries.setdefault(contact_ids[message_id], set()).add(delivery_id)
    delivered = {m for m in sent if in_deliveries.get(m)}
    duplicated = {m for m in sent if len(in_deliveries.get(m, ())) > 1}
    lost = set(sent) - delivered
    assert sorted(contact_ids.values()) == sorted(sent)  # each stored once (despite retries)
    assert (len(sent), len(delivered), len(duplicated), len(lost)) == (MESSAGES, MESSAGES, 0, 0)

    # The agent's view agrees: it saw exactly the hub's deliveries, each with the same ids
    # on every attempt, and a message never came in two different deliveries.
    by_webhook_id: dict[str, list[Receipt]] = {}
    for receipt in agent.receipts:
        by_webhook_id.setdefault(receipt.webhook_id, []).append(receipt)
    assert set(by_webhook_id) == set(succeeded)
    seen_in: dict[str, set[str]] = {}
    for webhook_id, receipts in by_webhook_id.items():
        assert all(r.new_message_ids == succeeded[webhook_id]["message_ids"] for r in receipts)
        for content in receipts[0].contents.values():
            seen_in.setdefault(content, set()).add(webhook_id)
    assert sorted(seen_in) == sorted(sent.values())
    assert all(len(ids) == 1 for ids in seen_in.values())

    # The delivery in flight at the kill was resumed after the restart with the same webhook-id.
    killed = agent.receipts[0]
    resumed = [r for r in by_webhook_id[killed.webhook_id] if r.answered]
    assert len(by_webhook_id[killed.webhook_id]) >= 2 and resumed
    assert agent.in_flight_at_kill >= IN_FLIGHT_AT_KILL
    assert succeeded[killed.webhook_id]["attempt_count"] >= 2

    # Replies: one AGENT message per successful delivery, each stored once — including the
    # reply to the killed delivery, produced after the restart, and any reply the agent gave
    # twice because the hub died before recording its first answer.
    expected_replies = sorted({r.reply for rs in by_webhook_id.values() for r in rs if r.reply})
    assert sorted(agent_messages) == expected_replies
    assert agent_messages.count(resumed[-1].reply) == 1
    print(
        f"sent={len(sent)} delivered={len(delivered)} duplicated={len(duplicated)} "
        f"lost={len(lost)} deliveries={len(succeeded)} agent_receipts={len(agent.receipts)} "
        f"inbound_retries={retried} hub_starts={hub.starts} "
        f"in_flight_at_kill={agent.in_flight_at_kill}"
    )


def _all_settled(
    http: httpx2.Client, hub: HubProcess, channel_id: str, auth: dict[str, str]
) -> bool:
    """No delivery pending and no agent reply still PENDING towards the platform."""
    chats = http.get(f"{hub.url}/channels/{channel_id}/chats", headers=auth).json()["chats"]
    for chat in chats:
        deliveries = http.get(f"{hub.url}/chats/{chat['id']}/deliveries", headers=auth).json()
        if any(d["status"] == "pending" for d in deliveries):
            return False
    return len(chats) == CHATS
