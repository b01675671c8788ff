"""Group commit of inbound webhooks (`webhooks/intake.py`) through the real app: bursts of signed
Twilio webhooks are stored once each, in few transactions, in order per contact, and a webhook
refused (or a batch failing) never costs the others their message."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

import httpx2
import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from agenthub.hub import Hub
from agenthub.models import Chat, Message
from agenthub.webhooks import intake
from tests import test_twilio
from tests.conftest import Caller
from tests.fake_platform import FakePlatform, twilio_sid
from tests.test_twilio import (
    chats_of,
    inbound_form,
    message,
    post_signed,
    send_user_message,
    status_form,
    wait_status,
)

pytestmark = pytest.mark.anyio

Channel = dict[str, Any]
# The Twilio tests' fixtures: a fake Messages API and a channel on it.
twilio = test_twilio.twilio
channel = test_twilio.channel


def contact(n: int) -> dict[str, str]:
    return {"From": f"whatsapp:+5511900000{n:03d}", "WaId": f"5511900000{n:03d}"}


@contextmanager
def counting_commits(hub: Hub) -> Iterator[list[int]]:
    """Counts COMMITs on the engine the intake writes with."""
    count = [0]

    def on_commit(_: Any) -> None:
        count[0] += 1

    engine = hub.db.write_engine.sync_engine
    event.listen(engine, "commit", on_commit)
    try:
        yield count
    finally:
        event.remove(engine, "commit", on_commit)


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The outcomes of every `ingest_batch` call (one list per batch)."""
    seen: list[list[Any]] = []
    real = intake.ingest_batch

    async def spy(hub: Hub, batch: Any, credentials: Any) -> Any:
        outcomes = await real(hub, batch, credentials)
        seen.append(outcomes)
        return outcomes

    monkeypatch.setattr(intake, "ingest_batch", spy)
    return seen


async def events_of(hub: Hub, kind: str) -> list[dict[str, Any]]:
    """Every event of `kind` published so far (the bus replays from id 0)."""
    found: list[dict[str, Any]] = []
    async with hub.events.subscribe(last_event_id=0) as stream:
        while True:
            try:
                found.append(await asyncio.wait_for(anext(stream), 0.2))
            except TimeoutError:
                break
    return [e for e in found if e["type"] == kind]


async def stored_by_chat(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub, channel: Channel
) -> dict[str, list[Any]]:
    """Each chat's messages in seq order, by contact. Asserts seq runs 1..k without a gap and
    that the chat's counter and summary follow its last message (`seq` is not in the API)."""
    result = {}
    async with hub.db.session(read_only=True) as session:
        for chat in await chats_of(client, admin, channel):
            stored = (
                await session.execute(
                    select(Message.seq, Message.external_id, Message.content, Message.timestamp)
                    .where(Message.chat_id == chat["id"])
                    .order_by(Message.seq)
                )
            ).all()
            assert [m.seq for m in stored] == list(range(1, len(stored) + 1)), chat
            assert await session.scalar(select(Chat.message_seq).where(Chat.id == chat["id"])) == (
                len(stored)
            )
            assert chat["last_message"] == stored[-1].content, chat
            result[chat["external_id"]] = stored
    return result


def sids(forms: list[dict[str, str]]) -> list[str]:
    return [f["MessageSid"] for f in forms]


def assert_acked(answers: list[httpx2.Response]) -> None:
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]


