"""Keyset cursors: an opaque `next_cursor` that encodes the (time, id) a page ended on.

A page then continues with one indexed seek below that pair, so a deep page costs what the
first one does. Shared by the inbox and the audit trail.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from agenthub.errors import InvalidInput


def encode_cursor(moment: datetime, row_id: str) -> str:
    raw = json.dumps([moment.isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, source: str) -> tuple[datetime, str]:
    """The (time, id) a page continues after; anything else is a 422 naming `source`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None or not isinstance(row_id, str):
            raise ValueError(cursor)
        return parsed, row_id
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise InvalidInput.at(
            ("query", "cursor"),
            "invalid_cursor",
            f"Not a cursor from {source}: pass `next_cursor` of the last page",
        ) from None
