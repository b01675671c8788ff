"""The console's chat: the timeline paging back and refreshing, media through the hub's
proxy, failed messages with their reason and a retry, the composer while an agent handles
the chat, and the inbox growing past its first page. Through the ASGI app, as
tests/test_console.py does; tests/test_console_browser.py drives them in a real browser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import AgentDelivery, AgentDeliveryStatus, Channel, Role
from tests.conftest import Caller
from tests.console_helpers import (
    ORIGIN,
    api_channel,
    contact_says,
    cookie,
    form_of,
    hook,
    hooks,
    parse,
)
from tests.factories import make_agent, make_chat
from tests.fake_platform import FakePlatform, Reply, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.database_independent, pytest.mark.fast_jobs]

HOSTILE = '"><img src=x onerror=alert(1)>'


@pytest.fixture
async def channel(client: httpx2.AsyncClient, admin: Caller) -> dict[str, Any]:
    return {**await api_channel(client, admin, "Web chat"), "_admin_token": admin.token}


def items(tree: Any) -> list[Any]:
    return hooks(tree, "timeline-item")


async def test_the_timeline_pages_back_and_refreshes_from_the_oldest_item_shown(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "first")
    for n in range(55):
        answer = await client.post(
            f"/chats/{chat_id}/notes", json={"content": f"note {n}"}, headers=admin.headers
        )
        assert answer.status_code == 201, answer.text
    page = parse(await client.get(f"/console/chats/{chat_id}", headers=cookie(admin)))
    shown = items(hook(page, "timeline"))
    assert len(shown) == 50
    assert "note 54" in shown[-1].text()  # the newest at the bottom
    older = hook(page, "timeline-older")
    assert older.attributes["hx-trigger"] == "intersect once"
    oldest_shown = shown[0].attributes.get("data-item-id")
    assert oldest_shown and older.attributes["hx-get"] == (
        f"/console/fragments/chats/{chat_id}/timeline/older?before={oldest_shown}"
    )

    # Scrolling back: the six older items go on top, and nothing older is left to load.
    answer = await client.get(older.attributes["hx-get"] or "", headers=cookie(admin))
    assert answer.status_code == 200, answer.text
    back = parse(answer)
    assert not hooks(back, "timeline-older")
    top = back.css_first('ol[hx-swap-oob="afterbegin:#timeline-items"]')
    assert top is not None
    assert [item.attributes["data-kind"] for item in items(top)] == ["message"] + ["note"] * 5
    since = back.css_first("#timeline-since")
    assert since is not None and since.attributes["hx-swap-oob"] == "true"
    first_id = items(top)[0].attributes["data-message-id"]
    assert since.attributes["value"] == first_id

    # A live refresh keeps everything from the oldest item shown; without it, the newest page.
    path = f"/console/fragments/chats/{chat_id}/timeline"
    whole = parse(await client.get(path, params={"since": first_id}, headers=cookie(admin)))
    assert len(items(whole)) == 56
    assert not hooks(whole, "timeline-older")
    newest = parse(await client.get(path, headers=cookie(admin)))
    assert len(items(newest)) == 50
    assert hooks(newest, "timeline-older")
    unknown = await client.get(path, params={"since": "msg_0000000000"}, headers=cookie(admin))
    assert unknown.status_code == 422, unknown.text


async def test_media_go_through_the_hub_and_hostile_urls_never_become_links(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    proxied = f"{ORIGIN}/channels/{channel['id']}/media/m%2F1"
    media = [
        {"url": proxied, "content_type": "image/jpeg", "filename": HOSTILE},
        {"url": "javascript:alert(1)", "content_type": "image/png", "filename": "x.png"},
        {"url": "https://cdn.example/report.pdf", "content_type": "application/pdf"},
        {"url": f"{ORIGIN}/channels/chn_elsewhere/media/7", "content_type": "image/png"},
        {"url": proxied, "content_type": "audio/ogg"},
    ]
    chat_id = await contact_says(client, channel, "see attached", meta_data={"media": media})
    answer = await client.get(f"/console/chats/{chat_id}", headers=cookie(admin))
    page = parse(answer)
    (message,) = items(hook(page, "timeline"))
    images = message.css("img")
    assert [img.attributes["src"] for img in images] == [f"/channels/{channel['id']}/media/m%2F1"]
    assert images[0].attributes["alt"] == HOSTILE  # as text: escaped in the HTML
    assert "<img src=x" not in answer.text
    assert not page.css('[href^="javascript"], [src^="javascript"]')
    links = [a.attributes["href"] for a in message.css("a")]
    assert "https://cdn.example/report.pdf" in links
    # Another channel's media path is not fetched from here: at most a link away.
    assert not message.css(f'[src="{ORIGIN}/channels/chn_elsewhere/media/7"]')
    assert not message.css('[src="/channels/chn_elsewhere/media/7"]')
    audio = message.css_first("audio")
    assert audio is not None and audio.attributes["src"] == images[0].attributes["src"]
    assert "x.png" in message.text()  # the refused URL's file is still named


@pytest.fixture
def receiver() -> Iterator[FakePlatform]:
    """The `api` channel's callback: the contact's side."""
    with FakePlatform(default=Reply(200, json={"received": True})) as fake:
        yield fake


async def _status(client: httpx2.AsyncClient, admin: Caller, chat_id: str, status: str) -> Any:
    async def check() -> Any:
        answer = await client.get(f"/chats/{chat_id}/messages", headers=admin.headers)
        ours = [m for m in answer.json()["messages"] if m["sender_type"] == "USER"]
        assert ours and ours[0]["delivery_status"] == status, ours
        return ours[0]

    return await wait_until(check)


async def test_a_failed_message_shows_its_reason_and_is_sent_again(
    client: httpx2.AsyncClient,
    admin: Caller,
    make_user: Any,
    receiver: FakePlatform,
) -> None:
    created = await client.post(
        "/channels",
        json={"name": "Site", "platform": "api", "config": {"callback_url": receiver.url}},
        headers=admin.headers,
    )
    channel = {**created.json(), "_admin_token": admin.token}
    channel["secret"] = channel["credentials"]["secret"]
    chat_id = await contact_says(client, channel, "are you there?")
    receiver.script(Reply(410, json={"error": "gone"}))
    sent = await client.post(
        f"/console/fragments/chats/{chat_id}/compose",
        content="content=Yes%2C+here",
        headers=form_of(admin),
    )
    assert hook(parse(sent), "message-status").text() == "sending…"
    failed = await _status(client, admin, chat_id, "FAILED")

    page = parse(await client.get(f"/console/chats/{chat_id}", headers=cookie(admin)))
    item = page.css_first(f'[data-message-id="{failed["id"]}"]')
    assert item is not None and item.attributes["data-status"] == "FAILED"
    assert "HTTP 410" in hook(item, "message-failure").text()
    retry = hook(item, "message-retry")
    path = retry.attributes["hx-post"] or ""
    assert path == f"/console/fragments/chats/{chat_id}/messages/{failed['id']}/retry"

    # Retrying needs the hub's Origin, like every change; then the same message goes again.
    assert (await client.post(path, headers=cookie(admin))).status_code == 403
    again = await client.post(path, headers=form_of(admin))
    assert again.status_code == 200, again.text
    again_item = hook(parse(again), "timeline-item")
    assert again_item.attributes["data-message-id"] == failed["id"]
    assert again_item.attributes["data-status"] == "PENDING"
    assert not hooks(parse(again), "message-failure")
    delivered = await _status(client, admin, chat_id, "SENT")
    assert delivered["id"] == failed["id"]
    assert "error" not in delivered["meta_data"]
    bodies = [json.loads(r.body) for r in receiver.requests()]
    assert [b["message"]["id"] for b in bodies] == [failed["id"], failed["id"]]

    # Only a failed message to the contact goes again; others' chats stay hidden.
    assert (await client.post(path, headers=form_of(admin))).status_code == 409
    api_path = f"/chats/{chat_id}/messages/{failed['id']}/retry"
    assert (await client.post(api_path, headers=admin.headers)).status_code == 409
    messages = (await client.get(f"/chats/{chat_id}/messages", headers=admin.headers)).json()
    contact_id = next(m["id"] for m in messages["messages"] if m["sender_type"] == "CONTACT")
    contact_retry = await client.post(
        f"/chats/{chat_id}/messages/{contact_id}/retry", headers=admin.headers
    )
    assert contact_retry.status_code == 409, contact_retry.text
    unknown = await client.post(
        f"/chats/{chat_id}/messages/msg_0000000000/retry", headers=admin.headers
    )
    assert unknown.status_code == 404
    outsider: Caller = await make_user(Role.MEMBER)
    assert (await client.post(api_path, headers=outsider.headers)).status_code == 404


async def test_a_send_to_a_closed_window_says_so_in_the_composer(
    client: httpx2.AsyncClient, admin: Caller, hub: Hub
) -> None:
    """A WhatsApp chat whose contact has not written (or not for 24 h) takes templates only:
    the composer's send answers 409 with the reason, placed in the composer's error line
    (`HX-Retarget`), and stores nothing."""
    async with hub.db.transaction() as session:
        channel = Channel(
            name="WhatsApp",
            platform="whatsapp_cloud",
            credentials_encrypted=hub.secrets.encrypt_json(
                {
                    "access_token": "t",
                    "phone_number_id": "1",
                    "app_secret": "s",
                    "verify_token": "v",
                }
            ),
            config={"api_base_url": "http://127.0.0.1:9"},
        )
        session.add(channel)
    chat = await make_chat(hub, channel, external_id="5511987654321")
    page = parse(await client.get(f"/console/chats/{chat.id}", headers=cookie(admin)))
    slot = hook(page, "composer-error")
    assert slot.attributes["id"] == "composer-error"
    assert slot.text(strip=True) == ""

    sent = await client.post(
        f"/console/fragments/chats/{chat.id}/compose",
        content="content=Are+you+still+there%3F",
        headers=form_of(admin),
    )
    assert sent.status_code == 409, sent.text
    assert sent.headers["hx-retarget"] == "#composer-error"
    assert sent.headers["hx-reswap"] == "innerHTML"
    notice = hook(parse(sent), "composer-window-closed")
    assert notice.text(strip=True).startswith("The 24-hour window is closed: send a template")
    assert notice.attributes["data-code"] == "window_closed"
    messages = (await client.get(f"/chats/{chat.id}/messages", headers=admin.headers)).json()
    assert messages["messages"] == []
    # console.js shows a 409 that names its target instead of dropping it.
    script = (await client.get("/console/static/console.js")).text
    assert 'xhr.status !== 409 || !xhr.getResponseHeader("HX-Retarget")' in script
    # A private note still goes: only messages to the contact need the window.
    noted = await client.post(
        f"/console/fragments/chats/{chat.id}/compose",
        content="content=Waiting+for+a+template&note=1",
        headers=form_of(admin),
    )
    assert noted.status_code == 200
    assert hook(parse(noted), "timeline-item").attributes["data-kind"] == "note"


async def test_the_composer_offers_take_over_while_an_agent_handles_the_chat(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "hi bot")
    bot, _ = await make_agent(hub, name="Support bot")
    linked = await client.post(
        f"/chats/{chat_id}/agents", json={"agent_id": bot.id}, headers=admin.headers
    )
    assert linked.status_code == 201, linked.text
    page = parse(await client.get(f"/console/chats/{chat_id}", headers=cookie(admin)))
    composer = page.css_first("#composer")
    assert composer is not None
    box = composer.css_first("#composer-notice")
    # Its own target: inside the form it would inherit the form's (the timeline's list).
    assert box is not None and box.attributes["hx-target"] == "this"
    notice = hook(composer, "composer-agent-notice")
    assert "agent is handling" in notice.text()
    takeover = hook(notice, "composer-takeover")
    assert takeover.attributes["hx-post"] == f"/console/fragments/chats/{chat_id}/takeover"
    # While it shows, the form sends notes: what a browser submits is a private note.
    assert notice.css_first('input[type="hidden"][name="note"]') is not None
    noted = await client.post(
        f"/console/fragments/chats/{chat_id}/compose",
        content="content=Watching+this+one&note=1",
        headers=form_of(admin),
    )
    assert hook(parse(noted), "timeline-item").attributes["data-kind"] == "note"

    took = await client.post(takeover.attributes["hx-post"] or "", headers=form_of(admin))
    assert took.status_code == 200, took.text
    assert json.loads(took.headers["hx-trigger"])["composer-refresh"] == chat_id
    notice_path = f"/console/fragments/chats/{chat_id}/composer-notice"
    after = await client.get(notice_path, headers=cookie(admin))
    assert after.status_code == 200
    assert not hooks(parse(after), "composer-agent-notice")


async def test_the_inbox_shows_more_chats_on_request(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    for n in range(3):
        await contact_says(client, channel, "hello", contact=f"visitor-{n}", name=f"V{n}")
    path = "/console/fragments/inbox"
    first = parse(await client.get(path, params={"limit": 2}, headers=cookie(admin)))
    assert len(hooks(first, "chat-row")) == 2
    more = hook(first, "inbox-more")
    assert json.loads(more.attributes["hx-vals"] or "") == {"limit": 52}
    assert more.attributes["hx-include"] == "#inbox-filters"
    limit = first.css_first("#inbox-limit")  # later refreshes keep the longer list
    assert limit is not None and limit.attributes["value"] == "2"
    grown = parse(await client.get(path, params={"limit": 52}, headers=cookie(admin)))
    assert len(hooks(grown, "chat-row")) == 3
    assert not hooks(grown, "inbox-more")
    page = parse(await client.get("/console", headers=cookie(admin)))
    field = page.css_first('#inbox-filters input[name="limit"]')
    assert field is not None and field.attributes["value"] == "50"
    too_many = await client.get(path, params={"limit": 10_000}, headers=cookie(admin))
    assert too_many.status_code == 422
    assert re.search(r"limit", too_many.text)


async def test_a_chat_opened_while_its_agent_works_says_so(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "quick question")
    bot, _ = await make_agent(hub, name="Busy bot")
    path = f"/console/chats/{chat_id}"
    idle = hook(parse(await client.get(path, headers=cookie(admin))), "agent-working")
    assert "hidden" in idle.attributes
    # An attempt in flight: its lease is held (as `claim_due_attempts` leaves it).
    async with hub.db.transaction() as session:
        session.add(
            AgentDelivery(
                chat_id=chat_id,
                agent_id=bot.id,
                status=AgentDeliveryStatus.PENDING,
                next_attempt_at=hub.clock(),
                locked_until=hub.clock() + timedelta(seconds=30),
            )
        )
    working = hook(parse(await client.get(path, headers=cookie(admin))), "agent-working")
    assert "hidden" not in working.attributes
