"""A loopback fake of a platform's HTTP API (or of any webhook receiver), for tests.

`FakePlatform` is served by uvicorn on 127.0.0.1 (port chosen by the OS) in a background thread,
so it answers even while the test's event loop is busy; the servers are pooled across tests
(`_LoopbackServer`), a fake only attaches to one. It records every request and answers from, in
order of precedence:

1. scripted one-shot replies (`script(...)`), consumed one per matching request;
2. routes (`route(method, path_regex, handler)`), a handler building a `Reply` per request;
3. the default reply (200 `{"ok": true}`).

`fake_twilio()` builds one that behaves like Twilio's Messages API. The module also has the
platform side of the signatures (`twilio_sign`, `standard_webhook_headers`) written
independently of the hub's code, and `wait_until` to poll for asynchronous effects.

    with fake_twilio() as twilio:
        ...  # channel config {"api_base_url": twilio.url}
        twilio.script(Reply(500), path=MESSAGES_PATH)  # the next send fails once
        [request] = await twilio.wait_for(1)
        assert request.basic_auth == (sid, token)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs

import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

T = TypeVar("T")

TWILIO_MESSAGES_PATH = r"/2010-04-01/Accounts/(?P<account_sid>[^/]+)/Messages\.json"


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)

    def field(self, name: str) -> str | None:
        """The single value of a form field (None when absent)."""
        values = self.form.get(name)
        if values is None:
            return None
        assert len(values) == 1, f"{name} sent {len(values)} times"
        return values[0]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password


@dataclass
class Reply:
    """A scripted answer: JSON when `json` is given, else `body`."""

    status: int = 200
    json: Any = None
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (timeouts, in-flight windows)

    def to_response(self) -> Response:
        if self.json is not None:
            return Response(
                json.dumps(self.json),
                status_code=self.status,
                headers=self.headers,
                media_type="application/json",
            )
        return Response(self.body, status_code=self.status, headers=self.headers)


Handler = Callable[[Recorded, dict[str, str]], Reply]  # (request, path regex groups)


class FakePlatform:
    def __init__(self, default: Reply | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._scripted: list[tuple[str | None, re.Pattern[str] | None, Reply]] = []
        self._default = default or Reply(200, json={"ok": True})
        self._server: _LoopbackServer | None = None
        self.port = 0

    # --- behaviour -------------------------------------------------------------------------

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer `method` requests whose path fully matches the regex `path` with `handler`."""
        with self._lock:
            self._routes.append((method.upper(), re.compile(path), handler))

    def script(self, *replies: Reply, path: str | None = None, method: str | None = None) -> None:
        """One-shot answers, used in order by the next matching requests (before routes)."""
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            self._scripted.extend((method and method.upper(), pattern, r) for r in replies)

    def _answer(self, request: Recorded) -> Reply:
        with self._lock:
            for index, (method, pattern, reply) in enumerate(self._scripted):
                if (method is None or method == request.method) and (
                    pattern is None or pattern.fullmatch(request.path)
                ):
                    del self._scripted[index]
                    return reply
            routes = list(self._routes)
        for method, pattern, handler in routes:
            match = pattern.fullmatch(request.path)
            if method == request.method and match:
                return handler(request, match.groupdict())
        return self._default

    # --- observation -----------------------------------------------------------------------

    def requests(self, path: str | None = None, method: str | None = None) -> list[Recorded]:
        """Requests received so far (optionally those whose path fully matches `path`)."""
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            return [
                r
                for r in self._requests
                if (pattern is None or pattern.fullmatch(r.path))
                and (method is None or r.method == method.upper())
            ]

    async def wait_for(
        self,
        count: int = 1,
        *,
        path: str | None = None,
        method: str | None = None,
        timeout: float = 10.0,
    ) -> list[Recorded]:
        """Wait until at least `count` matching requests arrived; returns them all."""

        def enough() -> list[Recorded]:
            found = self.requests(path, method)
            assert len(found) >= count, f"{len(found)} of {count} requests to {path or '*'}"
            return found

        return await wait_until(enough, timeout=timeout)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        recorded = Recorded(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            at=time.monotonic(),
        )
        with self._lock:
            self._requests.append(recorded)
        reply = self._answer(recorded)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply.to_response()

    def start(self) -> FakePlatform:
        assert self._server is None, "already started"
        self._server = _LoopbackServer.attach(self)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.detach()
        self._server = None

    def __enter__(self) -> FakePlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _LoopbackServer:
    """A uvicorn server on a 127.0.0.1 port, in a daemon thread, serving whichever FakePlatform
    is attached to it.

    Stopping a uvicorn server takes 0.1-0.2 s (its main loop and its shutdown each sleep 0.1 s),
    which hundreds of tests paid in teardown. So a stopped fake only detaches from its server,
    and the next fake to start takes an idle one. Servers last until the process ends.
    """

    _idle: ClassVar[list[_LoopbackServer]] = []
    _pool_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def attach(cls, fake: FakePlatform) -> _LoopbackServer:
        with cls._pool_lock:
            server = cls._idle.pop() if cls._idle else None
        if server is None:
            server = cls()
        server.fake = fake
        return server

    def detach(self) -> None:
        self.fake = None
        with self._pool_lock:
            self._idle.append(self)

    def __init__(self) -> None:
        self.fake: FakePlatform | None = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        app = Starlette(routes=[Route("/{path:path}", self._dispatch, methods=methods)])
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, timeout_keep_alive=30
        )
        server = uvicorn.Server(config)
        # Not the main thread: uvicorn leaves the process's signal handlers alone.
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-platform"
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake platform server did not start")
            time.sleep(0.005)

    async def _dispatch(self, request: Request) -> Response:
        fake = self.fake
        if fake is None:  # between tests: nobody is listening here
            return Response(b"no fake attached", status_code=503)
        return await fake._endpoint(request)


