"""`telegram`: the secret-token header, every documented message type, dedupe on the update and
on (chat, message_id), the media proxy (`getFile` without leaking the bot token), sends through
a fake Bot API server on loopback, `register-webhook` (`setWebhook`) and send errors."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import Role
from tests.conftest import Caller
from tests.factories import make_agent
from tests.fake_platform import FakePlatform, Recorded, Reply, wait_until
from tests.platform_helpers import HubReader, assert_ack, send_user_message

# Parsing, signatures and platform calls: the storage path they share is tested on both
# databases elsewhere (test_intake, test_agent_delivery, test_platform_parsers_fuzz).
pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs, pytest.mark.database_independent]

PUBLIC_URL = "http://hub.test"
BOT_TOKEN = "7311234567:AAHk3vXJ9mQ2pL8nR4sT6uW0yZ1aB3cD5eF"
SECRET = "tg-s3cr3t_2fa9"
CHAT_ID = 123456789
METHOD_PATH = r"/bot(?P<token>[^/]+)/(?P<method>\w+)"
SEND_METHODS = (
    "sendMessage",
    "sendPhoto",
    "sendDocument",
    "sendVoice",
    "sendAudio",
    "sendVideo",
    "sendAnimation",
    "sendSticker",
    "sendVideoNote",
)
FILE_BYTES = b"\xff\xd8\xff\xe0 a tiny jpeg \x00\x01"

_hub = HubReader(secret=BOT_TOKEN)
chats_of = _hub.chats_of
messages_of = _hub.messages_of
only_message = _hub.only_message
message = _hub.message


def fake_bot_api() -> FakePlatform:
    """A Bot API server: methods at `/bot<token>/<method>` (the token is checked), files at
    `/file/bot<token>/<file_path>`."""
    fake = FakePlatform(
        default=Reply(404, json={"ok": False, "error_code": 404, "description": "Not Found"})
    )
    message_ids = itertools.count(1000)

    def method(request: Recorded, groups: dict[str, str]) -> Reply:
        if groups["token"] != BOT_TOKEN:
            return Reply(401, json={"ok": False, "error_code": 401, "description": "Unauthorized"})
        params = request.json
        name = groups["method"]
        if name in SEND_METHODS:
            result = {
                "message_id": next(message_ids),
                "date": 1700000000,
                "chat": {"id": params["chat_id"], "type": "private"},
            }
            return Reply(200, json={"ok": True, "result": result})
        if name == "getFile":
            if not str(params.get("file_id", "")).startswith("AgAC"):
                error = {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: invalid file_id",
                }
                return Reply(400, json=error)
            result = {
                "file_id": params["file_id"],
                "file_unique_id": "AQAD",
                "file_size": len(FILE_BYTES),
                "file_path": "photos/file_7.jpg",
            }
            return Reply(200, json={"ok": True, "result": result})
        if name == "setWebhook":
            return Reply(200, json={"ok": True, "result": True, "description": "Webhook was set"})
        return Reply(404, json={"ok": False, "error_code": 404, "description": "Not Found"})

    def file(request: Recorded, groups: dict[str, str]) -> Reply:
        if groups["token"] != BOT_TOKEN or groups["path"] != "photos/file_7.jpg":
            return Reply(404, body=b"not found")
        return Reply(200, body=FILE_BYTES, headers={"content-type": "application/octet-stream"})

    fake.route("POST", METHOD_PATH, method)
    fake.route("GET", r"/file/bot(?P<token>[^/]+)/(?P<path>.+)", file)
    return fake


@pytest.fixture
def bot_api() -> Iterator[FakePlatform]:
    with fake_bot_api() as fake:
        yield fake


@pytest.fixture
async def channel(
    client: httpx2.AsyncClient, admin: Caller, bot_api: FakePlatform
) -> dict[str, Any]:
    answer = await client.post(
        "/channels",
        json={
            "name": "Support bot",
            "platform": "telegram",
            "credentials": {"bot_token": BOT_TOKEN, "secret_token": SECRET},
            "config": {"api_base_url": bot_api.url},
        },
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert body["webhook_url"] == f"{PUBLIC_URL}/webhooks/telegram/{body['id']}"
    assert body["webhook_registered"] is False
    assert BOT_TOKEN not in answer.text and SECRET not in answer.text
    return body


# --- payloads (fields per the Bot API's Update and Message objects) ------------------------------

update_ids = itertools.count(100000001)
message_ids = itertools.count(42)

ANA = {
    "id": CHAT_ID,
    "is_bot": False,
    "first_name": "Ana",
    "last_name": "Lima",
    "language_code": "pt",
}
PRIVATE_CHAT = {"id": CHAT_ID, "first_name": "Ana", "last_name": "Lima", "type": "private"}


def update(
    message_id: int | None = None, chat: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """A `message` update; `fields` are the message's content fields."""
    message = {
        "message_id": message_id if message_id is not None else next(message_ids),
        "from": ANA,
        "chat": chat or PRIVATE_CHAT,
        "date": 1700000000,
        **fields,
    }
    return {"update_id": next(update_ids), "message": message}


