"""The attempt log (`delivery/webhook_call.py`): each attempt to a real loopback agent records
its duration, status, `error_kind`, the first 4 KiB of the answer and the address connected to;
an answer over the limit fails at once, unread past it; and with the SSRF guard on, a name that
now resolves inside the network is never connected to (`netguard.destination`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.netguard import destination, is_internal
from tests.conftest import Caller
from tests.factories import make_agent, make_channel, make_chat, make_delivery
from tests.fake_platform import FakePlatform, Reply, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]


@pytest.fixture
def agent_server() -> Iterator[FakePlatform]:
    with FakePlatform(default=Reply(200, json={"ok": True})) as fake:
        yield fake


async def trace(client: httpx2.AsyncClient, admin: Caller, delivery_id: str) -> dict[str, Any]:
    answer = await client.get(f"/deliveries/{delivery_id}", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def deliver(hub: Hub, url: str, **agent: Any) -> str:
    bot, _ = await make_agent(hub, webhook_url=url, **agent)
    chat = await make_chat(hub, await make_channel(hub), messages=1, agents=(bot,))
    return await make_delivery(hub, chat.id, bot.id, "pending")


async def test_each_attempt_records_its_answer_kind_excerpt_and_address(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, agent_server: FakePlatform
) -> None:
    agent_server.script(Reply(503, body="busy, " + "z" * 6000))
    delivery_id = await deliver(hub, f"{agent_server.url}/hook")

    async def delivered() -> dict[str, Any]:
        body = await trace(client, admin, delivery_id)
        assert body["status"] == "succeeded", body
        return body

    first, second = (await wait_until(delivered))["attempts"]
    assert first["status_code"] == 503 and first["error_kind"] == "http_status"
    assert first["response_excerpt"] == ("busy, " + "z" * 6000)[:4096]
    assert first["remote_address"] == "127.0.0.1"
    assert first["duration_ms"] == first["latency_ms"] > 0
    assert second["status_code"] == 200 and second["error_kind"] is None
    assert second["error"] is None and second["response_excerpt"] == '{"ok": true}'
    assert (
        await client.get("/deliveries/dlv_missing000", headers=admin.headers)
    ).status_code == 404


@pytest.mark.database_independent
async def test_an_answer_over_the_limit_fails_at_once_as_too_large(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, agent_server: FakePlatform
) -> None:
    limit = hub.settings.agent_max_response_bytes
    agent_server.script(Reply(200, body=b"{" + b" " * (limit + 10) + b"}"))
    delivery_id = await deliver(hub, agent_server.url)

    async def failed() -> dict[str, Any]:
        body = await trace(client, admin, delivery_id)
        assert body["status"] == "failed", body
        return body

    (attempt,) = (await wait_until(failed))["attempts"]  # no retry
    assert attempt["error_kind"] == "too_large"
    assert attempt["status_code"] == 200
    assert len(attempt["response_excerpt"]) == 4096
    assert len(agent_server.requests()) == 1


@pytest.mark.database_independent
async def test_an_unreachable_agent_is_a_connect_error(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delivery_id = await deliver(hub, f"http://127.0.0.1:{port}/")

    async def tried() -> dict[str, Any]:
        body = await trace(client, admin, delivery_id)
        assert body["attempts"], body
        return body

    attempt = (await wait_until(tried))["attempts"][0]
    assert attempt["error_kind"] == "connect" and attempt["status_code"] is None


@pytest.mark.ssrf_guard
@pytest.mark.database_independent
async def test_with_the_guard_on_a_name_resolving_inside_is_never_connected_to(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, agent_server: FakePlatform
) -> None:
    # Saved while it resolved elsewhere, say; now `localhost` answers 127.0.0.1.
    delivery_id = await deliver(hub, f"http://localhost:{agent_server.port}/hook")

    async def failed() -> dict[str, Any]:
        body = await trace(client, admin, delivery_id)
        assert body["status"] == "failed", body
        return body

    (attempt,) = (await wait_until(failed))["attempts"]  # refused, not retried
    assert attempt["error_kind"] == "refused_address"
    assert "localhost" in attempt["error"]
    assert agent_server.requests() == []


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("10.0.0.1", True),
        ("::ffff:10.0.0.1", True),  # IPv4-mapped
        ("64:ff9b::a00:1", True),  # NAT64 of 10.0.0.1
        ("2002:a00:1::", True),  # 6to4 of 10.0.0.1
        ("::ffff:127.0.0.1", True),
        ("fe80::1%eth0", True),
        ("93.184.216.34", False),
        ("::ffff:93.184.216.34", False),
        ("64:ff9b::5db8:d822", False),  # NAT64 of 93.184.216.34
        ("2606:2800:220:1::", False),
    ],
)
def test_addresses_are_judged_by_the_ipv4_address_inside(address: str, internal: bool) -> None:
    assert is_internal(address) is internal


@pytest.mark.database_independent
async def test_the_request_goes_to_the_checked_address_and_keeps_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a rebinding resolver would need a second lookup for never happens: the one
    answer checked is the address in the URL. (The resolver is the one stand-in here: no
    public DNS in tests.)"""
    answers = {
        "agent.example": ["93.184.216.34"],
        "v6.example": ["2606:2800:220:1::"],
        "mixed.example": ["93.184.216.34", "::ffff:192.168.1.1"],
    }
    calls: list[str] = []

    def resolve(host: str, port: int, *_: Any) -> list[Any]:
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    target = await destination("https://agent.example:8443/hook?x=1", allow_private=False)
    assert target.url == "https://93.184.216.34:8443/hook?x=1"
    assert target.headers == {"Host": "agent.example:8443"}
    assert target.extensions == {"sni_hostname": "agent.example"}
    assert target.address == "93.184.216.34"
    plain = await destination("http://v6.example/a", allow_private=False)
    assert plain.url == "http://[2606:2800:220:1::]/a"
    assert plain.headers == {"Host": "v6.example"} and plain.extensions == {}
    with pytest.raises(Exception, match="private"):
        await destination("https://mixed.example/", allow_private=False)
    assert calls == ["agent.example", "v6.example", "mixed.example"]  # once each
    unchanged = await destination("http://localhost:9/x", allow_private=True)
    assert unchanged.url == "http://localhost:9/x" and calls[-1] == "mixed.example"


@pytest.mark.ssrf_guard
@pytest.mark.database_independent
async def test_with_the_guard_on_an_api_callback_resolving_inside_is_never_called(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, agent_server: FakePlatform
) -> None:
    channel = await make_channel(
        hub, config={"callback_url": f"http://localhost:{agent_server.port}/"}
    )
    chat = await make_chat(hub, channel, messages=1)
    sent = await client.post(
        f"/chats/{chat.id}/messages", json={"content": "hello"}, headers=admin.headers
    )
    assert sent.status_code == 201, sent.text

    async def failed() -> dict[str, Any]:
        answer = await client.get(f"/chats/{chat.id}/messages", headers=admin.headers)
        [ours] = [m for m in answer.json()["messages"] if m["id"] == sent.json()["id"]]
        assert ours["delivery_status"] == "FAILED", ours
        return ours

    message = await wait_until(failed)
    assert "private" in message["meta_data"]["error"]["detail"]
    assert agent_server.requests() == []
