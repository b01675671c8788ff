"""The delivery body an agent receives (docs/agents.md) and its Standard Webhooks signature.

Built inside the transaction that claims the attempt (`claim_due_attempts` already read the
delivery, agent, chat and channel columns it needs), with Core statements: this runs once per
delivered message, and an ORM load per row costs several times more than the row itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import TypeAdapter
from sqlalchemy import Integer, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook

from agenthub.hub import Hub
from agenthub.models import Chat, Message, utcnow

MESSAGES = cast(Table, Message.__table__)
CHATS = cast(Table, Chat.__table__)
_LAST_CONTACT_AT = select(CHATS.c.last_contact_message_at).where(
    CHATS.c.id == bindparam("b_chat_id")
)
# Serialises timestamps exactly as `MessageOut` does (pydantic, mode="json").
_TIMESTAMP = TypeAdapter(datetime)
_HISTORY_COLUMNS = (
    MESSAGES.c.id,
    MESSAGES.c.seq,
    MESSAGES.c.content,
    MESSAGES.c.sender_type,
    MESSAGES.c.timestamp,
    MESSAGES.c.meta_data,
)
# Built once, with bind parameters (building a statement per call costs more than running it).
_RECENT = (
    select(*_HISTORY_COLUMNS)
    .where(
        MESSAGES.c.chat_id == bindparam("b_chat_id"), MESSAGES.c.timestamp >= bindparam("b_since")
    )
    .order_by(MESSAGES.c.seq.desc())
    .limit(bindparam("b_limit", type_=Integer()))
)
_BY_ID = select(*_HISTORY_COLUMNS).where(MESSAGES.c.id.in_(bindparam("b_ids", expanding=True)))


@dataclass(frozen=True)
class DeliveryTarget:
    """What one attempt needs to know about its delivery, read when it was claimed."""

    delivery_id: str
    message_ids: list[str]
    agent_id: str
    agent_name: str
    webhook_url: str | None
    webhook_secret_encrypted: str
    # A rotation's old secret and the end of its grace (`rotation.py`).
    previous_webhook_secret_encrypted: str | None
    previous_webhook_secret_until: datetime | None
    timeout_seconds: float
    history_msg_count: int
    recent_msg_window_minutes: int
    chat_id: str
    chat_name: str | None
    chat_external_id: str
    channel_id: str
    platform: str
    # Show typing in the chat while the attempt is in flight (`typing_indicator.py`).
    typing_while_working: bool = False
    # How the delivery reaches the agent (`transports/`), its settings and encrypted secret,
    # and what the previous delivery kept for this chat (an A2A task waiting for input).
    transport: str = "webhook"
    transport_settings: dict[str, Any] | None = None
    transport_secret_encrypted: str | None = None
    continuation: str | None = None


@dataclass
class PreparedDelivery:
    target: DeliveryTarget
    body: bytes
    # When the oldest of its new messages was stored (the contact-to-agent time is from it).
    first_message_at: datetime | None = None


def sign_headers(secrets: str | Sequence[str], webhook_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers; with several secrets (a rotation's grace), one signature per
    secret, space-separated: a receiver accepts the message when any of them checks."""
    now = utcnow()
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    signature = " ".join(Webhook(key).sign(webhook_id, now, body.decode()) for key in keys)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


async def build_payload(
    session: AsyncSession, hub: Hub, target: DeliveryTarget
) -> PreparedDelivery:
    history = await _history(session, target)
    body: dict[str, Any] = {
        "event": "chat.messages",
        "delivery_id": target.delivery_id,
        "agent": {"id": target.agent_id, "name": target.agent_name},
        "chat": {
            "id": target.chat_id,
            "name": target.chat_name,
            "external_id": target.chat_external_id,
            "channel_id": target.channel_id,
            "platform": target.platform,
            **await _channel_rules(session, hub, target),
        },
        "messages": [_message_json(m) for m in history],
        "new_message_ids": list(target.message_ids),
        "reply_url": f"{hub.settings.effective_public_url}/chats/{target.chat_id}/messages",
    }
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    new = set(target.message_ids)
    first = min((m.timestamp for m in history if m.id in new), default=None)
    return PreparedDelivery(target, encoded, first)


async def _channel_rules(session: AsyncSession, hub: Hub, target: DeliveryTarget) -> dict[str, Any]:
    """The chat's reply `window` (null on platforms without one) and what the channel can show
    (`capabilities`), both from the platform adapter."""
    from agenthub.chats.schemas import chat_window
    from agenthub.platforms import get_adapter

    adapter = get_adapter(target.platform)
    window = None
    if adapter.reply_window is not None:
        last = await session.scalar(_LAST_CONTACT_AT, {"b_chat_id": target.chat_id})
        window = chat_window(target.platform, last, hub.clock())
    return {
        "window": window.model_dump(mode="json") if window is not None else None,
        "capabilities": adapter.capabilities.as_dict(),
    }


async def _history(session: AsyncSession, target: DeliveryTarget) -> list[Any]:
    """The last `history_msg_count` messages of the window, plus every new one, oldest first."""
    since = utcnow() - timedelta(minutes=target.recent_msg_window_minutes)
    recent = await session.execute(
        _RECENT,
        {"b_chat_id": target.chat_id, "b_since": since, "b_limit": target.history_msg_count},
    )
    by_id = {m.id: m for m in recent}
    missing = [i for i in target.message_ids if i not in by_id]
    if missing:
        older = await session.execute(_BY_ID, {"b_ids": missing})
        by_id.update({m.id: m for m in older})
    return sorted(by_id.values(), key=lambda m: m.seq)


def _message_json(message: Any) -> dict[str, Any]:
    """A message as `MessageOut` serialises it, with the fields of the delivery body."""
    sender_type = str(message.sender_type)
    return {
        "id": message.id,
        "content": message.content,
        "sender": sender_type.lower(),
        "sender_type": sender_type,
        "timestamp": _TIMESTAMP.dump_python(message.timestamp, mode="json"),
        "meta_data": message.meta_data,
    }
