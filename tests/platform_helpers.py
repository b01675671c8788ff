"""Reading the hub back through its API, shared by the platform adapter tests.

Every read also asserts that the platform's secret (bot token, access token) never appears in
what dashboards get.
"""

from __future__ import annotations

from typing import Any

import httpx2

from tests.conftest import Caller


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
