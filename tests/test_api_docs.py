"""The API documentation the hub serves: /docs and /redoc work offline, the OpenAPI document
declares every error status each operation can answer (`openapi_errors.py`; the API fuzzer
checks the answers against it), and it describes the calls the hub makes (agent deliveries,
`api` channel callbacks) as they really are."""

from __future__ import annotations

import functools
import re
from typing import Any

import httpx2
import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from agenthub.app import create_app
from agenthub.callbacks import AgentDelivery, OutboundMessage
from agenthub.deps import get_admin_user
from agenthub.openapi_errors import declare_error_responses
from agenthub.settings import Settings
from tests.agent_server import FakeAgent, eventually, reply
from tests.conftest import TEST_SECRET_KEY, Caller
from tests.fake_platform import FakePlatform, Reply
from tests.test_agent_delivery import make_world

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]

ERROR = "#/components/schemas/ErrorOut"
INVALID = "#/components/schemas/ValidationErrorOut"


@functools.cache
def _document() -> dict[str, Any]:
    settings = Settings(database_url="sqlite://", secret_key=TEST_SECRET_KEY, _env_file=None)  # type: ignore[call-arg]
    return create_app(settings).openapi()


def _json_schema(response: dict[str, Any]) -> Any:
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")


def _missing_errors(operation: dict[str, Any]) -> list[str]:
    """What `operation` fails to declare of the errors its shape alone implies."""
    responses: dict[str, Any] = operation["responses"]
    where = {parameter["in"] for parameter in operation.get("parameters", [])}
    body = "requestBody" in operation
    wanted = {
        "401": bool(operation.get("security")),
        "404": "path" in where,
        "413": body,
        "422": bool(where) or body,
    }
    problems = [f"no {code}" for code, needed in wanted.items() if needed and code not in responses]
    for code, response in responses.items():
        if not code.startswith("4"):
            continue
        expected = INVALID if code == "422" else ERROR
        if _json_schema(response) != expected:
            problems.append(f"{code} is not {expected.rsplit('/', 1)[1]}")
    return problems


def test_every_operation_declares_the_errors_its_shape_implies() -> None:
    """Security → 401, a path parameter → 404, any parameter or body → 422 (the hub's own
    shape, not FastAPI's `HTTPValidationError`), a body → 413; every 4xx is `{"detail"}`."""
    problems = [
        f"{method.upper()} {path}: {problem}"
        for path, operations in _document()["paths"].items()
        for method, operation in operations.items()
        for problem in _missing_errors(operation)
    ]
    assert not problems, "\n".join(problems)
    assert "HTTPValidationError" not in str(_document()["paths"])


class Thing(BaseModel):
    name: str


def test_errors_are_derived_from_the_dependencies_and_declarations_win() -> None:
    router = APIRouter()

    @router.get("/things/{thing_id}", responses={404: {"model": Thing, "description": "Gone"}})
    async def get_thing(thing_id: str) -> Thing:
        return Thing(name=thing_id)

    @router.post("/things", status_code=204)
    async def make_thing(thing: Thing) -> None:
        return None

    app = FastAPI()
    # Seen through `include_router` too: admin-only, so a bearer token (401), a role (403),
    # and the database the check reads (503 while it is out of reach).
    app.include_router(router, dependencies=[Depends(get_admin_user)])

    @app.get("/direct/{thing_id}", status_code=204)
    async def on_the_app(thing_id: str) -> None:
        return None

    declare_error_responses(app)
    declare_error_responses(app)  # idempotent (routers are shared by every app that has them)
    document = app.openapi()
    assert app.openapi() is document  # still built once
    read = document["paths"]["/things/{thing_id}"]["get"]["responses"]
    assert sorted(read) == ["200", "401", "403", "404", "422", "503"]
    assert "Retry-After" in read["503"]["headers"]
    assert _json_schema(read["404"]).endswith("/Thing") and read["404"]["description"] == "Gone"
    assert _json_schema(read["401"]) == ERROR and "WWW-Authenticate" in read["401"]["headers"]
    assert _json_schema(read["422"]) == INVALID
    write = document["paths"]["/things"]["post"]["responses"]
    assert sorted(write) == ["204", "400", "401", "403", "413", "422", "503"]
    direct = document["paths"]["/direct/{thing_id}"]["get"]["responses"]
    assert sorted(direct) == ["204", "404", "422"] and _json_schema(direct["404"]) == ERROR


async def test_an_unreadable_body_is_the_declared_400(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    """FastAPI answers 400 for a JSON body it cannot decode (not UTF-8), before any check of
    the caller: every operation with a body declares it."""
    headers = {**admin.headers, "Content-Type": "application/json"}
    answer = await client.post("/auth/users", content=b'{"username": "\xff"}', headers=headers)
    assert answer.status_code == 400 and answer.json()["detail"], answer.text
    assert "400" in _document()["paths"]["/auth/users"]["post"]["responses"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_load_every_asset_from_the_hub(
    client: httpx2.AsyncClient, page: str
) -> None:
    html = await client.get(page)
    assert html.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert assets, html.text
    for url in assets:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000 or url.endswith(".png"), url
    assert "fonts.googleapis" not in html.text


async def test_openapi_describes_the_calls_the_hub_makes(client: httpx2.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    webhooks = document["webhooks"]
    delivery = webhooks["chat.messages"]["post"]
    assert "webhook-signature" in delivery["description"]
    body = delivery["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/AgentDelivery")
    schemas = document["components"]["schemas"]
    assert {"new_message_ids", "reply_url", "delivery_id"} <= set(
        schemas["AgentDelivery"]["required"]
    )
    assert "AgentAnswer" in schemas
    assert "message.outbound" in webhooks


async def test_a_real_delivery_matches_the_documented_body(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    async with FakeAgent() as agent:
        agent.default = reply("hello")
        world = await make_world(client, admin, agent)
        await world.send("hi", meta_data={"media": [{"url": "https://x.test/a.png"}]})
        (request,) = await eventually(lambda: agent.requests or None, timeout=10)
        # Its outcome recorded before the test ends (and its tables are emptied).
        chat_id = await world.chat_id()
        await eventually(lambda: world.settled(chat_id), timeout=10)
    delivery = AgentDelivery.model_validate(request.json, strict=False)
    assert delivery.delivery_id == request.delivery_id
    assert set(AgentDelivery.model_fields) == set(request.json), "undocumented fields"
    (message,) = delivery.messages
    assert set(message.model_dump()) == set(request.json["messages"][0])


async def test_a_real_api_callback_matches_the_documented_body(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    with FakePlatform(default=Reply(200, json={"ok": True})) as receiver:
        async with FakeAgent() as agent:
            agent.default = reply("pong")
            world = await make_world(client, admin, agent)
            patch = {"config": {"callback_url": f"{receiver.url}/outbound"}}
            answer = await client.patch(
                f"/channels/{world.channel_id}", json=patch, headers=admin.headers
            )
            assert answer.status_code == 200, answer.text
            await world.send("ping")
            (callback,) = await receiver.wait_for(1, path="/outbound")
    body: dict[str, Any] = callback.json
    outbound = OutboundMessage.model_validate(body)
    assert outbound.message.content == "pong"
    assert set(OutboundMessage.model_fields) == set(body)