async def test_a_concurrent_burst_is_stored_once_each_in_few_commits(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: Channel,
    hub: Hub,
    batches: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contacts, per_contact = 6, 12  # more than MAX_BATCH: a chat spans two batches
    forms = [
        inbound_form(twilio_sid(), f"c{c} m{m}", **contact(c))
        for m in range(per_contact)
        for c in range(contacts)
    ]
    submitted: dict[str, list[str]] = {}  # per contact, MessageSids in the order queued
    submit = intake.WebhookIntake.submit

    async def spy(self: Any, adapter: Any, channel_id: str, request: Any) -> Any:
        form = parse_qs(request.body.decode())
        submitted.setdefault(form["From"][0], []).append(form["MessageSid"][0])
        return await submit(self, adapter, channel_id, request)

    monkeypatch.setattr(intake.WebhookIntake, "submit", spy)
    with counting_commits(hub) as commits:
        answers = await asyncio.gather(*(post_signed(client, channel, f) for f in forms))
    assert_acked(answers)
    assert commits[0] < len(forms) // 2, (commits[0], [len(b) for b in batches])
    assert max(len(b) for b in batches) > 1

    chats = await stored_by_chat(client, admin, hub, channel)
    assert sorted(chats) == sorted(contact(c)["From"] for c in range(contacts))
    stored = [m for messages in chats.values() for m in messages]
    assert sorted(m.external_id for m in stored) == sorted(sids(forms))
    for contact_id, messages in chats.items():  # seq follows the order the intake got them
        assert [m.external_id for m in messages] == submitted[contact_id]
        assert [m.timestamp for m in messages] == sorted(m.timestamp for m in messages)
    assert len(await events_of(hub, "new_message")) == len(forms)


async def test_messages_of_a_contact_keep_the_order_they_were_sent_in(
    client: httpx2.AsyncClient, admin: Caller, channel: Channel, hub: Hub, batches: list[Any]
) -> None:
    contacts, per_contact = 6, 8

    async def converse(c: int) -> list[str]:
        sent = []
        for m in range(per_contact):  # each waits for the previous one's answer, as Twilio does
            form = inbound_form(twilio_sid(), f"c{c} m{m}", **contact(c))
            assert (await post_signed(client, channel, form)).status_code == 200
            sent.append(form["MessageSid"])
        return sent

    sent = await asyncio.gather(*(converse(c) for c in range(contacts)))
    assert max(len(b) for b in batches) > 1  # the contacts did share transactions
    chats = await stored_by_chat(client, admin, hub, channel)
    for c, expected in enumerate(sent):
        assert [m.external_id for m in chats[contact(c)["From"]]] == expected


async def test_a_retried_message_sid_is_stored_once_with_one_event(
    client: httpx2.AsyncClient, admin: Caller, channel: Channel, hub: Hub
) -> None:
    form = inbound_form(twilio_sid(), "only once")
    others = [inbound_form(twilio_sid(), f"other {n}") for n in range(5)]
    answers = await asyncio.gather(*(post_signed(client, channel, f) for f in [form] * 5 + others))
    assert_acked(answers)
    assert_acked([await post_signed(client, channel, form)])  # and a late retry
    assert_acked(await asyncio.gather(*(post_signed(client, channel, form) for _ in range(3))))

    [stored] = (await stored_by_chat(client, admin, hub, channel)).values()
    assert [m.external_id for m in stored].count(form["MessageSid"]) == 1
    assert len(stored) == 6
    new = await events_of(hub, "new_message")
    assert len(new) == 6
    assert sum(e["message"]["external_id"] == form["MessageSid"] for e in new) == 1


async def test_only_the_bad_webhooks_of_a_burst_are_refused(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: Channel,
    twilio: FakePlatform,
    hub: Hub,
    batches: list[Any],
) -> None:
    created = await client.post(
        "/channels",
        json={
            "name": "Old number",
            "platform": "whatsapp_twilio",
            "credentials": {
                "account_sid": "AC" + "1" * 32,
                "auth_token": "tok",
                "from_number": "+1",
            },
            "config": {"api_base_url": twilio.url},
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    retired = created.json()
    patched = await client.patch(
        f"/channels/{retired['id']}", json={"is_active": False}, headers=admin.headers
    )
    assert patched.status_code == 200, patched.text

    good = [inbound_form(twilio_sid(), f"good {n}", **contact(n % 3)) for n in range(24)]
    unknown = {"id": "chn_nope"}
    cases = [(post_signed(client, channel, f), 200) for f in good[:12]]
    cases += [
        (post_signed(client, channel, inbound_form(twilio_sid()), token="forged"), 403),
        (post_signed(client, unknown, inbound_form(twilio_sid())), 404),
        (post_signed(client, retired, inbound_form(twilio_sid()), token="tok"), 404),  # inactive
        (post_signed(client, channel, {"Foo": "bar"}), 200),  # not a message: ignored
        (post_signed(client, channel, status_form(twilio_sid(), "read")), 200),  # not ours
        (post_signed(client, channel, None, content=b"\xff\xfe\x00", sign_form={}), 200),
    ]
    cases += [(post_signed(client, channel, f), 200) for f in good[12:]]
    answers = await asyncio.gather(*(call for call, _ in cases))
    assert [a.status_code for a in answers] == [code for _, code in cases]

    chats = await stored_by_chat(client, admin, hub, channel)
    stored = sorted(m.external_id for messages in chats.values() for m in messages)
    assert stored == sorted(sids(good))
    assert await chats_of(client, admin, retired) == []
    # The refusals really shared transactions with stored webhooks.
    mixed = [b for b in batches if any(isinstance(o, Exception) for o in b) and len(b) > 1]
    assert mixed, [len(b) for b in batches]


async def test_a_failed_batch_is_retried_webhook_by_webhook(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: Channel,
    hub: Hub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = intake.ingest_batch
    failed: list[int] = []

    async def flaky(hub: Hub, batch: Any, credentials: Any) -> Any:
        injected = OperationalError("x", {}, Exception("injected"))
        if len(batch) > 1 and not failed:  # the first batch fails as a whole, at its commit
            failed.append(len(batch))

            async def refuse(session: Any) -> None:
                raise injected

            with monkeypatch.context() as patch:
                patch.setattr(intake, "commit", refuse)
                return await real(hub, batch, credentials)
        if len(batch) == 1 and len(failed) == 1:  # and so does the first webhook retried alone
            failed.append(1)
            raise injected
        return await real(hub, batch, credentials)

    monkeypatch.setattr(intake, "ingest_batch", flaky)
    forms = [inbound_form(twilio_sid(), f"m{n}", **contact(n % 4)) for n in range(30)]
    forms.append(forms[0])  # a duplicate rides along
    assert_acked(await asyncio.gather(*(post_signed(client, channel, f) for f in forms)))
    assert len(failed) == 2 and failed[0] > 1

    chats = await stored_by_chat(client, admin, hub, channel)
    stored = sorted(m.external_id for messages in chats.values() for m in messages)
    assert stored == sorted({f["MessageSid"] for f in forms})
    # Nothing of the rolled-back attempt leaks: no events, no half-created chats.
    assert len(await events_of(hub, "new_message")) == 30
    assert len(await events_of(hub, "chat_updated")) == len(chats) == 4


async def test_a_message_with_nul_characters_is_stored_without_them(
    client: httpx2.AsyncClient, admin: Caller, channel: Channel, hub: Hub
) -> None:
    # PostgreSQL text cannot hold NUL: refusing the webhook would lose the message.
    poison = inbound_form(twilio_sid(), "a\x00b", ProfileName="A\x00na", **contact(9))
    good = [inbound_form(twilio_sid(), f"g{n}", **contact(n % 2)) for n in range(16)]
    forms = [*good[:8], poison, *good[8:]]
    answers = await asyncio.gather(*(post_signed(client, channel, f) for f in forms))
    assert_acked(answers)
    chats = await stored_by_chat(client, admin, hub, channel)
    stored = {m.external_id: m for messages in chats.values() for m in messages}
    assert set(stored) == set(sids(good)) | {poison["MessageSid"]}
    assert stored[poison["MessageSid"]].content == "ab"


async def test_a_status_callback_and_a_first_contact_share_a_burst(
    client: httpx2.AsyncClient,
    admin: Caller,
    channel: Channel,
    hub: Hub,
) -> None:
    assert (await post_signed(client, channel, inbound_form(twilio_sid()))).status_code == 200
    [chat] = await chats_of(client, admin, channel)
    sent = await send_user_message(client, admin, chat["id"])
    external_id = (await wait_status(client, admin, chat["id"], sent["id"], "SENT"))["external_id"]

    status = post_signed(client, channel, status_form(external_id, "read"), status_callback=True)
    first = inbound_form(twilio_sid(), "hi, new here", ProfileName="Bia", **contact(7))
    more = [inbound_form(twilio_sid(), f"and {n}") for n in range(6)]  # the known contact
    webhooks = asyncio.gather(status, *(post_signed(client, channel, f) for f in [first, *more]))
    # An operator writes to the same chat meanwhile: positions are still never reused.
    replies = asyncio.gather(*(send_user_message(client, admin, chat["id"]) for _ in range(3)))
    answers, _ = await asyncio.gather(webhooks, replies)
    assert_acked(answers)

    assert (await message(client, admin, chat["id"], sent["id"]))["delivery_status"] == "READ"
    chats = await stored_by_chat(client, admin, hub, channel)
    [new] = chats[contact(7)["From"]]
    assert new.external_id == first["MessageSid"]
    assert set(sids(more)) <= {m.external_id for m in chats[chat["external_id"]]}
    assert len(chats[chat["external_id"]]) == 1 + 1 + 6 + 3


async def test_a_new_chat_is_created_once_with_its_default_agent_linked_once(
    client: httpx2.AsyncClient, admin: Caller, channel: Channel, hub: Hub
) -> None:
    agent = await client.post(
        "/auth/agents",
        json={
            "name": "greeter",
            "webhook_url": "http://127.0.0.1:9/",
            "activate_for_new_conversation": True,
            "buffer_time_seconds": 60,
        },
        headers=admin.headers,
    )
    assert agent.status_code == 201, agent.text
    forms = [inbound_form(twilio_sid(), f"hello {n}", **contact(1)) for n in range(10)]
    assert_acked(await asyncio.gather(*(post_signed(client, channel, f) for f in forms)))

    [chat] = await chats_of(client, admin, channel)
    assert chat["external_id"] == contact(1)["From"]
    stored = (await stored_by_chat(client, admin, hub, channel))[chat["external_id"]]
    assert sorted(m.external_id for m in stored) == sorted(sids(forms))
    links = await client.get(f"/chats/{chat['id']}/agents", headers=admin.headers)
    assert links.status_code == 200, links.text
    assert [link["agent_id"] for link in links.json()] == [agent.json()["id"]]
    assert len(await events_of(hub, "chat_updated")) == 1
