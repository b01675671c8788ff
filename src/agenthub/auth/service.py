"""Users, login and logout."""

from __future__ import annotations

import hmac
from datetime import timedelta

from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.audit import service as audit
from agenthub.auth.schemas import SignupIn, UserCreate, UserUpdate
from agenthub.deps import Principal
from agenthub.errors import Conflict, Forbidden, NotFound, Unauthorized
from agenthub.models import ApiToken, Role, User, utcnow
from agenthub.security import (
    burn_password_time,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)

SETUP_TOKEN_HEADER = "X-Setup-Token"  # noqa: S105 - a header name, not a secret


def check_setup_token(expected: SecretStr | None, given: str | None) -> None:
    """With `AGENTHUB_SETUP_TOKEN` set, signup needs it in `X-Setup-Token` (compared in
    constant time): whoever reaches a fresh server first must also know it."""
    if expected is None:
        return
    if not given:
        raise Forbidden(
            f"Signup needs the {SETUP_TOKEN_HEADER} header: this server has AGENTHUB_SETUP_TOKEN"
            " set; send its value"
        )
    # bytes: `compare_digest` refuses non-ASCII `str`, and a header may hold any character.
    if not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.get_secret_value().encode()
    ):
        raise Forbidden(f"{SETUP_TOKEN_HEADER} does not match this server's AGENTHUB_SETUP_TOKEN")


async def signup_first_admin(session: AsyncSession, data: SignupIn) -> User:
    if await session.scalar(select(func.count()).select_from(User)):
        raise Forbidden("Signup is closed: an admin already exists; ask an admin for an account")
    return await create_user(session, UserCreate(**data.model_dump(), role=Role.ADMIN))


async def create_user(session: AsyncSession, data: UserCreate) -> User:
    await _ensure_username_free(session, data.username)
    user = User(
        username=data.username,
        email=data.email,
        role=data.role,
        password_hash=await hash_password(data.password),
    )
    session.add(user)
    await session.flush()
    audit.record(session, "user.created", ("user", user.id), {"role": str(user.role)})
    return user


async def _ensure_username_free(session: AsyncSession, username: str) -> None:
    if await session.scalar(select(User.id).where(User.username == username)):
        raise Conflict(f"Username {username!r} is taken")


async def list_users(session: AsyncSession, limit: int, offset: int) -> list[User]:
    query = select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
    return list(await session.scalars(query))


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


def ensure_may_manage(caller: User, target_id: str) -> None:
    """Admins manage everyone; a member may only read and edit itself."""
    if not caller.is_admin and caller.id != target_id:
        raise Forbidden("Admin role required")


async def update_user(session: AsyncSession, caller: User, user: User, data: UserUpdate) -> User:
    changes = data.model_dump(exclude_unset=True)
    if not caller.is_admin and ({"role", "is_active"} & changes.keys()):
        raise Forbidden("Only an admin can change roles or activation")
    if "username" in changes and changes["username"] != user.username:
        await _ensure_username_free(session, changes["username"])
    demoted = changes.get("role", user.role) != Role.ADMIN or changes.get("is_active") is False
    if user.is_admin and demoted:
        await _ensure_another_admin(session, user)
    if (password := changes.pop("password", None)) is not None:
        user.password_hash = await hash_password(password)
    for field in ("username", "email", "role", "is_active"):
        if field in changes and changes[field] is not None:
            setattr(user, field, changes[field])
    await session.flush()
    action = "user.deactivated" if changes.get("is_active") is False else "user.updated"
    # The fields changed, never their values (a password above all).
    audit.record(session, action, ("user", user.id), {"fields": sorted(data.model_fields_set)})
    return user


async def delete_user(session: AsyncSession, user: User) -> None:
    if user.is_admin:
        await _ensure_another_admin(session, user)
    await session.delete(user)
    await session.flush()
    audit.record(session, "user.deleted", ("user", user.id))


async def _ensure_another_admin(session: AsyncSession, user: User) -> None:
    others = await session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.ADMIN, User.is_active.is_(True), User.id != user.id)
    )
    if not others:
        raise Conflict("The last active admin cannot be removed, demoted or deactivated")


async def login(
    session: AsyncSession, username: str, password: str, ttl_hours: int, *, kind: str
) -> tuple[str, ApiToken, User]:
    """A new user token for the right password; an unknown user, a wrong password and a
    deactivated user all get the same 401, after the same hashing work."""
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        await burn_password_time(password)
        raise Unauthorized("Invalid username or password")
    if not await verify_password(password, user.password_hash) or not user.is_active:
        raise Unauthorized("Invalid username or password")
    raw = new_token()
    token = ApiToken(
        token_hash=hash_token(raw),
        user_id=user.id,
        name=kind,  # "login" or "session": which endpoint made it
        expires_at=utcnow() + timedelta(hours=ttl_hours),
    )
    session.add(token)
    await session.flush()
    return raw, token, user


async def logout(session: AsyncSession, principal: Principal) -> None:
    principal.token.revoked_at = utcnow()
    await session.flush()
    audit.record(session, "logout", ("token", principal.token.id))
