"""The delivery body of contract §5 and its Standard Webhooks signature."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook

from agenthub.chats.schemas import MessageOut
from agenthub.hub import Hub
from agenthub.models import Agent, AgentDelivery, Channel, Chat, Message, utcnow


@dataclass
class PreparedDelivery:
    agent: Agent
    secret: str
    body: bytes


def sign_headers(secret: str, webhook_id: str, body: bytes) -> dict[str, str]:
    now = utcnow()
    signature = Webhook(secret).sign(webhook_id, now, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


async def build_payload(
    session: AsyncSession, hub: Hub, delivery_id: str
) -> PreparedDelivery | None:
    row = (
        await session.execute(
            select(AgentDelivery, Agent, Chat, Channel)
            .join(Agent, Agent.id == AgentDelivery.agent_id)
            .join(Chat, Chat.id == AgentDelivery.chat_id)
            .join(Channel, Channel.id == Chat.channel_id)
            .where(AgentDelivery.id == delivery_id)
        )
    ).first()
    if row is None:
        return None
    delivery, agent, chat, channel = row
    history = await _history(session, agent, chat, delivery.message_ids)
    body: dict[str, Any] = {
        "event": "chat.messages",
        "delivery_id": delivery.id,
        "agent": {"id": agent.id, "name": agent.name},
        "chat": {
            "id": chat.id,
            "name": chat.name,
            "external_id": chat.external_id,
            "channel_id": channel.id,
            "platform": channel.platform,
        },
        "messages": [_message_json(m) for m in history],
        "new_message_ids": list(delivery.message_ids),
        "reply_url": f"{hub.settings.effective_public_url}/chats/{chat.id}/messages",
    }
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return PreparedDelivery(agent, hub.secrets.decrypt(agent.webhook_secret_encrypted), encoded)


async def _history(
    session: AsyncSession, agent: Agent, chat: Chat, new_ids: list[str]
) -> list[Message]:
    """The last `history_msg_count` messages of the window, plus every new one, oldest first."""
    since = utcnow() - timedelta(minutes=agent.recent_msg_window_minutes)
    recent = await session.scalars(
        select(Message)
        .where(Message.chat_id == chat.id, Message.timestamp >= since)
        .order_by(Message.seq.desc())
        .limit(agent.history_msg_count)
    )
    by_id = {m.id: m for m in recent}
    missing = [i for i in new_ids if i not in by_id]
    if missing:
        by_id.update(
            {m.id: m for m in await session.scalars(select(Message).where(Message.id.in_(missing)))}
        )
    return sorted(by_id.values(), key=lambda m: m.seq)


def _message_json(message: Message) -> dict[str, Any]:
    body = MessageOut.model_validate(message).model_dump(mode="json")
    return {
        "id": body["id"],
        "content": body["content"],
        "sender": body["sender_type"].lower(),
        "sender_type": body["sender_type"],
        "timestamp": body["timestamp"],
        "meta_data": body["meta_data"],
    }
