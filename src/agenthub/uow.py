"""Unit of work helpers: work to run only once the transaction has committed.

Jobs and events raised inside a transaction must not escape if it rolls back, so services
register them with `after_commit(session, callback)`; whoever owns the transaction (the request
dependency or a job wrapper) calls `commit(session)`, which runs them after a successful commit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)

AfterCommit = Callable[[], Awaitable[Any] | None]
_KEY = "agenthub_after_commit"


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    session.info.setdefault(_KEY, []).append(callback)


async def commit(session: AsyncSession) -> None:
    await session.commit()
    callbacks: list[AfterCommit] = session.info.pop(_KEY, [])
    for callback in callbacks:
        try:
            result = callback()
            if result is not None:
                await result
        except Exception as exc:
            # The change is committed: it must not turn into an error now. What these do is
            # best effort by design: a live event dashboards catch up on after reconnecting
            # (they refetch), a wake-up the job runner's sweep makes up for.
            log.warning(
                "after commit: %s failed (%s: %s)", _name(callback), type(exc).__name__, exc
            )


def _name(callback: AfterCommit) -> str:
    return getattr(callback, "__qualname__", None) or type(callback).__name__


async def rollback(session: AsyncSession) -> None:
    session.info.pop(_KEY, None)
    await session.rollback()
