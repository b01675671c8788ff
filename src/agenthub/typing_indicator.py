"""Typing indicators and read receipts: best-effort platform calls about a chat.

`POST /chats/{id}/typing` and agents with `typing_while_working` start typing in a chat; a
`whatsapp_cloud` channel's `config.read_receipts` marks the contact's messages read when an
operator opens the chat (`on_open`) or when a reply went out (`on_reply`).

Each is a platform call made in the background (`Hub.spawn`): a failure is logged as a warning
and dropped, never retried, and nothing waits for it: not the request that asked for it, not a
message send. Typing lasts at most `TYPING_SECONDS`. Platforms whose indicator fades sooner
(Telegram's `sendChatAction`, ~5 s) are sent it again every `typing_renew_seconds` until then,
unless a USER or AGENT message was stored in the chat since typing started: checked in the
database before each renewal, since the reply may be sent by another process. One renewal loop
per chat and process: a second start restarts it (and its `TYPING_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from agenthub.models import Channel, Chat, Message, SenderType
from agenthub.platforms import get_adapter
from agenthub.platforms.base import ChatContext, ReadReceipts, TypingIndicator

if TYPE_CHECKING:
    from agenthub.hub import Hub

log = logging.getLogger(__name__)

# How long typing shows at most (the WhatsApp indicators' own limit). Tests shorten it.
TYPING_SECONDS = 25.0
READ_RECEIPT_MODES = ("off", "on_open", "on_reply")


class TypingIndicators:
    """This process's typing loops and read receipts (`Hub.typing`)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._loops: dict[str, asyncio.Task[None]] = {}  # chat id -> its typing loop
        self._closed = False

    # --- typing ---------------------------------------------------------------------------------

    def start(self, chat_id: str) -> asyncio.Task[None] | None:
        """Show typing in the chat, in the background; returns its loop (for `stop`)."""
        if self._closed:
            return None
        previous = self._loops.pop(chat_id, None)
        if previous is not None:
            previous.cancel()
        task = self._hub.spawn(self._typing(chat_id))
        self._loops[chat_id] = task
        task.add_done_callback(lambda done: self._forget(chat_id, done))
        return task

    def stop(self, chat_id: str, task: asyncio.Task[None] | None = None) -> None:
        """End the chat's typing loop (only `task`'s, when given: a newer start keeps its own).
        What the platform already shows lapses by itself."""
        current = self._loops.get(chat_id)
        if current is not None and (task is None or current is task):
            current.cancel()

    @property
    def active(self) -> int:
        return len(self._loops)

    def _forget(self, chat_id: str, task: asyncio.Task[None]) -> None:
        if self._loops.get(chat_id) is task:
            del self._loops[chat_id]

    async def _typing(self, chat_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TYPING_SECONDS
        try:
            found = await self.load(chat_id)
            if found is None:
                return
            adapter, context, seq = found
            if not isinstance(adapter, TypingIndicator):
                return
            while True:
                await adapter.send_typing(self._hub.http, context)
                renew = adapter.typing_renew_seconds
                if renew is None or loop.time() + renew >= deadline:
                    return
                await asyncio.sleep(renew)
                if await self._replied_since(chat_id, seq):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "typing in chat %s failed, not retried (%s: %s)",
                chat_id,
                type(exc).__name__,
                _detail(exc),
            )

    async def _replied_since(self, chat_id: str, seq: int) -> bool:
        async with self._hub.db.session(read_only=True) as session:
            found = await session.scalar(
                select(Message.id)
                .where(
                    Message.chat_id == chat_id,
                    Message.seq > seq,
                    Message.sender_type.in_([SenderType.USER.value, SenderType.AGENT.value]),
                )
                .limit(1)
            )
            return found is not None

    # --- read receipts --------------------------------------------------------------------------

    def read_on_open(self, channel: Channel, chat_id: str) -> None:
        """An operator opened the chat (its read marker moved)."""
        self._read_if(channel, chat_id, "on_open")

    def read_on_reply(self, channel: Channel, chat_id: str) -> None:
        """A USER or AGENT message of the chat went out."""
        self._read_if(channel, chat_id, "on_reply")

    def _read_if(self, channel: Channel, chat_id: str, mode: str) -> None:
        if self._closed or (channel.config or {}).get("read_receipts") != mode:
            return
        if not isinstance(get_adapter(channel.platform), ReadReceipts):
            return
        self._hub.spawn(self._mark_read(chat_id))

    async def _mark_read(self, chat_id: str) -> None:
        try:
            found = await self.load(chat_id)
            if found is None:
                return
            adapter, context, _ = found
            if isinstance(adapter, ReadReceipts) and context.last_inbound_id:
                await adapter.mark_read(self._hub.http, context)
        except Exception as exc:
            log.warning(
                "read receipt in chat %s failed, not retried (%s: %s)",
                chat_id,
                type(exc).__name__,
                _detail(exc),
            )

    # --- shared ---------------------------------------------------------------------------------

    async def load(self, chat_id: str) -> tuple[Any, ChatContext, int] | None:
        """The chat's adapter and context, and its message sequence number now."""
        async with self._hub.db.session(read_only=True) as session:
            chat = await session.get(Chat, chat_id)
            channel = await session.get(Channel, chat.channel_id) if chat is not None else None
            if chat is None or channel is None:
                return None
            last_inbound = await session.scalar(
                select(Message.external_id)
                .where(
                    Message.chat_id == chat_id,
                    Message.sender_type == SenderType.CONTACT.value,
                    Message.external_id.is_not(None),
                )
                .order_by(Message.seq.desc())
                .limit(1)
            )
        hub = self._hub
        context = ChatContext(
            channel=channel,
            credentials=hub.secrets.decrypt_json(channel.credentials_encrypted),
            public_url=hub.settings.effective_public_url,
            settings=hub.settings,
            chat=chat,
            last_inbound_id=last_inbound,
        )
        return get_adapter(channel.platform), context, int(chat.message_seq or 0)

    async def close(self) -> None:
        """Stop every typing loop (before the Hub waits for its tasks)."""
        self._closed = True
        loops = list(self._loops.values())
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _detail(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    return str(detail if detail is not None else exc)[:300]
