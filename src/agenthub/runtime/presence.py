"""WebSocket presence: who is viewing a chat and who is typing in it. Never stored in the database.

Sockets send `viewing` and `typing` signals for a chat. Each counts for
`presence_viewing_seconds` / `presence_typing_seconds` after the last one, and ends when its
socket disconnects. Entries are kept per socket (a "member" is `user_id|socket_id`), so a user
with two sockets on one chat stays viewing until both have lapsed or disconnected. A socket views
one chat at a time: viewing another one ends its viewing of the previous one at once (the
dashboard switched chats). Typing has no such rule; it lapses fast anyway.

Whenever the sorted list of users viewing or typing in a chat changes, a `presence` event
`{type, channel_id, chat_id, viewing, typing}` goes out on the event bus (so it gets an
`event_id`, crosses processes and reaches the sockets that may read the channel). A signal
that only refreshes an entry announces nothing.

Every change works out "before" from all of the chat's stored entries, lapsed ones included,
then removes the lapsed ones, applies itself and works out "after". The stored entries are thus
always what was last announced, and a lapse is announced exactly once: by whichever change, or
periodic sweep, removes the entry first.

- `InProcessPresence` (one process): dicts, and a sweep task. Its bus publishes without
  yielding, so changes are announced in the order they were made.
- `RedisPresence` (with `AGENTHUB_REDIS_URL`): two sorted sets per chat (member → expiry in
  Redis's own clock, so the processes' clocks do not matter) and one sorted set of chats by
  their earliest expiry, which every serve process sweeps. One Lua script makes a change *and*
  appends its event to the event stream (as `RedisStreamEventBus.publish` does), so changes from
  several processes are announced in the order Redis applied them, and two processes sweeping
  the same lapse announce it once. Entries of a process that died lapse like any other; the
  keys also expire on their own should no process be left to sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agenthub.runtime.events import Event, EventBus

if TYPE_CHECKING:
    from agenthub.runtime.redis_events import RedisStreamEventBus

log = logging.getLogger(__name__)

Kind = Literal["viewing", "typing"]
KINDS: tuple[Kind, ...] = ("viewing", "typing")
REDIS_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Watcher:
    """One socket of one user."""

    user_id: str
    socket_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def member(self) -> str:
        return f"{self.user_id}|{self.socket_id}"


class Presence(Protocol):
    async def signal(self, watcher: Watcher, kind: Kind, channel_id: str, chat_id: str) -> None:
        """The socket views, or types in, the chat (the caller checked it may read it)."""
        ...

    async def leave(self, watcher: Watcher) -> None:
        """The socket disconnected: everything it signalled ends now."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def presence_event(channel_id: str, chat_id: str, viewing: list[str], typing: list[str]) -> Event:
    return {
        "type": "presence",
        "channel_id": channel_id,
        "chat_id": chat_id,
        "viewing": viewing,
        "typing": typing,
    }


def _user_of(member: str) -> str:
    return member.split("|", 1)[0]


