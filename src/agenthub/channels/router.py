"""`/channels`: connections to messaging platforms, and which members may see them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from agenthub.access import get_readable_channel
from agenthub.auth.router import Limit, Offset
from agenthub.auth.schemas import UserOut
from agenthub.channels import service
from agenthub.channels.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelOut,
    ChannelUpdate,
    TemplateList,
)
from agenthub.delivery.events import access_changed, publish_after_commit
from agenthub.deps import AdminUser, CurrentPrincipal, CurrentUser, HubDep, SessionDep
from agenthub.openapi_errors import error_responses
from agenthub.rotation import ChannelSecretRotated, SecretRotation, rotate_channel_secret
from agenthub.uow import commit

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
    return await service.answers(session, hub, channels)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ChannelCreated,
    responses=error_responses(409),
)
async def create_channel(
    data: ChannelCreate, _: AdminUser, session: SessionDep, hub: HubDep
) -> ChannelOut:
    """Connect a platform (admin). `platform` says which `credentials` the channel takes (see
    the request schema's variants). Credentials are stored encrypted and never shown again.
    `default_agent_ids` names the agents its new chats get (unknown id: 422)."""
    return await service.create_channel(session, hub, data.root)


@router.get("/{channel_id}", response_model=ChannelOut)
async def get_channel(
    channel_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> ChannelOut:
    """One channel, with the `webhook_url` to configure at the platform."""
    channel = await get_readable_channel(session, principal, channel_id)
    return await service.answer(session, hub, channel)


@router.patch("/{channel_id}", response_model=ChannelOut, responses=error_responses(409))
async def update_channel(
    channel_id: str, data: ChannelUpdate, _: AdminUser, session: SessionDep, hub: HubDep
) -> ChannelOut:
    """Rename, reconfigure, rotate credentials, (de)activate a channel or choose the agents its
    new chats get (admin). Invalid merged credentials or an unknown agent id: 422, located in
    the request like any validation error."""
    channel = await service.get_channel(session, channel_id)
    await service.update_channel(session, hub, channel, data)
    return await service.answer(session, hub, channel)


@router.post(
    "/{channel_id}/register-webhook",
    response_model=ChannelOut,
    responses=error_responses(400, 502),
)
async def register_webhook(
    channel_id: str, _: AdminUser, session: SessionDep, hub: HubDep
) -> ChannelOut:
    """Register the channel's `webhook_url` at the platform (admin). Telegram: `setWebhook`
    with the URL and the channel's `secret_token`; afterwards the channel shows
    `webhook_registered: true`. Other platforms are configured by hand (400); a platform
    that refuses is 400 with its reason, one that cannot be reached 502.
    """
    context = service.channel_context(hub, await service.get_channel(session, channel_id))
    # No transaction stays open (nor SQLite's write lock held) while the platform answers.
    await commit(session)
    await service.register_webhook(hub, context)
    async with hub.db.transaction() as write:
        channel = await service.get_channel(write, channel_id)
        await service.record_registration(write, hub, channel)
        return await service.answer(write, hub, channel)


MediaId = Annotated[str, Path(min_length=1, max_length=512)]


@router.get(
    "/{channel_id}/media/{media_id}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file"},
        **error_responses(400, 502),
    },
)
async def get_media(
    channel_id: str,
    media_id: MediaId,
    principal: CurrentPrincipal,
    session: SessionDep,
    hub: HubDep,
) -> Response:
    """A media file a contact sent, fetched from the platform with the channel's credentials
    (Telegram `file_id`, WhatsApp Cloud and WHAPI media ids): the URL in
    `meta_data.media[].url` of such messages. For users who may read the channel and agents
    linked to one of its chats. Unknown at the platform → 404.
    """
    channel = await get_readable_channel(session, principal, channel_id)
    context = service.channel_context(hub, channel)
    # The read is over (the download may take a while): end it, keeping the loaded channel.
    session.expunge(channel)
    await session.rollback()
    return await service.open_media(hub, context, media_id)


@router.get(
    "/{channel_id}/templates",
    response_model=TemplateList,
    responses=error_responses(409, 502),
)
async def list_templates(
    channel_id: str, _: CurrentUser, principal: CurrentPrincipal, session: SessionDep, hub: HubDep
) -> TemplateList:
    """The message templates of the channel's WhatsApp account, read from the platform at each
    call (users who may read the channel): WhatsApp Cloud's `message_templates` (needs the
    `waba_id` credential: without it 409 `missing_credential`), Twilio's Content API
    (`name` is the Content SID). Other platforms → 422; the platform refusing or out of
    reach → 502."""
    channel = await get_readable_channel(session, principal, channel_id)
    context = service.channel_context(hub, channel)
    # The read is over (the platform may take a while): end it, keeping the loaded channel.
    session.expunge(channel)
    await session.rollback()
    return await service.list_templates(hub, context)


@router.post(
    "/{channel_id}/secret", response_model=ChannelSecretRotated, responses=error_responses(400)
)
async def rotate_secret(
    channel_id: str,
    _: AdminUser,
    session: SessionDep,
    hub: HubDep,
    data: SecretRotation | None = None,
) -> object:
    """A new signing secret for an `api` channel, shown once. For `grace_hours` (default 24,
    0 to 168) the old one still works: inbound webhooks may be signed with either, and
    callbacks carry both signatures. Other platforms → 400."""
    channel = await service.get_channel(session, channel_id)
    grace = (data or SecretRotation()).grace_hours
    return await rotate_channel_secret(session, hub, channel, grace)


@router.delete("/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(channel_id: str, _: AdminUser, session: SessionDep) -> None:
    """Delete a channel with its chats and messages (admin)."""
    await service.delete_channel(session, await service.get_channel(session, channel_id))


@router.get("/{channel_id}/members", response_model=list[UserOut])
async def list_members(channel_id: str, _: AdminUser, session: SessionDep) -> object:
    """The members granted this channel (admin)."""
    return await service.list_members(session, await service.get_channel(session, channel_id))


@router.post(
    "/{channel_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 409),
)
async def add_member(
    channel_id: str, user_id: str, _: AdminUser, session: SessionDep, hub: HubDep
) -> None:
    """Grant a member access to the channel, its chats and messages (admin)."""
    await service.add_member(session, await service.get_channel(session, channel_id), user_id)
    publish_after_commit(session, hub, access_changed(user_id))


@router.delete("/{channel_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(
    channel_id: str, user_id: str, _: AdminUser, session: SessionDep, hub: HubDep
) -> None:
    """Withdraw a member's access (admin); its open WebSockets stop getting the channel."""
    await service.remove_member(session, await service.get_channel(session, channel_id), user_id)
    publish_after_commit(session, hub, access_changed(user_id))
