"""The console in a real browser (headless Chromium through chromedriver) against a real
`agenthub serve` on loopback: sign in with the form, a contact's message appears in the inbox
live, over the WebSocket, without a reload; the keyboard shortcuts, the unread count in the
title, the narrow layout and an agent's reply forming as it streams.

One `agenthub serve` and one Chromium serve the whole module (starting them is most of the
cost); each test sends its own contact's messages and signs in again only when it has to.

Needs Debian's `chromium` and `chromium-driver`: without them the tests are skipped, unless
`AGENTHUB_TEST_BROWSER=required` (set by .ci/run), which makes their absence a failure.
Selenium is given both binaries' paths, so Selenium Manager never downloads anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import websockets.sync.client
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from agenthub.migrate import upgrade_database
from tests.agent_server import FakeAgent, stream
from tests.fake_platform import FakePlatform, Reply, standard_webhook_headers
from tests.procs import ServeProcess, hub_env

pytestmark = pytest.mark.multiprocess

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("AGENTHUB_TEST_SCREENSHOTS", "/tmp"))
PASSWORD = "a long enough password"
ROW = '[data-testid="chat-row"]'
CANNED = '[data-testid="canned-picker"] [data-testid="canned-option"]'


def browser_required() -> bool:
    return os.environ.get("AGENTHUB_TEST_BROWSER", "").lower() == "required"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = (
            f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        )
        if browser_required():
            pytest.fail(message + " and AGENTHUB_TEST_BROWSER=required", pytrace=False)
        pytest.skip(message)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to see CSP violations
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp_path = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade_database(url)
    env = hub_env(url)
    process = ServeProcess("serve", env, tmp_path)
    env["AGENTHUB_PUBLIC_URL"] = process.url  # the browser's origin: cookie and /ws checks
    try:
        process.start()
        yield process
    finally:
        process.stop()


@dataclass
class Hub:
    url: str
    http: httpx2.Client
    token: str
    channel: dict[str, Any]

    def api(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def chat_named(self, name: str) -> str:
        chats = self.http.get("/inbox", params={"q": name}, headers=self.api()).json()["chats"]
        return str(next(c["id"] for c in chats if c["name"] == name))

    def contact_says(
        self, contact_id: str, name: str, content: str, channel: dict[str, Any] | None = None
    ) -> None:
        channel = channel or self.channel
        body = json.dumps(
            {
                "contact_id": contact_id,
                "contact_name": name,
                "message_id": f"{contact_id}-{content[:8]}",
                "content": content,
            }
        )
        headers = standard_webhook_headers(channel["credentials"]["secret"], body)
        inbound = self.http.post(
            f"/webhooks/api/{channel['id']}",
            content=body,
            headers={"content-type": "application/json", **headers},
        )
        assert inbound.status_code < 300, inbound.text


@pytest.fixture(scope="module")
def hub(serve: ServeProcess) -> Iterator[Hub]:
    """The admin (signed up through the API) and a channel for the contacts to write to."""
    with httpx2.Client(base_url=serve.url, timeout=10) as http:
        admin = {"username": "admin", "password": PASSWORD}
        assert http.post("/auth/signup", json=admin).status_code == 201
        token = http.post("/auth/login", json=admin).json()["access_token"]
        created = http.post(
            "/channels",
            json={"name": "Web chat", "platform": "api"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
        yield Hub(serve.url, http, token, created.json())


@pytest.fixture
def wait(browser: webdriver.Chrome) -> Iterator[WebDriverWait[webdriver.Chrome]]:
    # A live refresh may swap an element out between finding it and reading it: look again.
    yield WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems  # a Content-Security-Policy violation, a script error


def by_testid(driver: webdriver.Chrome, name: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def sign_in(browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub) -> None:
    """The login form, as an operator fills it in (when the browser is not signed in yet)."""
    browser.get(f"{hub.url}/console")
    if "/console/login" in browser.current_url:
        by_testid(browser, "login-username").send_keys("admin")
        by_testid(browser, "login-password").send_keys(PASSWORD)
        by_testid(browser, "login-submit").click()
        wait.until(lambda d: "/console/login" not in d.current_url)
    wait.until(lambda d: d.current_url.endswith("/console"))
    live(wait)


def live(wait: WebDriverWait[webdriver.Chrome]) -> None:
    wait.until(lambda d: by_testid(d, "connection-state").get_attribute("data-state") == "open")


def row_named(driver: webdriver.Chrome, name: str) -> Any:
    rows = [r for r in driver.find_elements(By.CSS_SELECTOR, ROW) if name in r.text]
    return rows[0] if rows else None


def test_sign_in_and_see_a_contact_message_arrive_live(
    browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub
) -> None:
    browser.get(f"{hub.url}/console")
    wait.until(lambda d: "/console/login" in d.current_url)
    sign_in(browser, wait, hub)
    assert not browser.find_elements(By.CSS_SELECTOR, ROW)

    hub.contact_says(
        "visitor-7", "Alice <Example>", "My parcel arrived broken. Can I get a refund?"
    )
    row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ROW))
    assert "Alice <Example>" in row.text
    assert "refund" in row.text
    unread = row.find_element(By.CSS_SELECTOR, '[data-testid="chat-unread"]')
    assert unread.text == "1"
    assert by_testid(browser, "inbox-count-all").text == "1"
    assert by_testid(browser, "connection-state").get_attribute("data-state") == "open"
    browser.save_screenshot(str(SCREENSHOTS / "agenthub-console-inbox.png"))

    # The chat: the timeline, and a reply sent with Enter.
    row.find_element(By.CSS_SELECTOR, "a").click()
    wait.until(lambda d: "/console/chats/" in d.current_url)
    live(wait)
    composer = wait.until(lambda d: by_testid(d, "composer-input"))
    composer.send_keys("Sorry to hear that! Sending a refund now.", Keys.ENTER)
    wait.until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, '[data-testid="timeline-item"][data-sender-type="USER"]'
        )
    )
    assert by_testid(browser, "composer-input").get_attribute("value") == ""
    browser.save_screenshot(str(SCREENSHOTS / "agenthub-console-chat.png"))

    # Opening the chat marked it read (console.js posts /chats/{id}/read).
    def unread_gone(_: object) -> bool:
        chats = hub.http.get("/inbox", headers=hub.api()).json()["chats"]
        return all(chat["unread_count"] == 0 for chat in chats)

    wait.until(unread_gone)


def test_the_keyboard_opens_a_chat_and_shows_the_help(
    browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub
) -> None:
    hub.contact_says("visitor-8", "Bruno", "Where is my order?")
    sign_in(browser, wait, hub)
    wait.until(lambda d: row_named(d, "Bruno"))
    top = browser.find_elements(By.CSS_SELECTOR, ROW)[0]
    assert "Bruno" in top.text  # the newest activity first
    chat_id = top.get_attribute("data-chat-id")
    keys = webdriver.ActionChains(browser)

    keys.send_keys("j").perform()  # nothing selected: j selects the top row
    selected = browser.find_elements(By.CSS_SELECTOR, f'{ROW}[aria-selected="true"]')
    assert [r.get_attribute("data-chat-id") for r in selected] == [chat_id]
    assert selected[0].value_of_css_property("outline-style") != "none"

    keys.send_keys(Keys.ENTER).perform()  # opens it
    wait.until(lambda d: d.execute_script("return document.body.dataset.chatId") == chat_id)
    wait.until(lambda d: by_testid(d, "chat-title").text == "Bruno")
    wait.until(lambda d: by_testid(d, "composer-input").is_displayed())

    help_overlay = by_testid(browser, "help-overlay")
    assert not help_overlay.is_displayed()
    keys.send_keys("?").perform()
    wait.until(lambda d: by_testid(d, "help-overlay").is_displayed())
    assert "Take over" in by_testid(browser, "help-overlay").text
    keys.send_keys(Keys.ESCAPE).perform()
    wait.until(lambda d: not by_testid(d, "help-overlay").is_displayed())

    # `/` outside a field: the canned responses, filtered as one types, Enter inserts one.
    for shortcut, content in (("refund", "Your refund is on its way."), ("ship", "It shipped.")):
        answer = hub.http.post(
            "/canned-responses", json={"shortcut": shortcut, "content": content}, headers=hub.api()
        )
        assert answer.status_code in (201, 409), answer.text
    keys.send_keys("/").perform()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, CANNED)) == 2)
    keys.send_keys("ref").perform()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, CANNED)) == 1)
    keys.send_keys(Keys.ENTER).perform()
    composer = by_testid(browser, "composer-input")
    assert composer.get_attribute("value") == "Your refund is on its way."
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="canned-picker"]')

    keys.send_keys(Keys.ESCAPE, "n").perform()  # leave the composer; note mode on
    assert by_testid(browser, "composer-note-toggle").is_selected()
    keys.send_keys(Keys.ESCAPE).perform()  # closes the chat: back to the list
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="composer-input"]'))
    assert browser.find_elements(By.CSS_SELECTOR, ROW)


def test_the_title_counts_the_chats_with_unread_messages(
    browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub
) -> None:
    for chat in hub.http.get("/inbox", headers=hub.api()).json()["chats"]:
        hub.http.post(f"/chats/{chat['id']}/read", headers=hub.api())
    sign_in(browser, wait, hub)
    wait.until(lambda d: not d.title.startswith("("))
    hub.contact_says("visitor-9", "Carla", "Hello?")
    wait.until(lambda d: d.title.startswith("(1) "))
    assert browser.title == "(1) Inbox · Agent Hub"


def test_the_narrow_layout_has_no_horizontal_scroll(
    browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub
) -> None:
    hub.contact_says("visitor-10", "Dora with a rather long name for a phone screen", "x" * 300)
    sign_in(browser, wait, hub)
    browser.set_window_size(390, 844)
    try:
        wait.until(lambda d: d.execute_script("return window.innerWidth") <= 400)
        wait.until(lambda d: row_named(d, "Dora"))
        fits = "return document.documentElement.scrollWidth <= window.innerWidth"
        assert browser.execute_script(fits), browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert by_testid(browser, "inbox-list").is_displayed()
        assert row_named(browser, "Dora").is_displayed()
        browser.save_screenshot(str(SCREENSHOTS / "agenthub-console-narrow.png"))
    finally:
        browser.set_window_size(1280, 900)


def test_presence_names_the_other_operators(
    browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub
) -> None:
    hub.contact_says("visitor-11", "Eva", "Anyone there?")
    created = hub.http.post(
        "/auth/users",
        json={"username": "bruno", "password": PASSWORD, "role": "ADMIN"},
        headers=hub.api(),
    )
    assert created.status_code == 201, created.text
    bruno = hub.http.post("/auth/login", json={"username": "bruno", "password": PASSWORD})
    chat_id = next(
        c["id"]
        for c in hub.http.get("/inbox", headers=hub.api()).json()["chats"]
        if c["name"] == "Eva"
    )
    browser.get(f"{hub.url}/console/chats/{chat_id}")
    live(wait)
    wait.until(lambda d: by_testid(d, "presence").text == "")  # only the admin: nobody else
    ws_url = hub.url.replace("http", "ws") + f"/ws?token={bruno.json()['access_token']}"
    with websockets.sync.client.connect(ws_url) as socket:
        socket.send(json.dumps({"type": "viewing", "chat_id": chat_id}))
        wait.until(lambda d: by_testid(d, "presence").text == "bruno is viewing")
        socket.send(json.dumps({"type": "typing", "chat_id": chat_id}))
        wait.until(lambda d: by_testid(d, "presence").text == "bruno is typing…")
    wait.until(lambda d: by_testid(d, "presence").text == "")


def test_take_over_reply_to_the_platform_and_hand_back(
    browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub
) -> None:
    """A chat an agent handles: the composer offers Take over; the reply then reaches the
    contact's platform (an `api` channel's callback) and shows sent; Hand back returns the
    chat to the agent."""
    with FakePlatform(default=Reply(200, json={})) as platform:
        created = hub.http.post(
            "/channels",
            json={"name": "Shop", "platform": "api", "config": {"callback_url": platform.url}},
            headers=hub.api(),
        )
        shop = created.json()
        agent = hub.http.post(
            "/auth/agents",
            json={"name": "Shop bot", "webhook_url": f"{platform.url}/agent"},
            headers=hub.api(),
        )
        assert agent.status_code == 201, agent.text
        hub.contact_says("visitor-12", "Femi", "Is the blue one in stock?", channel=shop)
        chat_id = hub.chat_named("Femi")
        # A new chat gets the channel's default agents: here every active agent, the bot.
        links = hub.http.get(f"/chats/{chat_id}/agents", headers=hub.api()).json()
        assert [link["agent_id"] for link in links] == [agent.json()["id"]]

        sign_in(browser, wait, hub)
        browser.get(f"{hub.url}/console/chats/{chat_id}")
        live(wait)
        handled = '#chat-header [data-testid="chat-handled-by"]'
        assert by_testid(browser, "composer-agent-notice").is_displayed()
        assert "note" in by_testid(browser, "composer-input").get_attribute("placeholder")
        by_testid(browser, "composer-takeover").click()
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, handled).get_attribute("data-handled-by") == "human"
            )
        )
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, AGENT_NOTICE))

        by_testid(browser, "composer-input").send_keys("Yes, two left!", Keys.ENTER)

        def replies(_: object) -> list[Any]:
            return [r for r in platform.requests() if r.path != "/agent"]

        [sent] = wait.until(replies)
        assert json.loads(sent.body)["message"]["content"] == "Yes, two left!"
        mine = '[data-testid="timeline-item"][data-sender-type="USER"]'
        wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, mine).get_attribute("data-status") == "SENT"
        )
        assert "sent" in browser.find_element(By.CSS_SELECTOR, mine).text

        by_testid(browser, "action-handback").click()
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, handled).get_attribute("data-handled-by") == "agent"
            )
        )
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, AGENT_NOTICE))
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, f'{EVENT_ITEM}[data-event="handback"]')
        )
        taken = browser.find_element(By.CSS_SELECTOR, f'{EVENT_ITEM}[data-event="takeover"]')
        assert taken.text.startswith("Taken over by admin")
        deactivate(hub, agent.json()["id"])


def deactivate(hub: Hub, agent_id: str) -> None:
    """The agent gets no later test's chats (new chats link every active agent)."""
    answer = hub.http.patch(
        f"/auth/agents/{agent_id}", json={"is_active": False}, headers=hub.api()
    )
    assert answer.status_code == 200, answer.text


