"""`openai`: each delivery is one streamed Chat Completions or Responses request to an
OpenAI-compatible server (OpenAI, a local LLM server, an agent framework's endpoint).

The conversation goes as roles: the agent's `system_prompt` first, then the history, one entry
per message, ending with the delivery's newest contact message (the contact is `user`, the
agent and the operators `assistant`). The hub offers one tool, `handoff_to_human {reason}`;
calling it hands the chat off. The streamed text is the reply (`Partial`s while it forms, one
AGENT message at the end; an empty text makes none). 429, 5xx, timeouts and broken streams are
retried as any attempt; other 4xx fail.

Plain `httpx2` (the hub's client, through the same address check, no redirects and response
cap as webhooks) with httpx-sse's decoder, not the `openai` package: docs/decisions.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx2
from httpx_sse import EventSource, SSEError

from agenthub.delivery.webhook_call import (
    Opened,
    Outcome,
    ms_since,
    open_request,
    read_capped,
    too_large,
)
from agenthub.hub import Hub
from agenthub.transports.base import (
    AgentCall,
    Partial,
    TransportEvent,
    answer,
    hub_headers,
    within,
)
from agenthub.transports.capped import CappedBody, TooLarge

HANDOFF_TOOL = "handoff_to_human"
HANDOFF_DESCRIPTION = (
    "Hand this conversation to a human operator: when the customer asks for a person, or you "
    "cannot help. The operator sees the reason."
)
HANDOFF_PARAMETERS = {
    "type": "object",
    "properties": {"reason": {"type": "string", "description": "Why a human is needed."}},
    "required": ["reason"],
}


class OpenAITransport:
    name: ClassVar[str] = "openai"

    async def deliver(self, hub: Hub, call: AgentCall) -> AsyncIterator[TransportEvent]:
        settings = call.settings
        api = settings.get("api", "chat_completions")
        dialect: _Dialect = _Responses() if api == "responses" else _ChatCompletions()
        url = settings["base_url"].rstrip("/") + dialect.path
        body = dialect.request(settings["model"], conversation(call, settings.get("system_prompt")))
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            **hub_headers(call),
        }
        if call.secret:
            headers["authorization"] = f"Bearer {call.secret}"
        timeout = call.target.timeout_seconds
        content = json.dumps(body, ensure_ascii=False).encode()
        opened = await open_request(hub, url, content, headers, timeout)
        if isinstance(opened, Outcome):
            yield opened
            return
        try:
            async for event in within(opened.started + timeout, _read(hub, opened, dialect)):
                yield event
        except (httpx2.HTTPError, OSError, TimeoutError) as exc:
            yield opened.broken(exc, timeout)
        finally:
            await opened.response.aclose()


def conversation(call: AgentCall, system_prompt: str | None) -> list[dict[str, str]]:
    """The system prompt, then the history as roles up to the newest new contact message."""
    messages = call.document["messages"]
    new = set(call.document["new_message_ids"])
    last_new = max((i for i, m in enumerate(messages) if m["id"] in new), default=len(messages) - 1)
    entries = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for message in messages[: last_new + 1]:
        role = "user" if message["sender_type"] == "CONTACT" else "assistant"
        entries.append({"role": role, "content": _text_of(message)})
    return entries


def _text_of(message: dict[str, Any]) -> str:
    """A message's text; an attachment is named by its link, so the model knows it is there."""
    text = message.get("content") or ""
    media = (message.get("meta_data") or {}).get("media")
    if isinstance(media, dict) and media.get("url"):
        kind = media.get("type") or "attachment"
        text = f"{text}\n[{kind}: {media['url']}]".strip()
    return text


async def _read(hub: Hub, opened: Opened, dialect: _Dialect) -> AsyncIterator[TransportEvent]:
    response = opened.response
    code = response.status_code
    if not 200 <= code < 300:
        data = await read_capped(hub, opened)
        yield data if isinstance(data, Outcome) else opened.answered(data)
        return
    limit = hub.settings.agent_max_response_bytes
    capped = CappedBody(response, limit)
    try:
        if "json" in response.headers.get("content-type", ""):
            # A server that ignored `stream: true`: the whole answer at once.
            dialect.take_whole(json.loads(await capped.read()))
        else:
            async for sse in EventSource(capped).aiter_sse():  # type: ignore[arg-type]
                if dialect.take(sse.event, sse.data):
                    yield Partial(dialect.text)
                if dialect.finished:
                    break
    except TooLarge:
        yield too_large(opened, limit, capped.start)
        return
    except (SSEError, ValueError, _StreamFailed) as exc:
        yield opened.failed("protocol", f"{type(exc).__name__}: {exc}", excerpt=capped.excerpt())
        return
    if not dialect.finished:
        yield opened.failed("protocol", "the stream ended before the answer did")
        return
    text = dialect.text.strip()
    yield Outcome(
        code,
        ms_since(opened.started),
        body=answer(
            [text] if text else [],
            handoff=dialect.handoff_reason is not None,
            handoff_reason=dialect.handoff_reason,
        ),
        excerpt=capped.excerpt(),
        remote_address=opened.address,
    )


