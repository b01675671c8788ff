"""Alembic configured in code, so `agenthub migrate` works from any directory once installed.

The migration scripts ship inside the package (`agenthub/migrations`); no `alembic.ini` is read at
runtime. The root `alembic.ini` is only for developers running the `alembic` command.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

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
    command.upgrade(alembic_config(database_url), "head")


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