class _PresenceBase:
    """What both stores share: which chats each local socket touched, and the sweep task."""

    def __init__(self, viewing_seconds: float, typing_seconds: float) -> None:
        self.ttl: dict[Kind, float] = {"viewing": viewing_seconds, "typing": typing_seconds}
        # A lapse is announced at most about a fifth of the shorter lifetime late (≤ 1 s).
        self.sweep_seconds = max(0.02, min(1.0, min(viewing_seconds, typing_seconds) / 5))
        # Socket → chat id → (channel id, when it last signalled there): what a disconnect
        # must end. Chats whose signals have all lapsed are forgotten, so a socket that went
        # through hundreds of chats does not cost hundreds of updates when it leaves.
        self._touched: dict[Watcher, dict[str, tuple[str, float]]] = {}
        self._viewing: dict[Watcher, str] = {}  # socket → the chat it views
        self._sweeper: asyncio.Task[None] | None = None

    async def signal(self, watcher: Watcher, kind: Kind, channel_id: str, chat_id: str) -> None:
        touched = self._touched.setdefault(watcher, {})
        now = time.monotonic()
        for lapsed in [c for c, (_, at) in touched.items() if at < now - max(self.ttl.values())]:
            del touched[lapsed]
        if kind == "viewing":
            previous = self._viewing.get(watcher)
            if previous in touched and previous != chat_id:
                # Kept in `touched`: the socket may have typed there just now.
                channel_of_previous = touched[previous][0]
                await self._change(channel_of_previous, previous, watcher.member, drop=("viewing",))
            self._viewing[watcher] = chat_id
        touched[chat_id] = (channel_id, now)
        await self._change(channel_id, chat_id, watcher.member, refresh=kind)

    async def leave(self, watcher: Watcher) -> None:
        self._viewing.pop(watcher, None)
        for chat_id, (channel_id, _) in self._touched.pop(watcher, {}).items():
            await self._change(channel_id, chat_id, watcher.member, drop=KINDS)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="agenthub-presence")

    async def stop(self) -> None:
        """Stops sweeping. Departures are not announced here: the server closes its sockets
        first, and each socket's handler leaves; whatever is left lapses (other processes
        sweep it). Publishing here, just before the bus stops, also made the Redis bus's
        stop wait for its reader's socket timeout (10 s): cancelling the reader while it is
        receiving an event does not take."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self._sweep()
            except Exception:  # the sweeper must never die
                log.warning("presence sweep failed", exc_info=True)

    async def _change(
        self,
        channel_id: str,
        chat_id: str,
        member: str | None,
        *,
        refresh: Kind | None = None,
        drop: tuple[Kind, ...] = (),
    ) -> None:
        """Expire the chat's lapsed entries, drop `member` from `drop`, refresh it in
        `refresh`; announce the chat's presence if that changed who is viewing or typing."""
        raise NotImplementedError

    async def _sweep(self) -> None:
        raise NotImplementedError


@dataclass
class _ChatEntries:
    channel_id: str
    expires: dict[Kind, dict[str, float]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    def users(self) -> tuple[list[str], ...]:
        return tuple(sorted({_user_of(m) for m in self.expires[kind]}) for kind in KINDS)

    def next_expiry(self) -> float:
        return min((t for entries in self.expires.values() for t in entries.values()), default=0)


class InProcessPresence(_PresenceBase):
    def __init__(self, events: EventBus, viewing_seconds: float, typing_seconds: float) -> None:
        super().__init__(viewing_seconds, typing_seconds)
        self._events = events
        self._chats: dict[str, _ChatEntries] = {}

    async def _change(
        self,
        channel_id: str,
        chat_id: str,
        member: str | None,
        *,
        refresh: Kind | None = None,
        drop: tuple[Kind, ...] = (),
    ) -> None:
        chat = self._chats.setdefault(chat_id, _ChatEntries(channel_id))
        before = chat.users()
        now = time.monotonic()
        for entries in chat.expires.values():
            for lapsed in [m for m, expires in entries.items() if expires <= now]:
                del entries[lapsed]
        if member is not None:
            for kind in drop:
                chat.expires[kind].pop(member, None)
            if refresh is not None:
                chat.expires[refresh][member] = now + self.ttl[refresh]
        after = chat.users()
        if not any(chat.expires.values()):
            del self._chats[chat_id]
        if after != before:
            await self._events.publish(presence_event(channel_id, chat_id, *after))

    async def _sweep(self) -> None:
        now = time.monotonic()
        for chat_id, chat in list(self._chats.items()):
            if chat.next_expiry() <= now:
                await self._change(chat.channel_id, chat_id, None)


# KEYS: viewing zset, typing zset, due zset, event stream, event counter.
# ARGV: member ('' = none), kind to refresh ('' = none), its lifetime in ms, kinds to drop
# (space-separated), the chat's entry in the due zset, the event's JSON up to its lists (no
# closing brace), the stream's MAXLEN, how long keys outlive their last entry (ms).
# Returns the event id, or 0 when who is viewing or typing did not change.
_CHANGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keys = {viewing = KEYS[1], typing = KEYS[2]}
-- Byte order, as Python sorts: Lua's own `<` on strings follows the server's locale.
local function bytewise(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function users(key)
  local seen, list = {}, {}
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local user = string.match(member, '^[^|]*')
    if not seen[user] then seen[user] = true; list[#list + 1] = user end
  end
  table.sort(list, bytewise)
  for i, user in ipairs(list) do list[i] = cjson.encode(user) end
  return '[' .. table.concat(list, ',') .. ']'
end
local before = users(KEYS[1]) .. users(KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now))
if ARGV[1] ~= '' then
  for kind in string.gmatch(ARGV[4], '%S+') do redis.call('ZREM', keys[kind], ARGV[1]) end
  if ARGV[2] ~= '' then
    local expires = now + tonumber(ARGV[3])
    redis.call('ZADD', keys[ARGV[2]], string.format('%d', expires), ARGV[1])
  end
end
local first = nil
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  local low = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if low[2] then
    local score = tonumber(low[2])
    if first == nil or score < first then first = score end
    local high = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    local keep = tonumber(high[2]) - now + tonumber(ARGV[8])
    redis.call('PEXPIRE', key, string.format('%d', keep))
  end
end
if first == nil then
  redis.call('ZREM', KEYS[3], ARGV[5])
else
  redis.call('ZADD', KEYS[3], string.format('%d', first), ARGV[5])
end
local viewing, typing = users(KEYS[1]), users(KEYS[2])
if viewing .. typing == before then return 0 end
if redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('SET', KEYS[5], t[1] .. string.format('%06d', tonumber(t[2])))
end
local id = redis.call('INCR', KEYS[5])
local body = ARGV[6] .. ',"viewing":' .. viewing .. ',"typing":' .. typing .. '}'
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], string.format('%d', id) .. '-1', 'e', body)
return id
"""
# KEYS: the due zset. Returns the chats ("channel_id chat_id") with an entry lapsed by now.
_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now), 'LIMIT', 0, 200)
"""
_KEY_SLACK_MS = 60_000


