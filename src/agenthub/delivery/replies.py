"""What an agent's 2xx answer may carry: `reply`, `replies` and `handoff`.

A reply is a string, or (in `replies`) an object with `text` and `buttons` or a `list`
(`rich.py`). An inline reply cannot be refused with a 422 or a 409 as a posted message would:
an invalid object is dropped with a log line, and a reply to a closed reply window is stored
FAILED (`error.code: "window_closed"`), never sent, and the chat needs a human.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.chats.handling import record_event, refresh_handled_by, set_needs_human
from agenthub.chats.schemas import MAX_CONTENT
from agenthub.delivery import events
from agenthub.delivery.outbound import queue_outbound
from agenthub.errors import InvalidInput
from agenthub.hub import Hub
from agenthub.models import (
    ActorType,
    Chat,
    ChatAgentLink,
    ChatEventKind,
    DeliveryStatus,
    NeedsHumanReason,
    SenderType,
)
from agenthub.rich import parse_reply

log = logging.getLogger(__name__)

# An agent's `handoff_reason` is shown to operators; a paragraph is plenty.
MAX_REASON = 1000


def reply_texts(body: Any) -> list[str]:
    """The reply texts in an agent answer; anything malformed is ignored, never an error."""
    return [text for text, _ in reply_items(body)]


def reply_items(body: Any) -> list[tuple[str, dict[str, Any]]]:
    """The replies in an agent answer as (text, rich meta_data); anything malformed is
    ignored (an invalid rich object with a log line), never an error."""
    if not isinstance(body, dict):
        return []
    items: list[Any] = []
    if "reply" in body:
        items.append(body["reply"])
    if isinstance(body.get("replies"), list):
        items.extend(body["replies"])
    replies = []
    for item in items:
        parsed = parse_reply(item)
        if parsed is not None:
            text, rich = parsed
            replies.append((text[:MAX_CONTENT], rich))
    return replies


def _platform_allows(platform: str, text: str, rich: dict[str, Any]) -> bool:
    from agenthub.chats.service import check_rich

    try:
        check_rich(platform, text, rich, ())
    except InvalidInput as exc:
        log.warning("an agent's inline reply object was dropped (%s): %s", platform, exc.detail)
        return False
    return True


async def apply_agent_reply(
    session: AsyncSession, hub: Hub, chat_id: str, agent_id: str, body: Any
) -> None:
    from agenthub.chats.service import add_message, window_closed

    replies = reply_items(body)
    handoff = isinstance(body, dict) and body.get("handoff") is True
    if not replies and not handoff:
        return
    chat = await session.get(Chat, chat_id)
    assert chat is not None
    platform = str(chat.platform)
    replies = [(t, rich) for t, rich in replies if not rich or _platform_allows(platform, t, rich)]
    now = hub.clock()
    closed = window_closed(chat, now) if replies else None
    for text, rich in replies:
        message = await add_message(
            session,
            chat,
            content=text,
            sender_type=SenderType.AGENT,
            sender_id=agent_id,
            meta_data=rich,
            at=now,
            delivery_status=DeliveryStatus.FAILED if closed else DeliveryStatus.PENDING,
            error=(
                {"code": "window_closed", "platform_code": None, "message": closed["message"]}
                if closed
                else None
            ),
        )
        if closed:
            await session.flush()
            events.publish_after_commit(session, hub, events.new_message(message))
        else:
            await queue_outbound(session, hub, message)
    if closed:
        set_needs_human(chat, NeedsHumanReason.SEND_FAILED, now)
        await refresh_handled_by(session, [chat])
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
