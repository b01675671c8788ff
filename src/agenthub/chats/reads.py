"""Read markers: how far each user has read each chat, and so its unread count for them.

A chat the user never opened has every CONTACT message unread. A marker only moves forward:
reading an older message of a chat already read further changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.errors import InvalidInput
from agenthub.hub import Hub
from agenthub.models import Channel, Chat, ChatRead, Message, SenderType, utcnow
from agenthub.uow import after_commit

# New contact messages un-catch-up every reader of their chats: one statement per batch of
# chats, on the inbound path too (`webhooks/service.py`), touching only readers' rows.
CLEAR_CAUGHT_UP = (
    update(ChatRead)
    .where(
        ChatRead.chat_id.in_(bindparam("b_chat_ids", expanding=True)),
        ChatRead.caught_up.is_(True),
    )
    .values(caught_up=False)
    .execution_options(synchronize_session=False)
)


async def mark_unread_for_readers(session: AsyncSession, chat_ids: list[str]) -> None:
    await session.execute(CLEAR_CAUGHT_UP, {"b_chat_ids": chat_ids})


@dataclass(frozen=True)
class ReadMark:
    chat: Chat
    user_id: str
    read_contact_count: int

    @property
    def unread_count(self) -> int:
        return max(0, self.chat.contact_message_count - self.read_contact_count)


async def mark_read(
    session: AsyncSession, hub: Hub, user_id: str, chat: Chat, message_id: str | None
) -> ReadMark:
    """Mark the chat read for the user up to `message_id` (default: its newest message)."""
    # Lock the chat row as the inbound path does: a contact message stored concurrently
    # then either counts before the mark or clears `caught_up` after it.
    await session.refresh(chat, with_for_update={"key_share": True})
    read_seq, read_count = chat.message_seq, chat.contact_message_count
    if message_id is not None:
        read_seq, read_count = await _position_of(session, chat, message_id)
    marker = await session.get(ChatRead, (user_id, chat.id))
    if marker is None:
        marker = ChatRead(user_id=user_id, chat_id=chat.id, channel_id=chat.channel_id)
        marker.read_seq = marker.read_contact_count = 0
        session.add(marker)
    moved = read_count > marker.read_contact_count
    marker.read_seq = max(marker.read_seq, read_seq)
    marker.read_contact_count = max(marker.read_contact_count, read_count)
    marker.caught_up = 0 < chat.contact_message_count <= marker.read_contact_count
    marker.read_at = utcnow()
    await session.flush()
    if moved:
        await _read_receipt_after_commit(session, hub, chat)
    return ReadMark(chat, user_id, marker.read_contact_count)


async def _read_receipt_after_commit(session: AsyncSession, hub: Hub, chat: Chat) -> None:
    """New contact messages read: a `whatsapp_cloud` channel with `read_receipts: on_open`
    marks them read on the platform too, once this commits (best effort, in the background)."""
    channel = await session.get(Channel, chat.channel_id)
    if channel is None or channel.config.get("read_receipts") != "on_open":
        return
    after_commit(session, lambda: hub.typing.read_on_open(channel, chat.id))


async def _position_of(session: AsyncSession, chat: Chat, message_id: str) -> tuple[int, int]:
    seq = await session.scalar(
        select(Message.seq).where(Message.chat_id == chat.id, Message.id == message_id)
    )
    if seq is None:
        raise InvalidInput.at(
            ("body", "message_id"), "unknown_message", "Not a message of this chat"
        )
    contact_count = await session.scalar(
        select(func.count()).where(
            Message.chat_id == chat.id,
            Message.sender_type == SenderType.CONTACT.value,
            Message.seq <= seq,
        )
    )
    return seq, int(contact_count or 0)


async def read_counts(
    session: AsyncSession, user_id: str | None, chat_ids: Iterable[str]
) -> Mapping[str, int]:
    """Chat id → the user's `read_contact_count` (missing: never opened), in one query."""
    ids = list(chat_ids)
    if user_id is None or not ids:
        return {}
    rows = await session.execute(
        select(ChatRead.chat_id, ChatRead.read_contact_count).where(
            ChatRead.user_id == user_id, ChatRead.chat_id.in_(ids)
        )
    )
    return {key: value for key, value in rows.all()}


def chat_read_event(mark: ReadMark) -> dict[str, Any]:
    """For the reader's own sockets only (`user_id`); `_read_contact_count` lets each socket
    work out the unread counts of later `chat_updated` events itself."""
    return {
        "type": "chat_read",
        "channel_id": mark.chat.channel_id,
        "chat_id": mark.chat.id,
        "unread_count": mark.unread_count,
        "user_id": mark.user_id,
        "_read_contact_count": mark.read_contact_count,
    }