def photo_sizes(prefix: str = "AgACAgQAAxkBAAIBc2") -> list[dict[str, Any]]:
    return [
        {
            "file_id": f"{prefix}small",
            "file_unique_id": "AQADs",
            "width": 90,
            "height": 67,
            "file_size": 1200,
        },
        {
            "file_id": f"{prefix}large",
            "file_unique_id": "AQADl",
            "width": 1280,
            "height": 960,
            "file_size": 98000,
        },
        {
            "file_id": f"{prefix}medium",
            "file_unique_id": "AQADm",
            "width": 320,
            "height": 240,
            "file_size": 12000,
        },
    ]


async def post_update(
    client: httpx2.AsyncClient,
    channel: dict[str, Any],
    payload: Any,
    *,
    secret: str | None = SECRET,
    content: bytes | None = None,
) -> httpx2.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    body = content if content is not None else json.dumps(payload).encode()
    return await client.post(f"/webhooks/telegram/{channel['id']}", content=body, headers=headers)


async def open_chat(client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]) -> str:
    assert_ack(await post_update(client, channel, update(text="Oi")))
    [chat] = await chats_of(client, admin, channel)
    return str(chat["id"])


async def wait_status(
    client: httpx2.AsyncClient, admin: Caller, chat_id: str, message_id: str, status: str
) -> Any:
    async def check() -> Any:
        found = await message(client, admin, chat_id, message_id)
        assert found["delivery_status"] == status, found
        return found

    return await wait_until(check, timeout=10)


def sends(fake: FakePlatform) -> list[Recorded]:
    return [
        r for r in fake.requests(METHOD_PATH, "POST") if r.path.rsplit("/", 1)[1] in SEND_METHODS
    ]


# --- inbound ------------------------------------------------------------------------------------


