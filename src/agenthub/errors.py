"""Domain errors carry their HTTP status; one handler renders every one of them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError


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
        return JSONResponse({"detail": "A value cannot be stored (e.g. it contains NUL)"}, 422)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each bad `input`: that leaks submitted passwords and
        # credentials into answers, and a NaN input cannot even be rendered as JSON.
        errors = [{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, 422)
