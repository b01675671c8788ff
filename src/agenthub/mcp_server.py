"""`POST /mcp`: an MCP server (Streamable HTTP, stateless) for agents, on their bearer token.

Agents reach the chats they are actively linked to with five tools: `list_chats`,
`get_history`, `send_message`, `handoff` and `set_typing`. Each tool runs the service the REST
route runs (`chats/service.py`, `delivery/replies.py`, the typing indicators), in a
transaction of its own like a request's (`deps.unit_of_work`: committed on success, the events
published after the commit), so the window rules, the button limits and the outbound queue
apply alike. What the REST API would answer with a 4xx is a tool error (`isError: true`)
carrying the same message.

Stateless: nothing is kept between requests, so any serve process answers any request. The
SDK speaks both protocol eras on this one path: clients of the handshake revisions (up to
2025-11-25) send `initialize` and get no session id; 2026-07-28 clients send self-contained
requests (`MCPEndpoint` below; the revisions are in `PROTOCOL_REVISIONS`).

Authentication happens before the SDK sees the request (`MCPEndpoint.__call__`): the REST
API's token lookup (`deps.authenticate`), 401 with `WWW-Authenticate: Bearer` without a
valid token, 403 for a user's token. Each tool call looks the token up again in its own
transaction, as a REST route does, so a token revoked a moment ago does nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import nulls_last, select
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from agenthub import __version__
from agenthub.access import get_readable_chat, scope_chats
from agenthub.audit import service as audit
from agenthub.deps import Principal, authenticate, unit_of_work
from agenthub.errors import DomainError, Forbidden, InvalidInput, Unauthorized
from agenthub.hub import Hub
from agenthub.logs import REQUEST_ID
from agenthub.models import Chat, HandledBy
from agenthub.schemas import Out

log = logging.getLogger(__name__)

PATH = "/mcp"
# Every revision the pinned SDK answers on this path (stateless either way).
PROTOCOL_REVISIONS = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)
LIST_CHATS_LIMIT = 100
HISTORY_LIMIT_MAX = 200  # as `GET /chats/{id}/messages`
HISTORY_LIMIT_DEFAULT = 50
_SCOPE_KEY = "agenthub.mcp_caller"

INSTRUCTIONS = (
    "Agent Hub connects messaging platforms (WhatsApp, Telegram, web chat) to AI agents. "
    "These tools reach the chats this agent is actively linked to: list them, read a chat's "
    "history, answer the contact, show 'typing…', or hand the chat to a human operator."
)


@dataclass(frozen=True)
class _Caller:
    """What the endpoint learnt from the HTTP request, for the tools (in the ASGI scope)."""

    hub: Hub
    token: str
    agent_id: str
    request_id: str | None


class ButtonArg(BaseModel):
    """A reply button (checked as `POST /chats/{id}/messages` checks it)."""

    id: str = Field(description="What the hub reports back when the contact taps the button")
    title: str = Field(description="The label the contact sees (at most 20 characters)")


ChatId = Annotated[str, Field(max_length=16, description="A chat id (`cht_…`) from list_chats")]


# --- the tools ----------------------------------------------------------------------------


async def list_chats(ctx: Context) -> CallToolResult:
    """The chats this agent is actively linked to, newest activity first (at most 100):
    each with its id, name, platform, channel_id, last_message_ts and handled_by (who answers
    the contact now: `agent`, `waiting` for a human, `human` or `none`)."""

    async def run(session: AsyncSession, principal: Principal, _: Hub) -> dict[str, Any]:
        query = (
            scope_chats(select(Chat), principal)
            .order_by(nulls_last(Chat.last_message_ts.desc()), Chat.created_at.desc(), Chat.id)
            .limit(LIST_CHATS_LIMIT + 1)
        )
        chats = list(await session.scalars(query))
        return {
            "chats": [_chat_summary(chat) for chat in chats[:LIST_CHATS_LIMIT]],
            "has_more": len(chats) > LIST_CHATS_LIMIT,
        }

    return await _call(ctx, run, read_only=True)


async def get_history(
    ctx: Context,
    chat_id: ChatId,
    limit: Annotated[
        int,
        Field(
            ge=1,
            le=HISTORY_LIMIT_MAX,
            description=f"How many messages (1-{HISTORY_LIMIT_MAX}); the newest ones unless "
            "`before` is given",
        ),
    ] = HISTORY_LIMIT_DEFAULT,
    before: Annotated[
        str | None,
        Field(
            max_length=16,
            description="A message id (`msg_…`): only messages older than it. To page back, "
            "pass the `before` of the previous answer",
        ),
    ] = None,
) -> CallToolResult:
    """A chat's messages, oldest to newest: each with its id, content, sender_type
    (`CONTACT`, `AGENT` or `USER` for a human operator), sender_id, delivery_status, timestamp
    and meta_data (buttons, media, the button a contact tapped). `has_more` says older ones
    exist; then `before` is what to pass to get them."""
    from agenthub.chats import service
    from agenthub.chats.schemas import MessageOut

    async def run(session: AsyncSession, principal: Principal, _: Hub) -> dict[str, Any]:
        chat = await get_readable_chat(session, principal, chat_id)
        messages, has_more = await service.list_messages(session, chat, limit=limit, before=before)
        oldest_first = [
            MessageOut.model_validate(m).model_dump(mode="json") for m in reversed(messages)
        ]
        return {
            "chat_id": chat.id,
            "messages": oldest_first,
            "has_more": has_more,
            "before": oldest_first[0]["id"] if has_more and oldest_first else None,
        }

    return await _call(ctx, run, read_only=True)


async def send_message(
    ctx: Context,
    chat_id: ChatId,
    text: Annotated[str, Field(description="The message to send to the contact")],
    buttons: Annotated[
        list[ButtonArg] | None,
        Field(
            description="Up to 3 reply buttons shown under the text (WhatsApp, Telegram, web "
            "chat); the text is then at most 1024 characters"
        ),
    ] = None,
) -> CallToolResult:
    """Send a message to the contact as this agent. It is stored and queued for the
    platform (the answer's delivery_status is PENDING; the hub sends it in the background).
    On WhatsApp, once the contact's last message is more than 24 hours old, a free-form
    message is refused (window_closed) and nothing is stored: hand off instead."""
    from agenthub.chats import service
    from agenthub.chats.schemas import MessageCreate, MessageOut

    async def run(session: AsyncSession, principal: Principal, hub: Hub) -> dict[str, Any]:
        chat = await get_readable_chat(session, principal, chat_id)
        body: dict[str, Any] = {"content": text}
        if buttons is not None:
            body["buttons"] = [button.model_dump() for button in buttons]
        try:
            data = MessageCreate.model_validate(body)
        except ValidationError as exc:  # the 422 the route's body validation answers
            raise InvalidInput.within(("body",), exc) from None
        message = await service.post_message(session, hub, principal, chat, data)
        await session.flush()
        return MessageOut.model_validate(message).model_dump(mode="json")

    return await _call(ctx, run)


async def handoff(
    ctx: Context,
    chat_id: ChatId,
    reason: Annotated[
        str,
        Field(
            max_length=1000,
            description="Why a human is needed; shown to the operators in the chat's timeline",
        ),
    ],
) -> CallToolResult:
    """Hand the chat to a human operator: the chat is flagged needs_human (reason
    agent_handoff) and this agent stops receiving it (its link is paused until an operator
    brings it back), so the chat leaves list_chats."""
    from agenthub.chats.service import lock_for_link_change
    from agenthub.delivery.replies import apply_agent_reply

    async def run(session: AsyncSession, principal: Principal, hub: Hub) -> dict[str, Any]:
        chat = await get_readable_chat(session, principal, chat_id)
        await lock_for_link_change(session, chat)  # the order every link change locks in
        # What an agent's `{"handoff": true, "handoff_reason": …}` answer does.
        body = {"handoff": True, "handoff_reason": reason}
        await apply_agent_reply(session, hub, chat.id, principal.id, body)
        return {
            "chat_id": chat.id,
            "needs_human": chat.needs_human,
            "needs_human_reason": chat.needs_human_reason,
            "handled_by": str(chat.handled_by),
        }

    return await _call(ctx, run)


async def set_typing(ctx: Context, chat_id: ChatId) -> CallToolResult:
    """Show "typing…" to the contact while this agent works on an answer, for up to 25
    seconds or until a message goes out; call again to keep it showing. Best effort: on
    platforms without a typing indicator nothing happens."""
    from agenthub import typing_indicator

    async def run(session: AsyncSession, principal: Principal, hub: Hub) -> dict[str, Any]:
        chat = await get_readable_chat(session, principal, chat_id)
        hub.typing.start(chat.id)  # as `POST /chats/{id}/typing` (`chats/typing.py`)
        return {"chat_id": chat.id, "typing_seconds": typing_indicator.TYPING_SECONDS}

    return await _call(ctx, run)


_TOOLS: tuple[Callable[..., Awaitable[CallToolResult]], ...] = (
    list_chats,
    get_history,
    send_message,
    handoff,
    set_typing,
)


class ChatSummary(Out):
    """A chat as `list_chats` shows it: a few of the REST chat answer's fields."""

    id: str
    name: str | None
    platform: str | None
    channel_id: str
    last_message_ts: datetime | None
    handled_by: HandledBy


def _chat_summary(chat: Chat) -> dict[str, Any]:
    return ChatSummary.model_validate(chat).model_dump(mode="json")


# --- running a tool like a request ------------------------------------------------------------

_Work = Callable[[AsyncSession, Principal, Hub], Awaitable[dict[str, Any]]]


async def _call(ctx: Context, work: _Work, *, read_only: bool = False) -> CallToolResult:
    """Run `work` in a transaction of its own as the calling agent; a refusal the REST API
    would answer with a 4xx (or a 503) becomes a tool error with the same message."""
    request = ctx.request_context.request
    assert isinstance(request, Request)
    caller: _Caller = request.scope[_SCOPE_KEY]
    # The tool may run in the SDK's task rather than the request's: carry the request id.
    REQUEST_ID.set(caller.request_id)
    try:
        async with unit_of_work(caller.hub, read_only=read_only) as session:
            principal = await authenticate(caller.hub, session, caller.token)
            if principal.id != caller.agent_id:  # never: a token keeps its owner
                raise Unauthorized("Invalid or revoked token")
            audit.set_actor(request, "agent", principal.id)
            result = await work(session, principal, caller.hub)
    except DomainError as exc:
        return _error(exc.status_code, exc.detail)
    except IntegrityError:
        return _error(409, "Conflicts with existing data")
    except DataError:
        return _error(422, "A value cannot be stored (e.g. it contains NUL)")
    except (
        OperationalError,
        InterfaceError,
        PoolTimeout,
        RedisConnectionError,
        RedisTimeoutError,
    ) as exc:
        log.warning("an MCP tool call refused: the database or Redis unreachable (%r)", exc)
        return _error(503, "Service unavailable for a moment; try again in a few seconds")
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(result, ensure_ascii=False))],
        structured_content=result,
    )


