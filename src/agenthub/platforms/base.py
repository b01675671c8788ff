"""The platform adapter interface: verify, parse inbound, send outbound, answer the webhook.

One module per platform implements `PlatformAdapter`; the registry in `__init__` finds it by
name. Nothing outside `platforms/` knows any platform's wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2
from fastapi import Response

from agenthub.models import Channel, Chat, DeliveryStatus, Message


@dataclass(frozen=True)
class WebhookRequest:
    """What the platform sent, as the adapter needs it (raw body kept for signatures)."""

    method: str
    url: str  # the public URL the platform called: AGENTHUB_PUBLIC_URL + path + query
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class InboundMessage:
    external_id: str  # the platform's message id (dedupe key)
    contact_id: str  # the contact's address on the platform (the chat's external_id)
    content: str
    contact_name: str | None = None
    meta_data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusUpdate:
    external_id: str
    status: DeliveryStatus
    error: dict[str, Any] | None = None


@dataclass
class Inbound:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)


@dataclass(frozen=True)
class OutboundContext:
    message: Message
    chat: Chat
    channel: Channel
    credentials: dict[str, Any]
    public_url: str

    def api_base_url(self, default: str) -> str:
        return str(self.channel.config.get("api_base_url") or default).rstrip("/")


class SendError(Exception):
    """A platform refused or failed a send; `transient` ones are retried."""

    def __init__(
        self,
        detail: str,
        *,
        transient: bool,
        code: str | int | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.code = code
        self.status_code = status_code

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "status_code": self.status_code, "detail": self.detail[:500]}


def send_error_from_response(
    response: httpx2.Response, code: Any = None, detail: str | None = None
) -> SendError:
    transient = response.status_code == 429 or response.status_code >= 500
    return SendError(
        detail or response.text[:500],
        transient=transient,
        code=code,
        status_code=response.status_code,
    )


class PlatformAdapter(Protocol):
    name: str

    def verify(self, request: WebhookRequest, credentials: dict[str, Any]) -> bool:
        """Is this request really from the platform (signature / secret check)?"""
        ...

    def parse(self, request: WebhookRequest) -> Inbound:
        """Messages and status updates in the request; unknown content yields nothing."""
        ...

    def acknowledge(self) -> Response:
        """The answer the platform expects for an accepted webhook."""
        ...

    async def send(self, http: httpx2.AsyncClient, context: OutboundContext) -> str | None:
        """Send one USER/AGENT message; returns the platform's message id."""
        ...
