"""The `agenthub` command: serve, migrate, create-admin, and the pingpong/send-test helpers.

Imports of the app, SQLAlchemy and uvicorn happen inside the commands, so `agenthub --help` and
shell completion stay fast.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from agenthub.settings import Settings

READ_STDIN = "-"  # `--password -` reads the password from stdin

app = typer.Typer(
    name="agenthub",
    help="Agent Hub: connects messaging platforms (WhatsApp, Telegram, web chat) to AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _settings() -> Settings:
    from pydantic import ValidationError

    from agenthub.settings import get_settings

    get_settings.cache_clear()  # pick up environment changes made by the command itself
    try:
        return get_settings()
    except ValidationError as exc:
        # One line per setting refused, named as its variable; never the value given.
        for error in exc.errors():
            name = "AGENTHUB_" + "_".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            line = message if message.startswith(name) else f"{name}: {message}"
            typer.secho(f"Error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _display_url(database_url: str) -> str:
    from sqlalchemy import make_url

    return make_url(database_url).render_as_string(hide_password=True)


def _migrate(database_url: str) -> str | None:
    from agenthub.migrate import current_revision, upgrade_database

    upgrade_database(database_url)
    return current_revision(database_url)


def _has_users(database_url: str) -> bool:
    from sqlalchemy import create_engine, exists, select
    from sqlalchemy.pool import NullPool

    from agenthub.db import sync_url
    from agenthub.models import User

    engine = create_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return bool(connection.scalar(select(exists().select_from(User))))
    finally:
        engine.dispose()


# `GET /ws` declines permessage-deflate, which browsers always offer: its frames are small JSON
# objects that compress little, and compressing each frame once per socket (every socket has
# its own compression context) was the largest cost of sending an event to many dashboards
# (docs/benchmarks.md, "The WebSocket fan-out").
UVICORN_WEBSOCKET_OPTIONS: dict[str, Any] = {"ws_per_message_deflate": False}


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Interface to bind", show_default="AGENTHUB_HOST or 127.0.0.1"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on", show_default="AGENTHUB_PORT or 8000")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Server processes", envvar="AGENTHUB_SERVE_WORKERS", show_envvar=True
        ),
    ] = 1,
) -> None:
    """Apply migrations, then serve the API (and run background jobs in-process)."""
    # The app's Settings (in this process and in uvicorn's worker processes) read these, so the
    # default public URL (http://<host>:<port>) matches where we listen.
    if host is not None:
        os.environ["AGENTHUB_HOST"] = host
    if port is not None:
        os.environ["AGENTHUB_PORT"] = str(port)
    settings = _settings()
    os.environ["AGENTHUB_HOST"] = settings.host
    os.environ["AGENTHUB_PORT"] = str(settings.port)
    if workers > 1 and not settings.redis_url:
        # Each process would run its own in-process jobs and events: dashboards would see only
        # one process's events, and a restarting process would free the others' leases.
        typer.secho(
            "Error: --workers above 1 needs AGENTHUB_REDIS_URL (shared events and jobs); "
            "see docs/production.md.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)

    # Create the generated secret key (SQLite installs) once, before any worker process races
    # to; without SQLite this fails fast, before migrating, when AGENTHUB_SECRET_KEY is missing.
    try:
        settings.resolved_secret_key()
    except RuntimeError as exc:
        typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    revision = _migrate(settings.database_url)

    listen_url = f"http://{settings.host}:{settings.port}"
    say = _say_json if settings.log_format == "json" else typer.echo
    say(f"Database   {_display_url(settings.database_url)} (schema {revision})")
    say(f"Listening  {listen_url}  (API docs: {listen_url}/docs)")
    say(f"Console    {listen_url}/console  (sign in as a user)")
    say(f"Public URL {settings.effective_public_url}")
    if not _has_users(settings.database_url):
        if settings.log_format == "json":
            say("No user exists yet: create the admin with `agenthub create-admin`")
        else:
            _print_first_admin_hint(settings, listen_url)

    import uvicorn

    from agenthub.logs import uvicorn_log_config

    metrics_dir = _metrics_dir(settings, wipe=True)
    try:
        uvicorn.run(
            "agenthub.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=settings.log_level.lower(),
            log_config=uvicorn_log_config(settings.log_level, settings.log_format),
            **UVICORN_WEBSOCKET_OPTIONS,
        )
    finally:
        if settings.metrics_dir is None:  # our own temporary directory
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir(settings: Settings, *, wipe: bool) -> str:
    """The directory of prometheus-client's multiprocess mode, exported to every process this
    one starts (it must be set before they import the client). `serve` empties it: files left
    by a previous run would add old processes' counters to the new ones."""
    import tempfile
    from pathlib import Path

    if settings.metrics_dir is None:
        _remove_orphan_metrics_dirs()
        directory = Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-"))
    else:
        directory = Path(settings.metrics_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.db") if wipe else ():
            leftover.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return str(directory)


METRICS_DIR_PREFIX = "agenthub-metrics-"


def _remove_orphan_metrics_dirs() -> None:
    """The temporary directories of serve processes that were killed (and so could not
    remove theirs): their names carry the pid."""
    import shutil
    import tempfile
    from pathlib import Path

    for path in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*-*"):
        pid = path.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def _say_json(message: str) -> None:
    from agenthub.logs import json_line

    typer.echo(json_line("agenthub.serve", message))


def _print_first_admin_hint(settings: Settings, listen_url: str) -> None:
    typer.secho("No user exists yet. Create the admin with either:", fg=typer.colors.YELLOW)
    typer.echo(f"  {_agenthub_command()} create-admin --username admin   (asks for the password)")
    setup_header = " -H 'X-Setup-Token: <AGENTHUB_SETUP_TOKEN>'" if settings.setup_token else ""
    typer.echo(
        f"  curl -X POST {listen_url}/auth/signup -H 'Content-Type: application/json'"
        f"""{setup_header} -d '{{"username": "admin", "password": "…"}}'"""
    )


def _agenthub_command() -> str:
    """How to run this `agenthub` from the current directory: `agenthub` when it is the one on
    PATH, else its path (relative when under the directory: `.venv/bin/agenthub` after
    `make run`, whose virtualenv is not activated)."""
    import shutil
    from pathlib import Path

    ours = Path(sys.executable).with_name("agenthub")
    on_path = shutil.which("agenthub")
    if not ours.exists() or (on_path and Path(on_path).resolve() == ours.resolve()):
        return "agenthub"
    cwd = Path.cwd()
    return str(ours.relative_to(cwd)) if ours.is_relative_to(cwd) else str(ours)


@app.command()
def migrate() -> None:
    """Apply the database migrations and exit."""
    settings = _settings()
    revision = _migrate(settings.database_url)
    typer.echo(f"{_display_url(settings.database_url)} is at schema revision {revision} (head).")


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes (default AGENTHUB_WORKER_CONCURRENCY)")
    ] = None,
    queues: Annotated[str | None, typer.Option(help="Celery queues, comma-separated")] = None,
    beat: Annotated[bool, typer.Option(help="Run the periodic sweep in this worker")] = True,
) -> None:
    """Run background jobs on Celery (production mode; needs AGENTHUB_REDIS_URL)."""
    settings = _settings()
    if not settings.redis_url:
        typer.echo("agenthub worker needs AGENTHUB_REDIS_URL (the Celery broker).", err=True)
        raise typer.Exit(1)
    if settings.metrics_dir is not None:  # shared with serve: its scrapes include the workers
        _metrics_dir(settings, wipe=False)
    from agenthub.runtime.celery_jobs import run_worker

    _migrate(settings.database_url)
    run_worker(
        settings,
        concurrency=concurrency or settings.worker_concurrency,
        queues=queues or settings.celery_queue,
        beat=beat,
    )


