"""The SSRF guard: with private URLs disallowed, agent, callback and platform API URLs must be
public."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from agenthub.errors import BadRequest
from agenthub.netguard import ensure_public_url
from tests.conftest import Caller

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001/",
        "http://localhost/hook",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://0.0.0.0/",
    ],
)
async def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(BadRequest):
        await ensure_public_url(url, allow_private=False)


async def test_public_address_is_accepted() -> None:
    await ensure_public_url("https://93.184.215.14/hook", allow_private=False)


async def test_private_allowed_when_configured() -> None:
    await ensure_public_url("http://127.0.0.1:8001/", allow_private=True)


async def test_non_http_scheme_is_refused_even_when_private_allowed() -> None:
    with pytest.raises(BadRequest):
        await ensure_public_url("file:///etc/passwd", allow_private=True)


# --- a channel's configurable base URLs -----------------------------------------------------------

CHANNEL_URLS = ("api_base_url", "typing_api_base_url", "content_api_base_url", "callback_url")


@pytest.mark.ssrf_guard
@pytest.mark.database_independent
@pytest.mark.parametrize("key", CHANNEL_URLS)
async def test_channel_urls_at_internal_addresses_are_refused(
    client: httpx2.AsyncClient, admin: Caller, key: str
) -> None:
    """Every URL of a channel's config the hub calls (Twilio's typing indicator and Content
    API hosts too) goes through the guard when it is saved, on create and on update."""
    credentials = {"account_sid": "AC" + "0" * 32, "auth_token": "token", "from_number": "x"}
    body = {"name": "Twilio", "platform": "whatsapp_twilio", "credentials": credentials}
    for url in ("http://127.0.0.1:8001", "http://[::1]", "http://169.254.169.254"):
        created = await client.post(
            "/channels", json={**body, "config": {key: url}}, headers=admin.headers
        )
        assert created.status_code == 400, (key, url, created.text)
        assert "private, loopback or link-local" in created.json()["detail"]
    channel = await client.post(
        "/channels", json={**body, "config": {key: "https://93.184.215.14"}}, headers=admin.headers
    )
    assert channel.status_code == 201, channel.text
    patched = await client.patch(
        f"/channels/{channel.json()['id']}",
        json={"config": {key: "http://127.0.0.1:8001"}},
        headers=admin.headers,
    )
    assert patched.status_code == 400, patched.text
    stored = await client.get(f"/channels/{channel.json()['id']}", headers=admin.headers)
    assert stored.json()["config"] == {key: "https://93.184.215.14"}


@pytest.mark.ssrf_guard
@pytest.mark.database_independent
@pytest.mark.parametrize(
    "transport",
    [
        {"webhook_url": "{url}/hook"},
        {"transport": "a2a", "a2a": {"url": "{url}/"}},
        {"transport": "openai", "openai": {"base_url": "{url}/v1", "api_key": "k", "model": "m"}},
    ],
    ids=["webhook", "a2a", "openai"],
)
async def test_agent_urls_of_every_transport_at_internal_addresses_are_refused(
    client: httpx2.AsyncClient, admin: Caller, transport: dict[str, Any]
) -> None:
    """The URL an agent is called at, whatever its transport, goes through the guard when it is
    saved (and again, resolved, at every call: tests/test_attempt_log.py)."""

    def at(url: str) -> dict[str, Any]:
        return json.loads(json.dumps(transport).replace("{url}", url))

    for url in ("http://127.0.0.1:8001", "http://[::1]", "http://169.254.169.254"):
        created = await client.post(
            "/auth/agents", json={"name": "bot", **at(url)}, headers=admin.headers
        )
        assert created.status_code == 400, (url, created.text)
        assert "private, loopback or link-local" in created.json()["detail"]
    agent = await client.post(
        "/auth/agents", json={"name": "bot", **at("https://93.184.215.14")}, headers=admin.headers
    )
    assert agent.status_code == 201, agent.text
    patched = await client.patch(
        f"/auth/agents/{agent.json()['id']}",
        json=at("http://127.0.0.1:8001"),
        headers=admin.headers,
    )
    assert patched.status_code == 400, patched.text