async def test_text_message_is_stored_once_even_when_posted_twice(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    payload = update(message_id=42, text="Oi")
    assert_ack(await post_update(client, channel, payload))
    assert_ack(await post_update(client, channel, payload))  # Telegram re-sends the same update
    # The same message in another update (a re-delivery with a new update_id) is still one.
    assert_ack(await post_update(client, channel, {**payload, "update_id": next(update_ids)}))
    [chat] = await chats_of(client, admin, channel)
    assert chat["external_id"] == str(CHAT_ID)
    assert chat["name"] == "Ana Lima"
    [stored] = await messages_of(client, admin, chat["id"])
    assert stored["content"] == "Oi"
    assert stored["sender_type"] == "CONTACT"
    assert stored["external_id"] == f"{CHAT_ID}:42"
    assert stored["meta_data"]["type"] == "text"
    assert stored["meta_data"]["update_id"] == payload["update_id"]


async def test_same_message_id_in_another_chat_is_another_message(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    other_chat = {"id": 555000111, "first_name": "Bia", "type": "private"}
    assert_ack(await post_update(client, channel, update(message_id=7, text="one")))
    assert_ack(
        await post_update(client, channel, update(message_id=7, chat=other_chat, text="two"))
    )
    chats = await chats_of(client, admin, channel)
    assert sorted(c["external_id"] for c in chats) == sorted([str(CHAT_ID), "555000111"])


async def test_group_chat_is_keyed_by_the_group(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    group = {"id": -1001234567890, "title": "Equipe", "type": "supergroup"}
    bia = {"id": 987654321, "is_bot": False, "first_name": "Bia", "username": "bia"}
    assert_ack(await post_update(client, channel, update(chat=group, text="from Ana")))
    bia_update = update(chat=group, text="from Bia")
    bia_update["message"]["from"] = bia
    assert_ack(await post_update(client, channel, bia_update))
    [chat] = await chats_of(client, admin, channel)
    assert (chat["external_id"], chat["name"]) == ("-1001234567890", "Equipe")
    first, second = await messages_of(client, admin, chat["id"])
    assert first["meta_data"]["sender"]["name"] == "Ana Lima"
    assert second["meta_data"]["sender"] == {
        "id": "987654321",
        "name": "Bia",
        "username": "bia",
        "is_bot": False,
    }


MEDIA_CASES = [
    pytest.param(
        {"photo": photo_sizes(), "caption": "my receipt"},
        "my receipt",
        {"kind": "photo", "file_id": "AgACAgQAAxkBAAIBc2large", "content_type": "image/jpeg"},
        id="photo-largest-size",
    ),
    pytest.param(
        {
            "voice": {
                "file_id": "AwACvoice1",
                "file_unique_id": "AgADv",
                "duration": 4,
                "mime_type": "audio/ogg",
                "file_size": 9000,
            }
        },
        "",
        {"kind": "voice", "file_id": "AwACvoice1", "content_type": "audio/ogg", "duration": 4},
        id="voice",
    ),
    pytest.param(
        {
            "audio": {
                "file_id": "CQACaudio1",
                "file_unique_id": "AgADa",
                "duration": 180,
                "mime_type": "audio/mpeg",
                "file_name": "song.mp3",
            }
        },
        "",
        {
            "kind": "audio",
            "file_id": "CQACaudio1",
            "content_type": "audio/mpeg",
            "file_name": "song.mp3",
        },
        id="audio",
    ),
    pytest.param(
        {
            "video": {
                "file_id": "BAACvideo1",
                "file_unique_id": "AgADd",
                "width": 640,
                "height": 360,
                "duration": 12,
                "mime_type": "video/mp4",
            },
            "caption": "look",
        },
        "look",
        {"kind": "video", "file_id": "BAACvideo1", "content_type": "video/mp4"},
        id="video",
    ),
    pytest.param(
        {
            "document": {
                "file_id": "BQACdoc1",
                "file_unique_id": "AgADo",
                "file_name": "invoice.pdf",
                "mime_type": "application/pdf",
                "file_size": 52000,
            },
            "caption": "invoice",
        },
        "invoice",
        {
            "kind": "document",
            "file_id": "BQACdoc1",
            "content_type": "application/pdf",
            "file_name": "invoice.pdf",
        },
        id="document",
    ),
    pytest.param(
        {"document": {"file_id": "BQACdoc2", "file_unique_id": "AgADp", "file_name": "notes.txt"}},
        "",
        {"kind": "document", "file_id": "BQACdoc2", "content_type": "text/plain"},
        id="document-without-mime-type",
    ),
    pytest.param(
        {
            "animation": {
                "file_id": "CgACanim",
                "file_unique_id": "AgADn",
                "width": 320,
                "height": 240,
                "duration": 2,
                "mime_type": "video/mp4",
            },
            "document": {"file_id": "CgACanim", "file_unique_id": "AgADn"},
        },
        "",
        {"kind": "animation", "file_id": "CgACanim", "content_type": "video/mp4"},
        id="animation",
    ),
    pytest.param(
        {
            "sticker": {
                "file_id": "CAACsticker",
                "file_unique_id": "AgADs",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
            }
        },
        "",
        {"kind": "sticker", "file_id": "CAACsticker", "content_type": "image/webp"},
        id="sticker",
    ),
    pytest.param(
        {
            "video_note": {
                "file_id": "DQACnote",
                "file_unique_id": "AgADq",
                "length": 240,
                "duration": 5,
            }
        },
        "",
        {"kind": "video_note", "file_id": "DQACnote", "content_type": "video/mp4"},
        id="video-note",
    ),
]


@pytest.mark.parametrize(("fields", "content", "media"), MEDIA_CASES)
async def test_media_messages_keep_the_file_id_behind_a_hub_url(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: dict[str, Any],
    fields: dict[str, Any],
    content: str,
    media: dict[str, Any],
) -> None:
    assert_ack(await post_update(client, channel, update(**fields)))
    stored = await only_message(client, admin, channel)
    assert stored["content"] == content
    assert stored["meta_data"]["type"] == media["kind"]
    [item] = stored["meta_data"]["media"]
    assert item == item | media
    assert item["url"] == f"{PUBLIC_URL}/channels/{channel['id']}/media/{media['file_id']}"
    assert "api.telegram.org" not in json.dumps(stored)


async def test_location_venue_and_contact_messages(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    location = {"latitude": -23.55052, "longitude": -46.633308, "horizontal_accuracy": 12.5}
    venue = {
        "location": {"latitude": 38.7223, "longitude": -9.1393},
        "title": "Praça do Comércio",
        "address": "Lisboa",
    }
    contact = {"phone_number": "+5511999990000", "first_name": "Bia", "user_id": 987654321}
    for fields in (
        {"location": location},
        {"venue": venue, "location": venue["location"]},
        {"contact": contact},
    ):
        assert_ack(await post_update(client, channel, update(**fields)))
    [chat] = await chats_of(client, admin, channel)
    first, second, third = await messages_of(client, admin, chat["id"])
    assert first["content"] == ""
    assert first["meta_data"]["type"] == "location"
    assert first["meta_data"]["location"] == location
    assert second["meta_data"]["type"] == "venue"
    assert second["meta_data"]["location"] == {
        "latitude": 38.7223,
        "longitude": -9.1393,
        "venue": True,
        "name": "Praça do Comércio",
        "address": "Lisboa",
    }
    assert third["meta_data"]["type"] == "contact"
    assert third["meta_data"]["contact"] == contact


def _edited() -> dict[str, Any]:
    payload = update(text="edited")
    return {
        "update_id": payload["update_id"],
        "edited_message": {**payload["message"], "edit_date": 1700000100},
    }


IGNORED = [
    pytest.param(_edited(), id="edited_message"),
    pytest.param(
        {
            "update_id": 1,
            "channel_post": {
                "message_id": 5,
                "chat": {"id": -100777, "type": "channel", "title": "News"},
                "date": 1,
                "text": "post",
            },
        },
        id="channel_post",
    ),
    pytest.param(
        {
            "update_id": 2,
            "callback_query": {"id": "4382", "from": ANA, "data": "yes", "chat_instance": "-1"},
        },
        id="callback_query",
    ),
    pytest.param(
        {
            "update_id": 3,
            "my_chat_member": {
                "chat": PRIVATE_CHAT,
                "from": ANA,
                "date": 1,
                "old_chat_member": {},
                "new_chat_member": {},
            },
        },
        id="my_chat_member",
    ),
    pytest.param(
        {"update_id": 4, "message_reaction": {"chat": PRIVATE_CHAT, "message_id": 1}}, id="reaction"
    ),
    pytest.param(update(new_chat_members=[ANA]), id="service-message"),
    pytest.param(update(poll={"id": "1", "question": "?", "options": []}), id="poll"),
    pytest.param(update(dice={"emoji": "🎲", "value": 3}), id="dice"),
    pytest.param(update(text=""), id="empty-text"),
    pytest.param(
        {"update_id": 5, "message": {"message_id": 9, "date": 1, "text": "no chat"}}, id="no-chat"
    ),
    pytest.param(
        {"update_id": 6, "message": {"chat": PRIVATE_CHAT, "date": 1, "text": "no id"}},
        id="no-message-id",
    ),
    pytest.param(update(photo=[{"width": 1}]), id="photo-without-file-id"),
    pytest.param({"update_id": 7}, id="empty-update"),
    pytest.param([], id="json-array"),
    pytest.param("text", id="json-string"),
    pytest.param({"message": "not an object"}, id="message-not-an-object"),
]


@pytest.mark.parametrize("payload", IGNORED)
async def test_unhandled_updates_are_acknowledged_and_ignored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], payload: Any
) -> None:
    assert_ack(await post_update(client, channel, payload))
    assert await chats_of(client, admin, channel) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"\xff\xfe garbage", b'{"update_id": 1, "message": {', b"[" * 5000],
)
async def test_undecodable_bodies_are_acknowledged(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], content: bytes
) -> None:
    assert_ack(await post_update(client, channel, None, content=content))
    assert await chats_of(client, admin, channel) == []


