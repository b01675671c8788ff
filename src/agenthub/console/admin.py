"""The console's admin pages: channels, agents, users (with their channel grants) and canned
responses. ADMIN only: a MEMBER gets 403 on every page and every POST.

Each POST authenticates like the API (`deps.get_principal`: the session cookie plus the hub's
own `Origin`, then the admin check of `AdminUser`), calls the API's own service, and either
redirects (303) back to the page or, when the service refuses, renders the page again with the
error in it and the service's status. The values a platform or an agent needs once (an `api`
channel's generated secret, an agent's token and webhook secret, a rotated token) are shown in
the answer to the POST that made them, and never again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.agents import service as agents_service
from agenthub.agents.schemas import AgentCreate, AgentUpdate, TokenCreate
from agenthub.agents.test_delivery import send_test_delivery
from agenthub.auth import service as auth_service
from agenthub.auth.schemas import UserCreate, UserUpdate
from agenthub.channels import service as channels_service
from agenthub.channels.schemas import CREDENTIAL_SCHEMAS, ChannelCreate
from agenthub.console.web import render, signed_in, to_login
from agenthub.delivery.events import access_changed, publish_after_commit
from agenthub.deps import AdminUser, HubDep, SessionDep
from agenthub.errors import DomainError, InvalidInput
from agenthub.hub import Hub
from agenthub.models import Agent, CannedResponse, Channel, ChannelMember, Platform, Role, User
from agenthub.operators.canned import service as canned_service
from agenthub.operators.canned.schemas import CannedResponseCreate, CannedResponseUpdate
from agenthub.uow import commit, rollback

router = APIRouter(include_in_schema=False)

BASE = "/console/admin"
LIST_LIMIT = 500
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


# --- helpers ---------------------------------------------------------------------------------


async def _admin(request: Request, hub: Hub, session: AsyncSession) -> User | Response:
    """The signed-in admin of a GET, or the answer instead (login form, or 403)."""
    principal = await signed_in(request, hub, session)
    if principal is None or principal.user is None:
        return to_login()
    if not principal.user.is_admin:
        return render("admin_forbidden.html", 403, page="admin-forbidden", user=principal.user)
    return principal.user


async def _admin_form(request: Request) -> list[tuple[str, str]]:
    """A urlencoded form as pairs (checkbox groups repeat a name)."""
    try:
        return parse_qsl(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=1000,
        )
    except ValueError:
        raise InvalidInput.at(("body",), "value_error", "Not a valid UTF-8 form") from None


def _messages(detail: Any) -> list[str]:
    """A service's or a schema's refusal as lines for the page (never the submitted values)."""
    if isinstance(detail, list):
        lines = []
        for error in detail:
            loc = [str(part) for part in error.get("loc", []) if part != "body"]
            lines.append(f"{'.'.join(loc)}: {error.get('msg')}" if loc else str(error.get("msg")))
        return lines
    return [str(detail)]


def _invalid(exc: ValidationError) -> InvalidInput:
    return InvalidInput.within((), exc)


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(f"{BASE}/{path}", status_code=303)


async def _refused(session: AsyncSession, exc: DomainError) -> tuple[int, list[str]]:
    """Undo what the refused change flushed; the page is then rendered from what is stored."""
    await rollback(session)
    return exc.status_code, _messages(exc.detail)


async def _user(session: AsyncSession, user_id: str) -> User:
    # After a rollback the caller's object is expired: `get` loads it again.
    user = await session.get(User, user_id)
    assert user is not None
    return user


# --- channels --------------------------------------------------------------------------------


async def _channels_page(
    session: AsyncSession, hub: Hub, user_id: str, status_code: int = 200, **extra: Any
) -> Response:
    channels = list(await session.scalars(select(Channel).order_by(Channel.name, Channel.id)))
    return render(
        "admin_channels.html",
        status_code,
        page="admin-channels",
        user=await _user(session, user_id),
        channels=await channels_service.answers(session, hub, channels),
        platforms=PLATFORMS,
        **extra,
    )


@router.get(f"{BASE}/channels")
async def channels_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    user = await _admin(request, hub, session)
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
    pairs = await _admin_form(request)
    form = dict(pairs)
    try:
        data = _channel_input(pairs) if form.get("platform") in set(Platform) else form
        try:
            channel = ChannelCreate.model_validate(data).root
        except ValidationError as exc:
            raise _invalid(exc) from None
        created = await channels_service.create_channel(session, hub, channel)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
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
        status_code, errors = await _refused(session, exc)
        return await _channels_page(session, hub, user_id, status_code, errors=errors)
    return _back("channels")


# --- agents ----------------------------------------------------------------------------------


async def _agents_page(
    session: AsyncSession, user_id: str, status_code: int = 200, **extra: Any
) -> Response:
    agents = await agents_service.list_agents(session, LIST_LIMIT, 0)
    return render(
        "admin_agents.html",
        status_code,
        page="admin-agents",
        user=await _user(session, user_id),
        agents=agents,
        **extra,
    )


@router.get(f"{BASE}/agents")
async def agents_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    user = await _admin(request, hub, session)
    if isinstance(user, Response):
        return user
    return await _agents_page(session, user.id)


AGENT_FIELDS = ("name", "webhook_url", "buffer_time_seconds", "timeout_seconds")


@router.post(f"{BASE}/agents")
async def create_agent(
    request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    user_id = user.id
    form = dict(await _admin_form(request))
    values = {k: form[k].strip() for k in AGENT_FIELDS if form.get(k, "").strip()}
    try:
        try:
            data = AgentCreate.model_validate(values)
        except ValidationError as exc:
            raise _invalid(exc) from None
        agent, token, webhook_secret = await agents_service.create_agent(session, hub, data)
        warnings = await agents_service.name_warnings(session, agent.name, agent.id)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors, values=form)
    once = {"agent": agent.name, "token": token, "webhook_secret": webhook_secret}
    return await _agents_page(session, user_id, 201, once=once, warnings=warnings)


@router.post(f"{BASE}/agents/{{agent_id}}/token")
async def new_agent_token(agent_id: str, user: AdminUser, session: SessionDep) -> Response:
    user_id = user.id
    try:
        agent = await agents_service.get_agent(session, agent_id)
        raw, _token = await agents_service.create_token(session, agent, TokenCreate(name="console"))
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors)
    return await _agents_page(session, user_id, 201, once={"agent": agent.name, "token": raw})


@router.post(f"{BASE}/agents/{{agent_id}}/test")
async def test_agent(agent_id: str, user: AdminUser, session: SessionDep, hub: HubDep) -> Response:
    """A test delivery (`POST /auth/agents/{id}/test-delivery`), its answer shown on the page."""
    user_id = user.id
    try:
        agent = await agents_service.get_agent(session, agent_id)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors)
    session.expunge(agent)
    await session.rollback()  # no transaction open while the agent answers
    probe = await send_test_delivery(hub, agent)
    return await _agents_page(session, user_id, probe={"agent": agent.name, "result": probe})


@router.post(f"{BASE}/agents/{{agent_id}}/active")
async def set_agent_active(
    agent_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    user_id = user.id
    form = dict(await _admin_form(request))
    try:
        agent: Agent = await agents_service.get_agent(session, agent_id)
        change = AgentUpdate(is_active=form.get("is_active") == "true")
        await agents_service.update_agent(session, hub, agent, change)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _agents_page(session, user_id, status_code, errors=errors)
    return _back("agents")


# --- users -----------------------------------------------------------------------------------


async def _users_page(
    session: AsyncSession, user_id: str, status_code: int = 200, **extra: Any
) -> Response:
    users = await auth_service.list_users(session, LIST_LIMIT, 0)
    channels = list(await session.scalars(select(Channel).order_by(Channel.name, Channel.id)))
    grants: dict[str, set[str]] = {}
    for member_id, channel_id in await session.execute(
        select(ChannelMember.user_id, ChannelMember.channel_id)
    ):
        grants.setdefault(member_id, set()).add(channel_id)
    return render(
        "admin_users.html",
        status_code,
        page="admin-users",
        user=await _user(session, user_id),
        users=users,
        channels=channels,
        grants=grants,
        roles=[role.value for role in Role],
        **extra,
    )


@router.get(f"{BASE}/users")
async def users_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    user = await _admin(request, hub, session)
    if isinstance(user, Response):
        return user
    return await _users_page(session, user.id)


@router.post(f"{BASE}/users")
async def create_user(request: Request, user: AdminUser, session: SessionDep) -> Response:
    user_id = user.id
    form = dict(await _admin_form(request))
    values = {k: form.get(k, "") for k in ("username", "password", "role")}
    try:
        try:
            data = UserCreate.model_validate(values)
        except ValidationError as exc:
            raise _invalid(exc) from None
        await auth_service.create_user(session, data)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        keep = {"username": values["username"], "role": values["role"]}
        return await _users_page(session, user_id, status_code, errors=errors, values=keep)
    return _back("users")


async def _update_user(
    session: AsyncSession, hub: Hub, caller: User, target_id: str, values: dict[str, Any]
) -> Response:
    caller_id = caller.id
    try:
        try:
            data = UserUpdate.model_validate(values)
        except ValidationError as exc:
            raise _invalid(exc) from None
        target = await auth_service.get_user(session, target_id)
        await auth_service.update_user(session, caller, target, data)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _users_page(session, caller_id, status_code, errors=errors)
    publish_after_commit(session, hub, access_changed(target_id))
    return _back("users")


@router.post(f"{BASE}/users/{{user_id}}/role")
async def set_user_role(
    user_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    form = dict(await _admin_form(request))
    return await _update_user(session, hub, user, user_id, {"role": form.get("role", "")})


@router.post(f"{BASE}/users/{{user_id}}/active")
async def set_user_active(
    user_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    form = dict(await _admin_form(request))
    active = form.get("is_active") == "true"
    return await _update_user(session, hub, user, user_id, {"is_active": active})


@router.post(f"{BASE}/users/{{user_id}}/channels")
async def set_user_channels(
    user_id: str, request: Request, user: AdminUser, session: SessionDep, hub: HubDep
) -> Response:
    """The checked channels are granted, the others revoked (`add_member`, `remove_member`)."""
    caller_id = user.id
    wanted = {value for name, value in await _admin_form(request) if name == "channel_id"}
    try:
        target = await auth_service.get_user(session, user_id)
        current = set(
            await session.scalars(
                select(ChannelMember.channel_id).where(ChannelMember.user_id == target.id)
            )
        )
        for channel_id in sorted(wanted - current):
            channel = await channels_service.get_channel(session, channel_id)
            await channels_service.add_member(session, channel, target.id)
        for channel_id in sorted(current - wanted):
            channel = await channels_service.get_channel(session, channel_id)
            await channels_service.remove_member(session, channel, target.id)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _users_page(session, caller_id, status_code, errors=errors)
    if wanted != current:
        publish_after_commit(session, hub, access_changed(user_id))
    return _back("users")


# --- canned responses ------------------------------------------------------------------------


async def _canned_page(
    session: AsyncSession, user_id: str, status_code: int = 200, **extra: Any
) -> Response:
    canned = await canned_service.list_canned_responses(session, None, LIST_LIMIT, 0)
    return render(
        "admin_canned.html",
        status_code,
        page="admin-canned",
        user=await _user(session, user_id),
        canned=canned,
        **extra,
    )


@router.get(f"{BASE}/canned")
async def canned_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    user = await _admin(request, hub, session)
    if isinstance(user, Response):
        return user
    return await _canned_page(session, user.id)


def _canned_values(form: dict[str, str]) -> dict[str, str]:
    return {k: form[k] for k in ("shortcut", "content") if k in form}


@router.post(f"{BASE}/canned")
async def create_canned(request: Request, user: AdminUser, session: SessionDep) -> Response:
    user_id = user.id
    values = _canned_values(dict(await _admin_form(request)))
    try:
        try:
            data = CannedResponseCreate.model_validate(values)
        except ValidationError as exc:
            raise _invalid(exc) from None
        await canned_service.create_canned_response(session, user, data)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _canned_page(session, user_id, status_code, errors=errors, values=values)
    return _back("canned")


@router.post(f"{BASE}/canned/{{canned_id}}")
async def update_canned(
    canned_id: str, request: Request, user: AdminUser, session: SessionDep
) -> Response:
    user_id = user.id
    values = _canned_values(dict(await _admin_form(request)))
    try:
        try:
            data = CannedResponseUpdate.model_validate(values)
        except ValidationError as exc:
            raise _invalid(exc) from None
        canned: CannedResponse = await canned_service.get_canned_response(session, canned_id)
        await canned_service.update_canned_response(session, canned, data)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _canned_page(
            session, user_id, status_code, errors=errors, editing=canned_id, edit_values=values
        )
    return _back("canned")


@router.post(f"{BASE}/canned/{{canned_id}}/delete")
async def delete_canned(canned_id: str, user: AdminUser, session: SessionDep) -> Response:
    user_id = user.id
    try:
        canned = await canned_service.get_canned_response(session, canned_id)
        await canned_service.delete_canned_response(session, canned)
    except DomainError as exc:
        status_code, errors = await _refused(session, exc)
        return await _canned_page(session, user_id, status_code, errors=errors)
    return _back("canned")
