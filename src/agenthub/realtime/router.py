"""`GET /ws?token=…[&last_event_id=N]`: live events for operators' dashboards.

The events and commands are documented in docs/api.md (WebSocket) and docs/operators.md.

- **Who.** The `token` query parameter when there is one (even empty), else the
  `agenthub_session` cookie, taken only when the handshake's `Origin` is the public URL's
  origin (`sessions.websocket_token`). Users only: a refused token, or an agent's, is accepted
  and then closed with 1008, so a browser sees the code rather than a failed handshake.
- **What.** The bus's events (after `last_event_id` first, when given) for the channels the
  user may read (admins: every channel), narrowed by `subscribe`. An event carrying `user_id`
  goes only to that user's sockets (`chat_read`: a read marker moved); keys starting with `_`
  never leave the hub. Each socket fills in the `unread_count` of `chat_updated` chats for its
  own user, from the event's `_contact_message_count` and the user's read marker for the
  chat (`_ReadCounts`, kept current by the user's `chat_read` events).
- **Access changes.** `access_changed` (internal, never forwarded) makes the socket re-check
  its token and channel grants before it forwards anything published later; lost access
  closes it with 1008. A socket that falls too far behind is closed with 1013.
- **One reader per process.** Sockets do not subscribe to the bus each: the process's
  `Fanout` (`realtime/fanout.py`) reads it once and hands every event to every socket.
- **Commands.** `ping`, `subscribe {channel_ids}`, and the presence signals `viewing` and
  `typing {chat_id}` for chats the user may read (`runtime/presence.py`); everything a socket
  signalled ends when it disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from sqlalchemy import select

from agenthub import metrics
from agenthub.delivery.events import ACCESS_CHANGED
from agenthub.deps import Principal, authenticate
from agenthub.errors import Unauthorized
from agenthub.hub import Hub
from agenthub.models import ChannelMember, Chat, ChatRead, utcnow
from agenthub.realtime.fanout import LATER, Client, ClientClosed, Later
from agenthub.realtime.frames import DirectFrames
from agenthub.runtime.presence import Watcher
from agenthub.sessions import websocket_token

router = APIRouter()

CHAT_READ = "chat_read"
_CHAT_ID = re.compile(r"cht_[A-Za-z0-9]{10}")


class _Dashboard(Client):
    """One socket in the process's fan-out: what each event becomes for its user."""

    def __init__(self, websocket: WebSocket, access: _Access) -> None:
        super().__init__()
        self.websocket = websocket
        self.access = access
        self.direct = DirectFrames.of(websocket.scope)

    def decide(self, event: dict[str, Any]) -> str | Later | None:
        if event.get("type") == ACCESS_CHANGED:
            return LATER if self.access.concerns_me(event) else None
        if self.access.expired():
            return LATER
        return self.access.outgoing_now(event)

    async def handle(self, event: dict[str, Any]) -> str | None:
        if event.get("type") == ACCESS_CHANGED:
            if self.access.concerns_me(event) and not await self.access.still_valid():
                await self._revoked()
            return None
        if self.access.expired():
            await self._revoked()
        return await self.access.outgoing(event)

    async def _revoked(self) -> None:
        await self.websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="access revoked")
        raise ClientClosed

    async def send_text(self, text: str) -> None:
        await self.websocket.send_text(text)

    def write_now(self, texts: list[str]) -> bool:
        return self.direct is not None and self.direct.write(texts)

    async def close(self, code: int) -> None:
        await self.websocket.close(code=code)


class _Shared:
    """What the sockets of this process can share about one event: its text for each distinct
    output (only `chat_updated` varies, by the unread count), and each user's unread count.

    Every subscriber of a bus in this process gets the same event object, so the first socket
    to send an event serialises it and the others reuse the text: at a thousand sockets,
    serialising per socket was a large part of the fan-out's cost. Likewise the unread count of
    a new chat is looked up once per user rather than once per socket.
    """

    def __init__(self, event: dict[str, Any]) -> None:
        self.event = event  # kept: while it lives, no other event can have its id()
        self.texts: dict[int | None, str] = {}
        self.unread: dict[str, asyncio.Future[int]] = {}


