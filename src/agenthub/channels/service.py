"""Channels (platform connections) and members' access to them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from fastapi import Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask

from agenthub.access import scope_channels
from agenthub.audit import service as audit
from agenthub.channels import default_agents
from agenthub.channels.schemas import (
    CREDENTIAL_SCHEMAS,
    ChannelConfig,
    ChannelOut,
    ChannelUpdate,
    NewChannel,
    TemplateList,
    TemplateOut,
)
from agenthub.deps import Principal
from agenthub.errors import BadRequest, Conflict, DomainError, InvalidInput, NotFound
from agenthub.hub import Hub
from agenthub.models import Channel, ChannelMember, Platform, Role, User
from agenthub.netguard import ensure_public_url
from agenthub.platforms import get_adapter
from agenthub.platforms.base import (
    ChannelContext,
    MediaDownload,
    MediaSource,
    MissingCredential,
    SendError,
    TemplateLister,
    WebhookRegistrar,
)
from agenthub.security import new_webhook_secret

MASK = "********"
# Kept in `channel.config` by `register-webhook`: when, where, and a fingerprint of what
# the platform was told (credentials, API base URL, webhook URL), so a later change of any
# of them shows the registration as stale.
REGISTRATION_KEY = "webhook_registration"


class BadGateway(DomainError):
    status_code = 502

    def default_detail(self) -> str:
        return "The platform could not be reached"


def webhook_url(hub: Hub, channel: Channel) -> str:
    return f"{hub.settings.effective_public_url}/webhooks/{channel.platform}/{channel.id}"


def channel_context(hub: Hub, channel: Channel) -> ChannelContext:
    return ChannelContext(
        channel=channel,
        credentials=hub.secrets.decrypt_json(channel.credentials_encrypted),
        public_url=hub.settings.effective_public_url,
        settings=hub.settings,
    )


def _registration_fingerprint(hub: Hub, channel: Channel) -> str:
    # The ciphertext changes whenever the credentials are written, and hashing it reveals
    # nothing about them (config, and so this value, is visible to members).
    material = "\n".join(
        (
            channel.credentials_encrypted,
            str(channel.config.get("api_base_url") or ""),
            webhook_url(hub, channel),
        )
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _registration(hub: Hub, channel: Channel) -> tuple[bool | None, datetime | None]:
    """(registered?, when) for platforms the hub registers itself; (None, None) otherwise."""
    if not isinstance(get_adapter(channel.platform), WebhookRegistrar):
        return None, None
    record = channel.config.get(REGISTRATION_KEY)
    if not isinstance(record, dict) or record.get("fingerprint") != _registration_fingerprint(
        hub, channel
    ):
        return False, None
    try:
        return True, datetime.fromisoformat(str(record.get("registered_at")))
    except ValueError:
        return True, None


def setup_steps(channel: Channel, url: str, registered: bool | None) -> list[str]:
    """What the admin configures at the platform (see docs/platforms.md)."""
    platform = channel.platform
    if platform == Platform.WHATSAPP_TWILIO:
        return [
            f"In the Twilio Console, set the WhatsApp sender's (or the Sandbox's) 'When a "
            f"message comes in' webhook to {url} (HTTP POST).",
            "AGENTHUB_PUBLIC_URL must be the URL Twilio calls: signatures are checked against it.",
            "Status callbacks need no setup: the hub asks for them with every message it sends.",
        ]
    if platform == Platform.TELEGRAM:
        if registered:
            return [f"Done: Telegram delivers this bot's updates to {url} (setWebhook)."]
        return [
            f"POST /channels/{channel.id}/register-webhook: the hub calls setWebhook with "
            f"{url} and the channel's secret_token.",
            "Telegram's cloud only calls HTTPS URLs on port 443, 80, 88 or 8443 (a local Bot "
            "API server, set as config.api_base_url, also takes plain HTTP).",
        ]
    if platform == Platform.WHATSAPP_CLOUD:
        return [
            f"In the Meta App Dashboard, WhatsApp > Configuration: set the Callback URL to {url} "
            "and the Verify token to this channel's verify_token (Meta checks both at once "
            "with a GET).",
            "Subscribe the webhook to the 'messages' field.",
            "One app serving several phone numbers: give each number its own channel and "
            "callback URL (Meta's per-number callback override); messages for another "
            "phone_number_id are ignored.",
        ]
    if platform == Platform.WHAPI:
        return [
            f"In the WHAPI dashboard (or PATCH /settings), add a webhook to {url}, mode "
            "'body', events 'messages' and 'statuses' (method POST).",
            "Give that webhook the header 'X-Webhook-Secret: <this channel's webhook_secret>': "
            "requests without it are refused.",
        ]
    return [
        f"Your application POSTs messages to {url}, signed with Standard Webhooks headers "
        "(key: the channel's secret).",
        "Replies are POSTed to config.callback_url when it is set; otherwise read them through "
        "the API or the WebSocket.",
    ]


async def answer(
    session: AsyncSession,
    hub: Hub,
    channel: Channel,
    shown_credentials: dict[str, Any] | None = None,
) -> ChannelOut:
    lists = await default_agents.lists_of(session, [channel])
    return to_out(hub, channel, lists.get(channel.id), shown_credentials)


async def answers(session: AsyncSession, hub: Hub, channels: Sequence[Channel]) -> list[ChannelOut]:
    lists = await default_agents.lists_of(session, channels)
    return [to_out(hub, channel, lists.get(channel.id)) for channel in channels]


def to_out(
    hub: Hub,
    channel: Channel,
    default_agent_ids: list[str] | None,
    shown_credentials: dict[str, Any] | None = None,
) -> ChannelOut:
    """The answer for a channel; `default_agent_ids` from `default_agents.lists_of`."""
    stored = hub.secrets.decrypt_json(channel.credentials_encrypted)
    url = webhook_url(hub, channel)
    registered, registered_at = _registration(hub, channel)
    return ChannelOut(
        id=channel.id,
        name=channel.name,
        platform=Platform(channel.platform),
        # Keys starting with "_" are the hub's own (a rotated secret's grace), never listed.
        credentials=shown_credentials or {key: MASK for key in stored if not key.startswith("_")},
        config=channel.config,
        webhook_url=url,
        is_active=channel.is_active,
        default_agent_ids=default_agent_ids,
        created_at=channel.created_at,
        webhook_registered=registered,
        webhook_registered_at=registered_at,
        setup=setup_steps(channel, url, registered),
    )


async def register_webhook(hub: Hub, context: ChannelContext) -> None:
    """Tell the platform the hub's webhook URL (Telegram `setWebhook`). Runs outside any
    database transaction: the platform may take seconds to answer."""
    platform = context.channel.platform
    adapter = get_adapter(platform)
    if not isinstance(adapter, WebhookRegistrar):
        raise BadRequest(
            f"The hub cannot register {platform} webhooks: configure webhook_url at the "
            "platform (see the channel's `setup`)"
        )
    try:
        await adapter.register_webhook(hub.http, context)
    except SendError as exc:
        if exc.transient or exc.status_code is None:
            raise BadGateway(f"{platform} could not be reached: {exc.detail}") from None
        raise BadRequest(f"{platform} refused the webhook: {exc.detail}") from None


async def record_registration(session: AsyncSession, hub: Hub, channel: Channel) -> Channel:
    record = {
        "url": webhook_url(hub, channel),
        "registered_at": hub.clock().isoformat(),
        "fingerprint": _registration_fingerprint(hub, channel),
    }
    channel.config = {**channel.config, REGISTRATION_KEY: record}
    await session.flush()
    return channel


async def list_templates(hub: Hub, context: ChannelContext) -> TemplateList:
    """The channel's message templates, read from the platform now. Runs outside any database
    transaction. Platforms without templates → 422; a missing credential → 409 naming it; the
    platform refusing or out of reach → 502 with its reason."""
    platform = context.channel.platform
    adapter = get_adapter(platform)
    if not isinstance(adapter, TemplateLister):
        raise InvalidInput.at(
            ("path", "channel_id"),
            "value_error",
            f"{platform} channels have no message templates (WhatsApp channels only)",
        )
    try:
        found = await adapter.list_templates(hub.http, context)
    except MissingCredential as exc:
        raise Conflict({"code": "missing_credential", "message": exc.detail}) from None
    except SendError as exc:
        raise BadGateway(f"{platform} could not list the templates: {exc.detail[:300]}") from None
    return TemplateList(templates=[TemplateOut.model_validate(t) for t in found])


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
INLINE_TYPES = ("image/", "audio/", "video/")


async def open_media(hub: Hub, context: ChannelContext, media_id: str) -> Response:
    """Stream one media file from the platform (it needs the channel's credentials, which
    never leave the hub). Runs outside any database transaction."""
    platform = context.channel.platform
    adapter = get_adapter(platform)
    if not isinstance(adapter, MediaSource):
        raise BadRequest(f"{platform} media are plain URLs in meta_data.media; nothing to fetch")
    try:
        download = await adapter.open_media(hub.http, context, media_id)
    except SendError as exc:
        if exc.status_code in (400, 403, 404, 410):
            raise NotFound("Media not found at the platform") from None
        raise BadGateway(f"{platform} could not serve the media: {exc.detail}") from None
    return _stream(download)


def _stream(download: MediaDownload) -> Response:
    upstream = download.response

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_bytes():
                yield chunk
        finally:
            await upstream.aclose()

    content_type = download.content_type.split(";")[0].strip() or "application/octet-stream"
    disposition = "inline" if content_type.startswith(INLINE_TYPES) else "attachment"
    if download.filename:
        disposition += f'; filename="{_UNSAFE_FILENAME.sub("_", download.filename)[:100]}"'
    headers = {
        "Content-Disposition": disposition,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "private, max-age=3600",
    }
    length = upstream.headers.get("content-length")
    if length and length.isdigit() and "content-encoding" not in upstream.headers:
        headers["Content-Length"] = length
    return StreamingResponse(
        body(), media_type=content_type, headers=headers, background=BackgroundTask(upstream.aclose)
    )


async def create_channel(session: AsyncSession, hub: Hub, data: NewChannel) -> ChannelOut:
    # Store what the schema made of them (stripped), not the raw dict.
    credentials = data.credentials.model_dump(exclude_none=True)
    generated: dict[str, Any] | None = None
    if data.platform == Platform.API and not credentials.get("secret"):
        credentials["secret"] = new_webhook_secret()
        generated = {"secret": credentials["secret"]}
    config = _stored_config(data.config)
    await _check_config_urls(hub, config)
    channel = Channel(
        name=data.name,
        platform=data.platform,
        credentials_encrypted=hub.secrets.encrypt_json(credentials),
        config=config,
        is_active=data.is_active,
    )
    session.add(channel)
    await session.flush()
    if data.default_agent_ids is not None:
        await default_agents.set_list(
            session, channel, data.default_agent_ids, ("body", "default_agent_ids")
        )
    audit.record(session, "channel.created", ("channel", channel.id), {"platform": data.platform})
    return await answer(session, hub, channel, generated)


def _stored_config(config: ChannelConfig) -> dict[str, Any]:
    """The keys the client gave (the adapter's own ones included), as given."""
    return config.model_dump(exclude_unset=True)


# Every URL of a channel's config that the hub calls.
CONFIG_URLS = ("callback_url", "api_base_url", "typing_api_base_url", "content_api_base_url")


async def _check_config_urls(hub: Hub, config: dict[str, Any]) -> None:
    """The hub will call these URLs: the SSRF guard applies to them as to agent URLs."""
    for key in CONFIG_URLS:
        if url := config.get(key):
            await ensure_public_url(url, allow_private=hub.settings.private_agent_urls_allowed)


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
        stored = hub.secrets.decrypt_json(channel.credentials_encrypted)
        # The hub's own keys (a rotated secret's grace, `rotation.py`) are not the client's
        # to validate; a secret set by hand ends any grace.
        kept = {k: v for k, v in stored.items() if k.startswith("_")}
        if "secret" in data.credentials:
            kept = {}
        merged = {k: v for k, v in stored.items() if not k.startswith("_")} | data.credentials
        try:
            validated = CREDENTIAL_SCHEMAS[Platform(channel.platform)].model_validate(merged)
        except ValidationError as exc:
            # Located where the client wrote the fields, as a request error would be.
            raise InvalidInput.within(("body", "credentials"), exc) from None
        merged = validated.model_dump(exclude_none=True) | kept
        channel.credentials_encrypted = hub.secrets.encrypt_json(merged)
    if data.config is not None:
        config = _stored_config(data.config)
        await _check_config_urls(hub, config)
        if REGISTRATION_KEY in channel.config and REGISTRATION_KEY not in config:
            # Hub-kept; it shows itself stale when what it fingerprints changes.
            config[REGISTRATION_KEY] = channel.config[REGISTRATION_KEY]
        channel.config = config
    if data.name is not None:
        channel.name = data.name
    if data.is_active is not None:
        channel.is_active = data.is_active
    if "default_agent_ids" in data.model_fields_set:  # null is a value: back to the rule
        await default_agents.set_list(
            session, channel, data.default_agent_ids, ("body", "default_agent_ids")
        )
    await session.flush()
    # Which parts changed; a credential's name, never its value.
    fields = sorted(data.model_fields_set)
    credentials = sorted(data.credentials or {})
    audit.record(
        session,
        "channel.updated",
        ("channel", channel.id),
        {"fields": fields, "credentials": credentials},
    )
    return channel


async def delete_channel(session: AsyncSession, channel: Channel) -> None:
    await session.delete(channel)
    await session.flush()
    audit.record(session, "channel.deleted", ("channel", channel.id), {"name": channel.name})


async def add_member(session: AsyncSession, channel: Channel, user_id: str) -> None:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    if user.role != Role.MEMBER:
        raise BadRequest("Only MEMBER users are granted channels; admins see every channel")
    if await session.get(ChannelMember, (channel.id, user_id)) is None:
        session.add(ChannelMember(channel_id=channel.id, user_id=user_id))
        await session.flush()
        audit.record(session, "member.granted", ("user", user_id), {"channel_id": channel.id})


async def remove_member(session: AsyncSession, channel: Channel, user_id: str) -> None:
    membership = await session.get(ChannelMember, (channel.id, user_id))
    if membership is None:
        raise NotFound("User is not a member of this channel")
    await session.delete(membership)
    await session.flush()
    audit.record(session, "member.revoked", ("user", user_id), {"channel_id": channel.id})


async def list_members(session: AsyncSession, channel: Channel) -> list[User]:
    query = (
        select(User)
        .join(ChannelMember, ChannelMember.user_id == User.id)
        .where(ChannelMember.channel_id == channel.id)
        .order_by(User.username)
    )
    return list(await session.scalars(query))
