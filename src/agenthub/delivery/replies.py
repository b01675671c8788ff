"""What an agent's 2xx answer may carry: `reply`, `replies` and `handoff`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.handling import record_event, refresh_handled_by, set_needs_human
from agenthub.chats.schemas import MAX_CONTENT
from agenthub.delivery import events
from agenthub.delivery.outbound import queue_outbound
from agenthub.hub import Hub
from agenthub.models import (
    ActorType,
    Chat,
    ChatAgentLink,
    ChatEventKind,
    NeedsHumanReason,
    SenderType,
)

# An agent's `handoff_reason` is shown to operators; a paragraph is plenty.
MAX_REASON = 1000


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
        await _hand_off(session, hub, chat, agent_id, handoff_reason(body))
    await session.flush()
    events.publish_after_commit(session, hub, events.chat_updated(chat))


def handoff_reason(body: dict[str, Any]) -> str | None:
    reason = body.get("handoff_reason")
    return reason.strip()[:MAX_REASON] or None if isinstance(reason, str) else None


async def _hand_off(
    session: AsyncSession, hub: Hub, chat: Chat, agent_id: str, reason: str | None
) -> None:
    """The agent steps back: a human is needed and this agent stops receiving the chat."""
    from agenthub.chats.service import pause_link

    now = hub.clock()
    set_needs_human(chat, NeedsHumanReason.AGENT_HANDOFF, now)
    link = await session.scalar(
        select(ChatAgentLink).where(
            ChatAgentLink.chat_id == chat.id, ChatAgentLink.agent_id == agent_id
        )
    )
    if link is not None:
        await pause_link(session, hub, link)
        # Paused by the agent itself, not by a takeover: a plain handback leaves it paused
        # (an operator names it in `agent_ids` to bring it back), whenever the handoff came.
        link.paused_by_takeover = False
    await record_event(
        session,
        chat,
        ChatEventKind.HANDOFF,
        actor_type=ActorType.AGENT,
        actor_id=agent_id,
        at=now,
        reason=reason,
    )
    await refresh_handled_by(session, [chat])
