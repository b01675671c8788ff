"""`POST /mcp`: the MCP server agents reach with their bearer token, driven by the official
`mcp` SDK's Streamable HTTP client against a real uvicorn server, in both protocol eras
(the `initialize` handshake of 2025-11-25, and 2026-07-28's self-contained requests)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent
from sqlalchemy import select
from standardwebhooks import Webhook

from agenthub.hub import Hub
from agenthub.mcp_server import PROTOCOL_REVISIONS
from agenthub.models import (
    Agent,
    Channel,
    Chat,
    ChatAgentLink,
    Message,
    Platform,
    Role,
    SenderType,
)
from tests.factories import make_agent, make_channel, make_chat
from tests.fake_platform import FakePlatform, Reply

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]

TOOLS = {"list_chats", "get_history", "send_message", "handoff", "set_typing"}
# "legacy": the initialize handshake (2025-11-25); a revision string: adopted directly (the
# default here: two requests fewer per client).
MODES = ["legacy", "2026-07-28"]


@asynccontextmanager
async def mcp_client(
    live: str, token: str | None, mode: str = "2026-07-28"
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
        transport = streamable_http_client(f"http://{live}/mcp", http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


def data(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    [block] = result.content
    assert isinstance(block, TextContent)
    assert json.loads(block.text) == result.structured_content
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


@pytest.fixture
def receiver() -> Iterator[FakePlatform]:
    """The `api` channel's callback endpoint."""
    with FakePlatform(default=Reply(200, json={"received": True})) as fake:
        yield fake


@dataclass
class World:
    agent: Agent
    token: str
    channel: Channel
    chat: Chat  # actively linked to the agent, 3 contact messages
    unlinked: Chat
    paused: Chat  # linked, the link paused


@pytest.fixture
async def world(hub: Hub, receiver: FakePlatform) -> World:
    agent, token = await make_agent(hub)
    other, _ = await make_agent(hub, name="other")
    channel = await make_channel(hub, config={"callback_url": f"{receiver.url}/cb"})
    chat = await make_chat(hub, channel, messages=3, agents=(agent,))
    unlinked = await make_chat(hub, channel, external_id="+15550002222", agents=(other,))
    paused = await make_chat(hub, channel, external_id="+15550003333", agents=(agent,))
    async with hub.db.transaction() as session:
        link = await session.scalar(select(ChatAgentLink).where(ChatAgentLink.chat_id == paused.id))
        assert link is not None
        link.active = False
    return World(agent, token, channel, chat, unlinked, paused)


async def messages_in(hub: Hub, chat_id: str) -> list[Message]:
    async with hub.db.session(read_only=True) as session:
        query = select(Message).where(Message.chat_id == chat_id).order_by(Message.seq)
        return list(await session.scalars(query))


# --- the protocol and the door ------------------------------------------------------------


@pytest.mark.database_independent
async def test_tools_are_listed_with_described_inputs(live: str, world: World) -> None:
    assert {"2025-11-25", "2026-07-28"} <= set(PROTOCOL_REVISIONS)  # as docs/agents.md says
    for mode in MODES:
        async with mcp_client(live, world.token, mode) as client:
            assert client.session.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description
            for name, schema in tool.input_schema.get("properties", {}).items():
                assert schema.get("description"), (tool.name, name)
        assert tools["get_history"].input_schema["required"] == ["chat_id"]
        assert tools["send_message"].input_schema["required"] == ["chat_id", "text"]
        assert tools["handoff"].input_schema["required"] == ["chat_id", "reason"]
        assert tools["set_typing"].input_schema["required"] == ["chat_id"]
        assert not tools["list_chats"].input_schema.get("properties")


