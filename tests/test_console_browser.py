"""The console in a real browser (headless Chromium through chromedriver) against a real
`agenthub serve` on loopback: sign in with the form, then a contact's message appears in the
inbox live, over the WebSocket, without a reload.

Needs Debian's `chromium` and `chromium-driver`: without them the test is skipped, unless
`AGENTHUB_TEST_BROWSER=required` (set by .ci/run), which makes their absence a failure.
Selenium is given both binaries' paths, so Selenium Manager never downloads anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from agenthub.migrate import upgrade_database
from tests.fake_platform import standard_webhook_headers
from tests.procs import ServeProcess, hub_env

pytestmark = pytest.mark.multiprocess

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("AGENTHUB_TEST_SCREENSHOTS", "/tmp"))
PASSWORD = "a long enough password"


def browser_required() -> bool:
    return os.environ.get("AGENTHUB_TEST_BROWSER", "").lower() == "required"


@pytest.fixture
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


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
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


def by_testid(driver: webdriver.Chrome, name: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def test_sign_in_and_see_a_contact_message_arrive_live(
    serve: ServeProcess, browser: webdriver.Chrome
) -> None:
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
        channel = created.json()

        wait = WebDriverWait(browser, 15)
        browser.get(f"{serve.url}/console")
        wait.until(lambda d: "/console/login" in d.current_url)
        by_testid(browser, "login-username").send_keys("admin")
        by_testid(browser, "login-password").send_keys(PASSWORD)
        by_testid(browser, "login-submit").click()
        wait.until(lambda d: d.current_url.endswith("/console"))
        wait.until(lambda d: by_testid(d, "connection-state").get_attribute("data-state") == "open")
        assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="chat-row"]')

        body = json.dumps(
            {
                "contact_id": "visitor-7",
                "contact_name": "Alice <Example>",
                "message_id": "m-1",
                "content": "My parcel arrived broken. Can I get a refund?",
            }
        )
        headers = standard_webhook_headers(channel["credentials"]["secret"], body)
        inbound = http.post(
            f"/webhooks/api/{channel['id']}",
            content=body,
            headers={"content-type": "application/json", **headers},
        )
        assert inbound.status_code < 300, inbound.text
        row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-testid="chat-row"]'))
        assert "Alice <Example>" in row.text
        assert "refund" in row.text
        unread = row.find_element(By.CSS_SELECTOR, '[data-testid="chat-unread"]')
        assert unread.text == "1"
        assert by_testid(browser, "inbox-count-all").text == "1"
        assert by_testid(browser, "connection-state").get_attribute("data-state") == "open"
        browser.save_screenshot(str(SCREENSHOTS / "agenthub-console-inbox.png"))

        # The chat page: the timeline, and a reply sent with Enter.
        row.find_element(By.CSS_SELECTOR, "a").click()
        wait.until(lambda d: "/console/chats/" in d.current_url)
        wait.until(lambda d: by_testid(d, "connection-state").get_attribute("data-state") == "open")
        composer = by_testid(browser, "composer-input")
        composer.send_keys("Sorry to hear that! Sending a refund now.", Keys.ENTER)
        wait.until(
            lambda d: d.find_elements(
                By.CSS_SELECTOR, '[data-testid="timeline-item"][data-sender-type="USER"]'
            )
        )
        assert composer.get_attribute("value") == ""
        browser.save_screenshot(str(SCREENSHOTS / "agenthub-console-chat.png"))

        # Opening the chat marked it read (console.js posts /chats/{id}/read).
        def unread(_: object) -> bool:
            answer = http.get("/inbox", headers={"Authorization": f"Bearer {token}"})
            return bool(answer.json()["chats"][0]["unread_count"] == 0)

        wait.until(unread)
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems  # a Content-Security-Policy violation, a script error
