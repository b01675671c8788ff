"""Rows written straight to the database, for tests that need a world to act in.

Inbound webhooks create chats in production; tests that only need "a chat with messages" build
it here so each test states exactly the world it starts from.
"""

from __future__ import annotations

from datetime import datetime

from agenthub.chats.handling import refresh_handled_by
from agenthub.chats.service import add_message
from agenthub.hub import Hub
from agenthub.models import (
    Agent,
    AgentDelivery,
    ApiToken,
    Channel,
    Chat,
    ChatAgentLink,
    Platform,
    SenderType,
    utcnow,
)
from agenthub.security import hash_token, new_token, new_webhook_secret


async def make_channel(
    hub: Hub,
    *,
    platform: Platform = Platform.API,
    name: str = "support",
    config: dict | None = None,
) -> Channel:
    credentials = {"secret": new_webhook_secret()} if platform == Platform.API else {}
    async with hub.db.transaction() as session:
        channel = Channel(
            name=name,
            platform=platform,
            credentials_encrypted=hub.secrets.encrypt_json(credentials),
            config=config or {},
        )
        session.add(channel)
    return channel


async def make_agent(
    hub: Hub,
    *,
    name: str = "bot",
    webhook_url: str = "http://127.0.0.1:9/",
    active: bool = True,
    **fields: object,
) -> tuple[Agent, str]:
    """An agent and a live API token for it."""
    raw = new_token()
    async with hub.db.transaction() as session:
        agent = Agent(
            name=name,
            webhook_url=webhook_url,
            webhook_secret_encrypted=hub.secrets.encrypt(new_webhook_secret()),
            is_active=active,
            **fields,
        )
        session.add(agent)
        await session.flush()
        session.add(ApiToken(token_hash=hash_token(raw), agent_id=agent.id, name="test"))
    return agent, raw


async def make_chat(
    hub: Hub,
    channel: Channel,
    *,
    external_id: str = "+15550001111",
    name: str | None = "Ana",
    messages: int = 0,
    agents: tuple[Agent, ...] = (),
) -> Chat:
    """A chat with `messages` contact messages and active links to `agents`."""
    async with hub.db.transaction() as session:
        chat = Chat(channel_id=channel.id, external_id=external_id, name=name, message_seq=0)
        session.add(chat)
        await session.flush()
        for n in range(messages):
            await add_message(
                session,
                chat,
                content=f"message {n}",
                sender_type=SenderType.CONTACT,
                sender_id=external_id,
                external_id=f"{chat.id}-ext-{n}",
            )
        session.add_all(ChatAgentLink(chat_id=chat.id, agent_id=a.id, active=True) for a in agents)
        await refresh_handled_by(session, [chat])
    return chat


async def make_delivery(
    hub: Hub,
    chat_id: str,
    agent_id: str,
    status: str = "failed",
    message_ids: list[str] | None = None,
    *,
    created_at: datetime | None = None,
    next_attempt_at: datetime | None = None,
) -> str:
    """A delivery in `status` (pending: due at `next_attempt_at`, default now), as if the hub
    had made it; returns its id."""
    now = utcnow()
    async with hub.db.transaction() as session:
        delivery = AgentDelivery(
            chat_id=chat_id,
            agent_id=agent_id,
            status=status,
            message_ids=message_ids or [],
            next_attempt_at=(next_attempt_at or now) if status == "pending" else None,
            created_at=created_at or now,
            completed_at=None if status == "pending" else now,
        )
        session.add(delivery)
    return delivery.id
