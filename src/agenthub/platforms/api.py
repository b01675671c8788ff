"""`api`: the hub's own JSON webhook for web chats and custom apps.

Signed with Standard Webhooks in both directions, keyed with the channel's `secret`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from agenthub.chats.schemas import ChatOut, MessageOut
from agenthub.errors import BadRequest
from agenthub.models import utcnow
from agenthub.netguard import UnresolvableHost, destination
from agenthub.platforms.base import (
    Inbound,
    InboundMessage,
    OutboundContext,
    SendError,
    WebhookRequest,
    send_error_from_response,
)
from agenthub.rotation import channel_secrets


class ApiInbound(BaseModel):
    contact_id: str = Field(min_length=1, max_length=255)
    contact_name: str | None = Field(default=None, max_length=255)
    message_id: str = Field(min_length=1, max_length=255)
    content: str = Field(max_length=32_768)
    meta_data: dict[str, Any] = Field(default_factory=dict)


class ApiAdapter:
    name = "api"

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
        body = json.dumps(
            {
                "event": "message.outbound",
                "chat": ChatOut.model_validate(context.chat).model_dump(mode="json"),
                "message": MessageOut.model_validate(context.message).model_dump(mode="json"),
            },
            separators=(",", ":"),
        ).encode()
        from agenthub.delivery.payload import sign_headers

        secrets = channel_secrets(context.credentials, utcnow())
        headers = sign_headers(secrets, context.message.id, body)
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
        return context.message.id


def _signed_with(secret: str, request: WebhookRequest) -> bool:
    try:
        # Only the signature: a signed body that is not JSON is ignored by `parse`, not 403.
        Webhook(secret).verify(request.body, request.headers, json_parse=False)
    except (WebhookVerificationError, ValueError, TypeError):
        return False
    return True