class _SharedEvents:
    """The `_Shared` of the last `size` events (a socket further behind serialises again)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._entries: OrderedDict[int, _Shared] = OrderedDict()

    def of(self, event: dict[str, Any]) -> _Shared:
        shared = self._entries.get(id(event))
        if shared is None or shared.event is not event:
            shared = self._entries[id(event)] = _Shared(event)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return shared


_shared_events = _SharedEvents()


class _Visibility:
    """Which channels' events this socket gets: what the user may read, narrowed by `subscribe`."""

    def __init__(self, readable: set[str] | None) -> None:
        self.readable = readable  # None: every channel (admin)
        self.subscribed: set[str] | None = None

    def can_read(self, channel_id: str) -> bool:
        return self.readable is None or channel_id in self.readable

    def allows(self, channel_id: str | None) -> bool:
        if channel_id is None or not self.can_read(channel_id):
            return False
        return self.subscribed is None or channel_id in self.subscribed

    def allows_event(self, event: dict[str, Any]) -> bool:
        """A channel's event for those who may read it; an event of no channel meant for
        admins (`_admins_only`: an agent's health) for admins' sockets, whatever `subscribe`
        says."""
        if event.get("_admins_only"):
            return self.readable is None
        return self.allows(event.get("channel_id"))


async def _principal(hub: Hub, token: str | None) -> Principal | None:
    if not token:
        return None
    async with hub.db.session(read_only=True) as session:
        try:
            principal = await authenticate(hub, session, token)
        except Unauthorized:
            return None
        return principal if principal.user is not None else None


async def _readable_channels(hub: Hub, principal: Principal) -> set[str] | None:
    if principal.is_admin:
        return None
    async with hub.db.session(read_only=True) as session:
        ids = await session.scalars(
            select(ChannelMember.channel_id).where(ChannelMember.user_id == principal.id)
        )
        return set(ids)


@router.websocket("/ws")
async def websocket_events(
    websocket: WebSocket, token: str | None = None, last_event_id: int | None = None
) -> None:
    hub: Hub = websocket.app.state.hub
    # Without `?token=`, the session cookie, if the handshake's Origin is ours (sessions.py).
    token = websocket_token(websocket, token, hub.settings)
    principal = await _principal(hub, token)
    if principal is None:
        # Accept, then close: closing before accept answers the handshake with HTTP 403, so a
        # client (a browser reports 1006) would never see the documented 1008.
        await websocket.accept()
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="invalid token")
        return
    visibility = _Visibility(await _readable_channels(hub, principal))
    await websocket.accept()
    access = _Access(hub, token or "", principal, visibility)
    signals = _Signals(hub, principal.id, visibility)
    dashboard = _Dashboard(websocket, access)
    with metrics.websocket_client():
        # In the fan-out first, so that nothing published during the catch-up is missed.
        hub.fanout.add(dashboard)
        try:
            dashboard.start(*await hub.events.since(last_event_id))
            await _read_commands(websocket, visibility, signals)
        finally:
            hub.fanout.discard(dashboard)
            dashboard.stop()
            with contextlib.suppress(Exception):  # presence is best effort
                await hub.presence.leave(signals.watcher)


