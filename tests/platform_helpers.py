"""Reading the hub back through its API, shared by the platform adapter tests.

Every read also asserts that the platform's secret (bot token, access token) never appears in
what dashboards get.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import httpx2

from tests.conftest import Caller
from tests.fake_platform import standard_webhook_headers


def assert_ack(answer: httpx2.Response) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True}


class HubReader:
    def __init__(self, secret: str) -> None:
        self.secret = secret

    async def chats_of(
        self, client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
    ) -> list[Any]:
        answer = await client.get(f"/channels/{channel['id']}/chats", headers=admin.headers)
        assert answer.status_code == 200, answer.text
        assert self.secret not in answer.text
        return list(answer.json()["chats"])

    async def messages_of(
        self, client: httpx2.AsyncClient, admin: Caller, chat_id: str
    ) -> list[Any]:
        """Oldest first."""
        answer = await client.get(f"/chats/{chat_id}/messages?limit=200", headers=admin.headers)
        assert answer.status_code == 200, answer.text
        assert self.secret not in answer.text  # never in meta_data, media URLs included
        return list(reversed(answer.json()["messages"]))

    async def only_message(
        self, client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
    ) -> Any:
        [chat] = await self.chats_of(client, admin, channel)
        [stored] = await self.messages_of(client, admin, chat["id"])
        return stored

    async def message(
        self, client: httpx2.AsyncClient, admin: Caller, chat_id: str, message_id: str
    ) -> Any:
        [found] = [
            m for m in await self.messages_of(client, admin, chat_id) if m["id"] == message_id
        ]
        return found


async def send_user_message(
    client: httpx2.AsyncClient, admin: Caller, chat_id: str, content: str = "Olá, Ana!", **meta: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"content": content}
    if meta:
        body["meta_data"] = meta
    answer = await client.post(f"/chats/{chat_id}/messages", json=body, headers=admin.headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def post_api_message(
    client: httpx2.AsyncClient, channel_id: str, channel_secret: str, inbound: dict[str, Any]
) -> None:
    """POST `inbound` to an `api` channel's webhook, signed with its secret; expect 200."""
    body = json.dumps(inbound)
    headers = standard_webhook_headers(channel_secret, body, f"msg_{uuid.uuid4().hex}")
    response = await client.post(
        f"/webhooks/api/{channel_id}",
        content=body.encode(),
        headers={"content-type": "application/json", **headers},
    )
    assert response.status_code == 200, response.text


async def post_api_message_and_wait_for_the_agent(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel_id: str,
    channel_secret: str,
    inbound: dict[str, Any],
    timeout: float = 15,
) -> list[dict[str, Any]]:
    """POST `inbound` to an `api` channel, signed with its secret, then poll until the chat
    holds an AGENT message; returns the chat's messages, newest first."""
    await post_api_message(client, channel_id, channel_secret, inbound)
    messages: list[dict[str, Any]] = []
    with anyio.fail_after(timeout):
        while not any(m["sender_type"] == "AGENT" for m in messages):
            await anyio.sleep(0.05)
            chats = (
                await client.get(f"/channels/{channel_id}/chats", headers=admin.headers)
            ).json()["chats"]
            if chats:
                messages = (
                    await client.get(f"/chats/{chats[0]['id']}/messages", headers=admin.headers)
                ).json()["messages"]
    return messages
