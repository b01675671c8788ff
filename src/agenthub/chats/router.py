"""Chats, their messages and their agent links."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from agenthub.access import get_readable_channel, get_readable_chat
from agenthub.auth.router import Limit, Offset
from agenthub.chats import conversations, resend, service
from agenthub.chats.schemas import (
    ChatAgentCreate,
    ChatAgentOut,
    ChatAgentUpdate,
    ChatOut,
    ChatPage,
    ChatUpdate,
    ConversationCreate,
    ConversationOut,
    DeliveryOut,
    MessageCreate,
    MessageOut,
    MessagePage,
    ReactionCreate,
)
from agenthub.delivery.events import chat_updated, publish_after_commit
from agenthub.deps import AdminUser, CurrentPrincipal, CurrentUser, HubDep, SessionDep
from agenthub.models import Chat
from agenthub.openapi_errors import error_responses

router = APIRouter(tags=["chats"])


async def _readable_chat(chat_id: str, principal: CurrentPrincipal, session: SessionDep) -> Chat:
    return await get_readable_chat(session, principal, chat_id)


ReadableChat = Annotated[Chat, Depends(_readable_chat)]


@router.get("/channels/{channel_id}/chats", response_model=ChatPage)
async def list_chats(
    channel_id: str,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    assigned: bool | None = None,
    assigned_user_id: Annotated[str | None, Query(max_length=16)] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Search name and contact id")
    ] = None,
) -> ChatPage:
    """A channel's chats, newest activity first, with the total count for paging."""
    await get_readable_channel(session, principal, channel_id)
    chats, total = await service.list_chats(
        session,
        principal,
        channel_id,
        limit=limit,
        offset=offset,
        assigned=assigned,
        assigned_user_id=assigned_user_id,
        q=q,
    )
    return ChatPage(
        chats=await service.present_chats(session, principal, chats),
        total_count=total,
        has_more=offset + len(chats) < total,
    )


