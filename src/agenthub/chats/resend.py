"""Sending a failed message to the contact again: `POST /chats/{id}/messages/{message_id}/retry`.

The message keeps its id and its place in the timeline; its outbox row starts over (attempts,
backoff) and it shows `PENDING` again, then whatever the platform answers this time. Its old
`external_id` is dropped first, so a late status callback about the failed copy cannot mark
the new one delivered, and so is its old `error`: the `message_status` event of the retry
(and every answer after it) shows a pending message with no error.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.delivery import events
from agenthub.errors import Conflict, NotFound
from agenthub.hub import Hub
from agenthub.models import Chat, DeliveryStatus, Message, OutboundSend, OutboundStatus, SenderType


async def get_message(session: AsyncSession, chat: Chat, message_id: str) -> Message:
    message = await session.scalar(
        select(Message).where(Message.chat_id == chat.id, Message.id == message_id)
    )
    if message is None:
        raise NotFound("Message not found")
    return message


async def retry_send(session: AsyncSession, hub: Hub, message: Message) -> Message:
    """Queue a FAILED USER or AGENT message again. Anything else → 409."""
    # The outbox row first, then the message: the order the sender locks them in.
    send = await session.get(OutboundSend, message.id, with_for_update=True)
    message = await session.get_one(
        Message, message.id, with_for_update=True, populate_existing=True
    )
    if message.sender_type == SenderType.CONTACT:
        raise Conflict("A contact's message is not sent to the platform")
    if message.delivery_status != DeliveryStatus.FAILED:
        raise Conflict("Only a failed message can be sent again")
    now = hub.clock()
    if send is None:  # the outbox row may be gone (deleted by hand): make a new one
        send = OutboundSend(message_id=message.id)
        session.add(send)
    send.status = OutboundStatus.PENDING
    send.attempt_count = 0
    send.next_attempt_at = now
    send.locked_until = None
    send.last_error = None
    message.delivery_status = DeliveryStatus.PENDING
    message.external_id = None
    message.error = None
    message.meta_data = {k: v for k, v in message.meta_data.items() if k != "error"}
    await session.flush()
    events.publish_after_commit(session, hub, events.message_status(message))
    events.wake_after_commit(session, hub)
    return message
