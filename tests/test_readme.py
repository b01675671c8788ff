"""The README's "Try the full loop on a laptop", run as written: its shell blocks, in bash,
against a real `agenthub serve`, with the real `agenthub pingpong` and `send-test`.

Only what cannot run unattended is left out (`make run`, which the test replaces with its own
hub on a free port, and the interactive WebSocket client). Ports 8000/8001 become free ports and
`.venv/bin/` the running interpreter's directory; everything else is the README's text. Before
the walkthrough, an agent is registered the way an earlier section of the README used to do it
(same URL, another secret, linked to every new chat), so the walkthrough must hold even then.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from contextlib import suppress
from pathlib import Path

import httpx2
import pytest

from tests.agent_server import eventually
from tests.procs import ServeProcess, free_port, hub_env

pytestmark = [pytest.mark.anyio, pytest.mark.multiprocess]

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Try the full loop on a laptop"
BIN = str(Path(sys.executable).parent)


def walkthrough_blocks() -> list[str]:
    text = README.read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = [textwrap.dedent(b) for b in re.findall(r"```sh\n(.*?)```", section, re.S)]
    runnable = [b for b in blocks if b.strip() != "make run" and "-m websockets" not in b]
    assert len(runnable) >= 6, "the walkthrough lost its steps"
    return runnable


def _localize(block: str, hub_port: int, agent_port: int) -> str:
    return (
        block.replace("127.0.0.1:8000", f"127.0.0.1:{hub_port}")
        .replace("8001", str(agent_port))
        .replace(".venv/bin/", f"{BIN}/")
    )


def _register_a_conflicting_agent(hub_url: str, agent_port: int) -> None:
    """What "First steps" once did: an agent at pingpong's URL, with its own secret, that every
    new chat gets. Deliveries to it fail (pingpong refuses its signature)."""
    credentials = {"username": "admin", "password": "change-me-please"}
    with httpx2.Client(base_url=hub_url, timeout=10) as http:
        assert http.post("/auth/signup", json=credentials).status_code == 201
        token = http.post("/auth/login", json=credentials).json()["access_token"]
        answer = http.post(
            "/auth/agents",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "pingpong", "webhook_url": f"http://127.0.0.1:{agent_port}/"},
        )
        assert answer.status_code == 201, answer.text


async def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    hub = ServeProcess("hub", hub_env(f"sqlite:///{tmp_path / 'hub.db'}"), tmp_path)
    agent_port = free_port()
    workdir = tmp_path / "repo"
    workdir.mkdir()
    await hub.astart()
    try:
        _register_a_conflicting_agent(hub.url, agent_port)
        script = "set -eu\n" + "\n".join(
            _localize(b, hub.port, agent_port) for b in walkthrough_blocks()
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
        # To a file, not a pipe: pingpong, left running in the background, holds it open.
        output = tmp_path / "walkthrough.log"
        with output.open("w") as log:
            code = subprocess.run(
                ["bash", "-c", script], cwd=workdir, env=env, stdout=log, stderr=log, timeout=60
            ).returncode
        printed = output.read_text()
        assert code == 0, printed
        assert printed.count("-> 200") == 2, printed  # send-test's lines
        assert (workdir / "loop.env").stat().st_mode & 0o077 == 0  # it holds tokens

        loop_env = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in (workdir / "loop.env").read_text().splitlines()
            if "=" in line
        )
        # Only pingpong took part: no delivery to the other agent failed, nobody needs a human.
        done = (["pong: hi", "pong: how are you?"], False, {"succeeded"})
        await eventually(
            lambda: _outcome(hub.url, loop_env) == done,
            timeout=30,
            interval=0.2,
            message=f"replies missing:\n{output.read_text()}\n{hub.log_text()[-3000:]}",
        )
    finally:
        _stop_pingpong(workdir)
        hub.stop()


def _outcome(hub_url: str, loop_env: dict[str, str]) -> tuple[list[str], bool, set[str]]:
    """The agent's replies, oldest first; whether the chat needs a human; delivery statuses."""
    headers = {"Authorization": f"Bearer {loop_env['TOKEN']}"}
    with httpx2.Client(base_url=hub_url, headers=headers, timeout=10) as http:
        (chat,) = http.get(f"/channels/{loop_env['CHANNEL_ID']}/chats").json()["chats"]
        messages = http.get(f"/chats/{chat['id']}/messages").json()["messages"]
        deliveries = http.get(f"/chats/{chat['id']}/deliveries").json()
    texts = [m["content"] for m in reversed(messages) if m["sender_type"] == "AGENT"]
    return texts, chat["needs_human"], {d["status"] for d in deliveries}


def _stop_pingpong(workdir: Path) -> None:
    pid_file = workdir / "pingpong.pid"
    if pid_file.exists():
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
