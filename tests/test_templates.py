"""`GET /channels/{id}/templates`: the channel's message templates, read from the platform at
each call: WhatsApp Cloud's `message_templates` (with the `waba_id` credential) and Twilio's
Content API (`content_api_base_url`), every page followed; who may read them; what a platform
failure answers. The platforms are loopback fakes (`tests/fake_platform.py`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import Role
from agenthub.settings import get_settings
from tests.conftest import Caller
from tests.factories import make_agent
from tests.fake_platform import (
    GRAPH_TEMPLATES_PATH,
    TWILIO_CONTENT_PATH,
    FakePlatform,
    Reply,
    add_graph_template_routes,
    add_twilio_content_routes,
    graph_template,
    twilio_content,
)

# Platform calls and permissions: no storage of their own beyond the channel's row.
pytestmark = [pytest.mark.anyio, pytest.mark.database_independent]

ACCESS_TOKEN = "EAAGm0PX4ZCpsBAKZAZBq1ZCd9ZAZAZBfZAtemplates"
WABA_ID = "102290129340398"
ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "twilio-auth-token-templates"

CLOUD_TEMPLATES = [
    graph_template("order_confirmation", "Hi {{1}}! Your order number is {{2}}. Thank you."),
    graph_template("order_confirmation", "¡Hola {{1}}! Tu pedido es {{2}}.", language="es"),
    graph_template("welcome", "Welcome aboard, {{1}}", category="MARKETING", status="PENDING"),
    graph_template("login_code", "{{1}} is your code", category="AUTHENTICATION"),
    graph_template("old_offer", "Last chance: {{1}}", status="REJECTED", category="MARKETING"),
]


@pytest.fixture
def graph() -> Iterator[FakePlatform]:
    with FakePlatform(default=Reply(404, json={"error": {"code": 100}})) as fake:
        add_graph_template_routes(fake, CLOUD_TEMPLATES, token=ACCESS_TOKEN, page_size=2)
        yield fake


@pytest.fixture
def content_api() -> Iterator[FakePlatform]:
    with FakePlatform(default=Reply(404, json={"code": 20404})) as fake:
        yield fake


async def cloud_channel(
    client: httpx2.AsyncClient, admin: Caller, base_url: str, *, waba_id: str | None = WABA_ID
) -> dict[str, Any]:
    credentials = {
        "access_token": ACCESS_TOKEN,
        "phone_number_id": "106540352242922",
        "app_secret": "app-secret",
        "verify_token": "verify",
    }
    if waba_id is not None:
        credentials["waba_id"] = waba_id
    answer = await client.post(
        "/channels",
        json={
            "name": "Cloud",
            "platform": "whatsapp_cloud",
            "credentials": credentials,
            "config": {"api_base_url": base_url},
        },
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def twilio_channel(
    client: httpx2.AsyncClient, admin: Caller, content_base_url: str
) -> dict[str, Any]:
    answer = await client.post(
        "/channels",
        json={
            "name": "Twilio",
            "platform": "whatsapp_twilio",
            "credentials": {
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from_number": "whatsapp:+14155238886",
            },
            "config": {"content_api_base_url": content_base_url},
        },
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- WhatsApp Cloud --------------------------------------------------------------------------


async def test_cloud_templates_are_read_from_every_page(
    client: httpx2.AsyncClient, admin: Caller, graph: FakePlatform
) -> None:
    channel = await cloud_channel(client, admin, graph.url)
    answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    templates = answer.json()["templates"]
    assert templates == [
        {
            "name": t["name"],
            "language": t["language"],
            "status": t["status"],
            "category": t["category"],
            "body": t["components"][1]["text"],
        }
        for t in CLOUD_TEMPLATES
    ]
    assert templates[0]["body"] == "Hi {{1}}! Your order number is {{2}}. Thank you."
    requests = graph.requests(GRAPH_TEMPLATES_PATH)
    assert len(requests) == 3  # 5 templates, 2 a page
    first = requests[0]
    assert first.path == f"/{get_settings().whatsapp_graph_version}/{WABA_ID}/message_templates"
    assert "fields=name,language,status,category,components" in first.query
    assert "limit=100" in first.query
    assert all(r.headers["authorization"] == f"Bearer {ACCESS_TOKEN}" for r in requests)
    assert [r.query.rsplit("after=", 1)[-1] for r in requests[1:]] == ["Mg==", "NA=="]
    assert ACCESS_TOKEN not in answer.text


async def test_cloud_without_waba_id_names_the_credential(
    client: httpx2.AsyncClient, admin: Caller, graph: FakePlatform
) -> None:
    channel = await cloud_channel(client, admin, graph.url, waba_id=None)
    answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert detail["code"] == "missing_credential"
    assert "waba_id" in detail["message"]
    assert not graph.requests()
    # Once set, the same channel lists them.
    patched = await client.patch(
        f"/channels/{channel['id']}",
        json={"credentials": {"waba_id": WABA_ID}},
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
    assert answer.status_code == 200
    assert len(answer.json()["templates"]) == len(CLOUD_TEMPLATES)


async def test_cloud_refusal_is_a_502_with_the_reason(
    client: httpx2.AsyncClient, admin: Caller, graph: FakePlatform
) -> None:
    channel = await cloud_channel(client, admin, graph.url)
    error = {
        "message": "(#100) Tried accessing nonexisting field (message_templates)",
        "type": "OAuthException",
        "code": 100,
        "fbtrace_id": "AbCdEf",
    }
    graph.script(Reply(400, json={"error": error}), path=GRAPH_TEMPLATES_PATH)
    answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
    assert answer.status_code == 502, answer.text
    detail = answer.json()["detail"]
    assert "nonexisting field" in detail
    assert len(detail) < 500
    assert ACCESS_TOKEN not in answer.text
    # A failure on a later page fails the listing too (no partial list).
    next_page = f"{graph.url}/v21.0/{WABA_ID}/message_templates?after=Mg%3D%3D"
    first = {"data": [graph_template("welcome", "Hi")], "paging": {"next": next_page}}
    graph.script(
        Reply(200, json=first), Reply(500, body=b"<html>oops</html>"), path=GRAPH_TEMPLATES_PATH
    )
    answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
    assert answer.status_code == 502
    assert graph.requests(GRAPH_TEMPLATES_PATH)[-1].query == "after=Mg%3D%3D"


async def test_unreachable_platform_is_a_502(client: httpx2.AsyncClient, admin: Caller) -> None:
    channel = await cloud_channel(client, admin, f"http://127.0.0.1:{closed_port()}")
    answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
    assert answer.status_code == 502, answer.text
    assert ACCESS_TOKEN not in answer.text


async def test_a_next_page_on_another_host_is_not_followed(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    """The next page gets the access token: only a link on the API's own host is followed."""
    with FakePlatform() as graph, FakePlatform() as elsewhere:
        page = {
            "data": [graph_template("welcome", "Hello {{1}}")],
            "paging": {"next": f"{elsewhere.url}/v21.0/{WABA_ID}/message_templates?after=x"},
        }
        graph.route("GET", GRAPH_TEMPLATES_PATH, lambda request, groups: Reply(200, json=page))
        channel = await cloud_channel(client, admin, graph.url)
        answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
        assert answer.status_code == 200, answer.text
        assert [t["name"] for t in answer.json()["templates"]] == ["welcome"]
        assert not elsewhere.requests()


