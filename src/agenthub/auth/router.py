"""`/auth`: signup of the first admin, login/logout (bearer token or browser session), and
user management."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.audit import service as audit
from agenthub.auth import service
from agenthub.auth.schemas import (
    LoginIn,
    LoginOut,
    SessionOut,
    SignupIn,
    UserCreate,
    UserOut,
    UserUpdate,
)
from agenthub.auth.throttle import TooManyAttempts
from agenthub.delivery.events import access_changed, publish_after_commit
from agenthub.deps import AdminUser, CurrentPrincipal, CurrentUser, HubDep, SessionDep
from agenthub.errors import DomainError, InvalidInput, Unauthorized
from agenthub.hub import Hub
from agenthub.models import ApiToken, User
from agenthub.openapi_errors import error_responses
from agenthub.sessions import (
    clear_session_cookie,
    ensure_sign_in_origin,
    set_session_cookie,
)

router = APIRouter(prefix="/auth", tags=["auth"])

Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


SetupTokenHeader = Annotated[
    str | None,
    Header(
        alias=service.SETUP_TOKEN_HEADER,
        description="The server's `AGENTHUB_SETUP_TOKEN`. Required (else 403) when the server "
        "has one set, as production servers should; ignored otherwise.",
    ),
]


@router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=error_responses(403, 409),
)
async def signup(
    data: SignupIn, session: SessionDep, hub: HubDep, setup_token: SetupTokenHeader = None
) -> object:
    """Create the first user, an ADMIN. Closed (403) once any user exists. When the server
    has `AGENTHUB_SETUP_TOKEN` set, also needs the `X-Setup-Token` header with its value."""
    service.check_setup_token(hub.settings.setup_token, setup_token)
    return await service.signup_first_admin(session, data)


async def log_in(
    request: Request, data: LoginIn, session: AsyncSession, hub: Hub, *, kind: str
) -> tuple[str, ApiToken, User]:
    """`service.login` behind the failed-login counters (`auth/throttle.py`), which
    `/auth/login` and `/auth/session` share: 429 once either is full."""
    throttle = hub.login_throttle
    # The socket peer; proxy headers are not trusted (see auth/throttle.py).
    address = request.client.host if request.client else None
    audit.set_actor(request, "anonymous", None)
    # The username is who tried, not a secret; the password is never recorded.
    tried = ("username", data.username[:64])
    try:
        await throttle.check(data.username, address)
    except TooManyAttempts:
        audit.record_refused(session, "login.failed", tried, {"kind": kind, "reason": "throttled"})
        raise
    try:
        result = await service.login(
            session,
            data.username,
            data.password,
            hub.settings.user_token_ttl_hours,
            kind=kind,
        )
    except Unauthorized:
        await throttle.failed(data.username, address)
        audit.record_refused(session, "login.failed", tried, {"kind": kind})
        raise
    await throttle.succeeded(data.username, address)
    user = result[2]
    audit.set_actor(request, "user", user.id)
    audit.record(session, "login.succeeded", ("user", user.id), {"kind": kind})
    return result


@router.post("/login", response_model=LoginOut, responses=error_responses(401, 429))
async def login(data: LoginIn, request: Request, session: SessionDep, hub: HubDep) -> LoginOut:
    """Exchange a username and password for a bearer token. After too many failed logins for
    the username or from the client's address, 429 with `Retry-After` (seconds)."""
    raw, token, user = await log_in(request, data, session, hub, kind="login")
    assert token.expires_at is not None
    return LoginOut(
        access_token=raw, expires_at=token.expires_at, user=UserOut.model_validate(user)
    )


class UnsupportedMediaType(DomainError):
    status_code = 415

    def default_detail(self) -> str:
        return "Send application/json or application/x-www-form-urlencoded"


_FORM = "application/x-www-form-urlencoded"
_LOGIN_BODY = {"schema": {"$ref": "#/components/schemas/LoginIn"}}


