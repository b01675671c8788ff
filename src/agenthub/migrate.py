"""Alembic configured in code, so `agenthub migrate` works from any directory once installed.

The migration scripts ship inside the package (`agenthub/migrations`); no `alembic.ini` is read at
runtime. The root `alembic.ini` is only for developers running the `alembic` command.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from agenthub.db import sync_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _escape(value: str) -> str:
    # Config values go through ConfigParser interpolation: a literal `%` must be doubled.
    return value.replace("%", "%%")


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic Config for the packaged migrations, bound to `database_url` when given.

    Without a URL, `env.py` falls back to `AGENTHUB_DATABASE_URL` (through Settings).
    """
    config = Config()
    config.set_main_option("script_location", _escape(str(MIGRATIONS_DIR)))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("path_separator", "os")
    if database_url:
        url = sync_url(database_url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", _escape(url))
    return config


def upgrade_database(database_url: str) -> None:
    """`alembic upgrade head` on `database_url` (idempotent; safe on every start)."""
    create_private_sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), "head")


def create_private_sqlite_file(database_url: str) -> None:
    """Create a SQLite database file that does not exist yet with mode 0600, before SQLite
    does (it would make it 0644 under the usual umask): it holds password hashes and the
    encrypted credentials. SQLite gives its -wal and -shm files the database file's mode.
    An existing file keeps the mode its owner chose."""
    url = make_url(database_url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if database.startswith("file:"):
        return  # a URI filename: SQLite parses it, and it may name no file at all
    # A missing directory is left to SQLite, which reports it as it always did.
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
