from __future__ import annotations

from datetime import datetime

from pydantic import Field

from agenthub.models import Role
from agenthub.schemas import Email, Out, Password, Schema, Username


class UserOut(Out):
    id: str
    username: str
    email: str | None
    role: Role
    is_active: bool
    created_at: datetime


class SignupIn(Schema):
    username: Username
    password: Password
    email: Email | None = None


class UserCreate(SignupIn):
    role: Role = Role.MEMBER


class UserUpdate(Schema):
    username: Username | None = None
    password: Password | None = None
    email: Email | None = None
    role: Role | None = None
    is_active: bool | None = None


class LoginIn(Schema):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class LoginOut(Out):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_at: datetime
    user: UserOut


class SessionOut(Out):
    """`POST /auth/session`: the token itself is only in the cookie."""

    user: UserOut
    expires_at: datetime
