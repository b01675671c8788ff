"""The channels page: each channel with its webhook URL and setup steps, the create
form with each platform's credential fields, and Telegram webhook registration."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub import rotation
from agenthub.channels import service as channels_service
from agenthub.channels.schemas import CREDENTIAL_SCHEMAS, ChannelCreate
from agenthub.console.admin.common import (
    BASE,
    admin_user,
    back,
    form_pairs,
    invalid,
    refused,
    user_by_id,
)
from agenthub.console.web import render
from agenthub.deps import AdminUser, HubDep, SessionDep
from agenthub.errors import DomainError
from agenthub.hub import Hub
from agenthub.models import Channel, Platform
from agenthub.rotation import SecretRotation
from agenthub.uow import commit

router = APIRouter(include_in_schema=False)


# The platforms in the order the create form offers them; each has a fieldset whose inputs are
# named `<platform>.<field>`: its credentials, then the config keys of CONFIG_FIELDS.
PLATFORM_LABELS = {
    Platform.API: "API (web chat, custom app)",
    Platform.TELEGRAM: "Telegram",
    Platform.WHATSAPP_TWILIO: "WhatsApp (Twilio)",
    Platform.WHATSAPP_CLOUD: "WhatsApp Cloud API (Meta)",
    Platform.WHAPI: "WhatsApp (WHAPI)",
}
CONFIG_FIELDS = {
    Platform.API: ("callback_url",),
    Platform.TELEGRAM: ("api_base_url",),
}
SECRET_FIELDS = frozenset(
    {"auth_token", "bot_token", "secret_token", "access_token", "app_secret", "token", "secret"}
)
SETUP_HINTS = {
    Platform.API: "Your application POSTs to the channel's webhook URL, signed with Standard "
    "Webhooks headers keyed by the channel's secret (leave it empty: the hub generates one and "
    "shows it once). Replies go to the callback URL, if set.",
    Platform.TELEGRAM: "Get a bot token from @BotFather and choose a secret token (A-Z a-z 0-9 _ "
    "-). After creating the channel, press 'Register webhook': the hub calls setWebhook with "
    "its webhook URL (HTTPS on port 443, 80, 88 or 8443).",
    Platform.WHATSAPP_TWILIO: "In the Twilio Console, paste the channel's webhook URL as the "
    "WhatsApp sender's 'When a message comes in' webhook (HTTP POST).",
    Platform.WHATSAPP_CLOUD: "In the Meta App Dashboard (WhatsApp > Configuration), paste the "
    "webhook URL as the Callback URL with the same verify token, and subscribe to 'messages'.",
    Platform.WHAPI: "In the WHAPI dashboard, add a webhook to the channel's webhook URL (mode "
    "'body', events 'messages' and 'statuses') with the header 'X-Webhook-Secret: <webhook "
    "secret>'.",
}


def _platform_fields() -> list[dict[str, Any]]:
    platforms = []
    for platform, label in PLATFORM_LABELS.items():
        schema = CREDENTIAL_SCHEMAS[platform]
        fields = [
            {
                "name": name,
                "required": info.is_required(),
                "secret": name in SECRET_FIELDS,
                "help": info.description or "",
            }
            for name, info in schema.model_fields.items()
        ]
        fields += [
            {"name": name, "required": False, "secret": False, "help": ""}
            for name in CONFIG_FIELDS.get(platform, ())
        ]
        platforms.append(
            {
                "value": platform.value,
                "label": label,
                "fields": fields,
                "hint": SETUP_HINTS[platform],
            }
        )
    return platforms


PLATFORMS = _platform_fields()


async def _channels_page(
    session: AsyncSession, hub: Hub, user_id: str, status_code: int = 200, **extra: Any
) -> Response:
    channels = list(await session.scalars(select(Channel).order_by(Channel.name, Channel.id)))
    return render(
        "admin_channels.html",
        status_code,
        page="admin-channels",
        user=await user_by_id(session, user_id),
        channels=await channels_service.answers(session, hub, channels),
        platforms=PLATFORMS,
        **extra,
    )


@router.get(f"{BASE}/channels")
async def channels_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    user = await admin_user(request, hub, session)
    if isinstance(user, Response):
        return user
    return await _channels_page(session, hub, user.id)


def _channel_input(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The chosen platform's fieldset (empty inputs left out); the other fieldsets are ignored."""
    form = dict(pairs)
    platform = form.get("platform", "")
    prefix = f"{platform}."
    config_fields = CONFIG_FIELDS.get(Platform(platform), ())
    credentials: dict[str, str] = {}
    config: dict[str, str] = {}
    for name, value in form.items():
        if not name.startswith(prefix) or not value.strip():
            continue
        field = name[len(prefix) :]
        (config if field in config_fields else credentials)[field] = value.strip()
    return {
        "name": form.get("name", ""),
        "platform": platform,
        "credentials": credentials,
        "config": config,
    }


@router.post(f"{BASE}/channels")
async def create_channel(
    request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    user_id = user.id
    pairs = await form_pairs(request)
    form = dict(pairs)
    try:
        data = _channel_input(pairs) if form.get("platform") in set(Platform) else form
        try:
            channel = ChannelCreate.model_validate(data).root
        except ValidationError as exc:
            raise invalid(exc) from None
        created = await channels_service.create_channel(session, hub, channel)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        keep = {"name": form.get("name", ""), "platform": form.get("platform", "")}
        return await _channels_page(session, hub, user_id, status_code, errors=errors, values=keep)
    # Only a generated `api` secret comes back unmasked, once.
    secret = created.credentials.get("secret")
    shown_secret = secret if secret and secret != channels_service.MASK else None
    return await _channels_page(
        session, hub, user_id, 201, created=created, shown_secret=shown_secret
    )


@router.post(f"{BASE}/channels/{{channel_id}}/register-webhook")
async def register_webhook(
    channel_id: str, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    """What `POST /channels/{id}/register-webhook` does; its refusal shown in the page."""
    user_id = user.id
    try:
        channel = await channels_service.get_channel(session, channel_id)
        context = channels_service.channel_context(hub, channel)
        await commit(session)  # no transaction stays open while the platform answers
        await channels_service.register_webhook(hub, context)
        async with hub.db.transaction() as write:
            stored = await channels_service.get_channel(write, channel_id)
            await channels_service.record_registration(write, hub, stored)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _channels_page(session, hub, user_id, status_code, errors=errors)
    return back("channels")


@router.post(f"{BASE}/channels/{{channel_id}}/secret")
async def rotate_channel_secret(
    channel_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    """An `api` channel's new secret (`POST /channels/{id}/secret`), shown once."""
    user_id = user.id
    form = dict(await form_pairs(request))
    try:
        data = SecretRotation.model_validate({"grace_hours": form.get("grace_hours") or 24})
        channel = await channels_service.get_channel(session, channel_id)
        rotated = await rotation.rotate_channel_secret(session, hub, channel, data.grace_hours)
    except ValidationError as exc:
        status_code, errors = await refused(session, invalid(exc))
        return await _channels_page(session, hub, user_id, status_code, errors=errors)
    except DomainError as exc:
        status_code, errors = await refused(session, exc)
        return await _channels_page(session, hub, user_id, status_code, errors=errors)
    once = {
        "channel": channel.name,
        "secret": rotated.secret,
        "until": rotated.previous_valid_until,
    }
    return await _channels_page(session, hub, user_id, rotated_secret=once)
