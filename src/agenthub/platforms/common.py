"""Helpers shared by the JSON platform adapters (Telegram, WhatsApp Cloud, WHAPI).

Inbound payloads are untrusted JSON even when correctly signed: platforms add fields and types
without notice. These helpers read them defensively, so a parser never raises on an odd shape,
and clean what reaches the database (no NUL characters or lone surrogates, which PostgreSQL
refuses; ids and names cut to their column sizes).
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx2
from fastapi.responses import JSONResponse

from agenthub.platforms.base import Inbound, SendError, WebhookRequest, same_origin
from agenthub.rich import Rich, rich_of

log = logging.getLogger("agenthub.platforms")

ID_MAX = 255  # messages.external_id, chats.external_id, messages.sender_id
NAME_MAX = 255  # chats.name
TEXT_MAX = 32_768  # like a message posted through the API
META_TEXT_MAX = 2_048  # any other string kept in meta_data


def load_json(body: bytes) -> Any:
    """The decoded JSON body, or None when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else {}."""
    return value if isinstance(value, dict) else {}


def objs(value: Any) -> list[dict[str, Any]]:
    """The JSON objects in `value` if it is a list, else []."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def clean(text: str, limit: int) -> str:
    """A string the database accepts: no NUL, no lone surrogate, at most `limit` characters."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


def text(value: Any, limit: int = META_TEXT_MAX) -> str | None:
    """A non-empty cleaned string from a JSON string or number; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)[:limit]
    if not isinstance(value, str):
        return None
    return clean(value, limit) or None


def ident(value: Any) -> str | None:
    """An identifier (string or integer) usable as a database key, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    cleaned = clean(value.strip(), ID_MAX + 1)
    if not cleaned or len(cleaned) > ID_MAX:
        return None
    return cleaned


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            return None
        return result if result == result and abs(result) != float("inf") else None
    return None


def epoch(value: Any) -> datetime | None:
    """A platform's Unix time (seconds, a number or digits) as an aware datetime, or None."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 1 << 33:
        return None
    return datetime.fromtimestamp(value, UTC)


def compact(mapping: dict[str, Any]) -> dict[str, Any]:
    """`mapping` without its None values."""
    return {key: value for key, value in mapping.items() if value is not None}


def secret_matches(given: str | None, expected: Any) -> bool:
    """Constant-time comparison of a header with a stored secret (bytes: headers may carry
    non-ASCII characters, which `compare_digest` refuses in `str`)."""
    if not given or not isinstance(expected, str) or not expected:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def safe_parse(name: str, parse: Callable[[], Inbound]) -> Inbound:
    """Run a parser; a bug on an unforeseen payload is logged and the payload ignored (the
    platform must get its 200, or it retries the same payload forever)."""
    try:
        return parse()
    except Exception:
        log.exception("%s: could not parse a webhook payload; ignored", name)
        return Inbound()


def json_ack() -> JSONResponse:
    return JSONResponse({"ok": True})


def media_proxy_url(request: WebhookRequest, media_id: str) -> str:
    """Where dashboards and agents fetch a media file the platform keeps behind credentials:
    `GET {AGENTHUB_PUBLIC_URL}/channels/{channel_id}/media/{media_id}` (bearer token)."""
    return f"{request.hub_url}/channels/{request.channel_id}/media/{quote(media_id, safe='')}"


def guess_type(filename: str | None, default: str = "application/octet-stream") -> str:
    if filename:
        guessed, _ = mimetypes.guess_type(filename)
        if guessed:
            return guessed
    return default


def response_json(response: httpx2.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def network_error(exc: Exception, *, redact: str | None = None) -> SendError:
    """A connection problem or timeout: transient."""
    detail = f"{type(exc).__name__}: {exc}"
    if redact:
        detail = detail.replace(redact, "<redacted>")
    return SendError(detail, transient=True)


def split_text(content: str, size: int) -> list[str]:
    """`content` in pieces of at most `size` characters, cut at a line or word break when
    one is near ("" gives [])."""
    pieces: list[str] = []
    rest = content
    while len(rest) > size:
        cut = rest.rfind("\n", size // 2, size)
        if cut < 0:
            cut = rest.rfind(" ", size // 2, size)
        if cut < 0:
            cut = size
        pieces.append(rest[:cut])
        rest = rest[cut:].lstrip("\n ") if cut < size else rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


def outbound_media(meta_data: dict[str, Any]) -> list[dict[str, Any]]:
    """The media items of an outgoing message that can be sent (a URL or a platform id)."""
    items = []
    for item in objs(meta_data.get("media")):
        url = item.get("url")
        if (isinstance(url, str) and url.startswith(("http://", "https://"))) or any(
            isinstance(item.get(key), str) and item.get(key) for key in ("file_id", "media_id")
        ):
            items.append(item)
    return items


def outbound_rich(meta_data: dict[str, Any]) -> Rich | None:
    """The buttons, list or template of an outgoing message (None: a plain message); stored
    content that is not valid (written by hand) is a permanent send failure."""
    try:
        return rich_of(meta_data)
    except ValueError as exc:
        raise SendError(str(exc), transient=False) from None


_PHONE_PUNCTUATION = str.maketrans("", "", " -.()/\u00a0")
MAX_TEMPLATE_PAGES = 20  # pages of templates read per listing (100 a page)


async def read_pages(
    first: str,
    fetch: Callable[[str], Awaitable[dict[str, Any]]],
    next_link: Callable[[dict[str, Any]], Any],
) -> list[dict[str, Any]]:
    """The pages of a platform's listing from `first`, at most `MAX_TEMPLATE_PAGES`. A page's
    next link is followed only on `first`'s scheme, host and port: every request carries the
    channel's credentials."""
    pages: list[dict[str, Any]] = []
    url: str | None = first
    while url is not None and len(pages) < MAX_TEMPLATE_PAGES:
        page = await fetch(url)
        pages.append(page)
        following = next_link(page)
        url = following if isinstance(following, str) and same_origin(following, first) else None
    return pages


def phone_digits(to: str) -> str:
    """The digits of an international phone number as a user may type it (`+55 11 98765-4321`,
    `whatsapp:+5511987654321`, `0055…`): country code first, no `+`. `ValueError` when it is not
    one (E.164: 8 to 15 digits)."""
    number = to.strip()
    if number.lower().startswith("whatsapp:"):
        number = number[len("whatsapp:") :]
    number = number.translate(_PHONE_PUNCTUATION)
    if number.startswith("+"):
        number = number[1:]
    elif number.startswith("00"):
        number = number[2:]
    if not (number.isascii() and number.isdigit() and 8 <= len(number) <= 15 and number[0] != "0"):
        raise ValueError("an international phone number, country code first (e.g. +5511987654321)")
    return number
