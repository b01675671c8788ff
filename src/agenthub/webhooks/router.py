"""`POST /webhooks/{platform}/{channel_id}`: where platforms deliver messages and statuses;
`GET` on the same URL answers a platform's verification handshake (WhatsApp Cloud)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from agenthub.deps import HubDep, hub_of
from agenthub.errors import DomainError, Forbidden, NotFound
from agenthub.hub import Hub
from agenthub.models import Channel
from agenthub.openapi_errors import error_responses
from agenthub.platforms import get_adapter
from agenthub.platforms.base import WebhookHandshake, WebhookRequest

router = APIRouter(tags=["webhooks"])


class MethodNotAllowed(DomainError):
    status_code = 405
    headers = {"Allow": "POST"}

    def default_detail(self) -> str:
        return "This platform's webhook takes POST only"


async def _webhook_request(request: Request, hub: Hub) -> WebhookRequest:
    # Straight from the ASGI scope: `request.url` and `request.headers` build objects this
    # busiest endpoint does not need. The path is escaped as Starlette's `request.url` does.
    scope = request.scope
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    query = scope.get("query_string", b"").decode("latin-1")
    return WebhookRequest(
        method=request.method,
        url=hub.settings.effective_public_url + path + (f"?{query}" if query else ""),
        headers={
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        },
        query=dict(request.query_params) if query else {},
        body=await request.body(),
    )


async def _receive(platform: str, channel_id: str, request: Request) -> Response:
    """Queue the webhook for the next batch (`webhooks/intake.py`); answers once it is stored."""
    hub = hub_of(request)
    adapter = get_adapter(platform)
    webhook = await _webhook_request(request, hub)
    return await hub.intake.submit(adapter, channel_id, webhook)


@router.get(
    "/webhooks/{platform}/{channel_id}",
    response_class=Response,
    responses=error_responses(403, 405, 413),
)
async def verify_webhook(platform: str, channel_id: str, request: Request, hub: HubDep) -> Response:
    """A platform's verification handshake on the webhook URL (WhatsApp Cloud: `hub.mode`,
    `hub.verify_token`, `hub.challenge`). A wrong token is 403; platforms without a handshake
    answer 405.
    """
    adapter = get_adapter(platform)
    webhook = await _webhook_request(request, hub)
    async with hub.db.session(read_only=True) as session:
        channel = await session.get(Channel, channel_id)
        if channel is None or channel.platform != platform or not channel.is_active:
            raise NotFound("Channel not found")
        credentials = hub.secrets.decrypt_json(channel.credentials_encrypted)
    if not isinstance(adapter, WebhookHandshake):
        raise MethodNotAllowed()
    answer = adapter.handshake(webhook, credentials)
    if answer is None:
        raise Forbidden("Invalid verification request")
    return answer


@router.post(
    "/webhooks/{platform}/{channel_id}",
    response_class=Response,
    responses=error_responses(403, 413),
)
async def receive_webhook(platform: str, channel_id: str, request: Request) -> Response:
    """Inbound messages (and status callbacks) from a platform, checked against its signature.

    A bad or missing signature is refused with 403 and nothing is stored; a payload the hub
    does not handle is acknowledged and ignored.
    """
    return await _receive(platform, channel_id, request)


@router.post(
    "/webhooks/{platform}/{channel_id}/status",
    response_class=Response,
    responses=error_responses(403, 413),
)
async def receive_status(platform: str, channel_id: str, request: Request) -> Response:
    """Delivery status callbacks (Twilio's `StatusCallback`)."""
    return await _receive(platform, channel_id, request)