# Stands in for the browser's Notification (injected by WebDriver, which the page's CSP does not
# govern): permission granted, each notification recorded.
NOTIFICATION_SPY = """
window.__notified = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notified.push({title, tag: options && options.tag}); }
  addEventListener() {}
};
"""


def test_a_chat_that_starts_to_need_a_human_raises_a_notification(
    browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub
) -> None:
    with FakePlatform(default=Reply(200, json={"handoff": True})) as agent_server:
        agent = hub.http.post(
            "/auth/agents",
            json={"name": "Handoff bot", "webhook_url": agent_server.url, "buffer_time_seconds": 0},
            headers=hub.api(),
        )
        assert agent.status_code == 201, agent.text
        try:
            sign_in(browser, wait, hub)
            browser.execute_script(NOTIFICATION_SPY)
            toggle = by_testid(browser, "notify-toggle")
            toggle.click()
            wait.until(
                lambda d: by_testid(d, "notify-toggle").get_attribute("aria-pressed") == "true"
            )
            hub.contact_says("visitor-14", "Hana", "I need a person")
            notified = wait.until(lambda d: d.execute_script("return window.__notified"))
            chat_id = hub.chat_named("Hana")
            assert notified == [{"title": "Hana needs a human", "tag": f"needs-human-{chat_id}"}]
            # And off again: the choice is the operator's.
            by_testid(browser, "notify-toggle").click()
            assert by_testid(browser, "notify-toggle").get_attribute("aria-pressed") == "false"
        finally:
            deactivate(hub, agent.json()["id"])


