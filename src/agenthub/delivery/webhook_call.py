"""One signed POST to an agent's webhook, and what came of it, classified for the attempt log.

The URL is resolved and checked once (`netguard.destination`) and the connection made to that
address; redirects are never followed (a 3xx fails like a 4xx). The answer is read up to
`AGENTHUB_AGENT_MAX_RESPONSE_BYTES` and no further: a larger one fails the attempt as
`too_large` (not retried), whatever its status. Every outcome carries the first 4 KiB of the
answer and the address connected to, and a failure its `error_kind`:

| kind | what | retried |
|---|---|---|
| `timeout` | no answer within the agent's `timeout_seconds` | yes |
| `connect` | refused, reset or unreachable | yes |
| `dns` | the name has no address | yes |
| `tls` | the TLS handshake or certificate failed | yes |
| `protocol` | not HTTP, or the connection dropped mid-answer | yes |
| `http_status` | answered, but not 2xx (429 and 5xx are retried, others fail at once) | 429, 5xx |
| `too_large` | the answer is over the limit | no |
| `refused_address` | the name resolves to an internal address | no |
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2

from agenthub import tracing
from agenthub.hub import Hub
from agenthub.netguard import RefusedAddress, UnresolvableHost, destination

EXCERPT_BYTES = 4096
NOT_RETRIED = frozenset({"too_large", "refused_address"})


@dataclass
class Outcome:
    status_code: int | None
    latency_ms: float
    error: str | None = None
    body: Any = None  # the parsed JSON of a 2xx answer
    retry_after: str | None = None
    error_kind: str | None = None
    excerpt: str | None = None  # the first 4 KiB of the answer
    remote_address: str | None = None
    # What the transport keeps for the chat's next delivery (an A2A task waiting for input);
    # applied only when `sets_continuation` (the webhook transport keeps none).
    continuation: str | None = None
    sets_continuation: bool = False

    @property
    def succeeded(self) -> bool:
        code = self.status_code
        return self.error_kind is None and code is not None and 200 <= code < 300

    @property
    def retryable(self) -> bool:
        if self.error_kind in NOT_RETRIED:
            return False
        code = self.status_code
        return code is None or code == 429 or code >= 500


async def post_to_agent(
    hub: Hub, url: str, body: bytes, headers: dict[str, str], timeout_seconds: float
) -> Outcome:
    """POST `body` to `url` (resolved and checked first) within `timeout_seconds`, the answer
    read up to the limit. Traced when tracing is on (the `traceparent` header is added by the
    hub's HTTP client, `tracing.instrument_hub`)."""
    if not tracing.enabled():
        return await _post(hub, url, body, headers, timeout_seconds)
    # The host only: an agent's URL may carry a token in its path or query.
    host = urlsplit(url).hostname
    with tracing.span("agent.webhook POST", {"server.address": host or ""}) as span:
        outcome = await _post(hub, url, body, headers, timeout_seconds)
        tracing.set_attributes(
            span,
            **{
                "http.response.status_code": outcome.status_code,
                "agenthub.error_kind": outcome.error_kind,
            },
        )
        if not outcome.succeeded:
            tracing.mark_failed(span, outcome.error_kind or "failed")
        return outcome


@dataclass
class Opened:
    """A request sent and its answer's head received: the body is still to be read."""

    response: httpx2.Response
    started: float
    address: str | None

    def failed(self, kind: str, error: str, **fields: Any) -> Outcome:
        fields.setdefault("remote_address", self.address)
        return Outcome(None, ms_since(self.started), error=error[:500], error_kind=kind, **fields)

    def broken(self, exc: BaseException, timeout: float) -> Outcome:
        """The outcome of an exception while reading the body."""
        if isinstance(exc, httpx2.TimeoutException | TimeoutError):
            return self.failed("timeout", f"timeout after {timeout:g}s")
        return self.failed("protocol", f"{type(exc).__name__}: {exc}")

    def answered(self, data: bytes) -> Outcome:
        """The outcome of the whole answer `data`: a 2xx with its JSON as `body`, any other
        status an `http_status` failure (429 and 5xx retried)."""
        code = self.response.status_code
        outcome = Outcome(
            code,
            ms_since(self.started),
            retry_after=self.response.headers.get("retry-after"),
            excerpt=excerpt_of(data),
            remote_address=self.address,
        )
        if 200 <= code < 300:
            outcome.body = _json(data)
        else:
            outcome.error = f"HTTP {code}: {data[:200].decode('utf-8', 'replace')}"
            outcome.error_kind = "http_status"
        return outcome


async def open_request(
    hub: Hub,
    url: str,
    content: bytes | None,
    headers: dict[str, str],
    timeout_seconds: float,
    *,
    method: str = "POST",
    allow_private: bool | None = None,
) -> Opened | Outcome:
    """POST `content` to `url` (or another `method`), resolved and checked first, connected to
    the checked address, no redirects; the answer's head, or the failure. The caller reads the
    body and closes."""
    timeout = timeout_seconds
    started = time.perf_counter()

    def failed(kind: str, error: str, **fields: Any) -> Outcome:
        return Outcome(None, ms_since(started), error=error[:500], error_kind=kind, **fields)

    if allow_private is None:
        allow_private = hub.settings.private_agent_urls_allowed
    try:
        target = await destination(url, allow_private=allow_private)
    except RefusedAddress as exc:
        return failed("refused_address", str(exc.detail))
    except UnresolvableHost as exc:
        return failed("dns", str(exc.detail))
    request = hub.http.build_request(
        method,
        target.url,
        content=content,
        headers={**headers, **target.headers},
        timeout=timeout,
        extensions=target.extensions,
    )
    try:
        response = await hub.http.send(request, stream=True, follow_redirects=False)
    except httpx2.TimeoutException:
        return failed("timeout", f"timeout after {timeout:g}s", remote_address=target.address)
    except (httpx2.HTTPError, OSError) as exc:
        return failed(_kind_of(exc), f"{type(exc).__name__}: {exc}", remote_address=target.address)
    return Opened(response, started, target.address or _peer(response))


async def _post(
    hub: Hub, url: str, body: bytes, headers: dict[str, str], timeout_seconds: float
) -> Outcome:
    opened = await open_request(hub, url, body, headers, timeout_seconds)
    if isinstance(opened, Outcome):
        return opened
    try:
        return await _read(hub, opened)
    except (httpx2.HTTPError, OSError) as exc:
        return opened.broken(exc, timeout_seconds)
    finally:
        await opened.response.aclose()


async def read_capped(hub: Hub, opened: Opened) -> bytes | Outcome:
    """The whole answer, or `too_large` once it passes `AGENTHUB_AGENT_MAX_RESPONSE_BYTES`."""
    limit = hub.settings.agent_max_response_bytes
    content = bytearray()
    async for chunk in opened.response.aiter_bytes():
        content.extend(chunk)
        if len(content) > limit:
            return too_large(opened, limit, bytes(content))
    return bytes(content)


def too_large(opened: Opened, limit: int, start: bytes) -> Outcome:
    return Outcome(
        opened.response.status_code,
        ms_since(opened.started),
        error=f"the answer is over {limit} bytes",
        error_kind="too_large",
        excerpt=excerpt_of(start),
        remote_address=opened.address,
    )


async def _read(hub: Hub, opened: Opened) -> Outcome:
    data = await read_capped(hub, opened)
    return data if isinstance(data, Outcome) else opened.answered(data)


def _kind_of(exc: BaseException) -> str:
    """`connect`, `tls`, `dns` or `protocol`, from the exception and what caused it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return "tls"
        if isinstance(seen, OSError) and "getaddrinfo" in str(seen).lower():
            return "dns"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx2.ConnectError | OSError):
        return "connect"
    return "protocol"


def _peer(response: httpx2.Response) -> str | None:
    """The address the connection went to, when the client did the resolving."""
    stream = response.extensions.get("network_stream")
    try:
        address = stream.get_extra_info("server_addr") if stream is not None else None
    except Exception:  # a transport without the information
        return None
    return str(address[0]) if address else None


def _json(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def excerpt_of(data: bytes) -> str | None:
    return data[:EXCERPT_BYTES].decode("utf-8", "replace") if data else None


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