@router.post(
    "/channels/{channel_id}/conversations",
    status_code=status.HTTP_201_CREATED,
    response_model=ConversationOut,
    responses=error_responses(409),
)
async def start_conversation(
    channel_id: str,
    data: ConversationCreate,
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> ConversationOut:
    """Write to a contact first (users with access to the channel): the chat for `to` is
    found or created (with the channel's agents for new chats), and the message is sent as
    `POST /chats/{id}/messages` sends it. WhatsApp channels need a `template` (the window of
    a contact who has not written is closed); other platforms take `content`. Without the
    message the channel needs, or with both → 422, and nothing is created. An inactive
    channel → 409."""
    channel = await get_readable_channel(session, principal, channel_id)
    chat, message = await conversations.start_conversation(session, hub, principal, channel, data)
    return ConversationOut(
        chat=await service.present_chat(session, principal, chat),
        message=MessageOut.model_validate(message),
    )


@router.get("/chats/{chat_id}", response_model=ChatOut)
async def get_chat(chat: ReadableChat, principal: CurrentPrincipal, session: SessionDep) -> object:
    """One chat (users with access to its channel; agents linked to it)."""
    return await service.present_chat(session, principal, chat)


@router.patch("/chats/{chat_id}", response_model=ChatOut, responses=error_responses(409))
async def update_chat(
    _: CurrentUser,
    principal: CurrentPrincipal,
    chat: ReadableChat,
    data: ChatUpdate,
    session: SessionDep,
    hub: HubDep,
) -> object:
    """Assign the chat to a user (or `null` to unassign), rename it, or clear `needs_human`."""
    await service.update_chat(session, hub, principal, chat, data)
    publish_after_commit(session, hub, chat_updated(chat))
    return await service.present_chat(session, principal, chat)


@router.delete("/chats/{chat_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_chat(_: AdminUser, chat: ReadableChat, session: SessionDep) -> None:
    """Delete a chat and all its messages (admin)."""
    await service.delete_chat(session, chat)


@router.get("/chats/{chat_id}/messages", response_model=MessagePage, responses=error_responses(400))
async def list_messages(
    chat: ReadableChat,
    session: SessionDep,
    limit: Limit = 50,
    before: Annotated[str | None, Query(max_length=16, description="A message id")] = None,
) -> MessagePage:
    """The chat's messages, newest first; page back with `before=<oldest id seen>`."""
    messages, has_more = await service.list_messages(session, chat, limit=limit, before=before)
    return MessagePage(messages=[MessageOut.model_validate(m) for m in messages], has_more=has_more)


@router.post(
    "/chats/{chat_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    responses=error_responses(409),
)
async def post_message(
    chat: ReadableChat,
    data: MessageCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> object:
    """Send a message to the contact: `USER` with a user's token, `AGENT` with an agent's.

    The message is stored `PENDING` and sent to the platform in the background. It may carry
    `buttons`, a `list` or a `template`. A free-form message to a chat whose reply window
    (WhatsApp's 24 h) is closed → 409 `window_closed`, and nothing is stored.
    """
    return await service.post_message(session, hub, principal, chat, data)


@router.post(
    "/chats/{chat_id}/messages/{message_id}/reactions",
    response_model=MessageOut,
    responses=error_responses(409, 502),
)
async def react_to_message(
    chat: ReadableChat,
    message_id: Annotated[str, Path(max_length=16)],
    data: ReactionCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> object:
    """React to a message of the chat on the platform (`""` removes our reaction); the
    message's `meta_data.reactions` records it. Not on whatsapp_twilio (422); a message the
    platform has no id for yet → 409; the platform refusing → 502."""
    return await service.react(session, hub, principal, chat, message_id, data.emoji)


@router.post(
    "/chats/{chat_id}/messages/{message_id}/retry",
    response_model=MessageOut,
    responses=error_responses(409),
)
async def retry_message(
    chat: ReadableChat,
    message_id: Annotated[str, Path(max_length=16)],
    session: SessionDep,
    hub: HubDep,
) -> object:
    """Send a `FAILED` USER or AGENT message again: it keeps its id, shows `PENDING` and goes
    to the platform in the background, as a new message would. Not failed, or a contact's
    message → 409."""
    return await resend.retry_send(
        session, hub, await resend.get_message(session, chat, message_id)
    )


@router.get("/chats/{chat_id}/agents", response_model=list[ChatAgentOut])
async def list_chat_agents(chat: ReadableChat, session: SessionDep) -> object:
    """The agents linked to this chat and whether each is active."""
    return await service.list_links(session, chat)


@router.post(
    "/chats/{chat_id}/agents",
    status_code=status.HTTP_201_CREATED,
    response_model=ChatAgentOut,
    responses=error_responses(409),
)
async def link_agent(
    _: CurrentUser,
    principal: CurrentPrincipal,
    chat: ReadableChat,
    data: ChatAgentCreate,
    session: SessionDep,
    hub: HubDep,
) -> object:
    """Link an agent to this chat; it receives the contact's next messages."""
    link = await service.link_agent(session, hub, principal, chat, data.agent_id)
    publish_after_commit(session, hub, chat_updated(chat))
    return link


@router.patch("/chats/{chat_id}/agents/{agent_id}", response_model=ChatAgentOut)
async def update_chat_agent(
    agent_id: str,
    _: CurrentUser,
    principal: CurrentPrincipal,
    chat: ReadableChat,
    data: ChatAgentUpdate,
    session: SessionDep,
    hub: HubDep,
) -> object:
    """Pause (`active: false`) or resume an agent in this chat. Pausing cancels a delivery
    waiting for its next attempt; one in flight finishes."""
    link = await service.get_link(session, chat, agent_id)
    await service.set_link_active(session, hub, principal, chat, link, data.active)
    publish_after_commit(session, hub, chat_updated(chat))
    return link


@router.delete("/chats/{chat_id}/agents/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def unlink_agent(
    agent_id: str,
    _: CurrentUser,
    principal: CurrentPrincipal,
    chat: ReadableChat,
    session: SessionDep,
    hub: HubDep,
) -> None:
    """Remove an agent from this chat."""
    link = await service.get_link(session, chat, agent_id)
    await service.unlink_agent(session, hub, principal, chat, link)
    publish_after_commit(session, hub, chat_updated(chat))


@router.get("/chats/{chat_id}/deliveries", response_model=list[DeliveryOut])
async def list_deliveries(
    _: AdminUser, chat: ReadableChat, session: SessionDep, limit: Limit = 50
) -> list[DeliveryOut]:
    """The chat's agent deliveries with every attempt: status codes, latency, errors (admin)."""
    return await service.list_deliveries(session, chat, limit)
