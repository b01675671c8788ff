"""Operator events on the WebSocket, end to end over a real uvicorn server: who gets
`note_created`, `chat_read` and the per-reader `unread_count` of `chat_updated`."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import Role
from tests.conftest import Caller
from tests.factories import make_agent
from tests.test_websocket import (
    contact_says,
    create_api_channel,
    dashboard,
    expect_refused,
    only_chat,
)

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs, pytest.mark.database_independent]

QUIET = 0.3


def events_of(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [frame for frame in frames if frame.get("type") == kind]


async def test_notes_reach_the_channels_readers_and_never_an_agent_socket(
    live: str, http: httpx2.AsyncClient, hub: Hub, make_user: Any, admin: Caller
) -> None:
    channel = await create_api_channel(http, admin)
    await contact_says(http, channel, "hello")
    chat = await only_chat(http, admin, channel)
    reader: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))
    outsider: Caller = await make_user(Role.MEMBER)
    _, agent_token = await make_agent(hub)
    await expect_refused(live, f"?token={agent_token}")  # an agent token never gets a stream

    async with dashboard(live, reader.token) as inside, dashboard(live, outsider.token) as out:
        noted = await http.post(
            f"/chats/{chat['id']}/notes", json={"content": "VIP"}, headers=admin.headers
        )
        assert noted.status_code == 201
        event = await inside.of_type("note_created", chat_id=chat["id"])
        assert event["note"]["content"] == "VIP" and event["channel_id"] == channel["id"]
        assert not events_of(await out.quiet_for(QUIET), "note_created")


async def test_chat_read_goes_to_the_readers_own_sockets_and_unread_counts_are_per_reader(
    live: str, http: httpx2.AsyncClient, make_user: Any, admin: Caller
) -> None:
    channel = await create_api_channel(http, admin)
    await contact_says(http, channel, "one")
    await contact_says(http, channel, "two")
    chat = await only_chat(http, admin, channel)
    reader: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))
    colleague: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))

    async with (
        dashboard(live, reader.token) as mine,
        dashboard(live, reader.token) as my_other_tab,
        dashboard(live, colleague.token) as theirs,
    ):
        read = await http.post(f"/chats/{chat['id']}/read", headers=reader.headers)
        assert read.json()["unread_count"] == 0
        for socket in (mine, my_other_tab):
            event = await socket.of_type("chat_read", chat_id=chat["id"])
            assert event["unread_count"] == 0
            assert "user_id" not in event and "_read_contact_count" not in event
        assert not events_of(await theirs.quiet_for(QUIET), "chat_read")

        # A chat_updated afterwards: each reader sees its own unread count.
        renamed = await http.patch(
            f"/chats/{chat['id']}", json={"name": "Ana"}, headers=admin.headers
        )
        assert renamed.status_code == 200
        for socket, unread in ((mine, 0), (theirs, 2)):
            update = await socket.of_type("chat_updated", chat_id=chat["id"])
            assert update["chat"]["unread_count"] == unread
            assert not any(key.startswith("_") for key in update)


async def test_takeover_and_handback_are_announced_as_chat_updated(
    live: str, http: httpx2.AsyncClient, admin: Caller
) -> None:
    channel = await create_api_channel(http, admin)
    await contact_says(http, channel, "hello")
    chat = await only_chat(http, admin, channel)
    async with dashboard(live, admin.token) as board:
        taken = await http.post(f"/chats/{chat['id']}/takeover", headers=admin.headers)
        assert taken.status_code == 200
        event = await board.of_type("chat_updated", chat_id=chat["id"])
        assert event["chat"]["assigned_user_id"] == admin.id
        back = await http.post(f"/chats/{chat['id']}/handback", headers=admin.headers)
        assert back.status_code == 200
        event = await board.of_type("chat_updated", chat_id=chat["id"])
        assert event["chat"]["assigned_user_id"] is None
