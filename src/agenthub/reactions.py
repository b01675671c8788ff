"""A message's reactions: `meta_data.reactions`, `[{emoji, by, at}]`, one entry per reactor.

Contacts' reactions come in with webhooks (`webhooks/service.py`), the hub's own go out through
`POST /chats/{id}/messages/{message_id}/reactions` (`chats/service.py`); both keep the list
this one way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def with_reaction(reactions: Any, by: str, emoji: str | None, at: datetime) -> list[dict[str, Any]]:
    """`reactions` after `by` reacted with `emoji` (None or "" removes theirs): that reactor's
    entry replaced, the newest last. Entries that are not objects are dropped."""
    kept = [
        entry
        for entry in (reactions if isinstance(reactions, list) else [])
        if isinstance(entry, dict) and entry.get("by") != by
    ]
    if emoji:
        kept.append({"emoji": emoji, "by": by, "at": at.isoformat()})
    return kept
