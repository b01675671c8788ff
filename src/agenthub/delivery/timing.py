"""Pure timing rules: the buffer's due time, retry backoff and `Retry-After`.

Kept free of I/O and of the clock so property tests can drive them with any schedule.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = timedelta(hours=1)


def buffer_due_at(
    waiting_since: datetime,
    last_arrival_at: datetime,
    buffer_seconds: float,
    max_buffer_seconds: float,
) -> datetime:
    """Deliver once the chat is quiet for `buffer_seconds`, or the oldest message has waited
    `max_buffer_seconds` — whichever comes first."""
    quiet = last_arrival_at + timedelta(seconds=buffer_seconds)
    cap = waiting_since + timedelta(seconds=max_buffer_seconds)
    return min(quiet, cap)


def backoff_delay(attempt: int, base_seconds: float, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff (x3 per attempt) with ±50% jitter: with a 2 s base, about
    2 s, 6 s, 18 s, 54 s, 162 s — six attempts spread over about four minutes."""
    jitter = (rng or random).uniform(0.5, 1.5)
    return timedelta(seconds=base_seconds * (3 ** (attempt - 1)) * jitter)


def retry_after_delay(header: str | None, now: datetime) -> timedelta | None:
    """`Retry-After` as seconds or an HTTP date; None when absent or unreadable. Capped at 1 h."""
    if not header:
        return None
    header = header.strip()
    if header.isascii() and header.isdigit():  # not "²": str.isdigit() takes it, int() not
        # Capped before timedelta(), which overflows past ~10**14 s (int() past 4300 digits).
        digits = header.lstrip("0") or "0"
        cap = MAX_RETRY_AFTER.total_seconds()
        delay = timedelta(seconds=min(int(digits), cap) if len(digits) <= 9 else cap)
    else:
        try:
            delay = parsedate_to_datetime(header) - now
        except (TypeError, ValueError):
            return None
    return max(timedelta(0), min(delay, MAX_RETRY_AFTER))