@pytest.mark.parametrize(
    "secret",
    [None, "", "wrong-secret", SECRET.upper(), SECRET + "x", BOT_TOKEN, "tg-sécret"],
    ids=["missing", "empty", "wrong", "case", "longer", "bot-token", "non-ascii"],
)
async def test_bad_or_missing_secret_is_403_and_nothing_stored(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], secret: str | None
) -> None:
    payload = update(text="let me in")
    if secret is not None and not secret.isascii():
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret.encode("latin-1")}
        answer = await client.post(
            f"/webhooks/telegram/{channel['id']}", content=json.dumps(payload), headers=headers
        )
    else:
        answer = await post_update(client, channel, payload, secret=secret)
    assert answer.status_code == 403, answer.text
    assert "detail" in answer.json()
    assert await chats_of(client, admin, channel) == []


async def test_other_channels_secret_is_refused(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], bot_api: FakePlatform
) -> None:
    other = await client.post(
        "/channels",
        json={
            "name": "Other bot",
            "platform": "telegram",
            "credentials": {"bot_token": "1:other", "secret_token": "other-secret"},
        },
        headers=admin.headers,
    )
    assert other.status_code == 201
    answer = await post_update(client, channel, update(text="hi"), secret="other-secret")
    assert answer.status_code == 403
    assert await chats_of(client, admin, channel) == []


