"""Fixtures: the app on a real database (SQLite file and PostgreSQL), clients and callers.

Test modules mark themselves `pytestmark = pytest.mark.anyio` (a marker added later, at
collection, is too late for the parametrized database fixture).

Every test that uses `client` runs twice: once on SQLite, once on PostgreSQL. The schema comes
from the Alembic migrations (so they are tested too); tables are emptied between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from agenthub import security
from agenthub.app import create_app
from agenthub.cli import UVICORN_WEBSOCKET_OPTIONS
from agenthub.hub import Hub
from agenthub.migrate import upgrade_database
from agenthub.models import ApiToken, Base, ChannelMember, Role, User
from agenthub.security import hash_token, new_token
from agenthub.settings import Settings
from tests.agent_server import FakeAgent
from tests.fake_platform import wait_until
from tests.hypothesis_budget import load_profile as load_hypothesis_profile
from tests.services import POSTGRES_ADMIN_URL, require_postgres

TEST_SECRET_KEY = "test-secret-key-not-for-production"
load_hypothesis_profile()


# --- ordering and reporting --------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `database_independent` run on SQLite only (their PostgreSQL copies are
    deselected). Then tests with real processes first: they are the longest, so starting them
    last would leave one xdist worker busy after the other is done. (Every worker sorts the
    same way, so they still collect the same order.)"""
    postgres_copies = [item for item in items if _postgres_copy_of_independent(item)]
    if postgres_copies:
        config.hook.pytest_deselected(items=postgres_copies)
        items[:] = [item for item in items if not _postgres_copy_of_independent(item)]
    items.sort(key=lambda item: item.get_closest_marker("multiprocess") is None)


def _postgres_copy_of_independent(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return (
        item.get_closest_marker("database_independent") is not None
        and callspec is not None
        and callspec.params.get("database_url") == "postgresql"
    )


_DURATIONS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The 10 slowest tests (setup + call + teardown), so whoever adds a slow one sees it."""
    slowest = sorted(_DURATIONS.items(), key=lambda item: item[1], reverse=True)[:10]
    if not slowest:
        return
    terminalreporter.section("10 slowest tests (setup + call + teardown)")
    for nodeid, seconds in slowest:
        terminalreporter.write_line(f"{seconds:7.2f}s  {nodeid}")
    terminalreporter.write_line("The budget for the whole suite is in docs/testing.md.")


@pytest.fixture
def real_argon2() -> None:
    """Asked for by a test that needs the real password hashing cost (timing, for one)."""


@pytest.fixture(autouse=True)
def cheap_argon2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id at its cheapest in this process: a real hash costs ~0.3 s of CPU here, and the
    suite hashes on every signup, login and user it creates through the API. Processes the
    tests start (serve, create-admin) hash for real."""
    if "real_argon2" not in request.fixturenames:
        cheap = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
        monkeypatch.setattr(security, "_password_hash", cheap)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'hub.db'}"
        upgrade_database(url)
        yield url
        return
    require_postgres()
    with _scratch_postgres_database() as url:
        upgrade_database(url)
        yield url


class _scratch_postgres_database:
    """A fresh database on the real server, dropped afterwards."""

    def __enter__(self) -> str:
        self.name = f"agenthub_test_{uuid.uuid4().hex[:12]}"
        self.admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        return (
            make_url(POSTGRES_ADMIN_URL)
            .set(database=self.name)
            .render_as_string(hide_password=False)
        )

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture
def settings(database_url: str, request: pytest.FixtureRequest) -> Settings:
    fast_jobs = request.node.get_closest_marker("fast_jobs") is not None
    guarded = request.node.get_closest_marker("ssrf_guard") is not None
    return Settings(
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        public_url="http://hub.test",
        # Agents in tests are loopback servers; `ssrf_guard` tests (tests/test_ssrf.py) turn
        # the guard on.
        allow_private_agent_urls=not guarded,
        # One process starts hundreds of hubs: a full garbage collection for each cost more
        # than the tests themselves.
        freeze_memory_after_startup=False,
        # `fast_jobs`: a transient failure is retried, and due work found, within a fraction
        # of a second.
        **({"job_sweep_seconds": 0.1, "delivery_backoff_base_seconds": 0.05} if fast_jobs else {}),
        _env_file=None,  # type: ignore[call-arg]
    )


