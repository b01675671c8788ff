"""What operators run: `agenthub rotate-secrets` after putting a new key first in
AGENTHUB_SECRET_KEY, `agenthub backup PATH` while the hub writes, a malformed key list refused
at start, and the purge of old attempt excerpts."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from agenthub.cli import app
from agenthub.delivery.engine import run_due_work
from agenthub.hub import Hub
from agenthub.maintenance import purge_attempt_excerpts
from agenthub.migrate import upgrade_database
from agenthub.models import DeliveryAttempt, utcnow
from agenthub.security import SecretBox
from agenthub.settings import Settings
from tests.factories import make_agent, make_channel, make_chat, make_delivery

OLD_KEY = "the-old-key-of-this-hub"
NEW_KEY = "the-new-key-of-this-hub"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    monkeypatch.setenv("AGENTHUB_DATABASE_URL", url)
    upgrade_database(url)
    return url


def stored_secrets(url: str) -> tuple[list[str], list[str]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        agents = [row[0] for row in db.execute("SELECT webhook_secret_encrypted FROM agents")]
        agents += [
            row[0]
            for row in db.execute(
                "SELECT transport_secret_encrypted FROM agents"
                " WHERE transport_secret_encrypted IS NOT NULL"
            )
        ]
        channels = [row[0] for row in db.execute("SELECT credentials_encrypted FROM channels")]
    return agents, channels


async def seed(url: str, key: str) -> None:
    hub = Hub.from_settings(Settings(database_url=url, secret_key=key, _env_file=None))
    try:
        await make_agent(hub, name="one")
        # An agent on another transport: its API key is a stored secret too.
        await make_agent(
            hub,
            name="two",
            transport="openai",
            transport_settings={"base_url": "http://127.0.0.1:9/v1", "model": "m"},
            transport_secret_encrypted=hub.secrets.encrypt("sk-rotate-me"),
        )
        await make_channel(hub)
    finally:
        await hub.close()


def test_rotate_secrets_re_encrypts_everything_with_the_first_key(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(seed(database, OLD_KEY))
    before = stored_secrets(database)
    monkeypatch.setenv("AGENTHUB_SECRET_KEY", f"{NEW_KEY}, {OLD_KEY}")
    result = CliRunner().invoke(app, ["rotate-secrets"])
    assert result.exit_code == 0, result.output
    assert "2 agent webhook secrets" in result.output and "1 channels" in result.output
    assert "1 agent transport secrets" in result.output
    agents, channels = stored_secrets(database)
    new_only = SecretBox(NEW_KEY)
    old_box = SecretBox(OLD_KEY)
    for stored, was in zip([*agents, *channels], [*before[0], *before[1]], strict=True):
        assert stored != was
        assert new_only.decrypt(stored) == old_box.decrypt(was)  # same secret, new key
    # With the old key dropped, the hub still reads everything.
    monkeypatch.setenv("AGENTHUB_SECRET_KEY", NEW_KEY)
    assert CliRunner().invoke(app, ["rotate-secrets"]).exit_code == 0
    # A key that never encrypted them cannot read them: a clear error, no traceback.
    monkeypatch.setenv("AGENTHUB_SECRET_KEY", "some-unrelated-key")
    refused = CliRunner().invoke(app, ["rotate-secrets"])
    assert refused.exit_code == 1 and "cannot decrypt" in refused.output


@pytest.mark.parametrize(
    "keys", ["", "newest-key-0123,", " , older-key-4567", "first-key-89ab,,second-key-cdef"]
)
def test_a_malformed_key_list_is_refused_at_start_naming_the_variable(
    database: str, monkeypatch: pytest.MonkeyPatch, keys: str
) -> None:
    monkeypatch.setenv("AGENTHUB_SECRET_KEY", keys)
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert "AGENTHUB_SECRET_KEY" in result.output
    for key in filter(None, (k.strip() for k in keys.split(","))):
        assert key not in result.output
    assert "Traceback" not in result.output


def test_backup_copies_a_database_being_written(database: str, tmp_path: Path) -> None:
    path = database.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE load (n INTEGER)")
    stop = threading.Event()

    def write() -> None:  # another process's hub writing meanwhile
        with sqlite3.connect(path, timeout=10) as db:
            n = 0
            while not stop.is_set():
                db.execute("INSERT INTO load VALUES (?)", (n,))
                db.commit()
                n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        copy = tmp_path / "backups" / "hub-copy.db"
        result = CliRunner().invoke(app, ["backup", str(copy)])
    finally:
        stop.set()
        writer.join()
    assert result.exit_code == 0, result.output
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        versions = db.execute("SELECT version_num FROM alembic_version").fetchall()
    assert len(versions) == 1
    assert list(copy.parent.glob(".backup-*")) == []  # written beside it, then renamed
    refused = CliRunner().invoke(app, ["backup", path])
    assert refused.exit_code == 1 and "itself" in refused.output


def test_backup_of_postgresql_points_to_pg_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTHUB_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1:1/none")
    monkeypatch.setenv("AGENTHUB_SECRET_KEY", "k")
    result = CliRunner().invoke(app, ["backup", "/tmp/never.db"])
    assert result.exit_code == 1 and "pg_dump" in result.output


@pytest.mark.anyio
@pytest.mark.database_independent
async def test_old_attempt_excerpts_are_purged(hub: Hub) -> None:
    bot, _ = await make_agent(hub)
    chat = await make_chat(hub, await make_channel(hub), agents=(bot,))
    delivery_id = await make_delivery(hub, chat.id, bot.id, "succeeded")
    now = utcnow()
    async with hub.db.transaction() as session:
        for number, age in ((1, 40), (2, 29), (3, 31)):
            session.add(
                DeliveryAttempt(
                    delivery_id=delivery_id,
                    attempt_number=number,
                    started_at=now - timedelta(days=age),
                    status_code=200,
                    response_excerpt=f"answer {number}",
                )
            )
    async with hub.db.transaction() as session:
        assert await purge_attempt_excerpts(session, now, 30) == 2
    async with hub.db.session(read_only=True) as session:
        kept = {
            a.attempt_number: a.response_excerpt
            for a in await session.scalars(
                select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
            )
        }
    assert kept == {1: None, 2: "answer 2", 3: None}


@pytest.mark.anyio
@pytest.mark.database_independent
async def test_the_job_pass_purges_at_most_once_an_hour(hub: Hub) -> None:
    bot, _ = await make_agent(hub)
    chat = await make_chat(hub, await make_channel(hub), agents=(bot,))
    delivery_id = await make_delivery(hub, chat.id, bot.id, "succeeded")
    now = utcnow()

    async def old_attempt(number: int) -> None:
        async with hub.db.transaction() as session:
            session.add(
                DeliveryAttempt(
                    delivery_id=delivery_id,
                    attempt_number=number,
                    started_at=now - timedelta(days=hub.settings.attempt_retention_days + 1),
                    response_excerpt="old answer",
                )
            )

    async def excerpts() -> list[str | None]:
        async with hub.db.session(read_only=True) as session:
            query = select(DeliveryAttempt.response_excerpt).where(
                DeliveryAttempt.delivery_id == delivery_id
            )
            return list(await session.scalars(query.order_by(DeliveryAttempt.attempt_number)))

    await old_attempt(1)
    hub.excerpts_purged_at = None
    await run_due_work(hub, now)
    assert await excerpts() == [None]
    await old_attempt(2)
    await run_due_work(hub, now + timedelta(minutes=30))
    assert await excerpts() == [None, "old answer"]
    await run_due_work(hub, now + timedelta(minutes=61))
    assert await excerpts() == [None, None]