@app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="The admin's username")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="The new password; '-' reads it from stdin",
        ),
    ],
) -> None:
    """Create an ADMIN user, or reset an existing one (role ADMIN, active, new password)."""
    from agenthub.schemas import Password, Username

    if password == READ_STDIN:
        password = sys.stdin.readline().rstrip("\r\n")
    username = _validate(username, Username, "username")
    password = _validate(password, Password, "password")

    import asyncio

    settings = _settings()
    _migrate(settings.database_url)
    user_id, created = asyncio.run(_upsert_admin(settings.database_url, username, password))
    verb = "Created" if created else "Reset"
    typer.echo(f"{verb} admin {username!r} ({user_id}). Log in with POST /auth/login.")


def _validate(value: str, annotation: Any, field: str) -> str:
    from pydantic import TypeAdapter, ValidationError

    try:
        result: str = TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"]
        raise typer.BadParameter(message, param_hint=f"--{field}") from exc
    return result


async def _upsert_admin(database_url: str, username: str, password: str) -> tuple[str, bool]:
    from sqlalchemy import select

    from agenthub.db import Database
    from agenthub.models import Role, User
    from agenthub.security import hash_password

    password_hash = await hash_password(password)
    db = Database(database_url, pool_size=1)
    try:
        async with db.transaction() as session:
            user = await session.scalar(select(User).where(User.username == username))
            created = user is None
            if user is None:
                user = User(username=username, password_hash=password_hash)
                session.add(user)
            user.password_hash = password_hash
            user.role = Role.ADMIN
            user.is_active = True
            await session.flush()
            return user.id, created
    finally:
        await db.dispose()


def _check_whsec(secret: str, param_hint: str = "--secret") -> str:
    from standardwebhooks import Webhook

    try:
        Webhook(secret)
    except Exception as exc:
        raise typer.BadParameter("expected a whsec_… secret", param_hint=param_hint) from exc
    return secret


