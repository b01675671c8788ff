"""Domain errors carry their HTTP status; one handler renders every one of them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)

Location = tuple[str | int, ...]


class DomainError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: Any = None) -> None:
        self.detail = detail if detail is not None else self.default_detail()
        super().__init__(str(self.detail))

    def default_detail(self) -> str:
        return "Bad request"


class BadRequest(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}

    def default_detail(self) -> str:
        return "Not authenticated"


class Forbidden(DomainError):
    status_code = 403

    def default_detail(self) -> str:
        return "Not allowed"


class NotFound(DomainError):
    status_code = 404

    def default_detail(self) -> str:
        return "Not found"


class Conflict(DomainError):
    status_code = 409

    def default_detail(self) -> str:
        return "Conflict"


class PayloadTooLarge(DomainError):
    status_code = 413

    def default_detail(self) -> str:
        return "Request body too large"


class InvalidInput(DomainError):
    """422 with the same `detail` as a request that failed validation: a list of
    `{type, loc, msg}`, for input only a service can check (an id that must exist, credentials
    merged with the stored ones), so clients read one error shape whoever found the fault."""

    status_code = 422

    @classmethod
    def at(cls, loc: Location, kind: str, msg: str) -> InvalidInput:
        """One fault, at `loc` in the request (`("query", "cursor")`, `("body", "message_id")`)."""
        return cls([{"type": kind, "loc": list(loc), "msg": msg}])

    @classmethod
    def within(cls, prefix: Location, exc: ValidationError) -> InvalidInput:
        """`exc`'s errors, under `prefix` (where the validated value sits in the request)."""
        return cls(public_errors({**e, "loc": (*prefix, *e["loc"])} for e in exc.errors()))


def public_errors(errors: Iterable[Any]) -> list[dict[str, Any]]:
    # FastAPI's default echoes each bad `input`: that leaks submitted passwords and
    # credentials into answers, and a NaN input cannot even be rendered as JSON.
    # (`url`: pydantic's own errors carry a link to its docs; request errors do not.)
    hidden = ("input", "ctx", "url")
    public = [{k: v for k, v in e.items() if k not in hidden} for e in errors]
    return list(jsonable_encoder(public))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        # A unique or foreign-key constraint raced past the service's own checks.
        return JSONResponse({"detail": "Conflicts with existing data"}, 409)

    @app.exception_handler(DataError)
    async def _data_error(_: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the schema let through (PostgreSQL: a NUL character).
        # The same shape as every other 422: a list of `{type, loc, msg}`.
        error = {
            "type": "unstorable_value",
            "loc": ["body"],
            "msg": "A value cannot be stored (e.g. it contains NUL)",
        }
        return JSONResponse({"detail": [error]}, 422)

    # The database or Redis out of reach (a restart, a network cut): the request did not
    # happen, and saying so with a 503 and `Retry-After` makes platforms send it again (an
    # inbound webhook never gets a 2xx for a message that was not stored). The engines
    # reconnect by themselves once it is back.
    for unreachable in (
        OperationalError,
        InterfaceError,
        PoolTimeout,
        RedisConnectionError,
        RedisTimeoutError,
    ):
        app.add_exception_handler(unreachable, _unavailable)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": public_errors(exc.errors())}, 422)


SERVICE_RETRY_AFTER_SECONDS = 5


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "%s %s: %s unreachable (%s), answered 503",
        request.method,
        request.url.path,
        "Redis" if isinstance(exc, RedisConnectionError | RedisTimeoutError) else "the database",
        type(exc).__name__,
    )
    detail = "Temporarily unavailable: the hub cannot reach its database or Redis; retry later"
    return JSONResponse(
        {"detail": detail},
        503,
        headers={"Retry-After": str(SERVICE_RETRY_AFTER_SECONDS)},
    )