async def login_input(request: Request) -> LoginIn:
    """`{username, password}` as JSON or as a urlencoded form (an HTML form's POST). Parsed
    here rather than with `Form()`, which needs python-multipart, for a form of two fields."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    raw: Any
    if media_type == _FORM:
        try:
            pairs = parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=10
            )
        except ValueError:  # not UTF-8 (percent-encoded or not), or too many fields
            raise InvalidInput.at(("body",), "value_error", "Not a valid UTF-8 form") from None
        raw = {}
        for name, value in pairs:
            if name in raw:
                raise InvalidInput.at(("body", name), "value_error", "Given twice")
            raw[name] = value
    elif media_type in ("", "application/json") or media_type.endswith("+json"):
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidInput.at(("body",), "json_invalid", "JSON decode error") from None
    else:
        raise UnsupportedMediaType
    try:
        return LoginIn.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput.within(("body",), exc) from None


@router.post(
    "/session",
    response_model=SessionOut,
    responses=error_responses(401, 403, 415, 422, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": _LOGIN_BODY, _FORM: _LOGIN_BODY},
        }
    },
)
async def create_session(
    request: Request, response: Response, session: SessionDep, hub: HubDep
) -> SessionOut:
    """Sign a browser in: `{username, password}` (JSON or a urlencoded form) → the user, and
    a new user token in the `agenthub_session` cookie (`HttpOnly`, `SameSite=Strict`, `Secure`
    with an https public URL), never in the body. Requests with the cookie need no bearer
    token; those that change something also need the `Origin` header of the hub's public
    URL. An `Origin` of another site is refused here too (403: no signing a browser in from
    elsewhere). Failed attempts count with those of `/auth/login` (429, `Retry-After`)."""
    ensure_sign_in_origin(request, hub.settings)
    data = await login_input(request)
    raw, token, user = await log_in(request, data, session, hub, kind="session")
    assert token.expires_at is not None
    set_session_cookie(response, raw, hub.settings)
    return SessionOut(expires_at=token.expires_at, user=UserOut.model_validate(user))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    principal: CurrentPrincipal, session: SessionDep, hub: HubDep, response: Response
) -> None:
    """Revoke the token this request carries (open WebSockets on it are closed); when that
    was the session cookie's, also clear the cookie."""
    await service.logout(session, principal)
    publish_after_commit(session, hub, access_changed(principal.id))
    if principal.from_cookie:
        clear_session_cookie(response, hub.settings)


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> object:
    """The user the token belongs to."""
    return user


@router.get("/users", response_model=list[UserOut])
async def list_users(
    _: AdminUser, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> object:
    """All users, oldest first (admin)."""
    return await service.list_users(session, limit, offset)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=error_responses(409),
)
async def create_user(data: UserCreate, _: AdminUser, session: SessionDep) -> object:
    """Create a user with a role (admin)."""
    return await service.create_user(session, data)


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(user_id: str, caller: CurrentUser, session: SessionDep) -> object:
    """One user (admin; a member may read itself)."""
    service.ensure_may_manage(caller, user_id)
    return await service.get_user(session, user_id)


@router.patch("/users/{user_id}", response_model=UserOut, responses=error_responses(409))
async def update_user(
    user_id: str, data: UserUpdate, caller: CurrentUser, session: SessionDep, hub: HubDep
) -> object:
    """Change a user (admin). A member may change its own username, email and password only."""
    service.ensure_may_manage(caller, user_id)
    user = await service.get_user(session, user_id)
    updated = await service.update_user(session, caller, user, data)
    publish_after_commit(session, hub, access_changed(user.id))
    return updated


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(409),
)
async def delete_user(user_id: str, _: AdminUser, session: SessionDep, hub: HubDep) -> None:
    """Delete a user and its tokens (admin). The last active admin cannot be deleted."""
    await service.delete_user(session, await service.get_user(session, user_id))
    publish_after_commit(session, hub, access_changed(user_id))
