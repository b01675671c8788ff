"""The console's changes: the composer, take over and hand back, and the side panel's actions.

Each authenticates through `deps.get_principal`, which requires the hub's own `Origin` for
cookie-authenticated requests, and calls the same services as the API. Each answers the
fragment that changed; the other panes refetch on the `HX-Trigger` events it names.
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.access import get_readable_chat
from agenthub.chats import resend
from agenthub.chats import service as chat_service
from agenthub.chats.handling import refresh_handled_by
from agenthub.chats.schemas import ChatAgentCreate, ChatUpdate, MessageCreate
from agenthub.chats.service import post_message
from agenthub.console import panel, views
from agenthub.console.web import form_fields, names_by_id, render
from agenthub.delivery import replay
from agenthub.delivery.events import chat_updated, publish_after_commit
from agenthub.deps import (
    AdminUser,
    CurrentPrincipal,
    CurrentUser,
    HubDep,
    Principal,
    SessionDep,
)
from agenthub.errors import Conflict, InvalidInput, NotFound
from agenthub.hub import Hub
from agenthub.models import Agent, AgentDelivery, Chat, Note, User
from agenthub.models import Message as ChatMessage
from agenthub.operators import takeover, timeline
from agenthub.operators.schemas import NoteIn, NoteOut

router = APIRouter(include_in_schema=False)


@router.post("/console/fragments/chats/{chat_id}/compose")
async def compose(
    chat_id: str,
    request: Request,
    user: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    """The composer: a message to the contact, or (with `note` set) a private note. Answers
    the new timeline item."""
    chat = await get_readable_chat(session, principal, chat_id)
    form = await form_fields(request)
    content = form.get("content", "")
    item: ChatMessage | Note
    try:
        if form.get("note"):
            data = NoteIn.model_validate({"content": content})
            item = await timeline.add_note(session, hub, user.id, chat, data.content)
            note = NoteOut.model_validate(item).model_dump(mode="json")
            event = {
                "type": "note_created",
                "channel_id": chat.channel_id,
                "chat_id": chat.id,
                "note": note,
            }
            publish_after_commit(session, hub, event)
            kind = "note"
        else:
            if not content.strip():
                raise InvalidInput.at(("body", "content"), "string_too_short", "Empty message")
            message = MessageCreate.model_validate({"content": content})
            item = await post_message(session, hub, principal, chat, message)
            kind = "message"
    except ValidationError as exc:
        raise InvalidInput.within(("body",), exc) from None
    except Conflict as exc:
        if not (isinstance(exc.detail, dict) and exc.detail.get("code") == "window_closed"):
            raise
        # Shown in the composer's error line (console.js swaps a 409 that names its target).
        response = render(
            "_composer_error.html",
            status_code=409,
            code="window_closed",
            detail=exc.detail.get("message"),
        )
        response.headers["HX-Retarget"] = "#composer-error"
        response.headers["HX-Reswap"] = "innerHTML"
        return response
    return render(
        "_timeline_item.html",
        it=views.item(kind, item),
        chat=chat,
        users={user.id: user.username},
        agents={},
    )


@router.post("/console/fragments/chats/{chat_id}/messages/{message_id}/retry")
async def retry_message(
    chat_id: str,
    message_id: str,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    """A failed message's Retry button: the message again, now pending."""
    chat = await get_readable_chat(session, principal, chat_id)
    message = await resend.retry_send(
        session, hub, await resend.get_message(session, chat, message_id)
    )
    users = await names_by_id(session, User, {message.sender_id or ""}, "username")
    agents = await names_by_id(session, Agent, {message.sender_id or ""}, "name")
    return render(
        "_timeline_item.html",
        it=views.item("message", message),
        chat=chat,
        users=users,
        agents=agents,
    )