class _Access:
    """The socket's right to its events, re-checked whenever access may have changed.

    Revoking a token, deactivating or demoting a user and changing channel grants publish an
    `access_changed` event on the same bus (never forwarded to clients). Because the bus is
    ordered, the socket re-checks before it forwards anything published after the change:
    a user loses its stream "at once" without a database query per event.
    """

    def __init__(self, hub: Hub, token: str, principal: Principal, visibility: _Visibility) -> None:
        self.hub = hub
        self.token = token
        self.principal = principal
        self.visibility = visibility
        self.reads = _ReadCounts(hub, principal.id)
        self._note_expiry()

    def concerns_me(self, event: dict[str, Any]) -> bool:
        user_id = event.get("user_id")
        return user_id is None or user_id == self.principal.id

    def outgoing_now(self, event: dict[str, Any]) -> str | Later | None:
        """The text this socket sends of `event`, if anything; LATER when that takes a read
        marker nobody looked up yet (`outgoing`)."""
        if not self._concerns_socket(event):
            return None
        shared = _shared_events.of(event)
        unread = self._unread_now(event, shared)
        return unread if isinstance(unread, Later) else _text(event, shared, unread)

    async def outgoing(self, event: dict[str, Any]) -> str | None:
        """As `outgoing_now`, looking up what it lacks."""
        if not self._concerns_socket(event):
            return None
        shared = _shared_events.of(event)
        return _text(event, shared, await self._unread(event, shared))

    def _concerns_socket(self, event: dict[str, Any]) -> bool:
        if "user_id" in event and event["user_id"] != self.principal.id:
            return False  # another user's own event (say, its read marker moved)
        if event.get("type") == CHAT_READ:
            self.reads.note(event)  # whatever `subscribe` says: later unread counts need it
        return self.visibility.allows_event(event)

    def _unread_now(self, event: dict[str, Any], shared: _Shared) -> int | Later | None:
        contact_count = event.get("_contact_message_count")
        if not isinstance(contact_count, int) or not isinstance(event.get("chat"), dict):
            return None
        chat_id = str(event.get("chat_id"))
        if self.reads.knows(chat_id):
            return self.reads.known_unread(chat_id, contact_count)
        if event.get("_new_chat"):
            return contact_count  # a chat created just now: nobody has read any of it
        pending = shared.unread.get(self.principal.id)
        if pending is not None and pending.done() and not pending.cancelled():
            return pending.result()
        return LATER

    async def _unread(self, event: dict[str, Any], shared: _Shared) -> int | None:
        """The user's unread count for a `chat_updated` chat (None for other events): this
        socket's own when it knows the chat's read marker, else one lookup per user."""
        unread = self._unread_now(event, shared)
        if not isinstance(unread, Later):
            return unread
        pending = shared.unread.get(self.principal.id)
        if pending is None or pending.cancelled():
            lookup = self.reads.unread(str(event["chat_id"]), event["_contact_message_count"])
            pending = shared.unread[self.principal.id] = asyncio.ensure_future(lookup)
        # Shielded: this socket closing must not cancel the lookup its user's others await.
        return await asyncio.shield(pending)

    def expired(self) -> bool:
        # Asked before every event: one clock read, not a datetime built per event and socket.
        return time.monotonic() >= self._expiry

    def _note_expiry(self) -> None:
        expires_at = self.principal.token.expires_at
        self._expiry = (
            math.inf
            if expires_at is None
            else time.monotonic() + (expires_at - utcnow()).total_seconds()
        )

    async def still_valid(self) -> bool:
        principal = await _principal(self.hub, self.token)
        if principal is None:
            return False
        self.principal = principal
        self._note_expiry()
        self.visibility.readable = await _readable_channels(self.hub, principal)
        return True


def _text(event: dict[str, Any], shared: _Shared, unread: int | None) -> str:
    text = shared.texts.get(unread)
    if text is None:
        text = shared.texts[unread] = json.dumps(_public(event, unread), default=str)
    return text


def _public(event: dict[str, Any], unread: int | None) -> dict[str, Any]:
    """What clients see of `event`; `unread`: the `unread_count` of its chat, if it has one."""
    # Keys starting with "_" are for the hub's sockets, not for clients.
    public = {key: value for key, value in event.items() if not key.startswith("_")}
    if public.get("type") == CHAT_READ:
        public.pop("user_id", None)  # the client's own id: it says nothing
    if unread is not None:
        public["chat"] = {**public["chat"], "unread_count": unread}
    return public


