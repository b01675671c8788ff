"""Platform adapters, found by platform name."""

from __future__ import annotations

from agenthub.errors import NotFound
from agenthub.platforms.api import ApiAdapter
from agenthub.platforms.base import PlatformAdapter, SendError
from agenthub.platforms.telegram import TelegramAdapter
from agenthub.platforms.twilio import TwilioAdapter
from agenthub.platforms.whapi import WhapiAdapter
from agenthub.platforms.whatsapp_cloud import WhatsAppCloudAdapter

_ADAPTERS: dict[str, PlatformAdapter] = {
    adapter.name: adapter
    for adapter in (
        ApiAdapter(),
        TwilioAdapter(),
        TelegramAdapter(),
        WhatsAppCloudAdapter(),
        WhapiAdapter(),
    )
}


def get_adapter(platform: str) -> PlatformAdapter:
    try:
        return _ADAPTERS[platform]
    except KeyError:
        raise NotFound(f"Platform {platform!r} is not supported") from None


__all__ = ["PlatformAdapter", "SendError", "get_adapter"]