async def test_inactive_or_unknown_channel_is_404(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    answer = await client.post("/webhooks/telegram/chn_missing000", json=update(text="x"))
    assert answer.status_code == 404
    patch = await client.patch(
        f"/channels/{channel['id']}", json={"is_active": False}, headers=admin.headers
    )
    assert patch.status_code == 200
    assert (await post_update(client, channel, update(text="x"))).status_code == 404
    assert await chats_of(client, admin, channel) == []


# --- media proxy ----------------------------------------------------------------------------------


async def test_media_proxy_resolves_the_file_through_get_file(
    client: httpx2.AsyncClient,
    admin: Caller,
    make_user: Any,
    channel: dict[str, Any],
    bot_api: FakePlatform,
) -> None:
    assert_ack(await post_update(client, channel, update(photo=photo_sizes("AgACx"))))
    stored = await only_message(client, admin, channel)
    [item] = stored["meta_data"]["media"]
    path = item["url"].removeprefix(PUBLIC_URL)

    answer = await client.get(path, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.content == FILE_BYTES
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert BOT_TOKEN not in str(answer.headers)
    [get_file] = bot_api.requests(r"/bot[^/]+/getFile")
    assert get_file.path == f"/bot{BOT_TOKEN}/getFile"
    assert get_file.json == {"file_id": "AgACxlarge"}
    [download] = bot_api.requests(r"/file/.*")
    assert download.path == f"/file/bot{BOT_TOKEN}/photos/file_7.jpg"

    # A member granted the channel may fetch it; others and anonymous callers may not.
    granted: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))
    assert (await client.get(path, headers=granted.headers)).content == FILE_BYTES
    stranger: Caller = await make_user(Role.MEMBER)
    assert (await client.get(path, headers=stranger.headers)).status_code == 404
    assert (await client.get(path)).status_code == 401


