"""What an operator runs now and then: re-encrypting secrets after a key rotation, backing up
a SQLite database while the hub serves, and purging old attempt excerpts.

`agenthub rotate-secrets` and `agenthub backup PATH` call these (cli.py); the purge runs by
itself in the job runner's sweep and can be called from here.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import make_url, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.db import Database
from agenthub.models import Agent, Channel, DeliveryAttempt
from agenthub.security import SecretBox
from agenthub.settings import Settings


async def rotate_secrets(settings: Settings) -> dict[str, int]:
    """Every stored secret encrypted again with the first key of AGENTHUB_SECRET_KEY (any key
    of the list decrypts the old value), in one transaction. Returns counts by kind."""
    box = SecretBox(settings.resolved_secret_key())
    db = Database(settings.database_url, pool_size=1)
    counts = {
        "agent webhook secrets": 0,
        "previous agent webhook secrets": 0,
        "agent transport secrets": 0,
        "channels": 0,
    }
    try:
        async with db.transaction() as session:
            for agent in await session.scalars(select(Agent).with_for_update()):
                agent.webhook_secret_encrypted = box.rotate(agent.webhook_secret_encrypted)
                counts["agent webhook secrets"] += 1
                if agent.previous_webhook_secret_encrypted:
                    previous = agent.previous_webhook_secret_encrypted
                    agent.previous_webhook_secret_encrypted = box.rotate(previous)
                    counts["previous agent webhook secrets"] += 1
                if agent.transport_secret_encrypted:  # an A2A token, an OpenAI API key
                    agent.transport_secret_encrypted = box.rotate(agent.transport_secret_encrypted)
                    counts["agent transport secrets"] += 1
            for channel in await session.scalars(select(Channel).with_for_update()):
                channel.credentials_encrypted = box.rotate(channel.credentials_encrypted)
                counts["channels"] += 1
    finally:
        await db.dispose()
    return counts


class BackupError(RuntimeError):
    pass


def backup_sqlite(database_url: str, destination: Path) -> int:
    """A consistent copy of the SQLite database at `destination` (SQLite's online backup: safe
    while the hub writes), written beside it first and renamed into place, so a reader never
    sees half a file. Returns its size in bytes."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise BackupError(
            "agenthub backup copies a SQLite database file; for PostgreSQL use pg_dump "
            "(docs/production.md, Backups)"
        )
    source_path = Path(url.database)
    if not source_path.exists():
        raise BackupError(f"no database file at {source_path}")
    destination = destination.resolve()
    if destination == source_path.resolve():
        raise BackupError("the backup must not be the database file itself")
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".backup-", suffix=".db", dir=destination.parent)
    os.close(handle)
    try:
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        target = sqlite3.connect(partial)
        try:
            source.backup(target)  # all pages in one step: one consistent snapshot
        finally:
            target.close()
            source.close()
        os.replace(partial, destination)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return destination.stat().st_size


async def purge_attempt_excerpts(session: AsyncSession, now: datetime, days: int) -> int:
    """Drop the answer excerpts of attempts older than `days` (the attempt itself, its status
    and timing stay). Returns how many were purged."""
    cutoff = now - timedelta(days=days)
    result = await session.execute(
        update(DeliveryAttempt)
        .where(DeliveryAttempt.started_at < cutoff, DeliveryAttempt.response_excerpt.is_not(None))
        .values(response_excerpt=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)
