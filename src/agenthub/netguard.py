"""SSRF guard: refuse agent and callback URLs that resolve to internal addresses.

Off by default while the database is SQLite (a laptop runs its agents on localhost) and on
otherwise (`AGENTHUB_ALLOW_PRIVATE_AGENT_URLS`).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import anyio.to_thread

from agenthub.errors import BadRequest


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not ip.is_global or ip.is_multicast


async def ensure_public_url(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("URL must be absolute http(s)")
    if allow_private:
        return
    try:
        infos = await anyio.to_thread.run_sync(
            socket.getaddrinfo, parts.hostname, parts.port or 443, 0, socket.SOCK_STREAM
        )
    except OSError as exc:
        raise BadRequest(f"Cannot resolve host {parts.hostname!r}") from exc
    if any(_is_internal(str(info[4][0])) for info in infos):
        raise BadRequest(
            f"Host {parts.hostname!r} resolves to a private, loopback or link-local address"
        )
