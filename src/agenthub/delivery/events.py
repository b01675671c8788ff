"""Dashboard events (the WebSocket's, docs/api.md) and the after-commit plumbing that raises them.

Events and wake-ups raised inside a transaction go out only once it commits (see `uow`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.schemas import ChatOut, MessageOut
from agenthub.hub import Hub
from agenthub.models import AgentDelivery, Chat, Message
from agenthub.uow import after_commit

PREVIEW_CHARS = 100


def new_message(message: Message | Mapping[str, Any]) -> dict[str, Any]:
    """For a stored message, or the row of one (the inbound path writes rows, not objects)."""
    body = MessageOut.model_validate(message).model_dump(mode="json")
    channel_id = message["channel_id"] if isinstance(message, Mapping) else message.channel_id
    return {
        "type": "new_message",
        "channel_id": channel_id,
        "chat_id": body["chat_id"],
        "message_id": body["id"],
        "sender_type": body["sender_type"],
        "preview": body["content"][:PREVIEW_CHARS],
        "timestamp": body["timestamp"],
        "message": body,
    }


def message_updated(message: Message) -> dict[str, Any]:
    """A stored message changed other than by its delivery status (its `meta_data.reactions`)."""
    return {
        "type": "message_updated",
        "channel_id": message.channel_id,
        "chat_id": message.chat_id,
        "message": MessageOut.model_validate(message).model_dump(mode="json"),
    }


def message_status(message: Message) -> dict[str, Any]:
    """With the message's `error` when it has one (a FAILED message)."""
    event: dict[str, Any] = {
        "type": "message_status",
        "channel_id": message.channel_id,
        "chat_id": message.chat_id,
        "message_id": message.id,
        "delivery_status": str(message.delivery_status),
    }
    if message.error is not None:
        event["error"] = message.error
    return event


def chat_updated(chat: Chat, *, new: bool = False) -> dict[str, Any]:
    """`chat.unread_count` is per reader: each socket sets it from `_contact_message_count`
    and its user's read marker (realtime/router.py). `new`: the chat was just created, so
    nobody has a read marker for it yet (its sockets need not look one up)."""
    event = {
        "type": "chat_updated",
        "channel_id": chat.channel_id,
        "chat_id": chat.id,
        "chat": ChatOut.of(chat).model_dump(mode="json"),
        "_contact_message_count": chat.contact_message_count,
    }
    if new:
        event["_new_chat"] = True
    return event


def delivery_failed(chat: Chat, delivery: AgentDelivery) -> dict[str, Any]:
    return {
        "type": "agent_delivery_failed",
        "channel_id": chat.channel_id,
        "chat_id": chat.id,
        "agent_id": delivery.agent_id,
        "delivery_id": delivery.id,
        "error": delivery.last_error,
    }


def agent_working(channel_id: str, chat_id: str, agent_id: str, delivery_id: str) -> dict[str, Any]:
    """An attempt to deliver to an agent started (the agent is "thinking")."""
    return {
        "type": "agent_working",
        "channel_id": channel_id,
        "chat_id": chat_id,
        "agent_id": agent_id,
        "delivery_id": delivery_id,
    }


def message_partial(
    channel_id: str, chat_id: str, agent_id: str, delivery_id: str, text: str
) -> dict[str, Any]:
    """The reply an agent is streaming, so far (the whole text, not a delta)."""
    return {
        "type": "message_partial",
        "channel_id": channel_id,
        "chat_id": chat_id,
        "agent_id": agent_id,
        "delivery_id": delivery_id,
        "text": text,
    }


# What an attempt's recorded outcome (`record_outcome`'s kind) tells dashboards; a kind not
# listed here (one added later) reads as "failed": the agent is no longer working on it.
# A delivery cancelled because its link was paused mid-attempt ends as `failed` for the agent.
AGENT_DONE_OUTCOMES = {
    "succeeded": "delivered",
    "retry": "retrying",
    "failed": "failed",
    "cancelled": "failed",
}


def agent_done(
    channel_id: str, chat_id: str, agent_id: str, delivery_id: str, kind: str
) -> dict[str, Any]:
    return {
        **agent_working(channel_id, chat_id, agent_id, delivery_id),
        "type": "agent_done",
        "outcome": AGENT_DONE_OUTCOMES.get(kind, "failed"),
    }


def agent_health(
    agent_id: str, state: str, since: datetime, last_error: str | None
) -> dict[str, Any]:
    """An agent became unavailable, or healthy again (`delivery/health.py`). It belongs to no
    channel: `_admins_only` tells the WebSocket to send it to admins' sockets alone."""
    return {
        "type": "agent_health",
        "channel_id": None,
        "_admins_only": True,
        "agent_id": agent_id,
        "state": state,
        "since": since.isoformat(),
        "last_error": last_error,
    }


ACCESS_CHANGED = "access_changed"


def access_changed(user_id: str | None) -> dict[str, Any]:
    """Internal (never sent to clients): open WebSockets of `user_id` (None: of everyone)
    re-check their token and channel grants before forwarding anything newer."""
    return {"type": ACCESS_CHANGED, "channel_id": None, "user_id": user_id}


def publish_after_commit(session: AsyncSession, hub: Hub, event: dict[str, Any]) -> None:
    after_commit(session, lambda: hub.events.publish(event))


def wake_after_commit(session: AsyncSession, hub: Hub) -> None:
    after_commit(session, hub.jobs.wake)
