"""The error answers each endpoint can give, declared in the OpenAPI document.

Routes declare the statuses only they can answer with `responses=error_responses(409, …)`;
the rest (401, 403, 404, 422, 413) are derived from each route's dependencies.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorOut(BaseModel):
    """Every error answer: `{"detail": …}` (a message, or a list of validation errors)."""

    detail: Any


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid, expired or revoked token",
    403: "Not allowed for this caller",
    404: "Not found, or outside the caller's reach",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input",
    429: "Too many requests; retry after `Retry-After` seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route decorator: these statuses answer `{"detail"}`."""
    return {
        code: {"model": ErrorOut, "description": _DESCRIPTIONS.get(code, "Error")} for code in codes
    }