class RedisPresence(_PresenceBase):
    def __init__(
        self, bus: RedisStreamEventBus, viewing_seconds: float, typing_seconds: float
    ) -> None:
        from redis.exceptions import RedisError

        super().__init__(viewing_seconds, typing_seconds)
        # The bus's client, stream and counter: presence events are appended to the stream by
        # the same script that changes presence (see the module docstring), and the bus's
        # readers hand them to every process's sockets.
        self._redis: Any = bus._redis
        self._stream_keys = [bus._stream, bus._counter]
        self._buffer_size = bus._buffer_size
        self._prefix = f"{bus._stream}:presence"
        self._errors = (RedisError, TimeoutError)
        self._change_script = self._redis.register_script(_CHANGE)
        self._due_script = self._redis.register_script(_DUE)

    async def _change(
        self,
        channel_id: str,
        chat_id: str,
        member: str | None,
        *,
        refresh: Kind | None = None,
        drop: tuple[Kind, ...] = (),
    ) -> None:
        keys = [*(f"{self._prefix}:{chat_id}:{kind}" for kind in KINDS), f"{self._prefix}:due"]
        head = json.dumps(presence_event(channel_id, chat_id, [], []), separators=(",", ":"))
        head = head[: head.index(',"viewing"')]
        args = [
            member or "",
            refresh or "",
            int(self.ttl[refresh] * 1000) if refresh else 0,
            " ".join(drop),
            f"{channel_id} {chat_id}",
            head,
            self._buffer_size,
            _KEY_SLACK_MS,
        ]
        try:
            await asyncio.wait_for(
                self._change_script(keys=[*keys, *self._stream_keys], args=args),
                REDIS_TIMEOUT_SECONDS,
            )
        except self._errors:
            # Presence is best effort: the next signal or sweep puts it right.
            log.warning("presence not updated: Redis unavailable", exc_info=True)

    async def _sweep(self) -> None:
        due: list[Any] = await asyncio.wait_for(
            self._due_script(keys=[f"{self._prefix}:due"]), REDIS_TIMEOUT_SECONDS
        )
        for entry in due:
            text = entry.decode() if isinstance(entry, bytes) else str(entry)
            channel_id, chat_id = text.split(" ", 1)
            await self._change(channel_id, chat_id, None)
