"""Alembic environment for the hub's schema (SQLite and PostgreSQL).

The database URL comes from the Alembic config (`sqlalchemy.url`, set by `agenthub.migrate`) or,
when that is unset (the root `alembic.ini`), from `AGENTHUB_DATABASE_URL` through Settings.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from agenthub.db import sync_url
from agenthub.models import Base
from agenthub.models.base import UTCDateTime

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

# Serializes concurrent `agenthub serve`/`migrate` runs on PostgreSQL (any constant will do).
PG_MIGRATION_LOCK = 0x616765_6E7468


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from agenthub.settings import Settings

        url = Settings().database_url
    return sync_url(url).render_as_string(hide_password=False)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render the hub's column types as plain SQLAlchemy, so migrations never import the app."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_item": render_item,
        "compare_type": True,
        # SQLite cannot ALTER most things: batch mode recreates the table instead.
        "render_as_batch": dialect_name == "sqlite",
    }


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
            )
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # A plain engine: on SQLite, foreign keys stay off here (the default), so batch-mode table
    # rebuilds cannot cascade deletes into child tables.
    engine = create_engine(database_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
