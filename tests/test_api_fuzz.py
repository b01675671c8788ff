"""Schemathesis over the whole OpenAPI schema: no input ever makes the API answer 5xx.

Every operation is fuzzed with three kinds of input on SQLite, mixed in one hypothesis run
(each run has a fixed cost), and with the second kind on PostgreSQL too (the other two never get
past validation or the token check to a query):

- valid input without a token or with a wrong one: 401 on every protected operation;
- valid input (positive mode) as an admin, half the time against real ids so requests get past
  the 404s into the services;
- invalid input (negative mode) as an admin, likewise.

Hypothesis picks new examples on every run; a failure prints the request as `curl` and the seed
(`pytest --hypothesis-seed=N` replays it).

Every answer must also be documented: its status declared for the operation in the OpenAPI
document, and its body valid against the schema declared for that status (schemathesis'
`status_code_conformance` and `response_schema_conformance`), so an endpoint that answers an
undeclared error, or a body its model does not describe, fails here. Errors must also be JSON
with a `detail`. Schemathesis runs the app in-process over
ASGI and owns its lifespan (on its own event-loop thread), so the world is written beforehand
through a separate `Hub` on a loop of ours, and wiped afterwards the same way.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from agenthub.app import create_app
from agenthub.hub import Hub
from agenthub.models import ApiToken, Role, User
from agenthub.security import hash_token, new_token
from agenthub.settings import Settings
from tests.conftest import TEST_SECRET_KEY, _empty_tables, app_for
from tests.factories import make_agent, make_channel, make_chat
from tests.hypothesis_budget import examples

POSITIVE_EXAMPLES = examples(5)
# On PostgreSQL, where only the valid input's round runs: fewer, the same kinds of input.
POSTGRES_POSITIVE_EXAMPLES = examples(3)
NEGATIVE_EXAMPLES = examples(4)
ANONYMOUS_EXAMPLES = examples(2)


def _operations() -> dict[str, bool]:
    """Every operation of the app (collected from the app itself, so new routes are fuzzed
    without touching this file) → whether it needs a bearer token."""
    settings = Settings(database_url="sqlite://", secret_key=TEST_SECRET_KEY, _env_file=None)  # type: ignore[call-arg]
    paths: dict[str, dict[str, Any]] = create_app(settings).openapi()["paths"]
    return {
        f"{method.upper()} {path}": bool(operation.get("security"))
        for path, operations in paths.items()
        for method, operation in operations.items()
        if method in ("get", "post", "put", "patch", "delete")
    }


OPERATIONS = _operations()


@dataclass(frozen=True)
class World:
    admin_token: str
    ids: dict[str, str]  # path parameter name → a real id of that kind

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


async def _seed(settings: Settings) -> World:
    hub = Hub.from_settings(settings)
    try:
        raw = new_token()
        async with hub.db.transaction() as session:
            admin = User(username="admin", password_hash="!unusable", role=Role.ADMIN)
            member = User(username="member", password_hash="!unusable", role=Role.MEMBER)
            session.add_all([admin, member])
            await session.flush()
            session.add(ApiToken(token_hash=hash_token(raw), user_id=admin.id, name="fuzz"))
        channel = await make_channel(hub)
        agent, _ = await make_agent(hub)
        chat = await make_chat(hub, channel, messages=3, agents=(agent,))
        async with hub.db.transaction() as session:
            token_id = await session.scalar(
                select(ApiToken.id).where(ApiToken.agent_id == agent.id)
            )
        assert token_id is not None
        ids = {
            "channel_id": channel.id,
            "chat_id": chat.id,
            "agent_id": agent.id,
            "user_id": member.id,
            "token_id": token_id,
            "platform": "api",
        }
        return World(admin_token=raw, ids=ids)
    finally:
        await hub.close()


async def _wipe(settings: Settings) -> None:
    hub = Hub.from_settings(settings)
    try:
        await _empty_tables(hub)
    finally:
        await hub.close()


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    world = asyncio.run(_seed(settings))
    try:
        yield world
    finally:
        # The app's lifespan (and its engine) ends before the rows go.
        schemathesis_asgi.shutdown_lifespans()
        asyncio.run(_wipe(settings))


@pytest.fixture
def admin_headers(world: World) -> dict[str, str]:
    return world.admin_headers


_SCHEMAS: dict[int, Any] = {}


@pytest.fixture
def api_schema(settings: Settings, world: World) -> Any:
    """The app's OpenAPI document as schemathesis sees it, loaded once per app (the app is
    shared by the tests with the same settings; each test still starts its lifespan)."""
    app = app_for(settings)
    if id(app) not in _SCHEMAS:
        _SCHEMAS[id(app)] = schemathesis.openapi.from_asgi("/openapi.json", app)
    return _SCHEMAS[id(app)]


CONFORMANCE = [status_code_conformance, response_schema_conformance]


def _check(case: Any, response: Any) -> None:
    request = f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r}"
    assert response.status_code < 500, f"{request} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            pytest.fail(f"{request} -> {response.status_code} is not JSON: {response.text[:200]}")
        assert isinstance(body, dict) and "detail" in body, f"{request} -> {body!r}"
    # The status is one the operation declares, and the body matches that status's schema.
    case.validate_response(response, checks=CONFORMANCE)


def _run(strategy: st.SearchStrategy[Any], examples: int, call: Any) -> None:
    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        call(case)

    run()


def _strategy(operation: Any, mode: GenerationMode, headers: dict[str, str], world: World) -> Any:
    random_ids = operation.as_strategy(mode, headers=headers)
    names = {p.name for p in operation.path_parameters}
    if not names:
        return random_ids
    real = {name: world.ids[name] for name in names if name in world.ids}
    return st.one_of(operation.as_strategy(mode, headers=headers, path_parameters=real), random_ids)


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_no_server_errors(
    label: str,
    api_schema: Any,
    world: World,
    admin_headers: dict[str, str],
    settings: Settings,
) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    # The rounds that never reach a query run on SQLite only: a refused token, and input the
    # schema refuses (422 from validation, before any service runs). On PostgreSQL the valid
    # input is what can find a difference (text it stores differently, an id's type, a limit).
    every_round = not settings.database_url.startswith("postgresql")

    # One hypothesis run for every round: each run has a fixed setup cost (strategy
    # validation, the engine's start) that was a third of this test's time with one per round.
    rounds: list[tuple[Any, int, Any]] = []
    if OPERATIONS[label] and every_round:
        # Without a token, or with a wrong one: 401.
        def unauthorized(case: Any, response: Any) -> None:
            _check(case, response)
            assert response.status_code == 401, f"{label} without a token -> {response.status_code}"

        anonymous = st.one_of(
            _strategy(operation, GenerationMode.POSITIVE, headers, world)
            for headers in ({}, {"Authorization": f"Bearer {uuid.uuid4().hex}"})
        )
        rounds.append((anonymous, ANONYMOUS_EXAMPLES, unauthorized))
    positive = POSITIVE_EXAMPLES if every_round else POSTGRES_POSITIVE_EXAMPLES
    rounds.append(
        (_strategy(operation, GenerationMode.POSITIVE, admin_headers, world), positive, _check)
    )
    if every_round:
        negative = _strategy(operation, GenerationMode.NEGATIVE, admin_headers, world)
        rounds.append((negative, NEGATIVE_EXAMPLES, _check))
    # Each case carries its round's check. (A round with nothing to generate, negative input
    # for an operation without parameters, simply never comes up.)
    cases = st.one_of(
        strategy.map(lambda case, check=check: (check, case)) for strategy, _, check in rounds
    )

    def call(checked: tuple[Any, Any]) -> None:
        check, case = checked
        check(case, case.call())

    _run(cases, sum(budget for _, budget, _ in rounds), call)
