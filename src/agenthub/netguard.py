"""SSRF guard: the hub connects to agents and callbacks only at public addresses.

Off by default while the database is SQLite (a laptop runs its agents on localhost) and on
otherwise (`AGENTHUB_ALLOW_PRIVATE_AGENT_URLS`).

Checking a name and then letting the HTTP client resolve it again leaves a window: a DNS
server that answers a public address to the check and a private one to the connection (DNS
rebinding) gets the hub to call inside the network. So `destination()` resolves once, checks
every address the name has, and returns the URL with the host replaced by the checked address;
the request keeps the name in its `Host` header and, for https, as the TLS server name (which
the certificate is checked against). IPv4 addresses written as IPv6 (`::ffff:10.0.0.1`, NAT64
`64:ff9b::a00:1`, 6to4) are judged by the IPv4 address inside.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread

from agenthub.errors import BadRequest

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnresolvableHost(BadRequest):
    """The name has no address (`error_kind: dns`)."""


class RefusedAddress(BadRequest):
    """The name resolves to an internal address (`error_kind: refused_address`)."""


@dataclass(frozen=True)
class Destination:
    """Where one request goes: `url` with the checked address in place of the name, and what
    keeps the name for the server (`headers`: Host; `extensions`: the TLS server name)."""

    url: str
    address: str | None = None  # None: not resolved here (private addresses allowed)
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        ip = inner
    return not ip.is_global or ip.is_multicast


def _checked_url(url: str) -> Any:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("URL must be absolute http(s)")
    return parts


async def _addresses(host: str, port: int) -> list[str]:
    try:
        infos = await anyio.to_thread.run_sync(
            socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM
        )
    except OSError as exc:
        raise UnresolvableHost(f"Cannot resolve host {host!r}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def destination(url: str, *, allow_private: bool) -> Destination:
    """The request target for `url`, resolved once and checked (see the module's docstring)."""
    parts = _checked_url(url)
    if allow_private:
        return Destination(url)
    host: str = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await _addresses(host, port)
    if not addresses or any(is_internal(address) for address in addresses):
        raise RefusedAddress(f"Host {host!r} resolves to a private, loopback or link-local address")
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    target = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Destination(target, address, {"Host": host_header}, extensions)


async def ensure_public_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not absolute http(s) or, unless private addresses are allowed,
    whose host resolves to an internal address (checked when an agent or callback is saved)."""
    await destination(url, allow_private=allow_private)