@pytest.mark.database_independent
async def test_stateless_and_for_agents_only(
    http: httpx2.AsyncClient, hub: Hub, world: World, make_user: Any
) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    headers = {
        "Authorization": f"Bearer {world.token}",
        "Accept": "application/json, text/event-stream",
    }
    answer = await http.post("/mcp", json=initialize, headers=headers)
    assert answer.status_code == 200, answer.text
    assert "mcp-session-id" not in answer.headers
    assert answer.json()["result"]["protocolVersion"] == "2025-11-25"
    # Without a session, a request after no `initialize` (another process, say) is served.
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
    call["params"] = {"name": "list_chats", "arguments": {}}
    answer = await http.post(
        "/mcp", json=call, headers={**headers, "MCP-Protocol-Version": "2025-11-25"}
    )
    assert answer.status_code == 200, answer.text
    [chat] = answer.json()["result"]["structuredContent"]["chats"]
    assert chat["id"] == world.chat.id
    # No stream to open, no session to end.
    for method in ("GET", "DELETE"):
        answer = await http.request(method, "/mcp", headers=headers)
        assert answer.status_code == 405
        assert answer.headers["allow"] == "POST"

    # The door: an active agent's token only.
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        answer = await http.post("/mcp", json=body, headers={**accept, **headers})
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
    user = await make_user(Role.ADMIN)
    answer = await http.post("/mcp", json=body, headers={**accept, **user.headers})
    assert answer.status_code == 403, answer.text
    assert answer.json() == {"detail": "The MCP server is for agents, not users"}

    _, inactive_token = await make_agent(hub, name="off", active=False)
    answer = await http.post(
        "/mcp", json=body, headers={**accept, "Authorization": f"Bearer {inactive_token}"}
    )
    assert answer.status_code == 401
    assert answer.json() == {"detail": "Agent is deactivated"}


# --- the tools ----------------------------------------------------------------------------


async def test_list_chats_and_history(live: str, hub: Hub, world: World) -> None:
    async with mcp_client(live, world.token, "legacy") as client:
        listed = data(await client.call_tool("list_chats", {}))
        assert listed["has_more"] is False
        [chat] = listed["chats"]  # neither the unlinked nor the paused chat
        assert chat["id"] == world.chat.id
        assert chat["name"] == "Ana"
        assert chat["platform"] == "api"
        assert chat["channel_id"] == world.channel.id
        assert chat["handled_by"] == "agent"
        assert chat["last_message_ts"].endswith("Z")  # as the REST API writes times

        history = data(await client.call_tool("get_history", {"chat_id": world.chat.id}))
        assert [m["content"] for m in history["messages"]] == [
            "message 0",
            "message 1",
            "message 2",
        ]
        assert history["has_more"] is False
        assert history["before"] is None
        assert {m["sender_type"] for m in history["messages"]} == {"CONTACT"}

        page = data(await client.call_tool("get_history", {"chat_id": world.chat.id, "limit": 2}))
        assert [m["content"] for m in page["messages"]] == ["message 1", "message 2"]
        assert page["has_more"] is True
        assert page["before"] == page["messages"][0]["id"]
        older = data(
            await client.call_tool(
                "get_history", {"chat_id": world.chat.id, "limit": 2, "before": page["before"]}
            )
        )
        assert [m["content"] for m in older["messages"]] == ["message 0"]
        assert older["has_more"] is False

        # As the REST route: a `before` that is not a message of this chat is a 400.
        bad = await client.call_tool("get_history", {"chat_id": world.chat.id, "before": "msg_x"})
        assert error_text(bad) == "`before` is not a message of this chat"
        assert bad.structured_content == {
            "status": 400,
            "detail": "`before` is not a message of this chat",
        }
        too_many = await client.call_tool("get_history", {"chat_id": world.chat.id, "limit": 500})
        assert too_many.is_error


async def test_chats_not_actively_linked_are_not_found(live: str, hub: Hub, world: World) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_history", {}),
        ("send_message", {"text": "hi"}),
        ("handoff", {"reason": "help"}),
        ("set_typing", {}),
    ]
    async with mcp_client(live, world.token) as client:
        for name, arguments in calls:  # every tool, on a chat linked to another agent only
            result = await client.call_tool(name, {"chat_id": world.unlinked.id, **arguments})
            assert error_text(result) == "Chat not found", name
            assert result.structured_content == {"status": 404, "detail": "Chat not found"}
        for name, arguments in calls[:2]:  # a paused link reaches nothing either
            result = await client.call_tool(name, {"chat_id": world.paused.id, **arguments})
            assert error_text(result) == "Chat not found", name
    for chat in (world.unlinked, world.paused):
        assert await messages_in(hub, chat.id) == []
    async with hub.db.session(read_only=True) as session:
        stored = await session.get(Chat, world.unlinked.id)
        assert stored is not None and not stored.needs_human


