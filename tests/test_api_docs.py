"""The API documentation the hub serves: /docs and /redoc work offline, and the OpenAPI document
describes the calls the hub makes (agent deliveries, `api` channel callbacks) as they really are."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest

from agenthub.callbacks import AgentDelivery, OutboundMessage
from tests.agent_server import FakeAgent, eventually, reply
from tests.conftest import Caller
from tests.fake_platform import FakePlatform, Reply
from tests.test_agent_delivery import make_world

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]


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