async def _takeover_or_handback(
    chat_id: str, principal: Principal, session: AsyncSession, hub: Hub, *, take: bool
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    if take:
        await takeover.take_over(session, hub, principal, chat)
    else:
        await takeover.hand_back(session, hub, principal, chat, None)
    publish_after_commit(session, hub, chat_updated(chat))
    response = render(
        "_chat_header.html", chat=chat, **await views.chat_header_context(session, chat)
    )
    response.headers["HX-Trigger"] = json.dumps(
        {"panel-refresh": chat.id, "composer-refresh": chat.id}
    )
    return response


@router.post("/console/fragments/chats/{chat_id}/takeover")
async def take_over(
    chat_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> Response:
    return await _takeover_or_handback(chat_id, principal, session, hub, take=True)


@router.post("/console/fragments/chats/{chat_id}/handback")
async def hand_back(
    chat_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> Response:
    return await _takeover_or_handback(chat_id, principal, session, hub, take=False)


# --- the side panel's changes: each answers the refreshed panel -------------------------------


async def _panel_changed(
    session: AsyncSession, hub: Hub, principal: Principal, chat: Chat
) -> Response:
    """After a change: `chat_updated` once the transaction commits, and the refreshed panel
    with the chat's header out of band; the timeline (which shows the change's event)
    refetches."""
    publish_after_commit(session, hub, chat_updated(chat))
    await session.flush()
    context = {
        **await views.chat_header_context(session, chat),
        **await panel.panel_context(session, principal, chat),
    }
    response = render("_panel_answer.html", **context)
    response.headers["HX-Trigger"] = json.dumps(
        {"timeline-refresh": chat.id, "composer-refresh": chat.id}
    )
    return response


@router.post("/console/fragments/chats/{chat_id}/panel/assign")
async def panel_assign(
    chat_id: str,
    request: Request,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    """Assign the chat (`user_id`; empty: to nobody), as `PATCH /chats/{id}` does."""
    chat = await get_readable_chat(session, principal, chat_id)
    form = await form_fields(request)
    try:
        data = ChatUpdate.model_validate({"assigned_user_id": form.get("user_id") or None})
    except ValidationError as exc:
        raise InvalidInput.within(("body",), exc) from None
    await chat_service.assign(session, hub, principal, chat, data.assigned_user_id)
    await refresh_handled_by(session, [chat])
    return await _panel_changed(session, hub, principal, chat)


@router.post("/console/fragments/chats/{chat_id}/panel/clear-needs-human")
async def panel_clear_needs_human(
    chat_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    await chat_service.update_chat(session, hub, principal, chat, ChatUpdate(needs_human=False))
    return await _panel_changed(session, hub, principal, chat)


@router.post("/console/fragments/chats/{chat_id}/panel/agents")
async def panel_link_agent(
    chat_id: str,
    request: Request,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    chat = await get_readable_chat(session, principal, chat_id)
    form = await form_fields(request)
    try:
        data = ChatAgentCreate.model_validate({"agent_id": form.get("agent_id", "")})
    except ValidationError as exc:
        raise InvalidInput.within(("body",), exc) from None
    await chat_service.link_agent(session, hub, principal, chat, data.agent_id)
    return await _panel_changed(session, hub, principal, chat)


@router.post("/console/fragments/chats/{chat_id}/panel/agents/{agent_id}/{action}")
async def panel_change_link(
    chat_id: str,
    agent_id: str,
    action: Literal["pause", "resume", "unlink"],
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    """An agent link's Pause, Resume or Unlink, as `PATCH` / `DELETE /chats/{id}/agents/{id}`."""
    chat = await get_readable_chat(session, principal, chat_id)
    link = await chat_service.get_link(session, chat, agent_id)
    if action == "unlink":
        await chat_service.unlink_agent(session, hub, principal, chat, link)
    else:
        await chat_service.set_link_active(
            session, hub, principal, chat, link, active=action == "resume"
        )
    return await _panel_changed(session, hub, principal, chat)


@router.post("/console/fragments/chats/{chat_id}/panel/deliveries/{delivery_id}/retry")
async def panel_retry_delivery(
    chat_id: str,
    delivery_id: str,
    _: AdminUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    """The trace's Retry (admins): a failed delivery runs again (`POST /deliveries/{id}/retry`)."""
    chat = await get_readable_chat(session, principal, chat_id)
    delivery = await session.get(AgentDelivery, delivery_id)
    if delivery is None or delivery.chat_id != chat.id:
        raise NotFound("Delivery not found")
    await replay.retry_delivery(session, hub, delivery.id)
    return await _panel_changed(session, hub, principal, chat)
