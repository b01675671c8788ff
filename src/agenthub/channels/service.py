"""Channels (platform connections) and members' access to them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.access import scope_channels
from agenthub.channels.schemas import CREDENTIAL_SCHEMAS, ChannelCreate, ChannelOut, ChannelUpdate
from agenthub.deps import Principal
from agenthub.errors import BadRequest, NotFound
from agenthub.hub import Hub
from agenthub.models import Channel, ChannelMember, Platform, Role, User
from agenthub.netguard import ensure_public_url
from agenthub.security import new_webhook_secret

MASK = "********"


def to_out(
    hub: Hub, channel: Channel, shown_credentials: dict[str, Any] | None = None
) -> ChannelOut:
    stored = hub.secrets.decrypt_json(channel.credentials_encrypted)
    return ChannelOut(
        id=channel.id,
        name=channel.name,
        platform=Platform(channel.platform),
        credentials=shown_credentials or {key: MASK for key in stored},
        config=channel.config,
        webhook_url=f"{hub.settings.effective_public_url}/webhooks/{channel.platform}/{channel.id}",
        is_active=channel.is_active,
        created_at=channel.created_at,
    )


async def create_channel(session: AsyncSession, hub: Hub, data: ChannelCreate) -> ChannelOut:
    credentials = dict(data.credentials)
    generated: dict[str, Any] | None = None
    if data.platform == Platform.API and not credentials.get("secret"):
        credentials["secret"] = new_webhook_secret()
        generated = {"secret": credentials["secret"]}
    await _check_config_urls(hub, data.config)
    channel = Channel(
        name=data.name,
        platform=data.platform,
        credentials_encrypted=hub.secrets.encrypt_json(credentials),
        config=data.config,
        is_active=data.is_active,
    )
    session.add(channel)
    await session.flush()
    return to_out(hub, channel, generated)


async def _check_config_urls(hub: Hub, config: dict[str, Any]) -> None:
    if callback_url := config.get("callback_url"):
        await ensure_public_url(callback_url, allow_private=hub.settings.private_agent_urls_allowed)


async def list_channels(
    session: AsyncSession, principal: Principal, limit: int, offset: int
) -> list[Channel]:
    query = scope_channels(select(Channel), principal).order_by(Channel.created_at, Channel.id)
    return list(await session.scalars(query.limit(limit).offset(offset)))


async def get_channel(session: AsyncSession, channel_id: str) -> Channel:
    channel = await session.get(Channel, channel_id)
    if channel is None:
        raise NotFound("Channel not found")
    return channel


async def update_channel(
    session: AsyncSession, hub: Hub, channel: Channel, data: ChannelUpdate
) -> Channel:
    if data.credentials is not None:
        merged = hub.secrets.decrypt_json(channel.credentials_encrypted) | data.credentials
        try:
            CREDENTIAL_SCHEMAS[Platform(channel.platform)].model_validate(merged)
        except ValueError as exc:
            raise BadRequest(f"Invalid credentials for {channel.platform}: {exc}") from exc
        channel.credentials_encrypted = hub.secrets.encrypt_json(merged)
    if data.config is not None:
        await _check_config_urls(hub, data.config)
        channel.config = data.config
    if data.name is not None:
        channel.name = data.name
    if data.is_active is not None:
        channel.is_active = data.is_active
    await session.flush()
    return channel


async def delete_channel(session: AsyncSession, channel: Channel) -> None:
    await session.delete(channel)
    await session.flush()


async def add_member(session: AsyncSession, channel: Channel, user_id: str) -> None:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    if user.role != Role.MEMBER:
        raise BadRequest("Only MEMBER users are granted channels; admins see every channel")
    if await session.get(ChannelMember, (channel.id, user_id)) is None:
        session.add(ChannelMember(channel_id=channel.id, user_id=user_id))
        await session.flush()


async def remove_member(session: AsyncSession, channel: Channel, user_id: str) -> None:
    membership = await session.get(ChannelMember, (channel.id, user_id))
    if membership is None:
        raise NotFound("User is not a member of this channel")
    await session.delete(membership)
    await session.flush()


async def list_members(session: AsyncSession, channel: Channel) -> list[User]:
    query = (
        select(User)
        .join(ChannelMember, ChannelMember.user_id == User.id)
        .where(ChannelMember.channel_id == channel.id)
        .order_by(User.username)
    )
    return list(await session.scalars(query))