def _error(status: int, detail: Any) -> CallToolResult:
    """The tool error for what the REST API answers `status` with: the text is its message,
    `structuredContent` the REST answer (`{status, detail}`)."""
    return CallToolResult(
        content=[TextContent(type="text", text=_message(detail))],
        structured_content={"status": status, "detail": detail},
        is_error=True,
    )


def _message(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        code = detail.get("code")
        return f"{code}: {detail['message']}" if code else str(detail["message"])
    if isinstance(detail, list):  # a 422: `[{type, loc, msg}]`, the location in the tool's terms
        faults = []
        for fault in detail:
            loc = [str(part) for part in fault.get("loc", []) if part != "body"]
            faults.append(f"{'.'.join(loc)}: {fault.get('msg')}" if loc else str(fault.get("msg")))
        return "; ".join(faults)
    return json.dumps(detail)


# --- the endpoint -----------------------------------------------------------------------------


def build_server() -> MCPServer:
    server: MCPServer = MCPServer("agenthub", version=__version__, instructions=INSTRUCTIONS)
    for tool in _TOOLS:
        server.add_tool(tool, name=tool.__name__)
    return server


class MCPEndpoint:
    """The ASGI app at `/mcp` (mounted by `mcp_route.py` on first use): authenticates the
    agent, then lets the SDK answer.

    `run()` belongs in the app's lifespan: it starts a fresh SDK session manager each time
    (a manager runs only once, and one app object may run its lifespan many times)."""

    def __init__(self) -> None:
        self.server = build_server()
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            # The bearer token is what keeps other sites out (a browser never sends it by
            # itself); behind a proxy the Host header is the public one, whatever it is.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = self.server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self._manager
        if scope["type"] != "http" or manager is None:
            await JSONResponse({"detail": "Not found"}, 404)(scope, receive, send)
            return
        request = Request(scope)
        hub: Hub = request.app.state.hub
        try:
            caller = await _authenticate(hub, request)
        except DomainError as exc:
            answer = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
            await answer(scope, receive, send)
            return
        await manager.handle_request({**scope, _SCOPE_KEY: caller}, receive, send)


async def _authenticate(hub: Hub, request: Request) -> _Caller:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Missing bearer token")
    async with unit_of_work(hub, read_only=True) as session:
        principal = await authenticate(hub, session, token)
        if principal.agent is None:
            raise Forbidden("The MCP server is for agents, not users")
        agent_id = principal.agent.id
    return _Caller(hub=hub, token=token, agent_id=agent_id, request_id=REQUEST_ID.get())
