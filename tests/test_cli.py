"""The `agenthub` command in-process (typer's CliRunner): `create-admin`'s password prompt and
the ways it takes a password, the `create-admin` hint of `serve`'s banner, and the modes of the
files a SQLite install creates (database, its -wal and -shm, the generated secret key)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from agenthub.cli import _agenthub_command, app
from agenthub.migrate import upgrade_database
from agenthub.models import Role, User
from agenthub.security import verify_password
from agenthub.settings import Settings


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite file in an empty working directory (no stray .env is read)."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    monkeypatch.setenv("AGENTHUB_DATABASE_URL", url)
    return url


def admin_password_matches(database_url: str, username: str, password: str) -> bool:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            user = connection.execute(select(User).where(User.username == username)).one()
    finally:
        engine.dispose()
    assert user.role == Role.ADMIN and user.is_active
    return asyncio.run(verify_password(password, user.password_hash))


def test_create_admin_prompts_for_a_hidden_confirmed_password(database: str) -> None:
    typed = "first-try-1\nsecond-try-2\ngood-password\ngood-password\n"
    result = CliRunner().invoke(app, ["create-admin", "--username", "root"], input=typed)
    assert result.exit_code == 0, result.output
    assert "Password:" in result.output and "Repeat for confirmation:" in result.output
    assert "do not match" in result.output  # asked again after a mismatch
    assert "good-password" not in result.output and "first-try-1" not in result.output
    assert admin_password_matches(database, "root", "good-password")


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [(["--password", "-"], "from-stdin-pw\n"), (["--password", "from-stdin-pw"], None)],
)
def test_create_admin_takes_the_password_from_stdin_or_the_option(
    database: str, argv: list[str], stdin: str | None
) -> None:
    result = CliRunner().invoke(app, ["create-admin", "--username", "root", *argv], input=stdin)
    assert result.exit_code == 0, result.output
    assert "Password:" not in result.output
    assert admin_password_matches(database, "root", "from-stdin-pw")


def test_the_banner_names_the_agenthub_that_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = Path(sys.executable).with_name("agenthub")
    assert ours.exists()
    project = ours.parent.parent.parent  # …/<project>/.venv/bin/agenthub
    monkeypatch.setenv("PATH", "")
    monkeypatch.chdir(project)
    assert _agenthub_command() == str(ours.relative_to(project))  # `.venv/bin/agenthub`
    monkeypatch.chdir(tmp_path)
    assert _agenthub_command() == str(ours)  # elsewhere: the whole path
    monkeypatch.setenv("PATH", str(ours.parent))
    assert _agenthub_command() == "agenthub"  # the one on PATH


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    with umask(0o022):
        upgrade_database(f"sqlite:///{path}")
        connection = sqlite3.connect(path)  # as the hub opens it: WAL, then a write
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("CREATE TABLE scratch (x)")
            siblings = [Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(p.exists() for p in siblings)
            assert [mode(p) for p in [path, *siblings]] == [0o600, 0o600, 0o600]
        finally:
            connection.close()


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    upgrade_database(f"sqlite:///{path}")
    assert mode(path) == 0o640


def test_the_generated_secret_key_file_is_private(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", _env_file=None)  # type: ignore[call-arg]
    with umask(0o022):
        key = settings.resolved_secret_key()
    key_file = tmp_path / "hub.db.secret-key"
    assert key_file.read_text() == key
    assert mode(key_file) == 0o600
