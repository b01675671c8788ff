"""What the console's tests share: the session cookie as a browser sends it, the hub's Origin
for changes, HTML parsed with selectolax and found by `data-testid`, and contacts writing in
through a signed `api` channel."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx2
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from selectolax.lexbor import LexborNode as Node

from tests.conftest import Caller
from tests.fake_platform import standard_webhook_headers

ORIGIN = "http://hub.test"  # the `settings` fixture's public URL


def cookie(caller: Caller) -> dict[str, str]:
    return {"Cookie": f"agenthub_session={caller.token}"}


def writing(caller: Caller, origin: str | None = ORIGIN) -> dict[str, str]:
    headers = cookie(caller)
    if origin is not None:
        headers["Origin"] = origin
    return headers


def parse(answer: httpx2.Response) -> HTMLParser:
    assert answer.headers["content-type"].startswith("text/html"), answer.text
    return HTMLParser(answer.text)


def hook(tree: HTMLParser | Node, testid: str) -> Node:
    node = tree.css_first(f'[data-testid="{testid}"]')
    assert node is not None, f"no {testid}"
    return node


def hooks(tree: HTMLParser | Node, testid: str) -> list[Node]:
    return list(tree.css(f'[data-testid="{testid}"]'))


async def api_channel(client: httpx2.AsyncClient, admin: Caller, name: str) -> dict[str, Any]:
    answer = await client.post(
        "/channels", json={"name": name, "platform": "api"}, headers=admin.headers
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return {**body, "secret": body["credentials"]["secret"]}


async def contact_says(
    client: httpx2.AsyncClient,
    channel: dict[str, Any],
    content: str,
    *,
    contact: str = "visitor-1",
    name: str = "Visitor One",
    meta_data: dict[str, Any] | None = None,
) -> str:
    """A signed inbound message from a contact; the chat's id."""
    body = json.dumps(
        {
            "contact_id": contact,
            "contact_name": name,
            "message_id": uuid.uuid4().hex,
            "content": content,
            **({"meta_data": meta_data} if meta_data else {}),
        }
    ).encode()
    headers = standard_webhook_headers(channel["secret"], body)
    answer = await client.post(
        f"/webhooks/api/{channel['id']}",
        content=body,
        headers={"content-type": "application/json", **headers},
    )
    assert answer.status_code < 300, answer.text
    chats = await client.get(
        "/inbox", params={"channel_id": channel["id"], "q": contact}, headers=cookie_free(channel)
    )
    return str(chats.json()["chats"][0]["id"])


def cookie_free(channel: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {channel['_admin_token']}"}


FORM = {"content-type": "application/x-www-form-urlencoded"}


def form_of(caller: Caller, origin: str | None = ORIGIN) -> dict[str, str]:
    return {**writing(caller, origin), **FORM}
