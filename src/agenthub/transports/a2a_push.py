"""`POST /a2a/push/{waiter}`: an A2A agent's push notification for a task the hub follows.

A delivery attempt following a task (`a2a.py`) registers a push-notification config with the
agent: this URL, with a random waiter id and a random token, both for that attempt only. A push
here with the right `X-A2A-Notification-Token` wakes the attempt, which then reads the task with
`GetTask` at once instead of at its next poll; the body is not read (the task's state always
comes from `GetTask`). The waiters live in this process: a push that lands on another process
(or after the attempt ended) is acknowledged and ignored, and the attempt's polling finds the
change anyway.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter, Request, Response

router = APIRouter()
_waiters: dict[str, tuple[str, asyncio.Event]] = {}


@contextmanager
def waiting() -> Iterator[tuple[str, str, asyncio.Event]]:
    """A waiter id, its token and the event a push with that token sets, while inside."""
    waiter_id, token, woken = secrets.token_urlsafe(16), secrets.token_urlsafe(24), asyncio.Event()
    _waiters[waiter_id] = (token, woken)
    try:
        yield waiter_id, token, woken
    finally:
        _waiters.pop(waiter_id, None)


@router.post("/a2a/push/{waiter_id}", status_code=204)
async def push(waiter_id: str, request: Request) -> Response:
    waiter = _waiters.get(waiter_id)
    if waiter is None:
        return Response(status_code=204)  # another process's attempt, or one already over
    given = request.headers.get("x-a2a-notification-token", "")
    if not hmac.compare_digest(given.encode(), waiter[0].encode()):
        return Response(status_code=401)
    waiter[1].set()
    return Response(status_code=204)
