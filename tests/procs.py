"""Real processes for the production-runtime tests: `agenthub serve` and `agenthub worker`
subprocesses, a dedicated `redis-server`, and scratch PostgreSQL databases.

Every process starts in its own process group (`start_new_session`), so stopping or killing it
reaches its children too (uvicorn's workers, Celery's prefork pool and embedded beat). Tests use
their own `redis-server` on a free port rather than the machine's shared Redis: they kill and
restart it, and their Celery queue and event stream must not meet anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.services import POSTGRES_ADMIN_URL, require_postgres, services_required

AGENTHUB = str(Path(sys.executable).with_name("agenthub"))
SECRET_KEY = "multiprocess-test-secret-key"


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the process that started it dies, so a test run
    that is itself killed (a CI timeout) leaves no server behind. Processes are started from
    the main thread only (the "parent" is the thread that forked)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_redis_server() -> str:
    """The `redis-server` binary, to run a Redis of the test's own (skip or fail without)."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed"
        if services_required():
            pytest.fail(message + " and AGENTHUB_TEST_SERVICES=required", pytrace=False)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A new PostgreSQL database on the real server, migrated; dropped afterwards."""
    require_postgres()
    from agenthub.migrate import upgrade_database

    name = f"agenthub_mp_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(POSTGRES_ADMIN_URL).set(database=name)
            rendered = url.render_as_string(hide_password=False)
            upgrade_database(rendered)
            yield rendered
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def hub_env(database_url: str, redis_url: str | None = None, **settings: object) -> dict[str, str]:
    """The environment of a hub process: nothing inherited from ours but the basics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
    env.update(
        AGENTHUB_DATABASE_URL=database_url,
        AGENTHUB_SECRET_KEY=SECRET_KEY,
        AGENTHUB_ALLOW_PRIVATE_AGENT_URLS="true",
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["AGENTHUB_REDIS_URL"] = redis_url
    env.update({f"AGENTHUB_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Process:
    """A subprocess in a process group of its own, its output appended to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.workdir = workdir
        self.log = workdir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def spawn(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        assert threading.current_thread() is threading.main_thread()
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"\n--- {self.name} start #{self.starts}: {' '.join(self.argv)}\n".encode())
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.workdir,  # no stray .env file is read
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self) -> None:
        return None

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    async def astart(self) -> None:
        """`start` from an async test: spawn here, wait for readiness in a thread."""
        self.spawn()
        await asyncio.to_thread(self.wait_ready)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def group_pids(self) -> set[int]:
        """Every live process of this one's group (itself and its children)."""
        if self.popen is None:
            return set()
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == self.popen.pid and fields[0] != "Z":
                pids.add(int(entry.name))
        return pids

    def _signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process and its children at once, as a crash or an OOM kill would."""
        self._signal_group(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(10)

    def terminate(self) -> None:
        """SIGTERM to the main process only: it shuts its children down in order."""
        if self.alive:
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL whatever of the group is left after `grace` seconds."""
        if self.popen is None:
            return
        if self.alive:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self._signal_group(signal.SIGKILL)  # children left behind, or the process itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _check_alive(self) -> None:
        assert self.alive, f"{self.name} exited:\n{self.log_text()[-5000:]}"


def stop_all(processes: list[Process]) -> None:
    """Stop every process (SIGTERM to all first, so they stop in parallel), whatever fails."""
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    errors = []
    for process in processes:
        try:
            process.stop()
        except Exception as exc:  # go on: the others must stop too
            errors.append(exc)
    if errors:
        raise errors[0]


class RedisServer(Process):
    """A `redis-server` of the test's own on a free port; nothing kept on disk."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        argv = [
            require_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(workdir),
        ]  # fmt: skip
        super().__init__(f"redis-{self.port}", argv, dict(os.environ), workdir)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ping():
            self._check_alive()
            assert time.monotonic() < deadline, f"redis did not start:\n{self.log_text()}"
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self, down_for: float = 0.0) -> None:
        """Kill it (SIGKILL: everything it held is gone), wait, start it on the same port."""
        self.kill()
        time.sleep(down_for)
        self.start()


class ServeProcess(Process):
    """`agenthub serve` on a free port; started means `/readyz` answered 200."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, [AGENTHUB, "serve", "--port", str(self.port)], env, workdir)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{self.name} did not start:\n{self.log_text()}"
            time.sleep(0.05)


class WorkerProcess(Process):
    """`agenthub worker`; started means Celery logged that it is ready to take tasks."""

    def __init__(
        self, name: str, env: dict[str, str], workdir: Path, *, concurrency: int, beat: bool = True
    ) -> None:
        argv = [AGENTHUB, "worker", f"--concurrency={concurrency}"]
        if not beat:
            argv.append("--no-beat")
        super().__init__(name, argv, env, workdir)

    def wait_ready(self, timeout: float = 60.0) -> None:
        marker = f"--- {self.name} start #{self.starts}"
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_text().rsplit(marker, 1)[-1]:
            self._check_alive()
            assert time.monotonic() < deadline, f"{self.name} did not start:\n{self.log_text()}"
            time.sleep(0.05)


def connections_to(port: int, pids: set[int]) -> dict[int, set[int]]:
    """The local ports of each of `pids`' established TCP connections to `port` on loopback
    (from /proc): which process holds which in-flight request."""
    inodes: dict[str, int] = {}  # socket inode -> local port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                    inodes[inode] = int(local.rsplit(":", 1)[1], 16)
    found: dict[int, set[int]] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        found.setdefault(pid, set()).add(inodes[target[8:-1]])
    return found
