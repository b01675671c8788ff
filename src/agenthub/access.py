"""What each caller may see, as scoped SQL — one place, reused by every listing and lookup.

Admins see everything; members see the channels an admin granted them (and those channels'
chats and messages); agents see the chats they have an active link to.
"""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.deps import Principal
from agenthub.errors import Forbidden, NotFound
from agenthub.models import Channel, ChannelMember, Chat, ChatAgentLink


def readable_channel_ids(principal: Principal) -> Select[str] | None:
    """Subquery of channel ids the caller may read; None means "all" (admin)."""
    if principal.is_admin:
        return None
    if principal.user is not None:
        return select(ChannelMember.channel_id).where(ChannelMember.user_id == principal.user.id)
    return select(Chat.channel_id).where(Chat.id.in_(_agent_chat_ids(principal)))


def _agent_chat_ids(principal: Principal) -> Select[str]:
    return select(ChatAgentLink.chat_id).where(
        ChatAgentLink.agent_id == principal.id, ChatAgentLink.active.is_(True)
    )


def scope_channels(query: Select[Channel], principal: Principal) -> Select[Channel]:
    ids = readable_channel_ids(principal)
    return query if ids is None else query.where(Channel.id.in_(ids))


def scope_chats(query: Select[Chat], principal: Principal) -> Select[Chat]:
    if principal.is_admin:
        return query
    if principal.agent is not None:
        return query.where(Chat.id.in_(_agent_chat_ids(principal)))
    ids = readable_channel_ids(principal)
    assert ids is not None
    return query.where(Chat.channel_id.in_(ids))


async def get_readable_channel(
    session: AsyncSession, principal: Principal, channel_id: str
) -> Channel:
    channel = await session.scalar(
        scope_channels(select(Channel), principal).where(Channel.id == channel_id)
    )
    if channel is None:
        raise NotFound("Channel not found")
    return channel


async def get_readable_chat(session: AsyncSession, principal: Principal, chat_id: str) -> Chat:
    chat = await session.scalar(scope_chats(select(Chat), principal).where(Chat.id == chat_id))
    if chat is None:
        raise NotFound("Chat not found")
    return chat


def require_user(principal: Principal) -> None:
    if principal.user is None:
        raise Forbidden("This endpoint is for users, not agents")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Admin role required")
