"""Browser sessions: the `agenthub_session` cookie, and the same-origin check that guards it.

`POST /auth/session` puts a user token in an `HttpOnly`, `SameSite=Strict` cookie, so the web
console's JavaScript never holds it. A browser sends cookies on its own, so a request that the
cookie authenticates could have been made by another site (CSRF): `SameSite=Strict` stops that
in current browsers, and, as a second lock that does not depend on the browser's cookie
policy, every state-changing request (anything but GET, HEAD, OPTIONS) authenticated by the
cookie must carry an `Origin` header equal to the origin of `AGENTHUB_PUBLIC_URL`. Browsers
send `Origin` on every such request and scripts cannot forge it. `/ws` takes the cookie only
with that `Origin` too (browsers send it on every WebSocket handshake). Bearer tokens are not
sent by browsers on their own, so they need no `Origin`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import WebSocket
from starlette.requests import HTTPConnection
from starlette.responses import Response

from agenthub.errors import Forbidden
from agenthub.settings import Settings

SESSION_COOKIE = "agenthub_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL (lowercase, default port left out), None if it has
    none. The origin of a bare origin is itself: that is how an `Origin` header is compared."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def public_origin(settings: Settings) -> str | None:
    """The origin of `AGENTHUB_PUBLIC_URL` (or of `http://<host>:<port>` without it)."""
    return origin_of(settings.effective_public_url)


def same_origin(connection: HTTPConnection, settings: Settings) -> bool:
    """Whether the request or WebSocket carries an `Origin` header naming the public URL's
    origin. A header that is not a plain origin (a path, a user, `null`) never matches."""
    given = connection.headers.get("origin")
    if not given:
        return False
    parts = urlsplit(given.strip())
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return False
    expected = public_origin(settings)
    return expected is not None and origin_of(given) == expected


def ensure_sign_in_origin(connection: HTTPConnection, settings: Settings) -> None:
    """A sign-in may come without `Origin` (curl, scripts), but not from another site's page:
    that would sign the visitor's browser in behind its back (403)."""
    if "origin" in connection.headers and not same_origin(connection, settings):
        raise Forbidden(
            f"Sign in from this hub's own origin ({public_origin(settings)}, from "
            "AGENTHUB_PUBLIC_URL)"
        )


def cookie_is_secure(settings: Settings) -> bool:
    """`Secure` cookies when the hub is reached over https (a browser then never sends the
    cookie over plain http); without it, a laptop install on http://127.0.0.1 still works."""
    return settings.effective_public_url.lower().startswith("https")


def cookie_max_age(settings: Settings) -> int:
    """The cookie lasts as long as the token in it."""
    return settings.user_token_ttl_hours * 3600


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    """Put a new session's token in the cookie (and keep the answer out of caches)."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=cookie_max_age(settings),
        path="/",
        secure=cookie_is_secure(settings),
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=cookie_is_secure(settings),
        httponly=True,
        samesite="strict",
    )


def websocket_token(websocket: WebSocket, token: str | None, settings: Settings) -> str | None:
    """The token a `/ws` handshake authenticates with: the `token` query parameter when there
    is one (even empty), else the session cookie, if the handshake's `Origin` is ours."""
    if token is not None:
        return token
    if not same_origin(websocket, settings):
        return None
    return websocket.cookies.get(SESSION_COOKIE)
