"""`api`: the hub's own JSON webhook for web chats and custom apps.

Signed with Standard Webhooks in both directions, keyed with the channel's `secret`.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, cast

import httpx2
from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from agenthub.chats.schemas import MAX_CONTENT, ChatOut, MessageOut
from agenthub.errors import BadRequest
from agenthub.ids import new_id
from agenthub.models import utcnow
from agenthub.netguard import UnresolvableHost, destination
from agenthub.platforms.base import (
    Capabilities,
    ChatContext,
    Inbound,
    InboundMessage,
    OutboundContext,
    PartialReply,
    SendError,
    WebhookRequest,
    send_error_from_response,
)
from agenthub.platforms.common import outbound_rich
from agenthub.rotation import channel_secrets


class ApiInbound(BaseModel):
    contact_id: str = Field(min_length=1, max_length=255)
    contact_name: str | None = Field(default=None, max_length=255)
    message_id: str = Field(min_length=1, max_length=255)
    content: str = Field(max_length=32_768)
    meta_data: dict[str, Any] = Field(default_factory=dict)


class ApiAdapter:
    name = "api"
    reply_window: timedelta | None = None
    # Passed through to the callback as given: the client's own widget decides how to show it.
    capabilities = Capabilities(
        buttons=3,
        list_rows=10,
        templates=False,
        typing=True,
        reactions=True,
        media=True,
        max_text_length=MAX_CONTENT,
        rendering="pass_through",
    )
    window_closed_codes: frozenset[str] = frozenset()

    def verify(self, request: WebhookRequest, credentials: dict[str, Any]) -> bool:
        # During a rotation's grace the client may still sign with the old secret.
        return any(
            _signed_with(secret, request) for secret in channel_secrets(credentials, utcnow())
        )

    def parse(self, request: WebhookRequest) -> Inbound:
        try:
            data = ApiInbound.model_validate_json(request.body)
        except ValidationError:
            return Inbound()
        return Inbound(
            messages=[
                InboundMessage(
                    external_id=data.message_id,
                    contact_id=data.contact_id,
                    contact_name=data.contact_name,
                    content=data.content,
                    meta_data=data.meta_data,
                )
            ]
        )

    def acknowledge(self) -> Response:
        return JSONResponse({"ok": True})

    async def send(self, http: httpx2.AsyncClient, context: OutboundContext) -> str | None:
        callback_url = context.channel.config.get("callback_url")
        if not callback_url:
            # Nowhere to push: the client reads replies through the API or the WebSocket.
            return None
        event: dict[str, Any] = {
            "event": "message.outbound",
            "chat": ChatOut.model_validate(context.chat).model_dump(mode="json"),
            "message": MessageOut.model_validate(context.message).model_dump(mode="json"),
        }
        rich = outbound_rich(context.message.meta_data)
        if rich is not None and rich.buttons is not None:
            event["buttons"] = [b.model_dump(exclude_none=True) for b in rich.buttons]
        if rich is not None and rich.list is not None:
            event["list"] = rich.list.model_dump(exclude_none=True)
        await self._callback(http, context, str(callback_url), event, context.message.id)
        return context.message.id

    def check_reaction(self, emoji: str) -> str | None:
        return None

    async def send_reaction(
        self, http: httpx2.AsyncClient, context: OutboundContext, emoji: str
    ) -> None:
        """A `message.reaction` callback (nothing when the channel has no `callback_url`)."""
        callback_url = context.channel.config.get("callback_url")
        if not callback_url:
            return
        event = {
            "event": "message.reaction",
            "chat": ChatOut.model_validate(context.chat).model_dump(mode="json"),
            "message_id": context.message.id,
            "emoji": emoji,
        }
        await self._callback(http, context, str(callback_url), event, f"{context.message.id}-r")

    async def _callback(
        self,
        http: httpx2.AsyncClient,
        context: OutboundContext,
        callback_url: str,
        event: dict[str, Any],
        webhook_id: str,
    ) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        from agenthub.delivery.payload import sign_headers

        secrets = channel_secrets(context.credentials, utcnow())
        headers = sign_headers(secrets, webhook_id, body)
        try:
            # Resolved and checked once, as agent webhooks are (netguard.py).
            target = await destination(
                callback_url, allow_private=context.settings.private_agent_urls_allowed
            )
        except BadRequest as exc:
            raise SendError(str(exc.detail), transient=isinstance(exc, UnresolvableHost)) from exc
        try:
            response = await http.post(
                target.url,
                content=body,
                headers={**headers, **target.headers},
                extensions=target.extensions,
                timeout=10,
            )
        except httpx2.HTTPError as exc:
            raise SendError(f"{type(exc).__name__}: {exc}", transient=True) from exc
        if not response.is_success:
            raise send_error_from_response(response)

    # --- typing --------------------------------------------------------------------------------

    # One `chat.typing` callback: the client's widget decides how long to show it.
    typing_renew_seconds: float | None = None

    async def send_typing(self, http: httpx2.AsyncClient, context: ChatContext) -> None:
        """A `chat.typing` callback (nothing when the channel has no `callback_url`)."""
        callback_url = context.channel.config.get("callback_url")
        if not callback_url or context.chat is None:
            return
        event = {
            "event": "chat.typing",
            "chat": ChatOut.model_validate(context.chat).model_dump(mode="json"),
        }
        # `_callback` reads only the credentials and settings of its context.
        await self._callback(
            http, cast(OutboundContext, context), str(callback_url), event, new_id("typ")
        )

    # --- streamed replies ----------------------------------------------------------------------

    def shows_partials(self, config: dict[str, Any]) -> bool:
        return bool(config.get("stream")) and bool(config.get("callback_url"))

    async def send_partial(
        self, http: httpx2.AsyncClient, context: ChatContext, partial: PartialReply
    ) -> None:
        """A `message.partial` callback: the reply so far, signed as `message.outbound` is."""
        callback_url = context.channel.config.get("callback_url")
        if not callback_url or context.chat is None:
            return
        event = {
            "event": "message.partial",
            "chat": ChatOut.model_validate(context.chat).model_dump(mode="json"),
            "agent_id": partial.agent_id,
            "delivery_id": partial.delivery_id,
            "text": partial.text,
        }
        await self._callback(
            http, cast(OutboundContext, context), str(callback_url), event, new_id("prt")
        )


def _signed_with(secret: str, request: WebhookRequest) -> bool:
    try:
        # Only the signature: a signed body that is not JSON is ignored by `parse`, not 403.
        Webhook(secret).verify(request.body, request.headers, json_parse=False)
    except (WebhookVerificationError, ValueError, TypeError):
        return False
    return True