# --- Twilio ---------------------------------------------------------------------------------


def twilio_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def fake_twilio() -> FakePlatform:
    """A Twilio Messages API double: `POST /2010-04-01/Accounts/{sid}/Messages.json` → 201 with a
    fresh `SM…` sid (status `queued`), like the real one. Script errors with `script(...)`."""
    fake = FakePlatform(default=Reply(404, json={"code": 20404, "message": "not found"}))

    def create_message(request: Recorded, groups: dict[str, str]) -> Reply:
        form = request.form
        return Reply(
            201,
            json={
                "sid": twilio_sid(),
                "account_sid": groups["account_sid"],
                "to": form.get("To", [""])[0],
                "from": form.get("From", [""])[0],
                "body": form.get("Body", [""])[0],
                "status": "queued",
                "num_media": str(len(form.get("MediaUrl", []))),
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "api_version": "2010-04-01",
            },
        )

    fake.route("POST", TWILIO_MESSAGES_PATH, create_message)
    return fake


def twilio_sign(auth_token: str, url: str, params: Mapping[str, str | list[str]]) -> str:
    """X-Twilio-Signature as Twilio computes it (twilio-python `RequestValidator`): the URL, then
    for each name (sorted) each of its distinct values (sorted), name+value; HMAC-SHA1, base64."""
    data = url
    for name in sorted(params):
        raw = params[name]
        values = [raw] if isinstance(raw, str) else list(raw)
        for value in sorted(set(values)):
            data += name + value
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


# --- Standard Webhooks ----------------------------------------------------------------------