async def test_pages_are_capped(client: httpx2.AsyncClient, admin: Caller) -> None:
    """A platform whose `next` never ends is read up to the cap, not forever."""
    with FakePlatform() as graph:

        def endless(request: Any, groups: dict[str, str]) -> Reply:
            next_url = f"{graph.url}{request.path}?after=again"
            body = {"data": [graph_template("t", "x")], "paging": {"next": next_url}}
            return Reply(200, json=body)

        graph.route("GET", GRAPH_TEMPLATES_PATH, endless)
        channel = await cloud_channel(client, admin, graph.url)
        answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
        assert answer.status_code == 200
        assert len(answer.json()["templates"]) == len(graph.requests()) == 20


# --- Twilio Content API -------------------------------------------------------------------------


async def test_twilio_contents_with_their_approval_status(
    client: httpx2.AsyncClient, admin: Caller, content_api: FakePlatform
) -> None:
    contents = [
        twilio_content("Hi {{1}}, ticket {{2}} is resolved."),
        twilio_content("Your order {{1}} shipped", friendly_name="shipped", nested=True),
        twilio_content(
            "Rate us?", friendly_name="rate", kind="twilio/quick-reply", status="pending"
        ),
    ]
    contents[2]["types"]["twilio/quick-reply"]["actions"] = [{"title": "Good", "id": "good"}]
    unsubmitted = twilio_content("Draft {{1}}", friendly_name="draft", language="pt_BR")
    unsubmitted["approval_requests"] = {}
    contents.append(unsubmitted)
    add_twilio_content_routes(content_api, contents, page_size=3)
    channel = await twilio_channel(client, admin, content_api.url)
    assert channel["config"]["content_api_base_url"] == content_api.url
    answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["templates"] == [
        {
            "name": contents[0]["sid"],
            "language": "en",
            "status": "approved",
            "category": "UTILITY",
            "body": "Hi {{1}}, ticket {{2}} is resolved.",
        },
        {
            "name": contents[1]["sid"],
            "language": "en",
            "status": "approved",
            "category": "UTILITY",
            "body": "Your order {{1}} shipped",
        },
        {
            "name": contents[2]["sid"],
            "language": "en",
            "status": "pending",
            "category": "UTILITY",
            "body": "Rate us?",
        },
        {
            "name": unsubmitted["sid"],
            "language": "pt_BR",
            "status": None,
            "category": None,
            "body": "Draft {{1}}",
        },
    ]
    assert all(t["name"].startswith("HX") for t in answer.json()["templates"])
    requests = content_api.requests(TWILIO_CONTENT_PATH)
    assert len(requests) == 2
    assert requests[0].query == "PageSize=100"
    assert "PageToken=PT1" in requests[1].query
    assert all(r.basic_auth == (ACCOUNT_SID, AUTH_TOKEN) for r in requests)
    assert AUTH_TOKEN not in answer.text