@contextmanager
def openai_agent() -> Iterator[FakeAgent]:
    """A loopback OpenAI-compatible server, on an event loop of its own (the test is sync)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    agent = FakeAgent(protocol="openai")
    try:
        asyncio.run_coroutine_threadsafe(agent.start(), loop).result(10)
        yield agent
    finally:
        asyncio.run_coroutine_threadsafe(agent.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


PARTIAL = '[data-testid="partial-reply"]'
AGENT_ITEM = '[data-testid="timeline-item"][data-sender-type="AGENT"]'


def test_a_streamed_reply_forms_in_the_timeline(
    browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome], hub: Hub
) -> None:
    """The agent's partial texts (`message_partial`) show as one forming item, replaced in
    place with no request per event, and give way to the stored AGENT message."""
    with openai_agent() as llm:
        settings = {"base_url": llm.url, "api_key": "sk-test", "model": "m"}
        agent = hub.http.post(
            "/auth/agents",
            json={
                "name": "Stream bot",
                "transport": "openai",
                "openai": settings,
                "buffer_time_seconds": 0,
                "timeout_seconds": 10,
            },
            headers=hub.api(),
        )
        assert agent.status_code == 201, agent.text
        try:
            llm.script.append(stream("Hello!"))
            hub.contact_says("visitor-15", "Ines", "Hi")
            chat_id = hub.chat_named("Ines")

            def replied(_: object) -> bool:
                deliveries = f"/chats/{chat_id}/deliveries"
                answer = hub.http.get(deliveries, headers=hub.api()).json()
                return [d["status"] for d in answer] == ["succeeded"]

            wait.until(replied)  # before the page opens: it shows the reply without an event
            sign_in(browser, wait, hub)
            browser.get(f"{hub.url}/console/chats/{chat_id}")
            live(wait)
            assert browser.find_elements(By.CSS_SELECTOR, AGENT_ITEM)

            final = "Your parcel left the depot early this morning and arrives tomorrow."
            chunks = [f"{word} " for word in final.split()]
            # After the refetches the contact's message causes, ~1.3 s of streaming.
            llm.script.append(stream(*chunks, pause=0.12, delay=0.6))
            hub.contact_says("visitor-15", "Ines", "Where is it now?")
            contact = '[data-testid="timeline-item"][data-sender-type="CONTACT"]'
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, contact)) == 2)
            # Polled every 50 ms, not 500: the stream lasts about a second.
            fast = WebDriverWait(browser, 15, 0.05, (StaleElementReferenceException,))
            forming = fast.until(lambda d: d.find_element(By.CSS_SELECTOR, PARTIAL))
            first = forming.find_element(By.CSS_SELECTOR, ".content").text
            assert first and final.startswith(first) and first != final
            assert forming.get_attribute("data-delivery-id")
            assert "Agent Stream bot" in forming.text
            last = "#timeline-items > li:last-child"
            assert browser.find_element(By.CSS_SELECTOR, last).get_attribute("data-testid") == (
                "partial-reply"
            )
            fetches = "return performance.getEntriesByType('resource').length"
            before = browser.execute_script(fetches)

            def grown(d: webdriver.Chrome) -> str | None:
                text = d.find_element(By.CSS_SELECTOR, f"{PARTIAL} .content").text
                return text if len(text) > len(first) else None

            later = fast.until(grown)
            assert final.startswith(later) and later.strip() != final
            assert by_testid(browser, "agent-working").is_displayed()  # still streaming
            assert len(browser.find_elements(By.CSS_SELECTOR, PARTIAL)) == 1  # updated in place
            assert browser.execute_script(fetches) == before  # no request per partial event
            browser.save_screenshot(str(SCREENSHOTS / "agenthub-console-partial.png"))
            # A timeline refetch meanwhile (another event) wipes the items: the reply is put back.
            shown = browser.find_element(By.CSS_SELECTOR, PARTIAL)
            browser.execute_script("htmx.trigger(document.body, 'timeline-refresh')")
            fast.until(staleness_of(shown))
            put_back = by_testid(browser, "partial-reply").find_element(By.CSS_SELECTOR, ".content")
            assert final.startswith(put_back.text)

            wait.until(
                lambda d: any(
                    final in item.text for item in d.find_elements(By.CSS_SELECTOR, AGENT_ITEM)
                )
            )
            assert not browser.find_elements(By.CSS_SELECTOR, PARTIAL)
        finally:
            deactivate(hub, agent.json()["id"])


AGENT_NOTICE = '[data-testid="composer-agent-notice"]'
EVENT_ITEM = '[data-testid="timeline-item"][data-kind="event"]'


def test_after_the_server_restarts_the_page_reconnects_and_catches_up(
    browser: webdriver.Chrome,
    wait: WebDriverWait[webdriver.Chrome],
    hub: Hub,
    serve: ServeProcess,
) -> None:
    """Last in the module: it restarts the module's server. What arrived while the page was
    offline shows without a reload (the page refetches once it is back)."""
    sign_in(browser, wait, hub)
    browser.execute_script("window.__notReloaded = true")
    serve.stop()
    wait.until(lambda d: by_testid(d, "connection-state").get_attribute("data-state") != "open")
    serve.start()
    hub.contact_says("visitor-13", "Gus", "Back online?")
    live(wait)
    wait.until(lambda d: row_named(d, "Gus"))
    assert browser.execute_script("return window.__notReloaded") is True
    # The only errors: the requests made while the server was down (the `wait` fixture
    # fails the test on any other).
    offline = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("ERR_CONNECTION_REFUSED" in message for message in offline), offline
