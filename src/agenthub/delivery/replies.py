"""What an agent's 2xx answer may carry: `reply`, `replies` and `handoff`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.schemas import MAX_CONTENT
from agenthub.delivery import events
from agenthub.delivery.outbound import queue_outbound
from agenthub.hub import Hub
from agenthub.models import Chat, ChatAgentLink, SenderType


def reply_texts(body: Any) -> list[str]:
    """The reply texts in an agent answer; anything malformed is ignored, never an error."""
    if not isinstance(body, dict):
        return []
    texts: list[Any] = []
    if "reply" in body:
        texts.append(body["reply"])
    if isinstance(body.get("replies"), list):
        texts.extend(body["replies"])
    return [t[:MAX_CONTENT] for t in texts if isinstance(t, str) and t.strip()]


async def apply_agent_reply(
    session: AsyncSession, hub: Hub, chat_id: str, agent_id: str, body: Any
) -> None:
    from agenthub.chats.service import add_message

    texts = reply_texts(body)
    handoff = isinstance(body, dict) and body.get("handoff") is True
    if not texts and not handoff:
        return
    chat = await session.get(Chat, chat_id)
    assert chat is not None
    for text in texts:
        message = await add_message(
            session,
            chat,
            content=text,
            sender_type=SenderType.AGENT,
            sender_id=agent_id,
            at=hub.clock(),
        )
        await queue_outbound(session, hub, message)
    if handoff:
        await _hand_off(session, chat, agent_id)
    await session.flush()
    events.publish_after_commit(session, hub, events.chat_updated(chat))


async def _hand_off(session: AsyncSession, chat: Chat, agent_id: str) -> None:
    """The agent steps back: a human is needed and this agent stops receiving the chat."""
    chat.needs_human = True
    link = await session.scalar(
        select(ChatAgentLink).where(
            ChatAgentLink.chat_id == chat.id, ChatAgentLink.agent_id == agent_id
        )
    )
    if link is not None:
        link.active = False
        link.waiting_since = link.last_arrival_at = link.due_at = None