class _StreamFailed(Exception):
    pass


class _Dialect:
    """One API's request and stream: the text so far, the handoff, whether it finished."""

    path: ClassVar[str]

    def __init__(self) -> None:
        self.text = ""
        self.handoff_reason: str | None = None
        self.finished = False

    def request(self, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        raise NotImplementedError

    def take(self, event: str, data: str) -> bool:
        """One server-sent event; True when the text grew."""
        raise NotImplementedError

    def take_whole(self, body: Any) -> None:
        raise NotImplementedError

    def _hand_off(self, arguments: str) -> None:
        try:
            reason = json.loads(arguments or "{}").get("reason")
        except (ValueError, AttributeError):
            reason = None
        self.handoff_reason = str(reason or "the agent asked for a human")


class _ChatCompletions(_Dialect):
    path = "/chat/completions"

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[int, dict[str, str]] = {}

    def request(self, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "model": model,
            "messages": messages,
            "stream": True,
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": HANDOFF_TOOL,
                        "description": HANDOFF_DESCRIPTION,
                        "parameters": HANDOFF_PARAMETERS,
                    },
                }
            ],
        }

    def take(self, event: str, data: str) -> bool:
        if data.strip() == "[DONE]":
            self._finish()
            return False
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError("a chunk that is not an object")
        if "error" in chunk:
            raise _StreamFailed(str(chunk["error"])[:300])
        grew = False
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.text += str(delta["content"])
                grew = True
            for call in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(int(call.get("index", 0)), {"name": "", "args": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["args"] += function.get("arguments") or ""
        return grew

    def take_whole(self, body: Any) -> None:
        for choice in body.get("choices") or []:
            message = choice.get("message") or {}
            self.text += str(message.get("content") or "")
            for index, call in enumerate(message.get("tool_calls") or []):
                function = call.get("function") or {}
                self.calls[index] = {
                    "name": function.get("name") or "",
                    "args": function.get("arguments") or "",
                }
        self._finish()

    def _finish(self) -> None:
        for call in self.calls.values():
            if call["name"] == HANDOFF_TOOL:
                self._hand_off(call["args"])
        self.finished = True


class _Responses(_Dialect):
    path = "/responses"

    def request(self, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        system = [m["content"] for m in messages if m["role"] == "system"]
        body: dict[str, Any] = {
            "model": model,
            "input": [m for m in messages if m["role"] != "system"],
            "stream": True,
            "tools": [
                {
                    "type": "function",
                    "name": HANDOFF_TOOL,
                    "description": HANDOFF_DESCRIPTION,
                    "parameters": HANDOFF_PARAMETERS,
                }
            ],
        }
        if system:
            body["instructions"] = system[0]
        return body

    def take(self, event: str, data: str) -> bool:
        payload = json.loads(data)
        if not isinstance(payload, dict):
            raise ValueError("an event that is not an object")
        kind = payload.get("type") or event
        if kind == "response.output_text.delta":
            self.text += str(payload.get("delta") or "")
            return True
        if kind == "response.output_item.done":
            self._item(payload.get("item") or {})
        elif kind == "response.completed":
            self.finished = True
        elif kind in ("response.failed", "response.incomplete", "error"):
            raise _StreamFailed(str(payload.get("response", payload))[:300])
        return False

    def take_whole(self, body: Any) -> None:
        for item in body.get("output") or []:
            if item.get("type") == "message":
                for part in item.get("content") or []:
                    if part.get("type") == "output_text":
                        self.text += str(part.get("text") or "")
            self._item(item)
        self.finished = True

    def _item(self, item: dict[str, Any]) -> None:
        if item.get("type") == "function_call" and item.get("name") == HANDOFF_TOOL:
            self._hand_off(str(item.get("arguments") or ""))
