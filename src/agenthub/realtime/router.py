"""`GET /ws?token=…[&last_event_id=N]`: live events for operators' dashboards."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from sqlalchemy import select

from agenthub.delivery.events import ACCESS_CHANGED
from agenthub.deps import Principal, authenticate
from agenthub.errors import Unauthorized
from agenthub.hub import Hub
from agenthub.models import ChannelMember, utcnow

router = APIRouter()


class _Socket:
    """Serializes writes: events and command answers come from two tasks."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            await self.websocket.send_text(json.dumps(payload, default=str))


class _Visibility:
    """Which channels' events this socket gets: what the user may read, narrowed by `subscribe`."""

    def __init__(self, readable: set[str] | None) -> None:
        self.readable = readable  # None: every channel (admin)
        self.subscribed: set[str] | None = None

    def allows(self, channel_id: str | None) -> bool:
        if channel_id is None:
            return False
        if self.readable is not None and channel_id not in self.readable:
            return False
        return self.subscribed is None or channel_id in self.subscribed


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
    principal = await _principal(hub, token)
    if principal is None:
        # Accept, then close: closing before accept answers the handshake with HTTP 403, so a
        # client (a browser reports 1006) would never see the documented 1008.
        await websocket.accept()
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="invalid token")
        return
    visibility = _Visibility(await _readable_channels(hub, principal))
    await websocket.accept()
    socket = _Socket(websocket)
    access = _Access(hub, token or "", principal, visibility)
    async with hub.events.subscribe(last_event_id) as stream:
        sender = asyncio.create_task(_forward(socket, stream, access))
        try:
            await _read_commands(socket, visibility)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender


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

    def concerns_me(self, event: dict[str, Any]) -> bool:
        user_id = event.get("user_id")
        return user_id is None or user_id == self.principal.id

    def expired(self) -> bool:
        expires_at = self.principal.token.expires_at
        return expires_at is not None and expires_at <= utcnow()

    async def still_valid(self) -> bool:
        principal = await _principal(self.hub, self.token)
        if principal is None:
            return False
        self.principal = principal
        self.visibility.readable = await _readable_channels(self.hub, principal)
        return True


async def _forward(socket: _Socket, stream: Any, access: _Access) -> None:
    async for event in stream:
        if event.get("type") == ACCESS_CHANGED:
            if access.concerns_me(event) and not await access.still_valid():
                break
            continue
        if access.expired():
            break
        if access.visibility.allows(event.get("channel_id")):
            await socket.send(event)
    else:
        # The bus cut this subscriber off (it fell too far behind): the client reconnects.
        await socket.websocket.close(code=status.WS_1013_TRY_AGAIN_LATER)
        return
    await socket.websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="access revoked")


async def _read_commands(socket: _Socket, visibility: _Visibility) -> None:
    while True:
        try:
            raw = await socket.websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        try:
            command = json.loads(raw)
        except ValueError:
            command = None
        if not isinstance(command, dict):
            await socket.send({"type": "error", "detail": "send a JSON object"})
        elif command.get("type") == "ping":
            await socket.send({"type": "pong"})
        elif command.get("type") == "subscribe" and isinstance(command.get("channel_ids"), list):
            visibility.subscribed = {str(c) for c in command["channel_ids"]}
            await socket.send({"type": "subscribed", "channel_ids": sorted(visibility.subscribed)})
        else:
            await socket.send({"type": "error", "detail": "unknown command"})
