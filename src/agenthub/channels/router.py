"""`/channels`: connections to messaging platforms, and which members may see them."""

from __future__ import annotations

from fastapi import APIRouter, status

from agenthub.access import get_readable_channel
from agenthub.auth.router import Limit, Offset
from agenthub.auth.schemas import UserOut
from agenthub.channels import service
from agenthub.channels.schemas import ChannelCreate, ChannelCreated, ChannelOut, ChannelUpdate
from agenthub.deps import AdminUser, CurrentPrincipal, CurrentUser, HubDep, SessionDep

router = APIRouter(prefix="/channels", tags=["channels"])


@router.get("", response_model=list[ChannelOut])
async def list_channels(
    _: CurrentUser,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[ChannelOut]:
    """The channels the caller may read (admins: all; members: those granted)."""
    channels = await service.list_channels(session, principal, limit, offset)
    return [service.to_out(hub, channel) for channel in channels]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ChannelCreated)
async def create_channel(
    data: ChannelCreate, _: AdminUser, session: SessionDep, hub: HubDep
) -> ChannelOut:
    """Connect a platform (admin). Credentials are stored encrypted and never shown again."""
    return await service.create_channel(session, hub, data)


@router.get("/{channel_id}", response_model=ChannelOut)
async def get_channel(
    channel_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> ChannelOut:
    """One channel, with the `webhook_url` to configure at the platform."""
    return service.to_out(hub, await get_readable_channel(session, principal, channel_id))


@router.patch("/{channel_id}", response_model=ChannelOut)
async def update_channel(
    channel_id: str, data: ChannelUpdate, _: AdminUser, session: SessionDep, hub: HubDep
) -> ChannelOut:
    """Rename, reconfigure, rotate credentials or (de)activate a channel (admin)."""
    channel = await service.get_channel(session, channel_id)
    return service.to_out(hub, await service.update_channel(session, hub, channel, data))


@router.delete("/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(channel_id: str, _: AdminUser, session: SessionDep) -> None:
    """Delete a channel with its chats and messages (admin)."""
    await service.delete_channel(session, await service.get_channel(session, channel_id))


@router.get("/{channel_id}/members", response_model=list[UserOut])
async def list_members(channel_id: str, _: AdminUser, session: SessionDep) -> object:
    """The members granted this channel (admin)."""
    return await service.list_members(session, await service.get_channel(session, channel_id))


@router.post("/{channel_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def add_member(channel_id: str, user_id: str, _: AdminUser, session: SessionDep) -> None:
    """Grant a member access to the channel, its chats and messages (admin)."""
    await service.add_member(session, await service.get_channel(session, channel_id), user_id)


@router.delete("/{channel_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(channel_id: str, user_id: str, _: AdminUser, session: SessionDep) -> None:
    """Withdraw a member's access (admin)."""
    await service.remove_member(session, await service.get_channel(session, channel_id), user_id)