async def test_media_proxy_unknown_file_is_404_and_platform_down_is_502(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], bot_api: FakePlatform
) -> None:
    answer = await client.get(f"/channels/{channel['id']}/media/BQACnope", headers=admin.headers)
    assert answer.status_code == 404, answer.text
    assert BOT_TOKEN not in answer.text
    bot_api.script(Reply(502, body=b"Bad Gateway"), path=r"/bot[^/]+/getFile")
    answer = await client.get(f"/channels/{channel['id']}/media/AgACx", headers=admin.headers)
    assert answer.status_code == 502, answer.text
    assert BOT_TOKEN not in answer.text and "detail" in answer.json()


# --- outbound -----------------------------------------------------------------------------------


async def test_user_message_is_sent_with_send_message(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], bot_api: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    sent = await send_user_message(client, admin, chat_id, "Olá! Como posso ajudar?")
    assert sent["delivery_status"] == "PENDING"
    [request] = await bot_api.wait_for(1, path=r"/bot[^/]+/sendMessage")
    assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
    assert request.headers["content-type"].startswith("application/json")
    assert request.json == {"chat_id": CHAT_ID, "text": "Olá! Como posso ajudar?"}
    stored = await wait_status(client, admin, chat_id, sent["id"], "SENT")
    assert stored["external_id"] == f"{CHAT_ID}:1000"
    await asyncio.sleep(0.3)
    assert len(sends(bot_api)) == 1  # sent once


async def test_long_text_is_split_at_telegrams_limit(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], bot_api: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    content = ("word " * 1000).strip()  # 4999 characters
    sent = await send_user_message(client, admin, chat_id, content)
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    pieces = [r.json["text"] for r in sends(bot_api)]
    assert len(pieces) == 2 and all(len(p) <= 4096 for p in pieces)
    assert " ".join(pieces) == content


async def test_media_is_sent_with_the_matching_method(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], bot_api: FakePlatform
) -> None:
    chat_id = await open_chat(client, admin, channel)
    one = [{"url": "https://files.example.com/a.jpg", "content_type": "image/jpeg"}]
    sent = await send_user_message(client, admin, chat_id, "your receipt", media=one)
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    [photo] = sends(bot_api)
    assert photo.path == f"/bot{BOT_TOKEN}/sendPhoto"
    assert photo.json == {"chat_id": CHAT_ID, "photo": one[0]["url"], "caption": "your receipt"}

    bot_api.clear()
    several = [
        {"url": "https://files.example.com/b.pdf", "content_type": "application/pdf"},
        {"url": "https://files.example.com/c.ogg", "content_type": "audio/ogg"},
        # What the contact sent: Telegram already has it, so its file_id is reused.
        {
            "url": f"{PUBLIC_URL}/channels/{channel['id']}/media/AgACx",
            "content_type": "image/jpeg",
            "file_id": "AgACx",
        },
    ]
    sent = await send_user_message(client, admin, chat_id, "three files", media=several)
    await wait_status(client, admin, chat_id, sent["id"], "SENT")
    requests = sends(bot_api)
    assert [r.path.rsplit("/", 1)[1] for r in requests] == [
        "sendMessage",
        "sendDocument",
        "sendVoice",
        "sendPhoto",
    ]
    assert requests[0].json == {"chat_id": CHAT_ID, "text": "three files"}
    assert requests[1].json == {"chat_id": CHAT_ID, "document": several[0]["url"]}
    assert requests[2].json == {"chat_id": CHAT_ID, "voice": several[1]["url"]}
    assert requests[3].json == {"chat_id": CHAT_ID, "photo": "AgACx"}


