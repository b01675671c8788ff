"""Database engines and sessions for SQLite (the embedded default) and PostgreSQL.

SQLite is tuned for concurrency: WAL, a busy timeout, foreign keys on, and write transactions
opened with `BEGIN IMMEDIATE`. A deferred transaction that reads and then writes cannot wait for
the write lock (SQLite answers "database is locked" at once), so every transaction that may write
takes the lock up front; read-only sessions keep a plain deferred `BEGIN`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from agenthub.sqlite_driver import DRIVER_NAME as SQLITE_ASYNC_DRIVER

READ_ONLY = "agenthub_read_only"


def async_url(url: str) -> URL:
    """Map a user-facing URL (`sqlite:///…`, `postgresql://…`) to its async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername=f"sqlite+{SQLITE_ASYNC_DRIVER}")
    if backend == "postgresql" and parsed.get_driver_name() in ("psycopg2", "psycopg", ""):
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def sync_url(url: str) -> URL:
    """The same database through a synchronous driver, for Alembic and the CLI."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def configure_sqlite(sync_engine: Any) -> None:
    """Pragmas on every new connection and explicit BEGIN (immediate unless read-only)."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so our BEGIN is the one used.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "busy_timeout=5000",
            "synchronous=NORMAL",
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_engine_for(url: str, pool_size: int = 10) -> AsyncEngine:
    target = async_url(url)
    kwargs: dict[str, Any] = {}
    if _is_memory(target):
        kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"check_same_thread": False}
    elif target.get_backend_name() == "postgresql":
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    engine = create_async_engine(target, **kwargs)
    if target.get_backend_name() == "sqlite":
        configure_sqlite(engine.sync_engine)
    return engine


class Database:
    """An engine with two session factories: writes (IMMEDIATE on SQLite) and reads.

    On a SQLite file, writes get their own one-connection engine: SQLite has one writer at a
    time anyway, and queueing writers in the pool (fair, no timeout surprises) beats several
    connections polling the file lock — under load that polling is unfair and gave up with
    "database is locked" after busy_timeout, failing webhooks. Reads keep a pool (WAL lets
    them run beside the writer).
    """

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine_for(url, pool_size)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.write_engine = self.engine
        if self.is_sqlite and not _is_memory(async_url(url)):
            self.write_engine = create_async_engine(
                async_url(url), pool_size=1, max_overflow=0, pool_timeout=60
            )
            configure_sqlite(self.write_engine.sync_engine)
        self._writes = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._reads = async_sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )

    def session(self, *, read_only: bool = False) -> AsyncSession:
        session = (self._reads if read_only else self._writes)()
        session.info[READ_ONLY] = read_only
        return session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits on success, rolls back on any error."""
        async with self.session() as session, session.begin():
            yield session

    @property
    def engines(self) -> tuple[AsyncEngine, ...]:
        return (
            (self.engine,) if self.write_engine is self.engine else (self.engine, self.write_engine)
        )

    async def dispose(self) -> None:
        for engine in self.engines:
            await engine.dispose()
