"""SQLAlchemy's aiosqlite dialect, with one thread hop per statement instead of four.

aiosqlite runs every call on the sqlite3 connection in its own thread, and SQLAlchemy's
adapter makes one such call per step: open a cursor, execute, fetch the rows, close the cursor.
Each call is a round trip between the event loop and that thread (a queue put, a thread wake-up,
a `call_soon_threadsafe` back), and those round trips, not SQLite, were most of what a
statement cost the hub: about 4 hops of 20 to 60 µs around about 5 µs of SQLite work.

This cursor does the four steps in one function on aiosqlite's thread. It relies on two
internals of aiosqlite (`Connection._execute`, which queues a function for its thread, and
`Connection._conn`, the sqlite3 connection), pinned by the lock file; everything else is
SQLAlchemy's own dialect. `tests/test_sqlite_driver.py` checks the behaviour it must keep.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util.concurrency import await_

DRIVER_NAME = "agenthub_aiosqlite"

Outcome = tuple[Any, int, int | None, list[Any] | None]
BEGIN_STATEMENTS = frozenset({"BEGIN", "BEGIN IMMEDIATE", "BEGIN DEFERRED", "BEGIN EXCLUSIVE"})


def _execute(
    conn: sqlite3.Connection, operation: str, parameters: Any, many: bool, begin: str | None
) -> Outcome:
    """Runs on aiosqlite's thread: the whole statement, rows included, in one call (after the
    transaction's deferred BEGIN, if this is its first statement)."""
    if begin is not None:
        conn.execute(begin)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_outcome",)

    def __init__(self, adapt_connection: Any) -> None:
        # No aiosqlite cursor (creating one is a hop); each statement opens its own sqlite3
        # cursor on the thread and closes it before returning.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._outcome: Outcome = (None, -1, None, None)

    @property
    def description(self) -> Any:
        return self._outcome[0]

    @property
    def rowcount(self) -> int:
        return self._outcome[1]

    @property
    def lastrowid(self) -> int:
        return self._outcome[2] or 0

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        return None

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        await self._run(operation, seq_of_parameters, many=True)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        adapted: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        if operation in BEGIN_STATEMENTS and not many:
            # Sent with the transaction's first statement: no hop of its own.
            adapted._pending_begin = operation
            self._outcome, self._rows = (None, -1, None, None), collections.deque()
            return
        async with adapted._execute_mutex:
            begin, adapted._pending_begin = adapted._pending_begin, None
            aio = self._connection
            self._outcome = await aio._execute(
                _execute, aio._conn, operation, parameters, many, begin
            )
            self._rows = collections.deque(self._outcome[3] or ())

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """Also saves the hops of statements with nothing to do: a BEGIN waits for the first
    statement of its transaction, and COMMIT / ROLLBACK outside a transaction are skipped
    (SQLAlchemy's pool rolls back every connection it takes back, committed or not)."""

    __slots__ = ("_pending_begin",)
    _cursor_cls = OneHopCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._pending_begin: str | None = None

    def _in_transaction(self) -> bool:
        # Reads SQLite's autocommit flag; no statement runs meanwhile (SQLAlchemy awaits each).
        return bool(self._connection._connection and self._connection._conn.in_transaction)

    def commit(self) -> None:
        self._pending_begin = None  # a transaction that never ran a statement: nothing to do
        if self._in_transaction():
            super().commit()

    def rollback(self) -> None:
        self._pending_begin = None
        if self._in_transaction():
            super().rollback()


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy's adapter does
        return OneHopConnection(self, await_(connection))


class OneHopSQLiteDialect(SQLiteDialect_aiosqlite):
    supports_statement_cache = True
    # Server-side cursors would fetch in steps, each a hop; the hub never streams results.
    supports_server_side_cursors = False

    @classmethod
    def import_dbapi(cls) -> OneHopDBAPI:
        return OneHopDBAPI(__import__("aiosqlite"), __import__("sqlite3"))


registry.register(f"sqlite.{DRIVER_NAME}", __name__, "OneHopSQLiteDialect")
