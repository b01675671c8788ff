"""Inbound: one transaction stores each platform message once, creating the chat on first
contact, linking the channel's default agents and filling their buffers (contract §4)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.service import add_message
from agenthub.delivery import events
from agenthub.delivery.agents import buffer_contact_message
from agenthub.delivery.outbound import apply_status
from agenthub.hub import Hub
from agenthub.ids import new_id
from agenthub.models import Agent, Channel, Chat, ChatAgentLink, DeliveryStatus, Message, SenderType
from agenthub.platforms.base import Inbound, InboundMessage


async def ingest(session: AsyncSession, hub: Hub, channel: Channel, inbound: Inbound) -> None:
    for message in inbound.messages:
        await store_contact_message(session, hub, channel, message)
    for update in inbound.statuses:
        await apply_status(
            session, hub, channel.id, update.external_id, update.status, update.error
        )


async def store_contact_message(
    session: AsyncSession, hub: Hub, channel: Channel, inbound: InboundMessage
) -> Message | None:
    """Store one contact message unless the platform already delivered it (returns None then)."""
    chat, created = await _get_or_create_chat(session, hub, channel, inbound)
    duplicate = await session.scalar(
        select(Message.id).where(
            Message.channel_id == channel.id, Message.external_id == inbound.external_id
        )
    )
    if duplicate is not None:
        return None
    if created:
        await _link_default_agents(session, chat)
    elif inbound.contact_name and not chat.name:
        chat.name = inbound.contact_name
    message = await add_message(
        session,
        chat,
        content=inbound.content,
        sender_type=SenderType.CONTACT,
        sender_id=inbound.contact_id,
        external_id=inbound.external_id,
        meta_data=inbound.meta_data,
        delivery_status=DeliveryStatus.DELIVERED,
    )
    await session.flush()
    if await buffer_contact_message(session, chat, message.timestamp):
        events.wake_after_commit(session, hub)
    events.publish_after_commit(session, hub, events.new_message(message))
    if created:
        events.publish_after_commit(session, hub, events.chat_updated(chat))
    return message


async def _get_or_create_chat(
    session: AsyncSession, hub: Hub, channel: Channel, inbound: InboundMessage
) -> tuple[Chat, bool]:
    """Insert-if-absent, then lock the chat row: concurrent first messages create one chat,
    and messages of one chat are stored one after another."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    values: dict[str, Any] = {
        "id": new_id("cht"),
        "channel_id": channel.id,
        "external_id": inbound.contact_id,
        "name": inbound.contact_name,
        "needs_human": False,
        "message_seq": 0,
        "created_at": hub.clock(),
    }
    result = await session.execute(
        insert(Chat)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["channel_id", "external_id"])
        # RETURNING, not rowcount: psycopg reports -1 for this INSERT, which read as "created".
        .returning(Chat.id)
    )
    created_id = result.scalar_one_or_none()
    chat = await session.scalar(
        select(Chat)
        .where(Chat.channel_id == channel.id, Chat.external_id == inbound.contact_id)
        # NO KEY UPDATE (PostgreSQL): still one writer per chat, but the foreign-key checks of
        # rows that only reference the chat (the job runner inserting an agent delivery while
        # it holds the chat's agent link) pass, so they cannot deadlock with this transaction.
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    assert chat is not None
    return chat, created_id is not None


async def _link_default_agents(session: AsyncSession, chat: Chat) -> None:
    agent_ids = await session.scalars(
        select(Agent.id).where(
            Agent.is_active.is_(True), Agent.activate_for_new_conversation.is_(True)
        )
    )
    session.add_all(
        ChatAgentLink(chat_id=chat.id, agent_id=agent_id, active=True) for agent_id in agent_ids
    )
    await session.flush()
