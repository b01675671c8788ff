"""The one-hop aiosqlite dialect (`agenthub.sqlite_driver`): what SQLAlchemy needs from a cursor
still holds (rows, RETURNING, rowcount, executemany, errors, transactions), and a statement now
costs one trip to aiosqlite's thread instead of four."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from agenthub.db import Database
from agenthub.sqlite_driver import OneHopSQLiteDialect

pytestmark = pytest.mark.anyio

METADATA = MetaData()
ITEMS = Table(
    "items",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("name", String(20), unique=True),
    Column("count", Integer),
)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'driver.db'}")
    async with db.write_engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
    yield db
    await db.dispose()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call queued to an aiosqlite connection's thread, by function name."""
    calls: list[str] = []
    queue = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await queue(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_the_engines_use_the_one_hop_dialect(database: Database) -> None:
    for engine in database.engines:
        assert isinstance(engine.dialect, OneHopSQLiteDialect)


async def test_rows_returning_rowcount_and_executemany(database: Database) -> None:
    async with database.write_engine.begin() as conn:
        await conn.execute(insert(ITEMS), [{"name": f"n{i}", "count": i} for i in range(5)])
        returned = await conn.execute(
            insert(ITEMS).values(name="last", count=9).returning(ITEMS.c.id, ITEMS.c.count)
        )
        assert returned.one().count == 9
        changed = await conn.execute(
            update(ITEMS).where(ITEMS.c.count < 3).values(count=ITEMS.c.count + 10)
        )
        assert changed.rowcount == 3
        lastrowid = (await conn.execute(insert(ITEMS).values(name="x", count=0))).lastrowid
        assert lastrowid == 7
    async with database.engine.connect() as conn:
        rows = (await conn.execute(select(ITEMS.c.name, ITEMS.c.count).order_by("id"))).all()
        assert [tuple(r) for r in rows] == [
            ("n0", 10),
            ("n1", 11),
            ("n2", 12),
            ("n3", 3),
            ("n4", 4),
            ("last", 9),
            ("x", 0),
        ]
        assert (await conn.execute(select(ITEMS).where(ITEMS.c.id == -1))).first() is None
        assert await conn.scalar(select(ITEMS.c.count).where(ITEMS.c.name == "n4")) == 4


async def test_errors_map_to_sqlalchemy_and_roll_back(database: Database) -> None:
    async with database.write_engine.connect() as conn:
        await conn.execute(insert(ITEMS).values(name="taken", count=1))
        await conn.commit()
        with pytest.raises(IntegrityError):
            await conn.execute(insert(ITEMS).values(name="taken", count=2))
        await conn.rollback()
        await conn.execute(insert(ITEMS).values(name="kept", count=3))
        await conn.execute(insert(ITEMS).values(name="dropped", count=4))
        await conn.rollback()
        names = set((await conn.execute(select(ITEMS.c.name))).scalars())
        assert names == {"taken"}


async def test_a_statement_is_one_hop(database: Database, hops: list[str]) -> None:
    async def statement(conn: AsyncConnection) -> None:
        hops.clear()
        await conn.execute(select(ITEMS.c.id).where(ITEMS.c.count > 0))
        assert len(hops) == 1, hops  # SQLAlchemy's own adapter: cursor, execute, fetch, close

    async with database.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # the connection (and its BEGIN) exist already
        await statement(conn)
        hops.clear()
        await conn.execute(insert(ITEMS), [{"name": f"m{i}", "count": i} for i in range(3)])
        assert len(hops) == 1, hops


async def test_a_write_transaction_is_one_hop_per_statement_plus_commit(
    database: Database, hops: list[str]
) -> None:
    for name in ("warm-up", "measured"):  # the first opens the (one) pooled connection
        hops.clear()
        async with database.session() as session:  # BEGIN IMMEDIATE (see db.py)
            await session.execute(insert(ITEMS).values(name=name, count=1))
            await session.commit()
    # The BEGIN rode along with the INSERT; the pool's rollback after a commit is skipped.
    assert hops == ["_execute", "commit"], hops


async def test_the_write_lock_is_taken_with_the_first_statement(
    database: Database, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "driver.db", timeout=0, isolation_level=None)
    try:
        async with database.session() as session:
            await session.execute(select(ITEMS.c.id))  # BEGIN IMMEDIATE + this, one hop
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await session.rollback()
        other.execute("BEGIN IMMEDIATE")  # released by the rollback
        other.execute("ROLLBACK")
    finally:
        other.close()
