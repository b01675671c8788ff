"""Login protection (`auth/throttle.py`): too many failed logins for a username, or from a client
address, and `POST /auth/login` and `POST /auth/session` answer 429 with `Retry-After` until the
window has passed — without ever telling whether a username exists.

The module's hub allows 3 failures per username and 5 per address (the defaults, 10 and 30, are
checked once). Tests that count failures use argon2 at its cheapest (a real hash costs a third
of a second on these machines); the timing test uses the real one. The counters do not touch
the database, so the in-process tests run on SQLite only. Client addresses are set per client
on the ASGI transport, as the socket peer would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager

from agenthub import security
from agenthub.auth import service
from agenthub.auth.throttle import REDIS_KEY_PREFIX, LoginThrottle, TooManyAttempts
from agenthub.hub import Hub
from agenthub.models import Role, User
from agenthub.security import hash_password
from agenthub.settings import Settings
from tests.conftest import _empty_tables, app_for
from tests.procs import RedisServer, ServeProcess, free_port, hub_env, scratch_database, stop_all
from tests.services import REDIS_URL, require_redis

pytestmark = pytest.mark.anyio
sqlite_only = pytest.mark.database_independent

PER_USERNAME = 3
PER_ADDRESS = 5
WINDOW = 120
PASSWORD = "correct-horse-battery"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "login_max_failures_per_username": PER_USERNAME,
            "login_max_failures_per_address": PER_ADDRESS,
            "login_failure_window_seconds": WINDOW,
        }
    )


async def make_login_user(hub: Hub, password_hash: str | None = None) -> str:
    username = f"u{uuid.uuid4().hex[:10]}"
    password_hash = password_hash or await hash_password(PASSWORD)
    async with hub.db.transaction() as session:
        session.add(User(username=username, password_hash=password_hash, role=Role.MEMBER))
    return username


_addresses = iter(range(1, 1_000_000))


def new_address() -> str:
    n = next(_addresses)
    return f"198.51.{n // 250 % 250}.{n % 250 + 1}"


@contextlib.asynccontextmanager
async def client_at(app: Any, address: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A client whose requests come from `address` (`request.client.host`)."""
    transport = httpx2.ASGITransport(app=app, client=(address, 40000))
    async with httpx2.AsyncClient(transport=transport, base_url="http://hub.test") as http:
        yield http


async def log_in(
    app: Any, username: str, password: str, address: str, path: str = "/auth/login"
) -> httpx2.Response:
    async with client_at(app, address) as http:
        return await http.post(path, json={"username": username, "password": password})


def assert_locked(response: httpx2.Response, window: int = WINDOW) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "Too many failed logins" in detail
    return retry_after


