"""Starting a conversation: `POST /channels/{id}/conversations {to, name?, template? | content?}`.

The chat for `to` is found, or created as a contact's first message would create it (its
channel's agents for new chats linked: `channels/default_agents.py`), and the first message
goes through `service.post_message`, so the window rules, template rendering and outbound
queue are those of `POST /chats/{id}/messages`. Everything that can refuse the request is
checked before anything is written, and all of it is one transaction: a refusal leaves
nothing behind.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.audit import service as audit
from agenthub.channels.default_agents import link_default_agents
from agenthub.chats.handling import refresh_handled_by
from agenthub.chats.schemas import ConversationCreate, MessageCreate
from agenthub.chats.service import check_rich, post_message
from agenthub.delivery import events
from agenthub.deps import Principal
from agenthub.errors import Conflict, InvalidInput
from agenthub.hub import Hub
from agenthub.ids import new_id
from agenthub.models import Base, Channel, Chat, HandledBy, Message
from agenthub.platforms import get_adapter
from agenthub.platforms.base import ContactAddressing, PlatformAdapter

CHATS = Base.metadata.tables[Chat.__tablename__]


def contact_address(adapter: PlatformAdapter, to: str, credentials: dict[str, Any]) -> str:
    """`to` as the platform's inbound parser stores the contact (422 at `to` when it cannot
    be one); platforms without a rule take it as written."""
    if not isinstance(adapter, ContactAddressing):
        return to
    try:
        return adapter.contact_address(to, credentials)
    except ValueError as exc:
        raise InvalidInput.at(("body", "to"), "value_error", f"{adapter.name}: {exc}") from None


async def start_conversation(
    session: AsyncSession,
    hub: Hub,
    principal: Principal,
    channel: Channel,
    data: ConversationCreate,
) -> tuple[Chat, Message]:
    platform = str(channel.platform)
    adapter = get_adapter(platform)
    if not channel.is_active:
        raise Conflict("The channel is inactive")
    if data.template is None and adapter.reply_window is not None:
        raise InvalidInput.at(
            ("body", "template"),
            "missing",
            f"{platform} channels start a conversation with a template: the reply window is "
            "closed until the contact writes",
        )
    if data.template is None and data.content is None:
        raise InvalidInput.at(("body", "content"), "missing", "Field required")
    to = contact_address(adapter, data.to, hub.secrets.decrypt_json(channel.credentials_encrypted))
    first = MessageCreate(content=data.content, template=data.template)
    content = data.content if data.template is None else data.template.readable()
    assert content is not None
    check_rich(platform, content, first.rich, ("body",))
    chat, created = await find_or_create_chat(session, hub, channel, to, data.name)
    message = await post_message(session, hub, principal, chat, first)
    await session.refresh(chat)
    if created:
        events.publish_after_commit(session, hub, events.chat_updated(chat, new=True))
    audit.record(
        session,
        "conversation.started",
        ("chat", chat.id),
        {"channel_id": channel.id, "new_chat": created, "template": data.template is not None},
    )
    return chat, message


async def find_or_create_chat(
    session: AsyncSession, hub: Hub, channel: Channel, contact: str, name: str | None
) -> tuple[Chat, bool]:
    """The channel's chat with `contact`, created (insert-if-absent: a contact writing in at
    the same moment makes the same chat) with the channel's agents for new chats when there
    is none. True when it was created here."""
    found = select(Chat).where(Chat.channel_id == channel.id, Chat.external_id == contact)
    chat = await session.scalar(found)
    if chat is not None:
        if name and not chat.name:
            chat.name = name
        return chat, False
    now = hub.clock()
    proposed = new_id("cht")
    connection = await session.connection()
    insert = sqlite_insert if connection.dialect.name == "sqlite" else pg_insert
    await session.execute(
        insert(CHATS)
        .values(
            id=proposed,
            channel_id=channel.id,
            external_id=contact,
            name=name or None,
            needs_human=False,
            handled_by=HandledBy.NONE.value,
            message_seq=0,
            contact_message_count=0,
            activity_at=now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["channel_id", "external_id"])
    )
    chat = await session.scalar(found.execution_options(populate_existing=True))
    assert chat is not None
    if chat.id != proposed:  # the contact's own first message made it meanwhile
        return chat, False
    new_chat = {chat.id: channel.id}
    linked = await session.run_sync(
        lambda sync: link_default_agents(sync.connection(), now, new_chat)
    )
    if linked:
        await refresh_handled_by(session, [chat])
    return chat, True