async def test_send_message_is_an_agent_message_sent_to_the_callback(
    live: str, hub: Hub, world: World, receiver: FakePlatform
) -> None:
    buttons = [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]
    whatsapp = await make_channel(hub, platform=Platform.WHATSAPP_CLOUD, name="wa")
    closed = await make_chat(hub, whatsapp, external_id="+15550004444", agents=(world.agent,))
    async with mcp_client(live, world.token) as client:
        sent = data(
            await client.call_tool(
                "send_message",
                {"chat_id": world.chat.id, "text": "Shall I book it?", "buttons": buttons},
            )
        )
        assert sent["sender_type"] == "AGENT"
        assert sent["sender_id"] == world.agent.id
        assert sent["delivery_status"] == "PENDING"
        assert sent["meta_data"]["buttons"] == buttons

        # Refused as the REST API refuses it, with its message; nothing is stored or sent.
        four = [{"id": f"b{n}", "title": f"B{n}"} for n in range(4)]
        result = await client.call_tool(
            "send_message", {"chat_id": world.chat.id, "text": "pick", "buttons": four}
        )
        assert error_text(result) == (
            "buttons: List should have at most 3 items after validation, not 4"
        )
        assert result.structured_content is not None
        assert result.structured_content["status"] == 422
        [fault] = result.structured_content["detail"]
        assert fault["loc"] == ["body", "buttons"]

        # WhatsApp, the contact never wrote: only a template could start the conversation.
        result = await client.call_tool("send_message", {"chat_id": closed.id, "text": "hi"})
        assert error_text(result).startswith("window_closed: The contact has not written yet")
        assert result.structured_content is not None
        assert result.structured_content["status"] == 409
        assert result.structured_content["detail"]["code"] == "window_closed"

        empty = await client.call_tool("send_message", {"chat_id": world.chat.id})
        assert empty.is_error  # `text` is required

    [request] = await receiver.wait_for(1, path="/cb")
    secret = hub.secrets.decrypt_json(world.channel.credentials_encrypted)["secret"]
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["event"] == "message.outbound"
    assert payload["message"]["id"] == sent["id"]
    assert payload["message"]["content"] == "Shall I book it?"
    assert payload["message"]["sender_type"] == "AGENT"

    *_, stored = await messages_in(hub, world.chat.id)
    assert stored.id == sent["id"]
    assert stored.sender_type == SenderType.AGENT
    assert len(await messages_in(hub, world.chat.id)) == 4
    assert await messages_in(hub, closed.id) == []
    assert len(receiver.requests("/cb")) == 1


async def test_handoff_needs_a_human_and_steps_the_agent_back(
    live: str, hub: Hub, world: World
) -> None:
    async with mcp_client(live, world.token) as client:
        handed = data(
            await client.call_tool(
                "handoff", {"chat_id": world.chat.id, "reason": "Wants a refund"}
            )
        )
        assert handed == {
            "chat_id": world.chat.id,
            "needs_human": True,
            "needs_human_reason": "agent_handoff",
            "handled_by": "waiting",
        }
        # The agent's link is paused: the chat is no longer the agent's to reach.
        assert data(await client.call_tool("list_chats", {}))["chats"] == []
        again = await client.call_tool("send_message", {"chat_id": world.chat.id, "text": "x"})
        assert error_text(again) == "Chat not found"
    async with hub.db.session(read_only=True) as session:
        chat = await session.get(Chat, world.chat.id)
        assert chat is not None
        assert chat.needs_human and chat.needs_human_reason == "agent_handoff"
        link = await session.scalar(
            select(ChatAgentLink).where(ChatAgentLink.chat_id == world.chat.id)
        )
        assert link is not None and not link.active


@pytest.mark.database_independent  # as the REST route's test (tests/test_typing.py)
async def test_set_typing_sends_the_chat_typing_callback(
    live: str, hub: Hub, world: World, receiver: FakePlatform
) -> None:
    async with mcp_client(live, world.token) as client:
        typing = data(await client.call_tool("set_typing", {"chat_id": world.chat.id}))
    assert typing["chat_id"] == world.chat.id
    assert typing["typing_seconds"] > 0
    [request] = await receiver.wait_for(1, path="/cb")
    assert request.json["event"] == "chat.typing"
    assert request.json["chat"]["id"] == world.chat.id
    assert request.headers["webhook-signature"].startswith("v1,")
