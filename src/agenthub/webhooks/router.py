"""`POST /webhooks/{platform}/{channel_id}`: where platforms deliver messages and statuses."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from agenthub.deps import HubDep
from agenthub.errors import Forbidden, NotFound
from agenthub.models import Channel
from agenthub.platforms import get_adapter
from agenthub.platforms.base import WebhookRequest
from agenthub.uow import commit
from agenthub.webhooks.service import ingest

router = APIRouter(tags=["webhooks"])


async def _receive(platform: str, channel_id: str, request: Request, hub: HubDep) -> Response:
    adapter = get_adapter(platform)
    webhook = WebhookRequest(
        method=request.method,
        url=hub.settings.effective_public_url
        + request.url.path
        + (f"?{request.url.query}" if request.url.query else ""),
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        body=await request.body(),
    )
    async with hub.db.session() as session:
        channel = await session.get(Channel, channel_id)
        if channel is None or channel.platform != platform or not channel.is_active:
            raise NotFound("Channel not found")
        if not adapter.verify(webhook, hub.secrets.decrypt_json(channel.credentials_encrypted)):
            raise Forbidden("Invalid or missing signature")
        await ingest(session, hub, channel, adapter.parse(webhook))
        await commit(session)
    return adapter.acknowledge()


@router.post("/webhooks/{platform}/{channel_id}", response_class=Response)
async def receive_webhook(
    platform: str, channel_id: str, request: Request, hub: HubDep
) -> Response:
    """Inbound messages (and status callbacks) from a platform, checked against its signature.

    A bad or missing signature is refused with 403 and nothing is stored; a payload the hub
    does not handle is acknowledged and ignored.
    """
    return await _receive(platform, channel_id, request, hub)


@router.post("/webhooks/{platform}/{channel_id}/status", response_class=Response)
async def receive_status(platform: str, channel_id: str, request: Request, hub: HubDep) -> Response:
    """Delivery status callbacks (Twilio's `StatusCallback`)."""
    return await _receive(platform, channel_id, request, hub)