@app.command()
def pingpong(
    secret: Annotated[
        str | None,
        typer.Option(
            help="The agent's webhook_secret (whsec_…), to verify deliveries (not with --a2a)",
            envvar="AGENTHUB_PINGPONG_SECRET",
            show_envvar=True,
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1)")] = 8001,
    token: Annotated[
        str | None,
        typer.Option(
            help="The agent's API token: reply through the API instead of inline",
            envvar="AGENTHUB_PINGPONG_TOKEN",
            show_envvar=True,
        ),
    ] = None,
    hub: Annotated[
        str | None,
        typer.Option(
            help="The hub's URL, used when a delivery carries no reply_url",
            envvar="AGENTHUB_PINGPONG_HUB",
            show_envvar=True,
        ),
    ] = None,
    a2a: Annotated[
        bool,
        typer.Option(
            "--a2a", help="Be an A2A agent (agent card, JSON-RPC, streaming) instead of a webhook"
        ),
    ] = False,
) -> None:
    """The example agent: answers every delivery with `pong: <last new message>`.

    AGENTHUB_PINGPONG_SECRET and _TOKEN keep the secrets off the command line (seen by `ps`).
    With --a2a it speaks A2A instead: register it with `"transport": "a2a"`.
    """
    if a2a:
        from agenthub.pingpong_a2a import serve as serve_a2a

        typer.echo(f"pingpong A2A agent listening on http://127.0.0.1:{port}/ (card, JSON-RPC)")
        typer.echo(
            'Register it with {"transport": "a2a", "a2a": {"url": "<that URL>"}}. Ctrl-C stops it.'
        )
        serve_a2a(port)
        return
    from agenthub.pingpong import serve as serve_pingpong

    if secret is None:
        raise typer.BadParameter("the agent's webhook_secret is required", param_hint="'--secret'")
    secret = _check_whsec(secret)
    if hub and not token:
        typer.secho("--hub is used only with --token; replying inline", fg=typer.colors.YELLOW)
    mode = "replies through the API" if token else "replies inline"
    typer.echo(f"pingpong agent listening on http://127.0.0.1:{port}/ ({mode})")
    typer.echo("Use that URL as the agent's webhook_url. Ctrl-C stops it.")
    serve_pingpong(port, secret, token=token, hub_url=hub)


@app.command("send-test")
def send_test(
    channel: Annotated[str, typer.Option(help="The api channel's id (chn_…)")],
    secret: Annotated[
        str,
        typer.Option(
            help="The channel's secret (whsec_…)",
            envvar="AGENTHUB_SEND_TEST_SECRET",
            show_envvar=True,
        ),
    ],
    contact: Annotated[str, typer.Option(help="The contact's id on your platform")],
    text: Annotated[str, typer.Option(help="The message content")] = "hi",
    hub: Annotated[str, typer.Option(help="The hub's URL")] = "http://127.0.0.1:8000",
    name: Annotated[str | None, typer.Option(help="The contact's display name")] = None,
    message_id: Annotated[
        str | None, typer.Option(help="Your message id (dedupe key); random by default")
    ] = None,
) -> None:
    """Send one signed inbound message to an `api` channel, as your web chat would."""
    import json
    import uuid

    import httpx2

    from agenthub.delivery.payload import sign_headers

    secret = _check_whsec(secret)
    message_id = message_id or f"test_{uuid.uuid4().hex[:16]}"
    payload: dict[str, Any] = {"contact_id": contact, "message_id": message_id, "content": text}
    if name:
        payload["contact_name"] = name
    body = json.dumps(payload).encode()
    headers = sign_headers(secret, f"msg_{uuid.uuid4().hex}", body)  # as the hub signs its own
    url = f"{hub.rstrip('/')}/webhooks/api/{channel}"
    try:
        response = httpx2.post(url, content=body, headers=headers, timeout=10)
    except httpx2.HTTPError as exc:
        typer.secho(f"POST {url} failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"POST {url} (message_id {message_id}) -> {response.status_code} {response.text}")
    if not response.is_success:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()


@app.command("rotate-secrets")
def rotate_secrets() -> None:
    """Re-encrypt every stored secret with the first key of AGENTHUB_SECRET_KEY.

    Rotate the key like this: put the new key first (`AGENTHUB_SECRET_KEY=new,old`),
    restart, run this, then drop the old key from the list. Prints what it re-encrypted."""
    import asyncio

    from agenthub.maintenance import rotate_secrets as rotate

    settings = _settings()
    _migrate(settings.database_url)
    try:
        counts = asyncio.run(rotate(settings))
    except RuntimeError as exc:
        typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    for kind, count in counts.items():
        typer.echo(f"{count:6d} {kind}")
    typer.echo("Re-encrypted with the first key; the others can now leave AGENTHUB_SECRET_KEY.")


@app.command()
def backup(
    path: Annotated[str, typer.Argument(help="Where to write the copy (replaced if it exists)")],
) -> None:
    """Write a consistent copy of the SQLite database to PATH, safely while the hub serves
    (SQLite's online backup). For PostgreSQL, use pg_dump (docs/production.md)."""
    from pathlib import Path

    from agenthub.maintenance import BackupError, backup_sqlite

    settings = _settings()
    try:
        size = backup_sqlite(settings.database_url, Path(path))
    except BackupError as exc:
        typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Backed up {_display_url(settings.database_url)} to {path} ({size} bytes).")
