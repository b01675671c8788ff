"""`/auth`: signup of the first admin, login/logout, and user management."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, status

from agenthub.auth import service
from agenthub.auth.schemas import LoginIn, LoginOut, SignupIn, UserCreate, UserOut, UserUpdate
from agenthub.delivery.events import access_changed, publish_after_commit
from agenthub.deps import AdminUser, CurrentPrincipal, CurrentUser, HubDep, SessionDep

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


@router.post("/signup", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def signup(
    data: SignupIn, session: SessionDep, hub: HubDep, setup_token: SetupTokenHeader = None
) -> object:
    """Create the first user, an ADMIN. Closed (403) once any user exists. When the server
    has `AGENTHUB_SETUP_TOKEN` set, also needs the `X-Setup-Token` header with its value."""
    service.check_setup_token(hub.settings.setup_token, setup_token)
    return await service.signup_first_admin(session, data)


@router.post("/login", response_model=LoginOut)
async def login(data: LoginIn, session: SessionDep, hub: HubDep) -> LoginOut:
    """Exchange a username and password for a bearer token."""
    raw, token, user = await service.login(
        session, data.username, data.password, hub.settings.user_token_ttl_hours
    )
    assert token.expires_at is not None
    return LoginOut(
        access_token=raw, expires_at=token.expires_at, user=UserOut.model_validate(user)
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(principal: CurrentPrincipal, session: SessionDep, hub: HubDep) -> None:
    """Revoke the token this request carries (open WebSockets on it are closed)."""
    await service.logout(session, principal)
    publish_after_commit(session, hub, access_changed(principal.id))


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


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def create_user(data: UserCreate, _: AdminUser, session: SessionDep) -> object:
    """Create a user with a role (admin)."""
    return await service.create_user(session, data)


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(user_id: str, caller: CurrentUser, session: SessionDep) -> object:
    """One user (admin; a member may read itself)."""
    service.ensure_may_manage(caller, user_id)
    return await service.get_user(session, user_id)


@router.patch("/users/{user_id}", response_model=UserOut)
async def update_user(
    user_id: str, data: UserUpdate, caller: CurrentUser, session: SessionDep, hub: HubDep
) -> object:
    """Change a user (admin). A member may change its own username, email and password only."""
    service.ensure_may_manage(caller, user_id)
    user = await service.get_user(session, user_id)
    updated = await service.update_user(session, caller, user, data)
    publish_after_commit(session, hub, access_changed(user.id))
    return updated


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(user_id: str, _: AdminUser, session: SessionDep, hub: HubDep) -> None:
    """Delete a user and its tokens (admin). The last active admin cannot be deleted."""
    await service.delete_user(session, await service.get_user(session, user_id))
    publish_after_commit(session, hub, access_changed(user_id))