def assert_refused(response: httpx2.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": "Invalid username or password"}
    assert "retry-after" not in response.headers


def test_the_default_limits() -> None:
    defaults = Settings(_env_file=None)
    assert defaults.login_max_failures_per_username == 10
    assert defaults.login_max_failures_per_address == 30
    assert defaults.login_failure_window_seconds == 900


# --- in one process ---------------------------------------------------------------------------


@sqlite_only
async def test_a_username_is_locked_after_its_failures_from_any_address(
    app_and_hub: tuple[Any, Hub],
) -> None:
    app, hub = app_and_hub
    ana = await make_login_user(hub)
    bob = await make_login_user(hub)
    for _ in range(PER_USERNAME):  # each from an address of its own: the username counts
        assert_refused(await log_in(app, ana, "wrong-password", new_address()))

    address = new_address()
    locked = await log_in(app, ana, PASSWORD, address)  # the right password, refused
    assert_locked(locked)
    assert_locked(await log_in(app, ana, "wrong-password", new_address()))
    assert "access_token" not in locked.text
    # Another user from the same address is not affected.
    assert (await log_in(app, bob, PASSWORD, address)).status_code == 200


@sqlite_only
def without_request_id(headers: Any) -> dict[str, str]:
    return {k: v for k, v in dict(headers).items() if k.lower() != "x-request-id"}


async def test_an_unknown_username_gets_the_same_answers_and_the_same_lockout(
    app_and_hub: tuple[Any, Hub],
) -> None:
    app, hub = app_and_hub
    real = await make_login_user(hub)
    wrong = await log_in(app, real, "wrong-password", new_address())
    assert_refused(wrong)
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    for _ in range(PER_USERNAME):
        unknown = await log_in(app, ghost, "wrong-password", new_address())
        assert_refused(unknown)
        assert unknown.content == wrong.content
        # The same headers, but for each request's own id.
        assert without_request_id(unknown.headers) == without_request_id(wrong.headers)
    assert_locked(await log_in(app, ghost, "anything", new_address()))
    assert_locked(await log_in(app, ghost, "anything", new_address(), "/auth/session"))


@sqlite_only
async def test_an_address_is_locked_after_its_failures_for_any_usernames(
    app_and_hub: tuple[Any, Hub],
) -> None:
    app, hub = app_and_hub
    ana = await make_login_user(hub)
    crowded = new_address()
    for n in range(PER_ADDRESS):
        assert_refused(await log_in(app, f"guess-{n}-{uuid.uuid4().hex[:6]}", "pw", crowded))

    assert_locked(await log_in(app, ana, PASSWORD, crowded))
    assert_locked(await log_in(app, ana, PASSWORD, crowded, "/auth/session"))
    # The same user from elsewhere logs in: only the address was locked.
    assert (await log_in(app, ana, PASSWORD, new_address())).status_code == 200


@sqlite_only
async def test_login_and_session_share_the_counters(app_and_hub: tuple[Any, Hub]) -> None:
    app, hub = app_and_hub
    ana = await make_login_user(hub)
    assert_refused(await log_in(app, ana, "wrong-1", new_address()))
    assert_refused(await log_in(app, ana, "wrong-2", new_address(), "/auth/session"))
    assert_refused(await log_in(app, ana, "wrong-3", new_address()))

    assert_locked(await log_in(app, ana, PASSWORD, new_address(), "/auth/session"))
    assert_locked(await log_in(app, ana, PASSWORD, new_address()))
    # A form body is counted alike.
    async with client_at(app, new_address()) as http:
        form = await http.post("/auth/session", data={"username": ana, "password": PASSWORD})
    assert_locked(form)


@sqlite_only
async def test_a_success_clears_the_username_counter_but_not_the_address_counter(
    app_and_hub: tuple[Any, Hub],
) -> None:
    app, hub = app_and_hub
    ana = await make_login_user(hub)
    home, elsewhere = new_address(), new_address()
    for _ in range(PER_USERNAME - 1):
        assert_refused(await log_in(app, ana, "typo", home))
    assert (await log_in(app, ana, PASSWORD, home)).status_code == 200
    # Cleared: as many typos again do not lock the username...
    for _ in range(PER_USERNAME - 1):
        assert_refused(await log_in(app, ana, "typo", home))
    assert (await log_in(app, ana, PASSWORD, elsewhere)).status_code == 200
    # ...but the address kept all 4 of its failures: one more fills it.
    assert_refused(await log_in(app, "someone-else", "pw", home))
    assert_locked(await log_in(app, ana, PASSWORD, home))
    assert (await log_in(app, ana, PASSWORD, elsewhere)).status_code == 200


@sqlite_only
async def test_the_lock_lifts_once_the_window_has_passed(settings: Settings) -> None:
    short = settings.model_copy(update={"login_failure_window_seconds": 3})
    app = app_for(short)
    async with LifespanManager(app) as manager:
        hub: Hub = app.state.hub
        try:
            ana = await make_login_user(hub)
            # At once (not one after the other): the window is short.
            await asyncio.gather(
                *(log_in(manager.app, ana, "wrong", new_address()) for _ in range(PER_USERNAME))
            )
            retry_after = assert_locked(await log_in(manager.app, ana, PASSWORD, new_address()), 3)
            await asyncio.sleep(retry_after)
            allowed = await log_in(manager.app, ana, PASSWORD, new_address())
            assert allowed.status_code == 200, allowed.text
        finally:
            await _empty_tables(hub)


@sqlite_only
async def test_a_burst_of_parallel_guesses_cannot_outrun_the_counter(
    app_and_hub: tuple[Any, Hub], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guesses sent at once all pass the first check before any is counted. The right one
    among them is refused when the others filled the window while it was being verified."""
    app, hub = app_and_hub
    ana = await make_login_user(hub)
    verify = security.verify_password
    right_guess_verified = []

    async def slow_when_right(password: str, password_hash: str) -> bool:
        if password == PASSWORD:  # verified last: the wrong guesses are counted by then
            right_guess_verified.append(True)
            await asyncio.sleep(0.5)
        return await verify(password, password_hash)

    monkeypatch.setattr(service, "verify_password", slow_when_right)
    guesses = [f"guess-{n}" for n in range(PER_USERNAME + 2)] + [PASSWORD]
    answers = await asyncio.gather(*(log_in(app, ana, g, new_address()) for g in guesses))
    assert [a.status_code for a in answers[:-1]] == [401] * (PER_USERNAME + 2)
    assert right_guess_verified, "the right guess was refused before it was verified"
    assert_locked(answers[-1])


@sqlite_only
async def test_unknown_usernames_and_wrong_passwords_take_about_as_long(
    app_and_hub: tuple[Any, Hub], real_argon2: None
) -> None:
    """Both spend one real argon2 hash; a generous bound, so a busy machine does not fail it."""
    app, hub = app_and_hub
    real_hash = await hash_password(PASSWORD)
    users = [await make_login_user(hub, real_hash) for _ in range(3)]
    unknown: list[float] = []
    wrong: list[float] = []
    for user in users:  # interleaved, so a slow moment hits both kinds
        for username, times in ((f"nobody-{uuid.uuid4().hex[:8]}", unknown), (user, wrong)):
            started = time.perf_counter()
            assert_refused(await log_in(app, username, "not-the-password", new_address()))
            times.append(time.perf_counter() - started)
    slow, fast = sorted([statistics.median(unknown), statistics.median(wrong)], reverse=True)
    assert slow / fast < 3, f"unknown {unknown}, wrong password {wrong}"


@sqlite_only
async def test_no_username_or_password_is_logged(
    app_and_hub: tuple[Any, Hub], caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO, and at any level for the hub's own loggers (the database driver's DEBUG lines
    show query parameters; nobody runs a server so)."""
    app, hub = app_and_hub
    caplog.set_level(logging.DEBUG)
    ana = await make_login_user(hub)
    for _ in range(PER_USERNAME + 1):
        await log_in(app, ana, "secret-guess-123", new_address())
    await log_in(app, ana, PASSWORD, new_address())
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO or r.name.startswith("agenthub")
    ]
    assert lines  # the requests were logged, without what was in them
    for secret in ("secret-guess-123", PASSWORD, ana):
        assert not [line for line in lines if secret in line], secret


# --- the counters in Redis --------------------------------------------------------------------


def redis_settings(redis_url: str) -> Settings:
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        login_max_failures_per_username=PER_USERNAME,
        login_max_failures_per_address=PER_ADDRESS,
        login_failure_window_seconds=WINDOW,
    )