async def test_agent_reply_reaches_the_bot_api(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, bot_api: FakePlatform
) -> None:
    with FakePlatform(default=Reply(200, json={"reply": "pong: Oi"})) as agent_server:
        agent, _ = await make_agent(
            hub, webhook_url=agent_server.url + "/", buffer_time_seconds=0.1
        )
        answer = await client.post(
            "/channels",
            json={
                "name": "bot",
                "platform": "telegram",
                "credentials": {"bot_token": BOT_TOKEN, "secret_token": SECRET},
                "config": {"api_base_url": bot_api.url},
            },
            headers=admin.headers,
        )
        channel = answer.json()
        assert_ack(await post_update(client, channel, update(message_id=77, text="Oi")))
        [delivery] = await agent_server.wait_for(1)
        assert delivery.json["chat"]["platform"] == "telegram"
        assert delivery.json["chat"]["external_id"] == str(CHAT_ID)
        assert delivery.json["messages"][-1]["content"] == "Oi"
        [request] = await bot_api.wait_for(1, path=r"/bot[^/]+/sendMessage")
    assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
    assert request.json == {"chat_id": CHAT_ID, "text": "pong: Oi"}
    [chat] = await chats_of(client, admin, channel)
    _, reply = await messages_of(client, admin, chat["id"])
    assert (reply["sender_type"], reply["sender_id"]) == ("AGENT", agent.id)
    await wait_status(client, admin, chat["id"], reply["id"], "SENT")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            403,
            {
                "ok": False,
                "error_code": 403,
                "description": "Forbidden: bot was blocked by the user",
            },
        ),
        (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}),
    ],
)
async def test_permanent_send_error_fails_with_telegrams_code_and_text(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: dict[str, Any],
    bot_api: FakePlatform,
    status: int,
    body: dict[str, Any],
) -> None:
    chat_id = await open_chat(client, admin, channel)
    bot_api.script(Reply(status, json=body), path=r"/bot[^/]+/sendMessage")
    sent = await send_user_message(client, admin, chat_id, "doomed")
    stored = await wait_status(client, admin, chat_id, sent["id"], "FAILED")
    assert stored["meta_data"]["error"]["code"] == status
    assert stored["meta_data"]["error"]["detail"] == body["description"]
    await asyncio.sleep(0.4)
    assert len(sends(bot_api)) == 1  # not retried


@pytest.mark.parametrize(
    "reply",
    [
        Reply(
            429,
            json={
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1},
            },
        ),
        Reply(502, body=b"<html>Bad Gateway</html>"),
        Reply(500, json={"ok": False, "error_code": 500, "description": "Internal Server Error"}),
    ],
    ids=["429", "502-html", "500"],
)
async def test_transient_send_errors_are_retried(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: dict[str, Any],
    bot_api: FakePlatform,
    reply: Reply,
) -> None:
    chat_id = await open_chat(client, admin, channel)
    bot_api.script(reply, path=r"/bot[^/]+/sendMessage")
    sent = await send_user_message(client, admin, chat_id, "retry me")
    stored = await wait_status(client, admin, chat_id, sent["id"], "SENT")
    first, second = sends(bot_api)
    assert first.json == second.json == {"chat_id": CHAT_ID, "text": "retry me"}
    assert "error" not in stored["meta_data"]


async def test_unreachable_bot_api_is_retried_and_the_token_never_shows(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], bot_api: FakePlatform
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    chat_id = await open_chat(client, admin, channel)
    patch = {"config": {"api_base_url": dead_url}}
    assert (
        await client.patch(f"/channels/{channel['id']}", json=patch, headers=admin.headers)
    ).status_code == 200
    sent = await send_user_message(client, admin, chat_id)
    await asyncio.sleep(0.3)
    pending = await message(client, admin, chat_id, sent["id"])
    assert pending["delivery_status"] == "PENDING"
    patch = {"config": {"api_base_url": bot_api.url}}
    assert (
        await client.patch(f"/channels/{channel['id']}", json=patch, headers=admin.headers)
    ).status_code == 200
    await wait_status(client, admin, chat_id, sent["id"], "SENT")


# --- register-webhook ---------------------------------------------------------------------------


