from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from agenthub.schemas import Out, Schema

SHORTCUT_MAX = 32  # the column's width
# WhatsApp and Telegram both cap a text message at 4096 characters: a longer answer could not
# be sent as one message anyway.
CONTENT_MAX = 4096

Shortcut = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=SHORTCUT_MAX, pattern=r"^[a-z0-9_-]+$"
    ),
]


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text (SQLite can): refused on both, the same way.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Content = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=CONTENT_MAX),
    AfterValidator(_no_nul),
]

DESCRIPTIONS = {
    "shortcut": f"What operators type after `/`: 1-{SHORTCUT_MAX} of `a-z 0-9 _ -`, unique.",
    "content": f"The text inserted: 1-{CONTENT_MAX} characters (surrounding whitespace is "
    "removed).",
}


class CannedResponseCreate(Schema):
    shortcut: Shortcut = Field(description=DESCRIPTIONS["shortcut"])
    content: Content = Field(description=DESCRIPTIONS["content"])


class CannedResponseUpdate(Schema):
    """Fields given replace the stored ones."""

    shortcut: Shortcut | None = Field(default=None, description=DESCRIPTIONS["shortcut"])
    content: Content | None = Field(default=None, description=DESCRIPTIONS["content"])


class CannedResponseOut(Out):
    id: str
    shortcut: str = Field(description=DESCRIPTIONS["shortcut"])
    content: str = Field(description=DESCRIPTIONS["content"])
    created_at: datetime
    updated_at: datetime