@pytest.mark.redis
async def test_throttles_on_one_redis_share_their_counters() -> None:
    """Two hubs (two serve processes) on one Redis: failures seen by one lock the other."""
    require_redis()
    one, two = LoginThrottle(redis_settings(REDIS_URL)), LoginThrottle(redis_settings(REDIS_URL))
    username, address = f"shared-{uuid.uuid4().hex}", new_address()
    try:
        await two.check(username, address)
        for _ in range(PER_USERNAME):
            await one.failed(username, new_address())
        with pytest.raises(TooManyAttempts) as locked:
            await two.check(username, address)
        assert 1 <= locked.value.retry_after <= WINDOW
        assert locked.value.headers == {"Retry-After": str(locked.value.retry_after)}
        # The username is stored hashed, under the hub's prefix.
        client = redis.asyncio.from_url(REDIS_URL, decode_responses=True)
        try:
            keys = await client.keys(f"{REDIS_KEY_PREFIX}*")
        finally:
            await client.aclose()
        assert keys and not any(username in key for key in keys)
    finally:  # the keys expire with the window
        await one.close()
        await two.close()


async def test_without_redis_the_counters_fall_back_to_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down: each process counts in its own memory (logged) rather than refusing logins."""
    throttle = LoginThrottle(redis_settings(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with caplog.at_level(logging.WARNING, logger="agenthub.auth.throttle"):
            await throttle.check("ana", "192.0.2.1")
            for _ in range(PER_USERNAME):
                await throttle.failed("ana", "192.0.2.1")
            with pytest.raises(TooManyAttempts):
                await throttle.check("ana", "192.0.2.2")
        assert "counting in this process's memory" in caplog.text
        assert "ana" not in caplog.text
    finally:
        await throttle.close()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.multiprocess
async def test_two_serve_processes_share_the_lockout(tmp_path: Path) -> None:
    """Real `agenthub serve` processes on one Redis: failures on one lock the other."""
    with scratch_database() as database_url:
        redis = RedisServer(tmp_path)
        env = hub_env(
            database_url,
            redis.url(),
            login_max_failures_per_username=PER_USERNAME,
            login_failure_window_seconds=WINDOW,
            db_pool_size=2,
        )
        serves = [ServeProcess(f"serve{i}", env, tmp_path) for i in range(2)]
        try:
            redis.start()
            for serve in serves:
                serve.spawn()
            await asyncio.gather(*(asyncio.to_thread(s.wait_ready) for s in serves))
            one, two = (s.url for s in serves)
            async with asyncio.timeout(60), httpx2.AsyncClient(timeout=10) as http:
                admin = {"username": "admin", "password": PASSWORD}
                assert (await http.post(f"{one}/auth/signup", json=admin)).status_code == 201
                wrong = {"username": "admin", "password": "wrong-password"}
                for _ in range(PER_USERNAME):
                    assert (await http.post(f"{one}/auth/login", json=wrong)).status_code == 401
                assert_locked(await http.post(f"{two}/auth/login", json=admin))
                assert_locked(await http.post(f"{two}/auth/session", json=admin))
        finally:
            stop_all([*serves, redis])
            for process in [*serves, redis]:
                print(f"===== {process.name} =====\n{process.log_text()[-4000:]}")