def standard_webhook_headers(
    secret: str, body: bytes | str, msg_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp`, `webhook-signature` for `body`, signed with `secret`."""
    msg_id = msg_id or f"msg_{secrets.token_hex(8)}"
    at = at or datetime.now(UTC)
    text = body.decode() if isinstance(body, bytes) else body
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, text),
    }


# --- polling ----------------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], T | Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Call `check` (sync or async) until it returns without an AssertionError; return its value.
    After `timeout` seconds the last AssertionError is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                result = await result
            return result  # type: ignore[return-value]
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


# --- typing indicators and read receipts --------------------------------------------------------

TELEGRAM_CHAT_ACTION_PATH = r"/bot[^/]+/sendChatAction"
GRAPH_MESSAGES_PATH = r"/v[0-9.]+/[^/]+/messages"
TWILIO_TYPING_PATH = r"/v2/Indicators/Typing\.json"
WHAPI_PRESENCE_PATH = r"/presences/[^/]+"


def add_typing_routes(fake: FakePlatform) -> FakePlatform:
    """Answer the platforms' typing and read calls as they do: Bot API `sendChatAction` →
    `{"ok": true, "result": true}`; Graph `status: read` (with or without `typing_indicator`) →
    `{"success": true}` (other Graph sends get a fresh wamid); Twilio's typing indicator →
    `{"success": true}`; WHAPI `PUT /presences/{ChatID}` → `{"success": true}`."""

    def chat_action(request: Recorded, groups: dict[str, str]) -> Reply:
        return Reply(200, json={"ok": True, "result": True})

    def graph_messages(request: Recorded, groups: dict[str, str]) -> Reply:
        if request.json.get("status") == "read":
            return Reply(200, json={"success": True})
        wamid = "wamid." + secrets.token_hex(8)
        return Reply(200, json={"messaging_product": "whatsapp", "messages": [{"id": wamid}]})

    def success(request: Recorded, groups: dict[str, str]) -> Reply:
        return Reply(200, json={"success": True})

    fake.route("POST", TELEGRAM_CHAT_ACTION_PATH, chat_action)
    fake.route("POST", GRAPH_MESSAGES_PATH, graph_messages)
    fake.route("POST", TWILIO_TYPING_PATH, success)
    fake.route("PUT", WHAPI_PRESENCE_PATH, success)
    return fake


# --- message templates (WhatsApp Cloud `message_templates`, Twilio Content API) ------------------

GRAPH_TEMPLATES_PATH = r"/v[0-9.]+/(?P<waba_id>[^/]+)/message_templates"
TWILIO_CONTENT_PATH = r"/v1/ContentAndApprovals"


def graph_template(
    name: str,
    body: str,
    *,
    language: str = "en_US",
    status: str = "APPROVED",
    category: str = "UTILITY",
) -> dict[str, Any]:
    """A `message_templates` entry as Graph lists it (Meta's template-management sample): the
    body among HEADER/FOOTER/BUTTONS components, upper-case types."""
    return {
        "name": name,
        "parameter_format": "POSITIONAL",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Order update"},
            {"type": "BODY", "text": body, "example": {"body_text": [["Pablo", "860198-230332"]]}},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Thanks"}]},
        ],
        "language": language,
        "status": status,
        "category": category,
        "id": str(1667696820637468 + len(name)),
    }


def add_graph_template_routes(
    fake: FakePlatform, templates: list[dict[str, Any]], *, token: str, page_size: int = 2
) -> FakePlatform:
    """`GET /{version}/{waba_id}/message_templates`: `templates` in pages of `page_size`, each
    with `paging.cursors` and, but on the last, `paging.next` (an absolute URL on this server
    with `after=<cursor>`), as Graph pages them. A wrong Bearer token → Graph's 190 error."""

    def listing(request: Recorded, groups: dict[str, str]) -> Reply:
        if request.headers.get("authorization") != f"Bearer {token}":
            error = {
                "message": "Invalid OAuth access token.",
                "type": "OAuthException",
                "code": 190,
            }
            return Reply(401, json={"error": error})
        query = parse_qs(request.query)
        start = int(base64.b64decode(query["after"][0])) if "after" in query else 0
        page = templates[start : start + page_size]
        after = base64.b64encode(str(start + page_size).encode()).decode()
        paging: dict[str, Any] = {
            "cursors": {"before": base64.b64encode(str(start).encode()).decode(), "after": after}
        }
        if start + page_size < len(templates):
            paging["next"] = (
                f"{fake.url}{request.path}?fields=name,language,status,category,components"
                f"&limit={page_size}&after={after}"
            )
        return Reply(200, json={"data": page, "paging": paging})

    fake.route("GET", GRAPH_TEMPLATES_PATH, listing)
    return fake


def twilio_content(
    body: str,
    *,
    friendly_name: str = "ticket_resolved",
    language: str = "en",
    status: str = "approved",
    kind: str = "twilio/text",
    nested: bool = False,
) -> dict[str, Any]:
    """A `ContentAndApprovals` item (twilio-python `content_and_approvals.py`, the Content
    API's spec): `approval_requests` with `status`/`category`, or with them under
    `whatsapp` (`nested`), as some clients read it."""
    approval: dict[str, Any] = {
        "name": friendly_name,
        "category": "UTILITY",
        "content_type": kind,
        "status": status,
        "rejection_reason": "",
    }
    return {
        "sid": twilio_sid("HX"),
        "account_sid": "AC" + "a" * 32,
        "friendly_name": friendly_name,
        "language": language,
        "variables": {"1": "name", "2": "ticket"},
        "types": {kind: {"body": body}},
        "approval_requests": {"whatsapp": approval} if nested else approval,
        "date_created": "2026-01-05T10:00:00Z",
        "date_updated": "2026-01-05T10:00:00Z",
    }


def add_twilio_content_routes(
    fake: FakePlatform, contents: list[dict[str, Any]], *, page_size: int = 2
) -> FakePlatform:
    """`GET /v1/ContentAndApprovals`: `contents` in pages (`Page`, `PageToken`), each with the
    API's `meta` and its `next_page_url` (null on the last page)."""

    def listing(request: Recorded, groups: dict[str, str]) -> Reply:
        if request.basic_auth is None:
            return Reply(401, json={"code": 20003, "message": "Authenticate", "status": 401})
        query = parse_qs(request.query)
        page = int(query.get("Page", ["0"])[0])
        start = page * page_size
        more = start + page_size < len(contents)
        url = f"{fake.url}/v1/ContentAndApprovals?PageSize={page_size}"
        meta = {
            "key": "contents",
            "page": page,
            "page_size": page_size,
            "first_page_url": f"{url}&Page=0",
            "previous_page_url": f"{url}&Page={page - 1}" if page else None,
            "url": f"{url}&Page={page}",
            "next_page_url": f"{url}&Page={page + 1}&PageToken=PT{page + 1}" if more else None,
        }
        return Reply(200, json={"contents": contents[start : start + page_size], "meta": meta})

    fake.route("GET", TWILIO_CONTENT_PATH, listing)
    return fake
