"""The example agent behind `agenthub pingpong`: the smallest thing that talks to the hub.

The hub POSTs a delivery to `http://127.0.0.1:<port>/`. The agent checks its Standard Webhooks
signature with the agent's `webhook_secret` (a bad one gets 401), then answers
`pong: <the newest message it was sent>` — or, to the message `buttons`, a question with two
buttons (Ping, Pong: the contact's tap comes back as a message, `Ping` or `Pong`, and is
ponged like any other) — in one of two ways:

- inline (default): the 2xx answer is `{"reply": "pong: …"}` (or `{"replies": [{"text": …,
  "buttons": […]}]}`) and the hub stores and sends it;
- through the API (with a token): it answers `200 {}` at once and POSTs the reply to the
  delivery's `reply_url` (or `<hub>/chats/<id>/messages`) with `Authorization: Bearer <token>`,
  as an agent that takes longer than a webhook should would do.

Copy this file as the starting point of a real agent.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger("agenthub.pingpong")
SEEN_DELIVERIES = 1000  # webhook-ids remembered, so a retried delivery is answered only once


def pong_text(payload: dict[str, Any]) -> str:
    """`pong: <content>` of the last message whose id is in `new_message_ids`."""
    new_ids = set(payload.get("new_message_ids") or [])
    newest = ""
    for message in payload.get("messages") or []:
        if isinstance(message, dict) and message.get("id") in new_ids:
            newest = str(message.get("content") or "")
    return f"pong: {newest}"


BUTTONS = [{"id": "ping", "title": "Ping"}, {"id": "pong", "title": "Pong"}]


def answer_for(payload: dict[str, Any]) -> dict[str, Any]:
    """The reply as a message: `{"text": "pong: …"}`, or the question with two buttons when
    the newest message is `buttons` (what the channel shows for them is the hub's business:
    real buttons on WhatsApp and Telegram, numbered lines where there are none)."""
    text = pong_text(payload)
    if text.removeprefix("pong: ").strip().lower() == "buttons":
        return {"text": "Ping or pong?", "buttons": BUTTONS}
    return {"text": text}


def reply_target(payload: dict[str, Any], hub_url: str | None) -> str | None:
    """Where to POST the reply: the delivery's `reply_url`, else `<hub>/chats/<id>/messages`."""
    if payload.get("reply_url"):
        return str(payload["reply_url"])
    chat = payload.get("chat")
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    if hub_url and chat_id:
        return f"{hub_url.rstrip('/')}/chats/{chat_id}/messages"
    return None


def create_pingpong_app(
    secret: str, *, token: str | None = None, hub_url: str | None = None
) -> Starlette:
    webhook = Webhook(secret)
    seen: OrderedDict[str, None] = OrderedDict()
    state: dict[str, httpx2.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with httpx2.AsyncClient(timeout=10) as http:
            state["http"] = http
            yield

    async def post_reply(url: str, answer: dict[str, Any]) -> None:
        message = {
            "content": answer["text"],
            **({"buttons": answer["buttons"]} if "buttons" in answer else {}),
        }
        try:
            response = await state["http"].post(
                url, json=message, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx2.HTTPError as exc:
            log.warning("posting the reply to %s failed: %s", url, exc)
            return
        log.info("POST %s -> %s", url, response.status_code)

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            payload = webhook.verify(body, dict(request.headers))
        except (WebhookVerificationError, ValueError):
            return JSONResponse({"detail": "invalid signature"}, status_code=401)
        if not isinstance(payload, dict):
            return JSONResponse({"detail": "expected a JSON object"}, status_code=400)
        answer = answer_for(payload)
        log.info("%s -> %r", request.headers["webhook-id"], answer["text"])
        if token is None:
            inline = {"replies": [answer]} if "buttons" in answer else {"reply": answer["text"]}
            return JSONResponse(inline)

        # API mode: acknowledge now, reply afterwards — once per delivery, even if retried.
        delivery_id = request.headers["webhook-id"]
        url = reply_target(payload, hub_url)
        if delivery_id in seen or url is None:
            return JSONResponse({})
        seen[delivery_id] = None
        while len(seen) > SEEN_DELIVERIES:
            seen.popitem(last=False)
        return JSONResponse({}, background=BackgroundTask(post_reply, url, answer))

    return Starlette(routes=[Route("/", receive, methods=["POST"])], lifespan=lifespan)


def serve(port: int, secret: str, token: str | None = None, hub_url: str | None = None) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # our own line says the same
    app = create_pingpong_app(secret, token=token, hub_url=hub_url)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
