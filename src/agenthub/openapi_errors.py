"""The error answers each endpoint can give, declared in the OpenAPI document.

Routes declare the statuses only they can answer with `responses=error_responses(409, …)`;
`declare_error_responses` (called by `create_app`) derives the rest from each route's
dependency tree, so a new route cannot forget them:

- a caller (`deps.get_principal`) → 401; on a method that changes something also 403 (a
  session cookie without the hub's `Origin`);
- a user-only or admin-only dependency (`get_current_user`, `get_admin_user`) → 403;
- a path parameter (it names a channel, a chat, a platform…; one that names nothing) → 404;
- any path, query, header, cookie or body parameter → 422;
- a request body → 413 (`limits.BodySizeLimitMiddleware`), and 400 when FastAPI parses it (a
  body it cannot read, e.g. JSON that is not UTF-8). A body the endpoint reads itself, declared
  in `openapi_extra`, → 413;
- the database (`deps.get_session`) → 503 with `Retry-After` while it cannot be reached.

What a route declares itself wins over what is derived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_parameterless_sub_dependant
from fastapi.params import Depends
from fastapi.routing import APIRoute
from fastapi.utils import create_model_field
from pydantic import BaseModel
from starlette.routing import BaseRoute

from agenthub.deps import get_admin_user, get_current_user, get_principal, get_session


class CodedError(BaseModel):
    """An error a client acts on by its `code` (`window_closed`: the chat's reply window is
    closed, `closes_at` says since when; only a template may be sent)."""

    code: str
    message: str
    closes_at: str | None = None


class ErrorOut(BaseModel):
    """Every error answer but 422: `{"detail": "<what went wrong>"}`, or for the errors a
    client handles by kind, `{"detail": {"code", "message", …}}`."""

    detail: str | CodedError


class FieldError(BaseModel):
    """One refused input: where it is in the request, and why (pydantic's `type` and `msg`)."""

    type: str
    loc: list[str | int]
    msg: str


class ValidationErrorOut(BaseModel):
    """422: the refused inputs, located in the request, whether validation, a service or the
    database (PostgreSQL refuses a NUL character) found them."""

    detail: list[FieldError]


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid, expired or revoked token",
    403: "Not allowed for this caller",
    404: "Not found, or outside the caller's reach",
    405: "Method not allowed",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests; retry after `Retry-After` seconds",
    502: "The platform could not be reached",
    503: "The database or Redis cannot be reached now; retry after `Retry-After` seconds",
}

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    405: {"Allow": {"description": "The methods allowed", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route decorator: these statuses answer `{"detail"}`."""
    return {code: _error_response(code) for code in codes}


def _error_response(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "model": ValidationErrorOut if code == 422 else ErrorOut,
        "description": _DESCRIPTIONS.get(code, "Error"),
    }
    if code in _HEADERS:
        response["headers"] = _HEADERS[code]
    return response


# --- derived from the dependencies -----------------------------------------------------------

USER_ONLY: frozenset[Callable[..., Any]] = frozenset({get_current_user, get_admin_user})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def derived_statuses(route: APIRoute, included_with: Sequence[Dependant] = ()) -> set[int]:
    """The error statuses `route` can answer whatever its endpoint does, from its dependency
    tree (and those of the `include_router` dependencies it is reached through)."""
    calls: set[Any] = set()
    path = params = body = False
    for dependant in _walk([route.dependant, *included_with]):
        calls.add(dependant.call)
        path = path or bool(dependant.path_params)
        body = body or bool(dependant.body_params)
        params = params or bool(
            dependant.query_params or dependant.header_params or dependant.cookie_params
        )
    statuses: set[int] = set()
    if get_principal in calls:
        statuses.add(401)
        if (route.methods or set()) - SAFE_METHODS:
            statuses.add(403)
    if calls & USER_ONLY:
        statuses.add(403)
    if path:
        statuses.add(404)
    if path or params or body:
        statuses.add(422)
    if body:
        statuses |= {400, 413}
    if "requestBody" in (route.openapi_extra or {}):
        statuses.add(413)
    if get_session in calls:
        statuses.add(503)
    return statuses


def _walk(dependants: Iterable[Dependant]) -> Iterator[Dependant]:
    stack = list(dependants)
    while stack:
        dependant = stack.pop()
        yield dependant
        stack.extend(dependant.dependencies)


def declare_error_responses(app: FastAPI) -> None:
    """Add the derived error statuses to every route's `responses`, where the OpenAPI
    document reads them when it is built (once: FastAPI caches it). Run it after the routers
    are included and before the first request."""
    for route, included_with in _api_routes(app.routes, ()):
        extra = [
            get_parameterless_sub_dependant(depends=depends, path=route.path_format)
            for depends in included_with
        ]
        declared = {str(code) for code in route.responses}
        added = {
            code: response
            for code, response in error_responses(*derived_statuses(route, extra)).items()
            if str(code) not in declared
        }
        if not added:
            continue
        merged = {**route.responses, **added}
        route.responses = dict(sorted(merged.items(), key=lambda item: str(item[0])))
        # What FastAPI builds from `responses` when a route is made: the models' fields. (A
        # route reached through `include_router` gets them rebuilt from `responses`.)
        for code, response in added.items():
            route.response_fields[code] = create_model_field(
                name=f"Response_{code}_{route.unique_id}",
                type_=response["model"],
                mode="serialization",
            )


def _api_routes(
    routes: Sequence[BaseRoute], included_with: tuple[Depends, ...]
) -> Iterator[tuple[APIRoute, tuple[Depends, ...]]]:
    """Every APIRoute, with the dependencies of the `include_router` calls that reach it.
    FastAPI keeps an included router's routes in the router (not copies in the app)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route, included_with
            continue
        router = getattr(route, "original_router", None)
        if router is not None:
            context = getattr(route, "include_context", None)
            extra = tuple(getattr(context, "dependencies", ()))
            yield from _api_routes(router.routes, included_with + extra)