async def test_register_webhook_calls_set_webhook_and_shows_it(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], bot_api: FakePlatform
) -> None:
    url = f"/channels/{channel['id']}"
    before = (await client.get(url, headers=admin.headers)).json()
    assert before["webhook_registered"] is False
    assert any("register-webhook" in step for step in before["setup"])

    answer = await client.post(f"{url}/register-webhook", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["webhook_registered"] is True
    assert answer.json()["webhook_registered_at"] is not None
    assert BOT_TOKEN not in answer.text and SECRET not in answer.text
    [request] = bot_api.requests(r"/bot[^/]+/setWebhook")
    assert request.path == f"/bot{BOT_TOKEN}/setWebhook"
    assert request.json == {
        "url": f"{PUBLIC_URL}/webhooks/telegram/{channel['id']}",
        "secret_token": SECRET,
        "allowed_updates": ["message", "callback_query", "message_reaction"],
    }
    shown = (await client.get(url, headers=admin.headers)).json()
    assert shown["webhook_registered"] is True
    assert shown["webhook_url"] == request.json["url"]
    assert shown == answer.json()

    # Reconfiguring keeps the registration; new credentials make it stale.
    patched = await client.patch(
        url, json={"config": {"api_base_url": bot_api.url, "note": "x"}}, headers=admin.headers
    )
    assert patched.json()["webhook_registered"] is True
    rotated = await client.patch(
        url, json={"credentials": {"secret_token": "new-secret"}}, headers=admin.headers
    )
    assert rotated.status_code == 200
    assert rotated.json()["webhook_registered"] is False
    again = await client.post(f"{url}/register-webhook", headers=admin.headers)
    assert again.json()["webhook_registered"] is True
    assert bot_api.requests(r"/bot[^/]+/setWebhook")[-1].json["secret_token"] == "new-secret"


async def test_register_webhook_refused_or_unreachable(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], bot_api: FakePlatform
) -> None:
    url = f"/channels/{channel['id']}"
    refusal = {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: bad webhook: HTTPS url must be provided for webhook",
    }
    bot_api.script(Reply(400, json=refusal), path=r"/bot[^/]+/setWebhook")
    answer = await client.post(f"{url}/register-webhook", headers=admin.headers)
    assert answer.status_code == 400
    assert "HTTPS url must be provided" in answer.json()["detail"]
    assert (await client.get(url, headers=admin.headers)).json()["webhook_registered"] is False

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    await client.patch(url, json={"config": {"api_base_url": dead_url}}, headers=admin.headers)
    answer = await client.post(f"{url}/register-webhook", headers=admin.headers)
    assert answer.status_code == 502
    assert BOT_TOKEN not in answer.text


async def test_register_webhook_is_for_admins_and_telegram_only(
    client: httpx2.AsyncClient, admin: Caller, make_user: Any, channel: dict[str, Any]
) -> None:
    member: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))
    path = f"/channels/{channel['id']}/register-webhook"
    assert (await client.post(path, headers=member.headers)).status_code == 403
    assert (await client.post(path)).status_code == 401
    assert (
        await client.post("/channels/chn_missing000/register-webhook", headers=admin.headers)
    ).status_code == 404
    web = await client.post(
        "/channels", json={"name": "web", "platform": "api"}, headers=admin.headers
    )
    answer = await client.post(
        f"/channels/{web.json()['id']}/register-webhook", headers=admin.headers
    )
    assert answer.status_code == 400
    assert "webhook_url" in answer.json()["detail"]
    assert web.json()["webhook_registered"] is None


def test_reference_update_example_parses() -> None:
    """The reference's example text update (B.2), through the adapter alone."""
    from agenthub.platforms.base import WebhookRequest
    from agenthub.platforms.telegram import TelegramAdapter

    body = (
        b'{"update_id":100000001,"message":{"message_id":42,"from":{"id":123456789,"is_bot":false,'
        b'"first_name":"Ana","language_code":"pt"},"chat":{"id":123456789,"first_name":"Ana",'
        b'"type":"private"},"date":1700000000,"text":"Oi"}}'
    )
    request = WebhookRequest(
        "POST", f"{PUBLIC_URL}/webhooks/telegram/chn_x", {SECRET_HEADER: SECRET}, {}, body
    )
    adapter = TelegramAdapter()
    assert adapter.verify(request, {"secret_token": SECRET})
    assert not adapter.verify(request, {"secret_token": SECRET + "!"})
    [parsed] = adapter.parse(request).messages
    assert (parsed.external_id, parsed.contact_id, parsed.contact_name, parsed.content) == (
        "123456789:42",
        "123456789",
        "Ana",
        "Oi",
    )
    assert copy.deepcopy(parsed.meta_data) == {
        "type": "text",
        "update_id": 100000001,
        "message_id": 42,
        "chat_type": "private",
    }


SECRET_HEADER = "x-telegram-bot-api-secret-token"
