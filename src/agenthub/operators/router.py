"""Operator endpoints: the inbox, takeover and handback, read markers, notes and the timeline.

All of them are for users (an agent token gets 403); a MEMBER reaches only the channels an
admin granted it, and a chat out of reach is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from agenthub.access import get_readable_channel, get_readable_chat
from agenthub.auth.router import Limit
from agenthub.chats.reads import chat_read_event, mark_read
from agenthub.chats.schemas import ChatOut, MessageOut
from agenthub.chats.service import present_chat
from agenthub.delivery.events import chat_updated, publish_after_commit
from agenthub.deps import CurrentPrincipal, CurrentUser, HubDep, SessionDep
from agenthub.models import Chat, ChatEvent, Message, Note
from agenthub.openapi_errors import error_responses
from agenthub.operators import inbox, takeover, timeline
from agenthub.operators.schemas import (
    Actor,
    ChannelSummary,
    EventOut,
    HandbackIn,
    InboxChatOut,
    InboxCountsOut,
    InboxPageOut,
    MessageItem,
    NoteIn,
    NoteItem,
    NoteOut,
    ReadIn,
    ReadOut,
    TimelineItem,
    TimelinePageOut,
)

router = APIRouter(tags=["operators"])

ChannelFilter = Annotated[str | None, Query(max_length=16, description="Only this channel")]


async def _user_chat(
    chat_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep
) -> Chat:
    return await get_readable_chat(session, principal, chat_id)


UserChat = Annotated[Chat, Depends(_user_chat)]


@router.get("/inbox", response_model=InboxPageOut, responses=error_responses(404))
async def get_inbox(
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    view: inbox.InboxView = inbox.InboxView.ALL,
    channel_id: ChannelFilter = None,
    q: Annotated[str | None, Query(max_length=200, description="Name or contact id")] = None,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> InboxPageOut:
    """Chats across every channel the caller may read, newest activity first."""
    if channel_id is not None:
        await get_readable_channel(session, principal, channel_id)
    page = await inbox.inbox_page(
        session, principal, view=view, channel_id=channel_id, q=q, limit=limit, cursor=cursor
    )
    chats = [
        InboxChatOut.model_validate(
            {
                **ChatOut.of(row.chat, row.read_contact_count).model_dump(),
                "channel": ChannelSummary.model_validate(row.channel),
            }
        )
        for row in page.rows
    ]
    return InboxPageOut(chats=chats, has_more=page.has_more, next_cursor=page.next_cursor)


@router.get("/inbox/counts", response_model=InboxCountsOut, responses=error_responses(404))
async def get_inbox_counts(
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    channel_id: ChannelFilter = None,
) -> InboxCountsOut:
    """How many chats each inbox view holds, and how many have unread contact messages."""
    if channel_id is not None:
        await get_readable_channel(session, principal, channel_id)
    return InboxCountsOut(**await inbox.inbox_counts(session, principal, channel_id))


@router.post("/chats/{chat_id}/takeover", response_model=ChatOut)
async def take_over(
    chat: UserChat, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> ChatOut:
    """Take the chat from its agents: assign it to the caller, pause every active agent
    link and clear `needs_human`, in one transaction. A delivery in flight still finishes."""
    await takeover.take_over(session, hub, principal, chat)
    publish_after_commit(session, hub, chat_updated(chat))
    return await present_chat(session, principal, chat)


@router.post("/chats/{chat_id}/handback", response_model=ChatOut)
async def hand_back(
    chat: UserChat,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
    data: HandbackIn | None = None,
) -> ChatOut:
    """Resume the agents the takeover paused (or `agent_ids`) and clear the assignment. The
    agents start again with the contact's next message."""
    agent_ids = data.agent_ids if data is not None else None
    await takeover.hand_back(session, hub, principal, chat, agent_ids)
    publish_after_commit(session, hub, chat_updated(chat))
    return await present_chat(session, principal, chat)


@router.post("/chats/{chat_id}/read", response_model=ReadOut)
async def read_chat(
    chat: UserChat,
    user: CurrentUser,
    session: SessionDep,
    hub: HubDep,
    data: ReadIn | None = None,
) -> ReadOut:
    """Mark the chat read for the caller, up to `message_id` (default: the newest)."""
    mark = await mark_read(session, hub, user.id, chat, data.message_id if data else None)
    publish_after_commit(session, hub, chat_read_event(mark))
    return ReadOut(chat_id=chat.id, unread_count=mark.unread_count)


@router.post("/chats/{chat_id}/notes", status_code=status.HTTP_201_CREATED, response_model=NoteOut)
async def add_note(
    chat: UserChat, user: CurrentUser, data: NoteIn, session: SessionDep, hub: HubDep
) -> NoteOut:
    """A private note for operators: never sent to the contact or to an agent."""
    note = NoteOut.model_validate(
        await timeline.add_note(session, hub, user.id, chat, data.content)
    )
    event = {
        "type": "note_created",
        "channel_id": chat.channel_id,
        "chat_id": chat.id,
        "note": note.model_dump(mode="json"),
    }
    publish_after_commit(session, hub, event)
    return note


@router.get("/chats/{chat_id}/timeline", response_model=TimelinePageOut)
async def get_timeline(
    chat: UserChat,
    session: SessionDep,
    limit: Limit = 50,
    before: Annotated[str | None, Query(max_length=16, description="An item id")] = None,
) -> TimelinePageOut:
    """Messages, notes and events of the chat, newest first; page back with `before`."""
    page = await timeline.timeline_page(session, chat, limit=limit, before=before)
    return TimelinePageOut(
        items=[_item(kind, row) for kind, row in page.items], has_more=page.has_more
    )


def _item(kind: str, row: Message | Note | ChatEvent) -> TimelineItem:
    if isinstance(row, Message):
        return MessageItem(
            id=row.id, timestamp=row.timestamp, message=MessageOut.model_validate(row)
        )
    if isinstance(row, Note):
        return NoteItem(id=row.id, timestamp=row.created_at, note=NoteOut.model_validate(row))
    return EventOut(
        id=row.id,
        timestamp=row.created_at,
        event=row.event,
        actor=Actor(type=row.actor_type, id=row.actor_id),
        detail=row.detail,
    )