class _ReadCounts:
    """The socket user's read markers (chat id → `read_contact_count`; 0 without a row), for
    the unread counts of `chat_updated` events: each chat's read from the database when first
    needed (one primary-key lookup), then kept current from the user's own `chat_read` events
    (published after their commit, so the database never holds less than an event says)."""

    def __init__(self, hub: Hub, user_id: str) -> None:
        self.hub = hub
        self.user_id = user_id
        self.counts: dict[str, int] = {}

    def note(self, event: dict[str, Any]) -> None:
        count = event.get("_read_contact_count")
        if not isinstance(count, int):
            return
        chat_id = str(event.get("chat_id"))
        # Markers only move forward: an event older than a lookup must not move one back.
        self.counts[chat_id] = max(self.counts.get(chat_id, 0), count)

    def knows(self, chat_id: str) -> bool:
        return chat_id in self.counts

    def known_unread(self, chat_id: str, contact_count: int) -> int:
        return max(0, contact_count - self.counts[chat_id])

    async def unread(self, chat_id: str, contact_count: int) -> int:
        if chat_id not in self.counts:
            async with self.hub.db.session(read_only=True) as session:
                count = await session.scalar(
                    select(ChatRead.read_contact_count).where(
                        ChatRead.user_id == self.user_id, ChatRead.chat_id == chat_id
                    )
                )
            self.counts[chat_id] = max(self.counts.get(chat_id, 0), count or 0)
        return self.known_unread(chat_id, contact_count)


class _Signals:
    """The socket's `viewing` / `typing` commands, for chats its user may read."""

    def __init__(self, hub: Hub, user_id: str, visibility: _Visibility) -> None:
        self.hub = hub
        self.watcher = Watcher(user_id)
        self.visibility = visibility
        # Chat id → its channel (a chat never moves). Chats that do not exist are not kept:
        # a client sending made-up ids must not grow this.
        self.channels: dict[str, str] = {}

    async def handle(self, command: dict[str, Any]) -> str | None:
        """Record the signal; the error to answer instead, if any."""
        chat_id = command.get("chat_id")
        if not isinstance(chat_id, str) or not _CHAT_ID.fullmatch(chat_id):
            return "chat_id must be a chat id (cht_…)"
        channel_id = await self._channel_of(chat_id)
        # The same answer for a chat that does not exist: ids of others' chats stay secret.
        if channel_id is None or not self.visibility.can_read(channel_id):
            return "unknown chat"
        await self.hub.presence.signal(self.watcher, command["type"], channel_id, chat_id)
        return None

    async def _channel_of(self, chat_id: str) -> str | None:
        if chat_id not in self.channels:
            async with self.hub.db.session(read_only=True) as session:
                channel_id = await session.scalar(select(Chat.channel_id).where(Chat.id == chat_id))
            if channel_id is None:
                return None
            self.channels[chat_id] = channel_id
        return self.channels[chat_id]


async def _read_commands(websocket: WebSocket, visibility: _Visibility, signals: _Signals) -> None:
    async def answer(payload: dict[str, Any]) -> None:
        await websocket.send_text(json.dumps(payload))

    while True:
        try:
            raw = await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        try:
            command = json.loads(raw)
        except ValueError:
            command = None
        if not isinstance(command, dict):
            await answer({"type": "error", "detail": "send a JSON object"})
        elif command.get("type") == "ping":
            await answer({"type": "pong"})
        elif command.get("type") == "subscribe" and isinstance(command.get("channel_ids"), list):
            visibility.subscribed = {str(c) for c in command["channel_ids"]}
            await answer({"type": "subscribed", "channel_ids": sorted(visibility.subscribed)})
        elif command.get("type") in ("viewing", "typing"):
            # No answer when it worked: the `presence` event it may raise is the answer.
            if (error := await signals.handle(command)) is not None:
                await answer({"type": "error", "detail": error})
        else:
            await answer({"type": "error", "detail": "unknown command"})