_APPS: dict[str, FastAPI] = {}


def app_for(settings: Settings) -> FastAPI:
    """One app per distinct settings, reused by every test with those settings.

    Each test still runs the app's lifespan, so it gets a Hub of its own (engine, job runner,
    event bus, HTTP client). What is shared is only what the app builds once: FastAPI works out
    each route's dependencies on the first request an app serves, and that cost more than most
    tests did.
    """
    secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
    key = settings.model_dump_json() + secret
    if key not in _APPS:
        _APPS[key] = create_app(settings)
    return _APPS[key]


@pytest.fixture
async def app_and_hub(settings: Settings) -> AsyncIterator[tuple[object, Hub]]:
    app = app_for(settings)
    # asgi-lifespan's default 5 s for startup failed a CI run once on a loaded machine.
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        hub: Hub = app.state.hub
        try:
            yield manager.app, hub
        finally:
            await _empty_tables(hub)


async def _empty_tables(hub: Hub) -> None:
    async with hub.db.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(table.delete())


@pytest.fixture
def hub(app_and_hub: tuple[object, Hub]) -> Hub:
    return app_and_hub[1]


@pytest.fixture
async def client(app_and_hub: tuple[object, Hub]) -> AsyncIterator[httpx2.AsyncClient]:
    app, _ = app_and_hub
    transport = httpx2.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://hub.test") as http:
        yield http


@dataclass
class Caller:
    """A user or agent with a bearer token, for building requests."""

    id: str
    token: str
    token_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(hub: Hub):  # type: ignore[no-untyped-def]
    """Create a user with a live token directly in the database (no argon2 cost per test)."""

    async def make(
        role: Role = Role.MEMBER,
        *,
        active: bool = True,
        channels: tuple[str, ...] = (),
        username: str | None = None,
    ) -> Caller:
        raw = new_token()
        async with hub.db.transaction() as session:
            user = User(
                username=username or f"u{uuid.uuid4().hex[:10]}",
                password_hash="!unusable",
                role=role,
                is_active=active,
            )
            session.add(user)
            await session.flush()
            token = ApiToken(token_hash=hash_token(raw), user_id=user.id, name="test")
            session.add(token)
            session.add_all(ChannelMember(channel_id=c, user_id=user.id) for c in channels)
            await session.flush()
            return Caller(id=user.id, token=raw, token_id=token.id)

    return make


@pytest.fixture
async def admin(make_user) -> Caller:  # type: ignore[no-untyped-def]
    caller: Caller = await make_user(Role.ADMIN, username="admin")
    return caller


@pytest.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    """A loopback agent (`tests/agent_server.py`) on the test's event loop."""
    async with FakeAgent() as server:
        yield server


# --- a live server (WebSocket tests) ---------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # in the test process's main thread: leave its signal handlers alone


@contextlib.asynccontextmanager
async def uvicorn_server(app: object, **options: Any) -> AsyncIterator[str]:
    """host:port of a uvicorn server running `app` (lifespan off: the test runs it), with
    these config options."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        lifespan="off",
        log_level="warning",
        access_log=False,
        **options,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> None:
        assert not task.done(), "uvicorn stopped"
        assert server.started

    await wait_until(started)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def live(app_and_hub: tuple[object, Hub]) -> AsyncIterator[str]:
    """host:port of a uvicorn server running the app (whose lifespan the fixture already ran)."""
    app, _ = app_and_hub
    # With `serve`'s WebSocket options, so that sockets take the path they take in production.
    async with uvicorn_server(
        app, timeout_graceful_shutdown=2, **UVICORN_WEBSOCKET_OPTIONS
    ) as address:
        yield address


@pytest.fixture
async def http(live: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=f"http://{live}", timeout=10) as client:
        yield client
