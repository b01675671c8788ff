"""What contacts send back to rich messages: choices (Cloud button/list replies and template
quick replies, Telegram `callback_query`, WHAPI replies, Twilio `ButtonPayload`) become CONTACT
messages with `meta_data.reply_to = {id, message_id}`; reactions (Cloud, Telegram, WHAPI)
update the target's `meta_data.reactions` and raise `message_updated`; status callbacks carry
`error.code` `window_closed` or `platform_error`.

The signed bodies of the reference vectors are posted byte for byte, with their signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from sqlalchemy import select

from agenthub.chats.service import add_message
from agenthub.hub import Hub
from agenthub.ids import new_id
from agenthub.models import Channel, Chat, DeliveryStatus, Message, SenderType
from agenthub.platforms import get_adapter
from agenthub.platforms.base import WebhookRequest
from agenthub.settings import Settings
from tests.fake_platform import FakePlatform, Recorded, Reply, twilio_sign

pytestmark = [pytest.mark.anyio, pytest.mark.fast_jobs]
# Parsing and platform calls only: the storage they share is tested on both databases by the
# tests left unmarked here.
parsing_only = pytest.mark.database_independent

PUBLIC_URL = "https://hub.example.com"  # the Twilio vector is signed for this URL

CLOUD_SECRET = "app_secret_123"
CLOUD_CREDENTIALS = {
    "access_token": "EAAG-test-token",
    "phone_number_id": "106540352242922",
    "app_secret": CLOUD_SECRET,
    "verify_token": "v",
}
CLOUD_CONTACT = "16505551234"
TELEGRAM_CREDENTIALS = {
    "bot_token": "7311234567:AAHk3vXJ9mQ2pL8nR4sT6",
    "secret_token": "tg-s3cr3t",
}
WHAPI_CREDENTIALS = {"token": "whapi-T0k3n", "webhook_secret": "wh-s3cr3t"}
TWILIO_CREDENTIALS = {
    "account_sid": "AC00000000000000000000000000000000",
    "auth_token": "12345",
    "from_number": "whatsapp:+14155550199",
}

# --- the reference vectors --------------------------------------------------------------------

CHOICE_WAMID = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBJBM0Y4RUU0RUNFQkFDMjYzQUMA"
VECTOR_1 = (
    b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":'
    b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881",'
    b'"phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Pablo Morales"},'
    b'"wa_id":"16505551234"}],"messages":[{"context":{"from":"15550783881","id":'
    b'"wamid.HBgLMTY0NjcwNDM1OTUVAgARGBJBM0Y4RUU0RUNFQkFDMjYzQUMA"},"from":"16505551234","id":'
    b'"wamid.HBgLMTY0NjcwNDM1OTUVAgASGBQzQThBREYwNzc2RDc2QjA1QTIwMgA=","timestamp":"1714510003",'
    b'"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":'
    b'"change-button","title":"Change"}}}]},"field":"messages"}]}]}'
)
VECTOR_1_SIGNATURE = "sha256=2da04964e00d429c59d61ec953f33223aebc35def60c88242ef15e3590f0373f"
VECTOR_2 = (
    b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":'
    b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881",'
    b'"phone_number_id":"106540352242922"},"statuses":[{"id":"wamid.OUT1","status":"failed",'
    b'"timestamp":"1751142888","recipient_id":"16505551234","errors":[{"code":131047,"title":'
    b'"Re-engagement message","message":"Re-engagement message","error_data":{"details":'
    b'"Message failed to send because more than 24 hours have passed since the customer last '
    b'replied to this number."}}]}]},"field":"messages"}]}]}'
)
VECTOR_2_SIGNATURE = "sha256=790386975da261fee635e359d3efc0b24a1b23971dfb1423a91a58fdc49bf3d1"
VECTOR_3 = {
    "AccountSid": "AC00000000000000000000000000000000",
    "ApiVersion": "2010-04-01",
    "Body": "Confirm",
    "ButtonPayload": "confirm",
    "ButtonText": "Confirm",
    "From": "whatsapp:+14155550100",
    "MessageSid": "SM11111111111111111111111111111111",
    "MessageType": "button",
    "NumMedia": "0",
    "OriginalRepliedMessageSid": "SM22222222222222222222222222222222",
    "ProfileName": "Ana",
    "SmsStatus": "received",
    "To": "whatsapp:+14155550199",
    "WaId": "14155550100",
}
VECTOR_3_SIGNATURE = "vz95//YlgxiEU1f0NF4pYO/Ana0="
VECTOR_4 = (
    b'{"update_id":100000002,"callback_query":{"id":"4382bfdwdsb323b2d9","from":{"id":123456789,'
    b'"is_bot":false,"first_name":"Ana"},"message":{"message_id":43,"from":{"id":987654321,'
    b'"is_bot":true,"first_name":"HubBot","username":"hub_bot"},"chat":{"id":123456789,'
    b'"first_name":"Ana","type":"private"},"date":1700000100,"text":"Confirm your booking?",'
    b'"reply_markup":{"inline_keyboard":[[{"text":"Yes","callback_data":"yes"},{"text":"No",'
    b'"callback_data":"no"}]]}},"chat_instance":"-1234567890123456789","data":"yes"}}'
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_url": PUBLIC_URL})


# --- the world --------------------------------------------------------------------------------


async def seed(
    hub: Hub,
    platform: str,
    credentials: dict[str, Any],
    contact: str,
    ours: str | None = None,
    *,
    channel_id: str | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[str, str, str | None]:
    """A channel, a chat with `contact` and (with `ours`) a message we sent with that platform
    id: (channel id, chat id, our message's hub id)."""
    async with hub.db.transaction() as session:
        channel = Channel(
            id=channel_id or new_id("chn"),
            name=platform,
            platform=platform,
            credentials_encrypted=hub.secrets.encrypt_json(credentials),
            config=config or {},
        )
        session.add(channel)
        await session.flush()
        chat = Chat(channel_id=channel.id, external_id=contact, name="Ana", message_seq=0)
        session.add(chat)
        await session.flush()
        sent = None
        if ours is not None:
            sent = await add_message(
                session,
                chat,
                content="Pick one",
                sender_type=SenderType.USER,
                sender_id=None,
                external_id=ours,
                delivery_status=DeliveryStatus.SENT,
            )
            await session.flush()
        return channel.id, chat.id, sent.id if sent else None


async def messages_of(hub: Hub, chat_id: str) -> list[Message]:
    async with hub.db.session() as session:
        found = await session.scalars(
            select(Message).where(Message.chat_id == chat_id).order_by(Message.seq)
        )
        return list(found)


async def contact_messages(hub: Hub, chat_id: str) -> list[Message]:
    return [m for m in await messages_of(hub, chat_id) if m.sender_type == SenderType.CONTACT]


async def message_by_id(hub: Hub, message_id: str) -> Message:
    async with hub.db.session() as session:
        found = await session.get(Message, message_id)
        assert found is not None
        return found


async def events_of(hub: Hub, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with hub.events.subscribe(last_event_id=0) as stream:
        while True:
            try:
                event = await asyncio.wait_for(anext(stream), 0.05)
            except (TimeoutError, StopAsyncIteration):
                return found
            if event.get("type") == kind:
                found.append(event)


def error_of(message: Message) -> dict[str, Any]:
    """The send error kept on the message (its `error`, or `meta_data.error` before it)."""
    error = getattr(message, "error", None) or message.meta_data.get("error")
    assert isinstance(error, dict), message.meta_data
    return error


def hub_signature(body: bytes, secret: str = CLOUD_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_cloud(
    client: httpx2.AsyncClient, channel_id: str, body: bytes, signature: str | None = None
) -> None:
    answer = await client.post(
        f"/webhooks/whatsapp_cloud/{channel_id}",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature or hub_signature(body),
        },
    )
    assert answer.status_code == 200, answer.text


def cloud_messages(*messages: dict[str, Any]) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": CLOUD_CONTACT}],
        "messages": list(messages),
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(payload).encode()


def cloud_reaction(target: str, emoji: str | None, timestamp: int = 1749419544) -> dict[str, Any]:
    reaction: dict[str, Any] = {"message_id": target}
    if emoji is not None:
        reaction["emoji"] = emoji
    return {
        "from": CLOUD_CONTACT,
        # Meta's add and remove samples carry the same id: never a dedupe key for reactions.
        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
        "timestamp": str(timestamp),
        "type": "reaction",
        "reaction": reaction,
    }


async def post_telegram(client: httpx2.AsyncClient, channel_id: str, body: bytes) -> None:
    answer = await client.post(
        f"/webhooks/telegram/{channel_id}",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_CREDENTIALS["secret_token"],
        },
    )
    assert answer.status_code == 200, answer.text


async def post_whapi(client: httpx2.AsyncClient, channel_id: str, payload: Any) -> None:
    answer = await client.post(
        f"/webhooks/whapi/{channel_id}",
        content=json.dumps(payload).encode(),
        headers={
            "Content-Type": "application/json",
            "X-Webhook-Secret": WHAPI_CREDENTIALS["webhook_secret"],
        },
    )
    assert answer.status_code == 200, answer.text


def fake_bot_api(answer: Reply) -> FakePlatform:
    """A Bot API double answering `answerCallbackQuery` with `answer`."""
    fake = FakePlatform(default=Reply(404, json={"ok": False, "error_code": 404}))

    def method(request: Recorded, groups: dict[str, str]) -> Reply:
        return answer

    fake.route("POST", r"/bot(?P<token>[^/]+)/answerCallbackQuery", method)
    return fake


@pytest.fixture
def bot_api() -> Iterator[FakePlatform]:
    with fake_bot_api(Reply(200, json={"ok": True, "result": True})) as fake:
        yield fake


# --- choices ------------------------------------------------------------------------------------


async def test_cloud_button_reply_vector_maps_to_our_message(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    assert len(VECTOR_1) == 649 and hub_signature(VECTOR_1) == VECTOR_1_SIGNATURE
    channel_id, chat_id, ours = await seed(
        hub, "whatsapp_cloud", CLOUD_CREDENTIALS, CLOUD_CONTACT, CHOICE_WAMID
    )
    await post_cloud(client, channel_id, VECTOR_1, VECTOR_1_SIGNATURE)
    [choice] = await contact_messages(hub, chat_id)
    assert choice.content == "Change"
    assert choice.meta_data["reply_to"] == {"id": "change-button", "message_id": ours}
    assert choice.meta_data["interactive"]["id"] == "change-button"
    # The same bytes again: stored once.
    await post_cloud(client, channel_id, VECTOR_1, VECTOR_1_SIGNATURE)
    assert len(await contact_messages(hub, chat_id)) == 1


@parsing_only
async def test_cloud_list_reply_and_template_button_and_unknown_targets(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    channel_id, chat_id, ours = await seed(
        hub, "whatsapp_cloud", CLOUD_CREDENTIALS, CLOUD_CONTACT, "wamid.OURS"
    )
    body = cloud_messages(
        {
            "context": {"from": "15550783881", "id": "wamid.OURS"},
            "from": CLOUD_CONTACT,
            "id": "wamid.IN1",
            "timestamp": "1712595443",
            "type": "interactive",
            "interactive": {
                "type": "list_reply",
                "list_reply": {
                    "id": "priority_express",
                    "title": "Priority Mail Express",
                    "description": "Next Day to 2 Days",
                },
            },
        },
        {
            "context": {"from": "15550783881", "id": "wamid.NOT-OURS"},
            "from": CLOUD_CONTACT,
            "id": "wamid.IN2",
            "timestamp": "1712595444",
            "type": "button",
            "button": {"payload": "stop-promos", "text": "Stop promotions"},
        },
        {
            "from": CLOUD_CONTACT,
            "id": "wamid.IN3",
            "timestamp": "1712595445",
            "type": "text",
            "text": {"body": "no context, no reply_to"},
        },
    )
    await post_cloud(client, channel_id, body)
    listed, tapped, plain = await contact_messages(hub, chat_id)
    assert listed.content == "Priority Mail Express"
    assert listed.meta_data["reply_to"] == {"id": "priority_express", "message_id": ours}
    assert tapped.content == "Stop promotions"
    assert tapped.meta_data["reply_to"] == {"id": "stop-promos", "message_id": None}
    assert "reply_to" not in plain.meta_data


@parsing_only
async def test_telegram_tap_vector_is_a_contact_message_and_is_answered(
    client: httpx2.AsyncClient, hub: Hub, bot_api: FakePlatform
) -> None:
    channel_id, chat_id, ours = await seed(
        hub,
        "telegram",
        TELEGRAM_CREDENTIALS,
        "123456789",
        "123456789:43",  # how the hub keeps the Telegram messages it sent
        config={"api_base_url": bot_api.url},
    )
    await post_telegram(client, channel_id, VECTOR_4)
    [choice] = await contact_messages(hub, chat_id)
    assert choice.content == "Yes"
    assert choice.meta_data["reply_to"] == {"id": "yes", "message_id": ours}
    assert choice.sender_id == "123456789"
    [answer] = await bot_api.wait_for(path=r"/bot.+/answerCallbackQuery")
    assert answer.json == {"callback_query_id": "4382bfdwdsb323b2d9"}
    assert answer.path == f"/bot{TELEGRAM_CREDENTIALS['bot_token']}/answerCallbackQuery"


@parsing_only
async def test_telegram_tap_is_stored_even_when_the_answer_fails(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    refused = Reply(400, json={"ok": False, "error_code": 400, "description": "query is too old"})
    with fake_bot_api(refused) as bot_api:
        channel_id, chat_id, _ = await seed(
            hub,
            "telegram",
            TELEGRAM_CREDENTIALS,
            "123456789",
            config={"api_base_url": bot_api.url},
        )
        await post_telegram(client, channel_id, VECTOR_4)
        await bot_api.wait_for(path=r"/bot.+/answerCallbackQuery")
    [choice] = await contact_messages(hub, chat_id)
    assert choice.meta_data["reply_to"] == {"id": "yes", "message_id": None}


@parsing_only
async def test_whapi_replies_strip_the_prefix_and_link_the_quoted_message(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    contact = "14155550100@s.whatsapp.net"
    channel_id, chat_id, ours = await seed(hub, "whapi", WHAPI_CREDENTIALS, contact, "OURS-1")
    payload = {
        "messages": [
            {
                "id": "OqhcCzaDAQfAaQ-hY5kXgkAQMI",
                "from_me": False,
                "type": "reply",
                "chat_id": contact,
                "timestamp": 1788024125,
                "from": "14155550100",
                "reply": {
                    "type": "buttons_reply",
                    "buttons_reply": {"id": "ButtonsV3:yes", "title": "Confirm"},
                },
                "context": {"quoted_id": "OURS-1"},
            },
            {
                "id": "W2",
                "from_me": False,
                "type": "reply",
                "chat_id": contact,
                "from": "14155550100",
                "reply": {
                    "type": "list_reply",
                    "list_reply": {"id": "ListV3:r1", "title": "Cheeseburger"},
                },
            },
        ],
        "event": {"type": "messages", "event": "post"},
        "channel_id": "ABC-123",
    }
    await post_whapi(client, channel_id, payload)
    buttons, listed = await contact_messages(hub, chat_id)
    assert buttons.content == "Confirm"
    assert buttons.meta_data["reply_to"] == {"id": "yes", "message_id": ours}
    assert listed.content == "Cheeseburger"
    assert listed.meta_data["reply_to"] == {"id": "r1", "message_id": None}


@parsing_only
async def test_twilio_button_vector_is_accepted_and_maps_to_our_message(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    path = "/webhooks/whatsapp_twilio/ch_1"
    assert twilio_sign("12345", PUBLIC_URL + path, VECTOR_3) == VECTOR_3_SIGNATURE
    _, chat_id, ours = await seed(
        hub,
        "whatsapp_twilio",
        TWILIO_CREDENTIALS,
        "whatsapp:+14155550100",
        "SM22222222222222222222222222222222",
        channel_id="ch_1",
    )
    answer = await client.post(
        path,
        content=urlencode(VECTOR_3).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": VECTOR_3_SIGNATURE,
        },
    )
    assert answer.status_code == 200, answer.text
    [choice] = await contact_messages(hub, chat_id)
    assert choice.content == "Confirm"
    assert choice.meta_data["reply_to"] == {"id": "confirm", "message_id": ours}
    # A byte changed: the signature no longer matches.
    forged = await client.post(
        path,
        content=urlencode({**VECTOR_3, "ButtonPayload": "cancel"}).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": VECTOR_3_SIGNATURE,
        },
    )
    assert forged.status_code == 403


@parsing_only
def test_twilio_list_picker_choice_parses() -> None:
    form = {
        "MessageSid": "SM3",
        "From": "whatsapp:+14155550100",
        "Body": "",
        "ListId": "row-2",
        "ListTitle": "Tuesday",
        "OriginalRepliedMessageSid": "SM2",
    }
    [message] = get_adapter("whatsapp_twilio").parse(form_request(form)).messages
    assert message.content == "Tuesday"
    assert message.meta_data["reply_to"] == {"id": "row-2"}
    assert message.replied_to == "SM2"


# --- reactions ----------------------------------------------------------------------------------


async def test_cloud_reactions_add_replace_remove_and_ignore_unknown_targets(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    target = "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="
    channel_id, chat_id, ours = await seed(
        hub, "whatsapp_cloud", CLOUD_CREDENTIALS, CLOUD_CONTACT, target
    )
    assert ours is not None

    await post_cloud(client, channel_id, cloud_messages(cloud_reaction(target, "👍")))
    reacted = await message_by_id(hub, ours)
    assert reacted.meta_data["reactions"] == [
        {"emoji": "👍", "by": CLOUD_CONTACT, "at": "2025-06-08T21:52:24+00:00"}
    ]
    [event] = await events_of(hub, "message_updated")
    assert event["chat_id"] == chat_id and event["channel_id"] == channel_id
    assert event["message"]["id"] == ours
    assert event["message"]["meta_data"]["reactions"] == reacted.meta_data["reactions"]

    # A new reaction of the same contact replaces the old one.
    await post_cloud(client, channel_id, cloud_messages(cloud_reaction(target, "❤️", 1749419600)))
    replaced = (await message_by_id(hub, ours)).meta_data["reactions"]
    assert [(r["emoji"], r["by"]) for r in replaced] == [("❤️", CLOUD_CONTACT)]

    # No emoji (or ""), same platform id: removed, not taken for a duplicate.
    await post_cloud(client, channel_id, cloud_messages(cloud_reaction(target, None)))
    assert (await message_by_id(hub, ours)).meta_data["reactions"] == []
    await post_cloud(client, channel_id, cloud_messages(cloud_reaction(target, "🙏")))
    await post_cloud(client, channel_id, cloud_messages(cloud_reaction(target, "")))
    assert (await message_by_id(hub, ours)).meta_data["reactions"] == []
    assert len(await events_of(hub, "message_updated")) == 5

    # Unknown target: acknowledged, nothing stored, nothing raised.
    await post_cloud(client, channel_id, cloud_messages(cloud_reaction("wamid.UNKNOWN", "👍")))
    assert len(await events_of(hub, "message_updated")) == 5
    assert await contact_messages(hub, chat_id) == []


def telegram_reaction(
    message_id: int, old: list[str], new: list[str], user_id: int = 123456789
) -> bytes:
    update = {
        "update_id": 100000003,
        "message_reaction": {
            "chat": {"id": -1001234567890, "title": "Equipe", "type": "supergroup"},
            "message_id": message_id,
            "user": {"id": user_id, "is_bot": False, "first_name": "Ana"},
            "date": 1700000200,
            "old_reaction": [{"type": "emoji", "emoji": e} for e in old],
            "new_reaction": [{"type": "emoji", "emoji": e} for e in new],
        },
    }
    return json.dumps(update).encode()


@parsing_only
async def test_telegram_reactions_follow_each_user(client: httpx2.AsyncClient, hub: Hub) -> None:
    channel_id, chat_id, ours = await seed(
        hub, "telegram", TELEGRAM_CREDENTIALS, "-1001234567890", "-1001234567890:42"
    )
    assert ours is not None
    await post_telegram(client, channel_id, telegram_reaction(42, [], ["👍"]))
    await post_telegram(client, channel_id, telegram_reaction(42, [], ["🔥"], user_id=555))
    await post_telegram(client, channel_id, telegram_reaction(42, ["👍"], ["👍", "❤"]))
    reactions = (await message_by_id(hub, ours)).meta_data["reactions"]
    assert [(r["emoji"], r["by"]) for r in reactions] == [("🔥", "555"), ("❤", "123456789")]
    assert reactions[0]["at"] == "2023-11-14T22:16:40+00:00"
    await post_telegram(client, channel_id, telegram_reaction(42, ["🔥"], [], user_id=555))
    await post_telegram(client, channel_id, telegram_reaction(99, [], ["👍"]))  # not ours
    reactions = (await message_by_id(hub, ours)).meta_data["reactions"]
    assert [(r["emoji"], r["by"]) for r in reactions] == [("❤", "123456789")]
    assert len(await events_of(hub, "message_updated")) == 4
    assert await contact_messages(hub, chat_id) == []


@parsing_only
async def test_whapi_reactions(client: httpx2.AsyncClient, hub: Hub) -> None:
    contact = "14155550100@s.whatsapp.net"
    channel_id, _, ours = await seed(hub, "whapi", WHAPI_CREDENTIALS, contact, "OURS-9")
    assert ours is not None

    def reaction(emoji: str, *, from_me: bool = False) -> dict[str, Any]:
        return {
            "messages": [
                {
                    "id": "R1",
                    "from_me": from_me,
                    "type": "action",
                    "chat_id": contact,
                    "from": "14155550100",
                    "timestamp": 1788024200,
                    "action": {"type": "reaction", "target": "OURS-9", "emoji": emoji},
                }
            ],
            "event": {"type": "messages", "event": "post"},
        }

    await post_whapi(client, channel_id, reaction("👍"))
    reactions = (await message_by_id(hub, ours)).meta_data["reactions"]
    assert [(r["emoji"], r["by"]) for r in reactions] == [("👍", "14155550100")]
    await post_whapi(client, channel_id, reaction("🎉", from_me=True))  # our own, echoed
    await post_whapi(client, channel_id, reaction(""))
    assert (await message_by_id(hub, ours)).meta_data["reactions"] == []


# --- status errors ------------------------------------------------------------------------------


async def test_cloud_failed_status_vector_is_window_closed(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    assert hub_signature(VECTOR_2) == VECTOR_2_SIGNATURE
    channel_id, _, ours = await seed(
        hub, "whatsapp_cloud", CLOUD_CREDENTIALS, CLOUD_CONTACT, "wamid.OUT1"
    )
    assert ours is not None
    await post_cloud(client, channel_id, VECTOR_2, VECTOR_2_SIGNATURE)
    failed = await message_by_id(hub, ours)
    assert failed.delivery_status == DeliveryStatus.FAILED
    error = error_of(failed)
    assert error["code"] == "window_closed" and error["platform_code"] == 131047
    assert "24 hours" in error["message"]


def form_request(form: dict[str, str], status: bool = False) -> WebhookRequest:
    path = "/webhooks/whatsapp_twilio/ch_1" + ("/status" if status else "")
    return WebhookRequest("POST", PUBLIC_URL + path, {}, {}, urlencode(form).encode())


@parsing_only
@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("failed", "63016", "window_closed"),
        ("undelivered", "63016", "window_closed"),
        ("undelivered", "30008", "platform_error"),
        ("failed", "63024", "platform_error"),
    ],
)
def test_twilio_status_errors(status: str, code: str, expected: str) -> None:
    form = {"MessageSid": "SM3", "MessageStatus": status, "ErrorCode": code, "ErrorMessage": "x"}
    [update] = get_adapter("whatsapp_twilio").parse(form_request(form, status=True)).statuses
    assert update.status == DeliveryStatus.FAILED
    assert update.error is not None
    assert (update.error["code"], update.error["platform_code"]) == (expected, int(code))
    assert update.error["message"] == "x"


@parsing_only
async def test_twilio_window_closed_status_through_the_endpoint(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    channel_id, _, ours = await seed(
        hub, "whatsapp_twilio", TWILIO_CREDENTIALS, "whatsapp:+14155550100", "SM33"
    )
    assert ours is not None
    path = f"/webhooks/whatsapp_twilio/{channel_id}/status"
    form = {"MessageSid": "SM33", "MessageStatus": "undelivered", "ErrorCode": "63016"}
    answer = await client.post(
        path,
        data=form,
        headers={"X-Twilio-Signature": twilio_sign("12345", PUBLIC_URL + path, form)},
    )
    assert answer.status_code == 200, answer.text
    failed = await message_by_id(hub, ours)
    assert failed.delivery_status == DeliveryStatus.FAILED
    assert error_of(failed)["code"] == "window_closed"
    assert error_of(failed)["platform_code"] == 63016


@parsing_only
@pytest.mark.parametrize(
    ("errors", "code", "platform_code"),
    [
        ([{"code": 131047, "title": "Re-engagement message"}], "window_closed", 131047),
        ([{"code": 131026, "title": "Message undeliverable"}], "platform_error", 131026),
        ([], "platform_error", None),
    ],
)
def test_cloud_status_errors(
    errors: list[dict[str, Any]], code: str, platform_code: int | None
) -> None:
    status = {"id": "wamid.X", "status": "failed", "timestamp": "1", "errors": errors}
    value = {"metadata": {"phone_number_id": "106540352242922"}, "statuses": [status]}
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"field": "messages", "value": value}]}],
        }
    ).encode()
    request = WebhookRequest("POST", f"{PUBLIC_URL}/webhooks/whatsapp_cloud/c", {}, {}, body)
    [update] = get_adapter("whatsapp_cloud").parse(request).statuses
    assert update.error is not None
    assert (update.error["code"], update.error["platform_code"]) == (code, platform_code)
    assert update.error["message"]


@parsing_only
def test_telegram_asks_for_taps_and_reactions() -> None:
    from agenthub.platforms.telegram import ALLOWED_UPDATES

    assert {"message", "callback_query", "message_reaction"} <= set(ALLOWED_UPDATES)