async def test_twilio_refusal_is_a_502(
    client: httpx2.AsyncClient, admin: Caller, content_api: FakePlatform
) -> None:
    channel = await twilio_channel(client, admin, content_api.url)
    content_api.script(
        Reply(401, json={"code": 20003, "message": "Authenticate", "status": 401}),
        path=TWILIO_CONTENT_PATH,
    )
    answer = await client.get(f"/channels/{channel['id']}/templates", headers=admin.headers)
    assert answer.status_code == 502, answer.text
    assert "Authenticate" in answer.json()["detail"]
    assert AUTH_TOKEN not in answer.text


async def test_twilio_default_content_host(client: httpx2.AsyncClient, admin: Caller) -> None:
    answer = await client.post(
        "/channels",
        json={
            "name": "Twilio",
            "platform": "whatsapp_twilio",
            "credentials": {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": "x"},
            "config": {"content_api_base_url": "https://content.twilio.com/v1"},
        },
        headers=admin.headers,
    )
    assert answer.status_code == 422  # scheme and host only, as the other base URLs
    assert answer.json()["detail"][0]["loc"][-1] == "content_api_base_url"


# --- other platforms and access ---------------------------------------------------------------


async def test_other_platforms_have_no_templates(client: httpx2.AsyncClient, admin: Caller) -> None:
    answer = await client.post(
        "/channels", json={"name": "Web", "platform": "api"}, headers=admin.headers
    )
    listing = await client.get(f"/channels/{answer.json()['id']}/templates", headers=admin.headers)
    assert listing.status_code == 422, listing.text
    assert "WhatsApp" in listing.json()["detail"][0]["msg"]


async def test_who_may_list_templates(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, make_user: Any, graph: FakePlatform
) -> None:
    channel = await cloud_channel(client, admin, graph.url)
    url = f"/channels/{channel['id']}/templates"
    granted = await make_user(Role.MEMBER, channels=(channel["id"],))
    other = await make_user(Role.MEMBER)
    _, agent_token = await make_agent(hub)
    assert (await client.get(url, headers=granted.headers)).status_code == 200
    assert (await client.get(url, headers=other.headers)).status_code == 404
    agent = await client.get(url, headers={"Authorization": f"Bearer {agent_token}"})
    assert agent.status_code == 403
    assert (await client.get(url)).status_code == 401
    assert (
        await client.get("/channels/chn_nothere000/templates", headers=admin.headers)
    ).status_code == 404
