"""Channels, chats, messages and chat-agent links through the API."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select

from agenthub.hub import Hub
from agenthub.models import Channel, ChatAgentLink, Message, Role
from tests.conftest import Caller
from tests.factories import make_agent, make_channel, make_chat

pytestmark = pytest.mark.anyio

MASK = "********"
VALID_CREDENTIALS: dict[str, dict[str, str]] = {
    "whatsapp_twilio": {
        "account_sid": "AC123",
        "auth_token": "tw-token",
        "from_number": "+15550000000",
    },
    "telegram": {"bot_token": "123:abc", "secret_token": "tg_secret-1"},
    "whatsapp_cloud": {
        "access_token": "EAAB",
        "phone_number_id": "1234",
        "app_secret": "app-secret",
        "verify_token": "verify-me",
    },
    "whapi": {"token": "whapi-token", "webhook_secret": "whapi-secret"},
    "api": {"secret": "whsec_" + "A" * 43 + "="},
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def stored_credentials(hub: Hub, channel_id: str) -> dict[str, Any]:
    async with hub.db.transaction() as session:
        channel = await session.get(Channel, channel_id)
        assert channel is not None
        return hub.secrets.decrypt_json(channel.credentials_encrypted)


async def channel_count(client: httpx2.AsyncClient, admin: Caller) -> int:
    return len((await client.get("/channels", headers=admin.headers)).json())


# --- channels ----------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", sorted(VALID_CREDENTIALS))
async def test_create_channel_per_platform(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, platform: str
) -> None:
    credentials = VALID_CREDENTIALS[platform]
    response = await client.post(
        "/channels",
        json={"name": f"My {platform}", "platform": platform, "credentials": credentials},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    channel = response.json()
    assert channel["id"].startswith("chn_") and len(channel["id"]) == 14
    assert channel["platform"] == platform and channel["is_active"] is True
    assert channel["webhook_url"] == f"http://hub.test/webhooks/{platform}/{channel['id']}"
    # Write-only: the answer names the keys, never the values.
    assert channel["credentials"] == dict.fromkeys(credentials, MASK)
    for value in credentials.values():
        assert value not in response.text
    assert await stored_credentials(hub, channel["id"]) == credentials

    fetched = await client.get(f"/channels/{channel['id']}", headers=admin.headers)
    assert fetched.status_code == 200
    assert fetched.json()["credentials"] == dict.fromkeys(credentials, MASK)
    assert fetched.json()["webhook_url"] == channel["webhook_url"]


@pytest.mark.parametrize(
    ("platform", "missing"),
    [(p, field) for p, creds in sorted(VALID_CREDENTIALS.items()) if p != "api" for field in creds],
)
async def test_missing_credential_field_is_422(
    client: httpx2.AsyncClient, admin: Caller, platform: str, missing: str
) -> None:
    credentials = {k: v for k, v in VALID_CREDENTIALS[platform].items() if k != missing}
    response = await client.post(
        "/channels",
        json={"name": "x", "platform": platform, "credentials": credentials},
        headers=admin.headers,
    )
    assert response.status_code == 422, response.text
    assert missing in response.text
    assert await channel_count(client, admin) == 0


@pytest.mark.parametrize(
    ("platform", "credentials"),
    [
        ("telegram", {"bot_token": "1:a", "secret_token": "has spaces!"}),
        ("telegram", {"bot_token": "", "secret_token": "ok"}),
        ("whapi", {"token": "t", "webhook_secret": "s", "extra": "x"}),
        ("api", {"secret": "not-whsec"}),
        ("whatsapp_twilio", {}),
    ],
)
async def test_invalid_credentials_are_422(
    client: httpx2.AsyncClient, admin: Caller, platform: str, credentials: dict[str, str]
) -> None:
    response = await client.post(
        "/channels",
        json={"name": "x", "platform": platform, "credentials": credentials},
        headers=admin.headers,
    )
    assert response.status_code == 422, response.text
    assert await channel_count(client, admin) == 0


@pytest.mark.parametrize(
    ("platform", "field"),
    [
        ("whatsapp_twilio", "from_number"),
        ("telegram", "bot_token"),
        ("whatsapp_cloud", "app_secret"),
        ("whapi", "webhook_secret"),
        ("api", "secret"),
    ],
)
async def test_credential_errors_are_located_where_the_field_is_written(
    client: httpx2.AsyncClient, admin: Caller, platform: str, field: str
) -> None:
    credentials = VALID_CREDENTIALS[platform]
    body = {"name": "x", "platform": platform, "credentials": {**credentials, field: ""}}

    def locations(response: httpx2.Response) -> list[list[Any]]:
        assert response.status_code == 422, response.text
        return [error["loc"] for error in response.json()["detail"]]

    # Invalid on creation (and missing, but for `api`, whose secret is optional).
    assert locations(await client.post("/channels", json=body, headers=admin.headers)) == [
        ["body", "credentials", field]
    ]
    if platform != "api":
        without = {k: v for k, v in credentials.items() if k != field}
        missing = await client.post(
            "/channels", json={**body, "credentials": without}, headers=admin.headers
        )
        assert locations(missing) == [["body", "credentials", field]]
        assert missing.json()["detail"][0]["type"] == "missing"

    # Invalid once merged with the stored credentials, on PATCH: the same place.
    created = await client.post(
        "/channels", json={**body, "credentials": credentials}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    url = f"/channels/{created.json()['id']}"
    patched = await client.patch(url, json={"credentials": {field: ""}}, headers=admin.headers)
    assert locations(patched) == [["body", "credentials", field]]
    typo = await client.patch(url, json={"credentials": {"bogus": "x"}}, headers=admin.headers)
    assert locations(typo) == [["body", "credentials", "bogus"]]
    # Neither answer echoes a stored secret.
    for value in credentials.values():
        assert value not in patched.text + typo.text


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "x"}, ["body", "platform"]),
        ({"name": "x", "platform": "myspace"}, ["body", "platform"]),
        ({"name": "x", "platform": ["api"]}, ["body", "platform"]),
        (
            {"name": "x", "platform": "api", "config": {"api_base_url": "ftp:/"}},
            ["body", "config", "api_base_url"],
        ),
        ({"name": "x", "platform": "api", "config": ["a"]}, ["body", "config"]),
        (
            {"name": "", "platform": "telegram", "credentials": VALID_CREDENTIALS["telegram"]},
            ["body", "name"],
        ),
    ],
)
async def test_other_channel_errors_are_located_as_written(
    client: httpx2.AsyncClient, admin: Caller, body: dict[str, Any], loc: list[str]
) -> None:
    response = await client.post("/channels", json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [loc]


async def test_openapi_types_each_platforms_credentials(client: httpx2.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    create = document["paths"]["/channels"]["post"]["requestBody"]["content"]["application/json"]
    variants = schemas[create["schema"]["$ref"].rsplit("/", 1)[1]]
    assert variants["discriminator"]["propertyName"] == "platform"
    expected = {
        "whatsapp_twilio": ("TwilioCredentials", {"account_sid", "auth_token", "from_number"}),
        "telegram": ("TelegramCredentials", {"bot_token", "secret_token"}),
        "whatsapp_cloud": (
            "WhatsAppCloudCredentials",
            {"access_token", "phone_number_id", "app_secret", "verify_token"},
        ),
        "whapi": ("WhapiCredentials", {"token", "webhook_secret"}),
        "api": ("ApiCredentials", set()),
    }
    for platform, (model, required) in expected.items():
        variant = schemas[variants["discriminator"]["mapping"][platform].rsplit("/", 1)[1]]
        assert variant["properties"]["credentials"]["$ref"].endswith(f"/{model}")
        assert set(schemas[model].get("required", [])) == required, model
        assert all(p.get("description") for p in schemas[model]["properties"].values()), model
        assert variant["properties"]["config"]["$ref"].endswith("/ChannelConfig")
    assert {"api_base_url", "callback_url"} <= set(schemas["ChannelConfig"]["properties"])
    assert "default_agent_ids" in schemas["ChannelOut"]["required"]
    agent_fields = schemas["AgentCreate"]["properties"]
    assert all(agent_fields[name].get("description") for name in agent_fields), agent_fields


async def test_api_channel_secret_is_generated_and_shown_once(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller
) -> None:
    response = await client.post(
        "/channels",
        json={
            "name": "web chat",
            "platform": "api",
            "config": {"callback_url": "http://93.184.215.14/hub-events"},
        },
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    channel = response.json()
    secret = channel["credentials"]["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    assert channel["config"] == {"callback_url": "http://93.184.215.14/hub-events"}
    assert channel["webhook_url"] == f"http://hub.test/webhooks/api/{channel['id']}"
    assert await stored_credentials(hub, channel["id"]) == {"secret": secret}

    # Never again: not on GET, not in the listing, not after an update.
    one = await client.get(f"/channels/{channel['id']}", headers=admin.headers)
    assert one.json()["credentials"] == {"secret": MASK} and secret not in one.text
    listing = await client.get("/channels", headers=admin.headers)
    assert secret not in listing.text
    assert [c["credentials"] for c in listing.json()] == [{"secret": MASK}]
    renamed = await client.patch(
        f"/channels/{channel['id']}", json={"name": "renamed"}, headers=admin.headers
    )
    assert renamed.status_code == 200 and secret not in renamed.text

    # Every channel gets its own secret.
    again = await client.post(
        "/channels", json={"name": "web chat 2", "platform": "api"}, headers=admin.headers
    )
    assert again.json()["credentials"]["secret"] != secret

    # A given secret is kept and not echoed.
    given = VALID_CREDENTIALS["api"]["secret"]
    explicit = await client.post(
        "/channels",
        json={"name": "web chat 3", "platform": "api", "credentials": {"secret": given}},
        headers=admin.headers,
    )
    assert explicit.status_code == 201 and given not in explicit.text
    assert explicit.json()["credentials"] == {"secret": MASK}
    assert await stored_credentials(hub, explicit.json()["id"]) == {"secret": given}


async def test_patch_credentials_merges(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller
) -> None:
    created = await client.post(
        "/channels",
        json={"name": "bot", "platform": "telegram", "credentials": VALID_CREDENTIALS["telegram"]},
        headers=admin.headers,
    )
    channel_id = created.json()["id"]
    url = f"/channels/{channel_id}"

    patched = await client.patch(
        url, json={"credentials": {"bot_token": "999:new"}}, headers=admin.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["credentials"] == {"bot_token": MASK, "secret_token": MASK}
    assert "999:new" not in patched.text
    assert await stored_credentials(hub, channel_id) == {
        "bot_token": "999:new",
        "secret_token": VALID_CREDENTIALS["telegram"]["secret_token"],
    }

    # A merge that leaves the credentials invalid is refused and changes nothing.
    bad = await client.patch(
        url, json={"credentials": {"secret_token": "no spaces allowed"}}, headers=admin.headers
    )
    assert bad.status_code in (400, 422) and "detail" in bad.json()
    assert (await stored_credentials(hub, channel_id))["secret_token"] == "tg_secret-1"

    # Other fields: name, config (replaced as a whole), activation.
    other = await client.patch(
        url,
        json={
            "name": "Support bot",
            "config": {"api_base_url": "http://127.0.0.1:8081"},
            "is_active": False,
        },
        headers=admin.headers,
    )
    assert other.status_code == 200, other.text
    body = other.json()
    assert body["name"] == "Support bot" and body["is_active"] is False
    assert body["config"] == {"api_base_url": "http://127.0.0.1:8081"}
    assert (await client.get(url, headers=admin.headers)).json() == body


async def test_channel_access_for_members(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user
) -> None:
    granted = await make_channel(hub, name="granted")
    hidden = await make_channel(hub, name="hidden")
    member: Caller = await make_user(Role.MEMBER, channels=(granted.id,))

    listing = await client.get("/channels", headers=member.headers)
    assert [c["id"] for c in listing.json()] == [granted.id]
    assert (await client.get(f"/channels/{hidden.id}", headers=member.headers)).status_code == 404
    assert (
        await client.get(f"/channels/{hidden.id}/chats", headers=member.headers)
    ).status_code == 404
    # Members cannot create or change channels.
    assert (
        await client.post(
            "/channels", json={"name": "x", "platform": "api"}, headers=member.headers
        )
    ).status_code == 403
    assert (
        await client.patch(f"/channels/{granted.id}", json={"name": "x"}, headers=member.headers)
    ).status_code == 403

    # Granting and withdrawing access.
    other: Caller = await make_user(Role.MEMBER)
    assert (await client.get(f"/channels/{granted.id}", headers=other.headers)).status_code == 404
    grant = await client.post(f"/channels/{granted.id}/members/{other.id}", headers=admin.headers)
    assert grant.status_code == 204
    assert (await client.get(f"/channels/{granted.id}", headers=other.headers)).status_code == 200
    members = await client.get(f"/channels/{granted.id}/members", headers=admin.headers)
    assert {m["id"] for m in members.json()} == {member.id, other.id}
    revoke = await client.delete(
        f"/channels/{granted.id}/members/{other.id}", headers=admin.headers
    )
    assert revoke.status_code == 204
    assert (await client.get(f"/channels/{granted.id}", headers=other.headers)).status_code == 404


# --- chats -------------------------------------------------------------------------------------


async def test_chats_listing_order_and_filters(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user
) -> None:
    channel = await make_channel(hub)
    member: Caller = await make_user(Role.MEMBER, channels=(channel.id,))
    old = await make_chat(hub, channel, external_id="+15550000001", name="Ana Old", messages=1)
    middle = await make_chat(hub, channel, external_id="+15550000002", name="Bruno", messages=2)
    quiet = await make_chat(hub, channel, external_id="tg:424242", name=None, messages=0)
    url = f"/channels/{channel.id}/chats"

    async def ids(**params: Any) -> list[str]:
        response = await client.get(url, params=params, headers=admin.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total_count"] == len(page["chats"]) and page["has_more"] is False
        return [chat["id"] for chat in page["chats"]]

    # Newest activity first; a chat with no message yet comes last.
    assert await ids() == [middle.id, old.id, quiet.id]
    posted = await client.post(
        f"/chats/{old.id}/messages", json={"content": "following up"}, headers=admin.headers
    )
    assert posted.status_code == 201
    assert await ids() == [old.id, middle.id, quiet.id]
    listed = (await client.get(url, headers=admin.headers)).json()["chats"][0]
    assert listed["last_message"] == "following up" and listed["last_sender_type"] == "USER"
    assert listed["last_message_ts"] is not None

    # Assignment filters.
    assign = await client.patch(
        f"/chats/{middle.id}", json={"assigned_user_id": member.id}, headers=admin.headers
    )
    assert assign.status_code == 200, assign.text
    assert await ids(assigned="true") == [middle.id]
    assert await ids(assigned="false") == [old.id, quiet.id]
    assert await ids(assigned_user_id=member.id) == [middle.id]
    assert await ids(assigned_user_id=admin.id) == []

    # Search: name or contact id, case-insensitive, substring.
    assert await ids(q="ana") == [old.id]
    assert await ids(q="BRU") == [middle.id]
    assert await ids(q="4242") == [quiet.id]
    assert await ids(q="+1555") == [old.id, middle.id]
    assert await ids(q="nobody") == []
    assert await ids(q="bruno", assigned="false") == []


async def test_patch_chat_assignment(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user
) -> None:
    channel = await make_channel(hub)
    chat = await make_chat(hub, channel)
    with_access: Caller = await make_user(Role.MEMBER, channels=(channel.id,))
    without_access: Caller = await make_user(Role.MEMBER)
    inactive: Caller = await make_user(Role.MEMBER, active=False, channels=(channel.id,))
    url = f"/chats/{chat.id}"

    async def assign(user_id: str | None, caller: Caller = admin) -> httpx2.Response:
        return await client.patch(url, json={"assigned_user_id": user_id}, headers=caller.headers)

    refused = await assign(without_access.id)
    assert refused.status_code == 400 and "access" in refused.json()["detail"]
    assert (await assign(inactive.id)).status_code == 400
    assert (await assign("usr_nobody0000")).status_code == 400
    assert (await client.get(url, headers=admin.headers)).json()["assigned_user_id"] is None

    ok = await assign(with_access.id)
    assert ok.status_code == 200 and ok.json()["assigned_user_id"] == with_access.id
    # A member with access may reassign, e.g. to an admin (admins reach every channel).
    to_admin = await assign(admin.id, caller=with_access)
    assert to_admin.status_code == 200 and to_admin.json()["assigned_user_id"] == admin.id
    # A member without access does not even see the chat.
    assert (await assign(with_access.id, caller=without_access)).status_code == 404

    # Renaming leaves the assignment alone; null unassigns.
    renamed = await client.patch(url, json={"name": "Ana Souza"}, headers=admin.headers)
    assert renamed.json()["name"] == "Ana Souza" and renamed.json()["assigned_user_id"] == admin.id
    cleared = await assign(None)
    assert cleared.status_code == 200 and cleared.json()["assigned_user_id"] is None


async def test_messages_newest_first_with_before_paging(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller
) -> None:
    channel = await make_channel(hub)
    chat = await make_chat(hub, channel, messages=5)
    other = await make_chat(hub, channel, external_id="+15559999999", messages=1)
    url = f"/chats/{chat.id}/messages"

    everything = await client.get(url, headers=admin.headers)
    assert everything.status_code == 200
    all_messages = everything.json()["messages"]
    assert [m["content"] for m in all_messages] == [f"message {n}" for n in (4, 3, 2, 1, 0)]
    assert everything.json()["has_more"] is False
    assert all(m["chat_id"] == chat.id and m["sender_type"] == "CONTACT" for m in all_messages)

    seen: list[str] = []
    has_more_flags = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = (await client.get(url, params=params, headers=admin.headers)).json()
        seen += [m["id"] for m in page["messages"]]
        has_more_flags.append(page["has_more"])
        if not page["has_more"]:
            break
        params = {"limit": 2, "before": page["messages"][-1]["id"]}
    assert seen == [m["id"] for m in all_messages]
    assert has_more_flags == [True, True, False]

    # Exactly the rest: no further page announced.
    tail = await client.get(
        url, params={"limit": 4, "before": all_messages[0]["id"]}, headers=admin.headers
    )
    assert len(tail.json()["messages"]) == 4 and tail.json()["has_more"] is False
    oldest = await client.get(url, params={"before": all_messages[-1]["id"]}, headers=admin.headers)
    assert oldest.json() == {"messages": [], "has_more": False}

    # `before` must be a message of this chat.
    foreign = (await client.get(f"/chats/{other.id}/messages", headers=admin.headers)).json()
    response = await client.get(
        url, params={"before": foreign["messages"][0]["id"]}, headers=admin.headers
    )
    assert response.status_code == 400 and "detail" in response.json()


async def test_post_message_as_user_and_as_agent(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user
) -> None:
    channel = await make_channel(hub)
    linked, linked_token = await make_agent(hub, name="linked")
    _stranger, stranger_token = await make_agent(hub, name="stranger")
    chat = await make_chat(hub, channel, messages=1, agents=(linked,))
    member: Caller = await make_user(Role.MEMBER, channels=(channel.id,))
    outsider: Caller = await make_user(Role.MEMBER)
    url = f"/chats/{chat.id}/messages"

    by_admin = await client.post(
        url, json={"content": "Hello Ana", "meta_data": {"note": 1}}, headers=admin.headers
    )
    assert by_admin.status_code == 201, by_admin.text
    message = by_admin.json()
    assert message["id"].startswith("msg_") and message["chat_id"] == chat.id
    assert message["sender_type"] == "USER" and message["sender_id"] == admin.id
    assert message["delivery_status"] == "PENDING"
    assert message["content"] == "Hello Ana" and message["meta_data"] == {"note": 1}
    assert message["external_id"] is None

    by_member = await client.post(url, json={"content": "me too"}, headers=member.headers)
    assert by_member.status_code == 201 and by_member.json()["sender_type"] == "USER"
    assert by_member.json()["sender_id"] == member.id

    by_agent = await client.post(url, json={"content": "I am a bot"}, headers=bearer(linked_token))
    assert by_agent.status_code == 201, by_agent.text
    assert by_agent.json()["sender_type"] == "AGENT" and by_agent.json()["sender_id"] == linked.id
    assert by_agent.json()["delivery_status"] == "PENDING"

    # Callers who cannot reach the chat do not see it.
    assert (
        await client.post(url, json={"content": "x"}, headers=bearer(stranger_token))
    ).status_code == 404
    assert (
        await client.post(url, json={"content": "x"}, headers=outsider.headers)
    ).status_code == 404

    latest = (await client.get(url, headers=admin.headers)).json()["messages"]
    assert [m["content"] for m in latest[:3]] == ["I am a bot", "me too", "Hello Ana"]
    chat_now = (await client.get(f"/chats/{chat.id}", headers=admin.headers)).json()
    assert chat_now["last_message"] == "I am a bot" and chat_now["last_sender_type"] == "AGENT"

    # A paused agent loses the chat at once.
    paused = await client.patch(
        f"/chats/{chat.id}/agents/{linked.id}", json={"active": False}, headers=admin.headers
    )
    assert paused.status_code == 200
    assert (
        await client.post(url, json={"content": "x"}, headers=bearer(linked_token))
    ).status_code == 404


async def test_chat_agent_link_unlink_pause(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller
) -> None:
    channel = await make_channel(hub)
    chat = await make_chat(hub, channel)
    agent, _ = await make_agent(hub)
    url = f"/chats/{chat.id}/agents"

    assert (await client.get(url, headers=admin.headers)).json() == []
    linked = await client.post(url, json={"agent_id": agent.id}, headers=admin.headers)
    assert linked.status_code == 201, linked.text
    link = linked.json()
    assert link["id"].startswith("cag_")
    assert (link["chat_id"], link["agent_id"], link["active"]) == (chat.id, agent.id, True)

    duplicate = await client.post(url, json={"agent_id": agent.id}, headers=admin.headers)
    assert duplicate.status_code == 409 and "detail" in duplicate.json()
    unknown = await client.post(url, json={"agent_id": "agt_nobody0000"}, headers=admin.headers)
    assert unknown.status_code == 404

    paused = await client.patch(f"{url}/{agent.id}", json={"active": False}, headers=admin.headers)
    assert paused.status_code == 200 and paused.json()["active"] is False
    assert (await client.get(url, headers=admin.headers)).json()[0]["active"] is False
    resumed = await client.patch(f"{url}/{agent.id}", json={"active": True}, headers=admin.headers)
    assert resumed.status_code == 200 and resumed.json()["active"] is True

    assert (await client.delete(f"{url}/{agent.id}", headers=admin.headers)).status_code == 204
    assert (await client.get(url, headers=admin.headers)).json() == []
    assert (await client.delete(f"{url}/{agent.id}", headers=admin.headers)).status_code == 404
    assert (
        await client.patch(f"{url}/{agent.id}", json={"active": True}, headers=admin.headers)
    ).status_code == 404
    # Once unlinked it may be linked again.
    assert (
        await client.post(url, json={"agent_id": agent.id}, headers=admin.headers)
    ).status_code == 201


async def test_delete_chat_removes_its_messages(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user
) -> None:
    channel = await make_channel(hub)
    agent, _ = await make_agent(hub)
    doomed = await make_chat(hub, channel, messages=3, agents=(agent,))
    kept = await make_chat(hub, channel, external_id="+15551234567", messages=2, agents=(agent,))
    member: Caller = await make_user(Role.MEMBER, channels=(channel.id,))

    assert (await client.delete(f"/chats/{doomed.id}", headers=member.headers)).status_code == 403
    assert (await client.delete(f"/chats/{doomed.id}", headers=admin.headers)).status_code == 204
    assert (await client.get(f"/chats/{doomed.id}", headers=admin.headers)).status_code == 404
    assert (
        await client.get(f"/chats/{doomed.id}/messages", headers=admin.headers)
    ).status_code == 404
    assert (await client.delete(f"/chats/{doomed.id}", headers=admin.headers)).status_code == 404

    async with hub.db.transaction() as session:
        messages = await session.scalar(
            select(func.count()).select_from(Message).where(Message.chat_id == doomed.id)
        )
        links = await session.scalar(
            select(func.count())
            .select_from(ChatAgentLink)
            .where(ChatAgentLink.chat_id == doomed.id)
        )
        kept_messages = await session.scalar(
            select(func.count()).select_from(Message).where(Message.chat_id == kept.id)
        )
    assert (messages, links, kept_messages) == (0, 0, 2)
    page = (await client.get(f"/channels/{channel.id}/chats", headers=admin.headers)).json()
    assert [c["id"] for c in page["chats"]] == [kept.id] and page["total_count"] == 1
    # The agent itself is untouched.
    assert (await client.get(f"/auth/agents/{agent.id}", headers=admin.headers)).status_code == 200
