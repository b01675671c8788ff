"""The operator web console (`agenthub/console/`): pages and fragments through the ASGI app,
parsed with selectolax and checked by their `data-testid` hooks, with the session cookie as
a browser holds it. What a page lists comes from the API's own services, so these tests
check the wiring, the escaping and the headers; tests/test_console_browser.py drives a real
browser."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from agenthub.chats.handling import refresh_handled_by
from agenthub.hub import Hub
from agenthub.models import (
    AgentDelivery,
    AgentDeliveryStatus,
    Chat,
    DeliveryAttempt,
    NeedsHumanReason,
    Role,
)
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
    writing,
)
from tests.factories import make_agent

pytestmark = [pytest.mark.anyio, pytest.mark.database_independent]

VENDOR = Path(__file__).parents[1] / "src/agenthub/console/static/vendor"
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
HOSTILE_NAME = '"><img src=x onerror=alert(1)>'
HOSTILE_TEXT = "<script>alert('x')</script> & done"


@pytest.fixture
async def channel(client: httpx2.AsyncClient, admin: Caller) -> dict[str, Any]:
    return {**await api_channel(client, admin, "Web chat"), "_admin_token": admin.token}


async def test_logged_out_pages_redirect_to_the_login_form(client: httpx2.AsyncClient) -> None:
    root = await client.get("/")
    assert root.status_code == 307
    assert root.headers["location"] == "/console"
    for path in ("/console", "/console/chats/cht_nothere000"):
        answer = await client.get(path, headers={"Cookie": "agenthub_session=not-a-token"})
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/console/login"
    fragment = await client.get("/console/fragments/inbox")
    assert fragment.status_code == 401
    assert fragment.headers["hx-redirect"] == "/console/login"
    page = parse(await client.get("/console/login"))
    for testid in ("login-username", "login-password", "login-submit"):
        hook(page, testid)
    assert not hooks(page, "login-error")
    assert hook(page, "connection-state").attributes["data-state"] == "closed"


async def test_sign_in_with_the_form_then_sign_out(client: httpx2.AsyncClient) -> None:
    credentials = {"username": "ana", "password": "correct horse battery"}
    assert (await client.post("/auth/signup", json=credentials)).status_code == 201
    form = {"content-type": "application/x-www-form-urlencoded", "Origin": ORIGIN}
    signed_in = await client.post(
        "/console/login", content="username=ana&password=correct+horse+battery", headers=form
    )
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["location"] == "/console"
    set_cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie
    token = re.search(r"agenthub_session=([^;]+)", set_cookie)
    assert token is not None
    session = {"Cookie": f"agenthub_session={token.group(1)}"}
    inbox = await client.get("/console", headers=session)
    assert inbox.status_code == 200
    assert "ana" in hook(parse(inbox), "logout").parent.parent.text()  # type: ignore[union-attr]
    out = await client.post("/console/logout", headers={**session, "Origin": ORIGIN})
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    assert 'agenthub_session=""' in out.headers["set-cookie"]
    again = await client.get("/console", headers=session)  # the token is revoked
    assert again.status_code == 303


async def test_a_wrong_password_shows_the_error_then_the_throttle(
    client: httpx2.AsyncClient,
) -> None:
    credentials = {"username": "ana", "password": "correct horse battery"}
    assert (await client.post("/auth/signup", json=credentials)).status_code == 201
    form = {"content-type": "application/x-www-form-urlencoded"}
    wrong = await client.post("/console/login", content="username=ana&password=nope", headers=form)
    assert wrong.status_code == 401
    page = parse(wrong)
    assert "Wrong username or password" in hook(page, "login-error").text()
    assert hook(page, "login-username").attributes["value"] == "ana"
    assert "set-cookie" not in wrong.headers
    statuses = [
        (await client.post("/console/login", content="username=ana&password=no", headers=form))
        for _ in range(10)
    ]
    assert statuses[-1].status_code == 429
    assert "retry-after" in statuses[-1].headers
    assert hook(parse(statuses[-1]), "login-error")
    elsewhere = await client.post(
        "/console/login",
        content="username=ana&password=correct+horse+battery",
        headers={**form, "Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403


async def test_the_inbox_lists_chats_with_their_hooks(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "Where is my order?")
    await contact_says(client, channel, "Second question", contact="visitor-2", name="Bea")
    answer = await client.get("/console", headers=cookie(admin))
    assert answer.status_code == 200
    page = parse(answer)
    viewport = page.css_first('meta[name="viewport"]')
    assert viewport is not None
    assert viewport.attributes["content"] == "width=device-width, initial-scale=1"
    for view in ("all", "needs_human", "mine", "unassigned", "agent"):
        tab = hook(page, f"inbox-tab-{view}")
        hook(tab, f"inbox-count-{view}")
    # Filled in by console.js from `/inbox/counts`: a pass over the chats the page skips.
    assert hook(page, "inbox-count-all").text().strip() == ""
    hook(page, "inbox-search")
    hook(page, "inbox-channel")
    hook(page, "nav-inbox")
    hook(page, "logout")
    assert hook(page, "connection-state").attributes["data-state"] == "connecting"
    rows = hooks(page, "chat-row")
    assert len(rows) == 2
    row = next(r for r in rows if r.attributes["data-chat-id"] == chat_id)
    assert "Visitor One" in row.text()
    assert "Web chat" in row.text()
    assert "api" in hook(row, "chat-channel").text()
    assert hook(row, "chat-preview").text() == "Where is my order?"
    assert hook(row, "chat-time").text().strip()
    assert hook(row, "chat-unread").text() == "1"
    assert hook(row, "chat-handled-by").attributes["data-handled-by"]

    # Read (the API route console.js calls on opening the chat): the badge goes.
    read = await client.post(f"/chats/{chat_id}/read", headers=writing(admin))
    assert read.status_code == 200, read.text
    fragment = parse(await client.get("/console/fragments/inbox", headers=cookie(admin)))
    row = next(r for r in hooks(fragment, "chat-row") if r.attributes["data-chat-id"] == chat_id)
    assert not hooks(row, "chat-unread")
    searched = parse(
        await client.get("/console/fragments/inbox", params={"q": "Bea"}, headers=cookie(admin))
    )
    assert [hook(r, "chat-name").text() for r in hooks(searched, "chat-row")] == ["Bea"]
    mine = parse(
        await client.get("/console/fragments/inbox", params={"view": "mine"}, headers=cookie(admin))
    )
    assert not hooks(mine, "chat-row")
    assert not hooks(mine, "inbox-count-all")  # nor does the list's refetch count


async def test_the_page_names_the_newest_event_its_socket_starts_from(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any], hub: Hub
) -> None:
    """So that events between the page's reads and its WebSocket opening are replayed to it
    (console.js connects with `?last_event_id=` from the page), not lost."""
    chat_id = await contact_says(client, channel, "Hello")
    _, newest = await hub.events.since(None)
    assert newest > 0  # the contact's message raised events
    for path in ("/console", f"/console/chats/{chat_id}"):
        body = parse(await client.get(path, headers=cookie(admin))).css_first("body")
        assert body is not None
        assert body.attributes["data-last-event-id"] == str(newest), path


async def test_a_member_sees_only_granted_channels(
    client: httpx2.AsyncClient, admin: Caller, make_user: Any, channel: dict[str, Any]
) -> None:
    other = {**await api_channel(client, admin, "Secret"), "_admin_token": admin.token}
    granted_chat = await contact_says(client, channel, "hello", name="Granted Contact")
    hidden_chat = await contact_says(client, other, "psst", contact="v-9", name="Hidden Contact")
    member: Caller = await make_user(Role.MEMBER, channels=(channel["id"],))
    page = parse(await client.get("/console", headers=cookie(member)))
    assert [r.attributes["data-chat-id"] for r in hooks(page, "chat-row")] == [granted_chat]
    assert "Hidden Contact" not in page.html  # type: ignore[operator]
    options = [o.text() for o in hook(page, "inbox-channel").css("option")]
    assert not any("Secret" in option for option in options)
    fragment = await client.get(
        "/console/fragments/inbox", params={"channel_id": other["id"]}, headers=cookie(member)
    )
    assert fragment.status_code == 404
    assert (
        await client.get(f"/console/chats/{hidden_chat}", headers=cookie(member))
    ).status_code == 404
    assert (
        await client.get(f"/console/chats/{granted_chat}", headers=cookie(member))
    ).status_code == 200
    compose = await client.post(
        f"/console/fragments/chats/{hidden_chat}/compose",
        content="content=hi",
        headers={**writing(member), "content-type": "application/x-www-form-urlencoded"},
    )
    assert compose.status_code == 404


async def test_what_a_contact_supplies_is_escaped(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, HOSTILE_TEXT, name=HOSTILE_NAME)
    for path in ("/console", f"/console/chats/{chat_id}", "/console/fragments/inbox"):
        answer = await client.get(path, headers=cookie(admin))
        assert answer.status_code == 200, path
        assert "<script>alert" not in answer.text
        assert "<img" not in answer.text
        page = parse(answer)
        assert not page.css("img")
        assert all(s.attributes.get("src") for s in page.css("script")), path
        assert HOSTILE_NAME in page.text()
    chat = parse(await client.get(f"/console/chats/{chat_id}", headers=cookie(admin)))
    (message,) = [i for i in hooks(chat, "timeline-item") if i.attributes["data-kind"] == "message"]
    assert HOSTILE_TEXT in message.text()
    assert hook(message, "sender").text() == HOSTILE_NAME


async def test_every_console_response_has_the_security_headers(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "hi")
    paths = [
        "/",
        "/console/login",
        "/console",
        f"/console/chats/{chat_id}",
        "/console/fragments/inbox",
        f"/console/fragments/chats/{chat_id}/timeline",
        "/console/static/console.js",
        "/console/static/console.css",
        "/console/static/vendor/htmx.min.js",
    ]
    for path in paths:
        answer = await client.get(path, headers=cookie(admin))
        assert answer.status_code in (200, 303, 307), path
        assert answer.headers["content-security-policy"] == "default-src 'self'", path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "same-origin", path
        if answer.headers.get("content-type", "").startswith("text/html"):
            page = HTMLParser(answer.text)
            assert all(s.attributes.get("src") for s in page.css("script")), path
            assert not page.css("style"), path
            assert not page.css("[style]"), path
            assert not re.search(r"\son[a-z]+=", answer.text), path
    login = parse(await client.get("/console/login"))
    config = login.css_first('meta[name="htmx-config"]')
    assert config is not None
    assert json.loads(config.attributes["content"] or "")["includeIndicatorStyles"] is False
    # The API keeps its own headers: no console CSP on it.
    assert "content-security-policy" not in (await client.get("/healthz")).headers
    # Console pages and files are compressed for browsers that take it; the API is not.
    for path in ("/console", "/console/static/vendor/htmx.min.js"):
        zipped = await client.get(path, headers={**cookie(admin), "Accept-Encoding": "gzip"})
        assert zipped.headers.get("content-encoding") == "gzip", path
    api = await client.get("/inbox", headers={**admin.headers, "Accept-Encoding": "gzip"})
    assert "content-encoding" not in api.headers


async def test_the_chat_page_composer_and_takeover(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "I need a human")
    page = parse(await client.get(f"/console/chats/{chat_id}", headers=cookie(admin)))
    for testid in (
        "timeline",
        "composer-input",
        "composer-send",
        "composer-note-toggle",
        "action-takeover",
        "action-handback",
        "presence",
        "agent-working",
        "connection-state",
    ):
        hook(page, testid)
    (item,) = hooks(hook(page, "timeline"), "timeline-item")
    assert item.attributes["data-kind"] == "message"
    assert item.attributes["data-sender-type"] == "CONTACT"
    assert item.attributes["data-message-id"]
    assert item.attributes["data-status"]
    assert hook(item, "sender").text() == "Visitor One"

    form = {**writing(admin), "content-type": "application/x-www-form-urlencoded"}
    took = await client.post(f"/console/fragments/chats/{chat_id}/takeover", headers=form)
    assert took.status_code == 200, took.text
    assert hook(parse(took), "chat-handled-by").attributes["data-handled-by"] == "human"
    assert json.loads(took.headers["hx-trigger"]) == {
        "panel-refresh": chat_id,
        "composer-refresh": chat_id,
    }
    sent = await client.post(
        f"/console/fragments/chats/{chat_id}/compose", content="content=On+it%21", headers=form
    )
    assert sent.status_code == 200, sent.text
    new = hook(parse(sent), "timeline-item")
    assert new.attributes["data-kind"] == "message"
    assert new.attributes["data-sender-type"] == "USER"
    assert hook(new, "sender").text() == "admin"
    noted = await client.post(
        f"/console/fragments/chats/{chat_id}/compose",
        content="content=VIP+customer&note=1",
        headers=form,
    )
    assert hook(parse(noted), "timeline-item").attributes["data-kind"] == "note"
    empty = await client.post(
        f"/console/fragments/chats/{chat_id}/compose", content="content=+", headers=form
    )
    assert empty.status_code == 422
    messages = (await client.get(f"/chats/{chat_id}/messages", headers=admin.headers)).json()
    assert [m["content"] for m in messages["messages"]] == ["On it!", "I need a human"]
    timeline = parse(
        await client.get(f"/console/fragments/chats/{chat_id}/timeline", headers=cookie(admin))
    )
    kinds = [i.attributes["data-kind"] for i in hooks(timeline, "timeline-item")]
    assert kinds == ["message", "event", "message", "note"]
    back = await client.post(f"/console/fragments/chats/{chat_id}/handback", headers=form)
    assert back.status_code == 200


async def test_changes_need_the_hub_origin(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "hi")
    form = {"content-type": "application/x-www-form-urlencoded"}
    for origin in (None, "https://evil.example", "null"):
        for path in (
            f"/console/fragments/chats/{chat_id}/compose",
            f"/console/fragments/chats/{chat_id}/takeover",
            "/console/logout",
        ):
            answer = await client.post(
                path, content="content=hi", headers={**form, **writing(admin, origin)}
            )
            assert answer.status_code == 403, (path, origin)
    messages = (await client.get(f"/chats/{chat_id}/messages", headers=admin.headers)).json()
    assert len(messages["messages"]) == 1
    assert (await client.get("/console", headers=cookie(admin))).status_code == 200


def test_vendored_htmx_is_the_pinned_release() -> None:
    script = (VENDOR / "htmx.min.js").read_bytes()
    assert hashlib.sha256(script).hexdigest() == HTMX_SHA256
    assert b'version:"2.0.11"' in script
    assert "Zero-Clause BSD" in (VENDOR / "htmx.LICENSE").read_text()


# --- the three panes and the side panel ------------------------------------------------------


async def test_the_three_panes_and_a_row_opening_its_chat(
    client: httpx2.AsyncClient, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "Hello there")
    other_id = await contact_says(client, channel, "Me too", contact="visitor-2", name="Bea")
    page = parse(await client.get("/console", headers=cookie(admin)))
    hook(page, "pane-list")
    assert hook(hook(page, "pane-chat"), "chat-empty").text() == "Pick a chat"
    assert not hooks(page, "side-panel")
    assert not hooks(page, "timeline")
    body = page.css_first("body")
    assert body is not None
    assert body.attributes["data-page"] == "inbox"
    assert "data-chat-id" not in body.attributes
    row = next(r for r in hooks(page, "chat-row") if r.attributes["data-chat-id"] == chat_id)
    assert row.attributes["aria-selected"] == "false"
    link = row.css_first("a")
    assert link is not None
    assert link.attributes["href"] == f"/console/chats/{chat_id}"
    assert link.attributes["hx-get"] == f"/console/fragments/chats/{chat_id}"
    assert link.attributes["hx-target"] == "#chat-pane"
    assert link.attributes["hx-push-url"] == f"/console/chats/{chat_id}"

    # The fragment a click loads: the chat, the panel and the list's selection out of band.
    answer = await client.get(f"/console/fragments/chats/{chat_id}", headers=cookie(admin))
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.headers["hx-trigger"]) == {"chat-opened": chat_id}
    assert answer.headers["hx-trigger-after-swap"] == "inbox-refresh"
    fragment = parse(answer)
    chat = fragment.css_first("#chat")
    assert chat is not None
    assert chat.attributes["data-chat-id"] == chat_id
    for testid in ("timeline", "composer-input", "composer-send", "action-takeover", "presence"):
        hook(chat, testid)
    side = fragment.css_first("#side-panel")
    assert side is not None
    assert side.attributes["hx-swap-oob"] == "true"
    assert side.attributes["hx-get"] == f"/console/fragments/chats/{chat_id}/panel"
    assert side.attributes["hx-trigger"] == "panel-refresh from:body, header-refresh from:body"
    selected = fragment.css_first("#inbox-selected")
    assert selected is not None
    assert selected.attributes["value"] == chat_id
    listed = parse(
        await client.get(
            "/console/fragments/inbox", params={"selected": chat_id}, headers=cookie(admin)
        )
    )
    assert {
        r.attributes["data-chat-id"]: r.attributes["aria-selected"]
        for r in hooks(listed, "chat-row")
    } == {chat_id: "true", other_id: "false"}

    # A reload (or a shared link): the same page, with the chat open.
    full = parse(await client.get(f"/console/chats/{chat_id}", headers=cookie(admin)))
    body = full.css_first("body")
    assert body is not None
    assert body.attributes["data-chat-id"] == chat_id
    assert body.attributes["data-page"] == "chat"
    hook(full, "pane-list")
    hook(full, "inbox-search")
    hook(full, "connection-state")
    hook(hook(full, "pane-chat"), "timeline")
    hook(full, "back-to-list")
    assert hook(full, "side-panel").attributes["data-chat-id"] == chat_id
    rows = {r.attributes["data-chat-id"]: r for r in hooks(full, "chat-row")}
    assert rows[chat_id].attributes["aria-selected"] == "true"
    assert rows[other_id].attributes["aria-selected"] == "false"
    tab = hook(full, "inbox-tab-mine")
    assert tab.attributes["href"] == f"/console/chats/{chat_id}?view=mine"
    assert (
        await client.get("/console/fragments/chats/cht_nothere000", headers=cookie(admin))
    ).status_code == 404
    unauthorized = await client.get(f"/console/fragments/chats/{chat_id}/panel")
    assert unauthorized.status_code == 401


async def _with_a_delivery(hub: Hub, chat_id: str, agent_id: str) -> None:
    async with hub.db.transaction() as session:
        delivery = AgentDelivery(
            chat_id=chat_id,
            agent_id=agent_id,
            status=AgentDeliveryStatus.FAILED,
            message_ids=["msg_a", "msg_b"],
            attempt_count=1,
            last_error="HTTP 502",
        )
        session.add(delivery)
        await session.flush()
        session.add(
            DeliveryAttempt(
                delivery_id=delivery.id,
                attempt_number=1,
                status_code=502,
                latency_ms=41.6,
                error="Bad gateway",
            )
        )


async def test_the_side_panel_and_its_actions(
    client: httpx2.AsyncClient,
    hub: Hub,
    admin: Caller,
    make_user: Any,
    channel: dict[str, Any],
) -> None:
    chat_id = await contact_says(client, channel, "Help!")
    other_chat_id = await contact_says(client, channel, "Me too", contact="visitor-2")
    bot, _ = await make_agent(hub, name="Support bot")
    spare, _ = await make_agent(hub, name="Spare bot")
    await make_agent(hub, name="Retired bot", active=False)
    member: Caller = await make_user(Role.MEMBER, channels=(channel["id"],), username="mia")
    outsider: Caller = await make_user(Role.MEMBER, username="olaf")
    panel_path = f"/console/fragments/chats/{chat_id}/panel"

    # Link an agent from the panel's select: only the active, unlinked ones are offered.
    panel = parse(await client.get(panel_path, headers=cookie(member)))
    offered = [o.attributes["value"] for o in hook(panel, "panel-link-agent").css("option")]
    assert offered == ["", spare.id, bot.id]  # by name; "Retired bot" is inactive
    assert hook(panel, "panel-contact-name").text() == "Visitor One"
    assert hook(panel, "panel-contact-id").text() == "visitor-1"
    assert "Web chat · api" in hook(panel, "panel-channel").text()
    linked = await client.post(
        f"{panel_path}/agents", content=f"agent_id={bot.id}", headers=form_of(member)
    )
    assert linked.status_code == 200, linked.text
    assert json.loads(linked.headers["hx-trigger"]) == {
        "timeline-refresh": chat_id,
        "composer-refresh": chat_id,
    }
    header = parse(linked).css_first("#chat-header")
    assert header is not None
    assert header.attributes["hx-swap-oob"] == "innerHTML"
    assert hook(header, "chat-handled-by").attributes["data-handled-by"] == "agent"
    entry = hook(hook(parse(linked), "panel-agents"), f"panel-agent-{bot.id}")
    assert entry.attributes["data-active"] == "true"
    assert "Support bot" in entry.text()
    hook(entry, "action-agent-pause")
    hook(entry, "action-agent-unlink")

    # Pause, then resume.
    paused = await client.post(f"{panel_path}/agents/{bot.id}/pause", headers=form_of(member))
    assert paused.status_code == 200, paused.text
    entry = hook(parse(paused), f"panel-agent-{bot.id}")
    assert entry.attributes["data-active"] == "false"
    hook(entry, "action-agent-resume")
    links = (await client.get(f"/chats/{chat_id}/agents", headers=admin.headers)).json()
    assert [(link["agent_id"], link["active"]) for link in links] == [(bot.id, False)]
    resumed = await client.post(f"{panel_path}/agents/{bot.id}/resume", headers=form_of(member))
    assert hook(parse(resumed), f"panel-agent-{bot.id}").attributes["data-active"] == "true"

    # Assignment: the member assigns the chat to itself, then tries a user without access.
    options = {
        o.attributes["value"]: o.text() for o in hook(parse(resumed), "panel-assign").css("option")
    }
    assert options == {"": "Nobody", member.id: "Me (mia)", admin.id: "admin"}
    assigned = await client.post(
        f"{panel_path}/assign", content=f"user_id={member.id}", headers=form_of(member)
    )
    assert assigned.status_code == 200, assigned.text
    chosen = hook(parse(assigned), "panel-assign").css_first("option[selected]")
    assert chosen is not None
    assert chosen.attributes["value"] == member.id
    chat = (await client.get(f"/chats/{chat_id}", headers=admin.headers)).json()
    assert chat["assigned_user_id"] == member.id
    refused = await client.post(
        f"{panel_path}/assign", content=f"user_id={outsider.id}", headers=form_of(member)
    )
    assert refused.status_code == 400, refused.text
    nobody = await client.post(f"{panel_path}/assign", content="user_id=", headers=form_of(member))
    chosen = hook(parse(nobody), "panel-assign").css_first("option[selected]")
    assert chosen is not None
    assert chosen.attributes["value"] == ""

    # The delivery trace: an admin's, never a member's.
    await _with_a_delivery(hub, chat_id, bot.id)
    assert not hooks(
        parse(await client.get(panel_path, headers=cookie(member))), "panel-deliveries"
    )
    trace = hook(parse(await client.get(panel_path, headers=cookie(admin))), "panel-deliveries")
    (delivery,) = hooks(trace, "panel-delivery")
    assert delivery.attributes["data-status"] == "failed"
    assert "2 messages" in delivery.text()
    assert "Support bot" in delivery.text()
    (attempt,) = hooks(delivery, "panel-attempt")
    assert "HTTP 502" in attempt.text()
    assert "42 ms" in attempt.text()
    assert "Bad gateway" in attempt.text()
    assert hooks(
        parse(await client.get(f"/console/chats/{chat_id}", headers=cookie(admin))),
        "panel-deliveries",
    )

    # Retrying the failed delivery from the trace: admins only, as the API's replay.
    retry = hook(delivery, "action-delivery-retry").attributes["hx-post"] or ""
    assert retry.startswith(f"{panel_path}/deliveries/dlv_") and retry.endswith("/retry")
    assert (await client.post(retry, headers=form_of(member))).status_code == 403
    retried = await client.post(retry, headers=form_of(admin))
    assert retried.status_code == 200, retried.text
    (again,) = hooks(hook(parse(retried), "panel-deliveries"), "panel-delivery")
    assert again.attributes["data-status"] == "pending"
    assert not hooks(again, "action-delivery-retry")
    assert (await client.post(retry, headers=form_of(admin))).status_code == 409
    elsewhere = retry.replace(chat_id, other_chat_id)
    assert (await client.post(elsewhere, headers=form_of(admin))).status_code == 404

    # Unlink.
    unlinked = await client.post(f"{panel_path}/agents/{bot.id}/unlink", headers=form_of(member))
    assert not hooks(parse(unlinked), f"panel-agent-{bot.id}")
    assert (await client.get(f"/chats/{chat_id}/agents", headers=admin.headers)).json() == []


async def test_clear_needs_human_from_the_panel(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "A person, please")
    async with hub.db.transaction() as session:
        chat = await session.get(Chat, chat_id)
        assert chat is not None
        chat.needs_human = True
        chat.needs_human_reason = NeedsHumanReason.AGENT_HANDOFF
        chat.needs_human_since = hub.clock()
        await refresh_handled_by(session, [chat])
    panel_path = f"/console/fragments/chats/{chat_id}/panel"
    panel = parse(await client.get(panel_path, headers=cookie(admin)))
    notice = hook(panel, "panel-needs-human")
    assert "handed the chat off" in notice.text()
    assert notice.css_first("time") is not None
    assert hook(panel, "panel-handled-by").attributes["data-handled-by"] == "waiting"
    button = hook(panel, "action-clear-needs-human")
    assert button.attributes["hx-post"] == f"{panel_path}/clear-needs-human"
    cleared = await client.post(f"{panel_path}/clear-needs-human", headers=form_of(admin))
    assert cleared.status_code == 200, cleared.text
    assert not hooks(parse(cleared), "panel-needs-human")
    chat_out = (await client.get(f"/chats/{chat_id}", headers=admin.headers)).json()
    assert chat_out["needs_human"] is False


async def test_panel_changes_need_the_hub_origin(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, channel: dict[str, Any]
) -> None:
    chat_id = await contact_says(client, channel, "hi")
    bot, _ = await make_agent(hub, name="Support bot")
    panel_path = f"/console/fragments/chats/{chat_id}/panel"
    for origin in (None, "https://evil.example"):
        for path, content in (
            (f"{panel_path}/assign", f"user_id={admin.id}"),
            (f"{panel_path}/clear-needs-human", ""),
            (f"{panel_path}/agents", f"agent_id={bot.id}"),
            (f"{panel_path}/agents/{bot.id}/pause", ""),
            (f"{panel_path}/agents/{bot.id}/resume", ""),
            (f"{panel_path}/agents/{bot.id}/unlink", ""),
        ):
            answer = await client.post(path, content=content, headers=form_of(admin, origin))
            assert answer.status_code == 403, (path, origin)
    chat = (await client.get(f"/chats/{chat_id}", headers=admin.headers)).json()
    assert chat["assigned_user_id"] is None
    assert (await client.get(f"/chats/{chat_id}/agents", headers=admin.headers)).json() == []
