"""Prometheus metrics, served at `GET /metrics` (docs/production.md, "Metrics").

Several processes count: each `agenthub serve` process and each Celery worker process. With
`PROMETHEUS_MULTIPROC_DIR` set (by `agenthub serve` at start, and by `agenthub worker` when
`AGENTHUB_METRICS_DIR` is shared with it), every process writes its values to files there, and
a scrape, answered by any serve process, sums the files with a fresh `MultiProcessCollector`.
Without it (the app hosted in one process another way, or the test suite), the default
registry. prometheus-client picks its mode when it is imported, so the variable must be set
before anything imports this module.

No label grows with chats, contacts or messages: platforms, outcomes and transports are short
fixed lists, and the one per-agent gauge only lists unavailable agents. The gauges that describe
the database (due backlog, unavailable agents) are read from it at scrape time, by the process
that answers, so they are never summed across processes.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select

from agenthub.deps import hub_of
from agenthub.hub import Hub
from agenthub.models import (
    Agent,
    AgentDelivery,
    AgentDeliveryStatus,
    OutboundSend,
    OutboundStatus,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

INBOUND = Counter(
    "agenthub_inbound_webhooks",
    "Inbound platform webhooks, by what became of them.",
    ["platform", "outcome"],
)
AGENT_ATTEMPTS = Counter(
    "agenthub_agent_attempts",
    "Delivery attempts to agents, by outcome (retry: another attempt is scheduled).",
    ["transport", "outcome"],
)
AGENT_ATTEMPT_SECONDS = Histogram(
    "agenthub_agent_attempt_duration_seconds",
    "Duration of one delivery attempt to an agent (the POST and reading its answer).",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CONTACT_TO_AGENT_SECONDS = Histogram(
    "agenthub_contact_to_agent_seconds",
    "From a contact message stored (the oldest of a delivery) to the agent's successful answer,"
    " buffer window included.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
OUTBOUND = Counter(
    "agenthub_outbound_sends",
    "Attempts to send a message to a platform, by outcome (retry: another one is scheduled).",
    ["platform", "outcome"],
)
# Each serve process counts its own sockets; a process that exits takes its count with it
# (`mark_process_dead`), so `livesum`.
WEBSOCKET_CLIENTS = Gauge(
    "agenthub_websocket_clients",
    "Open dashboard WebSocket connections.",
    multiprocess_mode="livesum",
)

# The labelled children, cached: `labels()` takes a lock and builds a key on every call, and
# the inbound counter is on the busiest path.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def inbound(platform: str, outcome: str) -> None:
    """One inbound webhook: stored, duplicate, ignored, bad_signature, not_found or invalid."""
    _child(INBOUND, platform, outcome).inc()


def agent_attempt(outcome: str, latency_ms: float, transport: str = "webhook") -> None:
    """One recorded attempt: success, retry or failed."""
    _child(AGENT_ATTEMPTS, transport, outcome).inc()
    AGENT_ATTEMPT_SECONDS.observe(latency_ms / 1000)


def contact_to_agent(first_message_at: datetime | None, now: datetime) -> None:
    """The time from the oldest of a delivery's messages being stored (read with its payload,
    so no query here) to now, its successful answer."""
    if first_message_at is not None:
        CONTACT_TO_AGENT_SECONDS.observe(max(_seconds_between(first_message_at, now), 0.0))


def outbound(platform: str, outcome: str | None) -> None:
    """One platform send: sent, retry or failed (None: its result was dropped, not counted)."""
    if outcome is not None:
        _child(OUTBOUND, platform, outcome).inc()


@contextmanager
def websocket_client() -> Iterator[None]:
    """Counts an open WebSocket for as long as the block runs."""
    WEBSOCKET_CLIENTS.inc()
    try:
        yield
    finally:
        WEBSOCKET_CLIENTS.dec()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


def process_exit() -> None:
    """At a process's shutdown: drop its live gauges (uvicorn and Celery call no hook of
    prometheus-client's when a child exits). Its counters stay, as counters must."""
    directory = multiprocess_dir()
    if directory and os.path.isdir(directory):
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


# --- scrape time: the database gauges and the exposition ---------------------------------


@dataclass
class DatabaseGauges:
    backlog: dict[str, int] = field(default_factory=dict)
    oldest_seconds: dict[str, float] = field(default_factory=dict)
    unavailable_agents: list[str] = field(default_factory=list)


class _DatabaseCollector(Collector):
    def __init__(self, gauges: DatabaseGauges) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[GaugeMetricFamily]:
        backlog = GaugeMetricFamily(
            "agenthub_due_backlog", "Pending work due now and not in flight.", labels=["kind"]
        )
        oldest = GaugeMetricFamily(
            "agenthub_oldest_due_seconds",
            "How long the oldest due, not in flight, work item has been due (0: none).",
            labels=["kind"],
        )
        for kind, count in self._gauges.backlog.items():
            backlog.add_metric([kind], count)
            oldest.add_metric([kind], self._gauges.oldest_seconds.get(kind, 0.0))
        unavailable = GaugeMetricFamily(
            "agenthub_agent_unavailable",
            "1 for each agent whose health state is unavailable.",
            labels=["agent"],
        )
        for agent_id in self._gauges.unavailable_agents:
            unavailable.add_metric([agent_id], 1)
        yield from (backlog, oldest, unavailable)


def _due_query(table: Any, pending: str, now: datetime) -> Any:
    # (status, next_attempt_at) is indexed: an index range, the lease checked on its rows.
    return select(func.count(), func.min(table.next_attempt_at)).where(
        table.status == pending,
        table.next_attempt_at <= now,
        or_(table.locked_until.is_(None), table.locked_until <= now),
    )


async def read_database_gauges(hub: Hub, now: datetime | None = None) -> DatabaseGauges:
    now = now or hub.clock()
    gauges = DatabaseGauges()
    kinds = {
        "delivery": _due_query(AgentDelivery, str(AgentDeliveryStatus.PENDING), now),
        "send": _due_query(OutboundSend, str(OutboundStatus.PENDING), now),
    }
    async with hub.db.session(read_only=True) as session:
        for kind, query in kinds.items():
            count, oldest = (await session.execute(query)).one()
            gauges.backlog[kind] = int(count)
            gauges.oldest_seconds[kind] = (
                max(_seconds_between(oldest, now), 0.0) if oldest is not None else 0.0
            )
        unavailable = await session.scalars(
            select(Agent.id).where(Agent.health_state == "unavailable").order_by(Agent.id)
        )
        gauges.unavailable_agents = list(unavailable)
    return gauges


def render(gauges: DatabaseGauges) -> bytes:
    """The exposition: every process's metrics (or this one's), then the database's."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()  # fresh per scrape, as multiprocess mode requires
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        processes = generate_latest(registry)
    else:
        processes = generate_latest(REGISTRY)
    database = CollectorRegistry()
    database.register(_DatabaseCollector(gauges))
    return processes + generate_latest(database)


def _seconds_between(earlier: datetime, later: datetime) -> float:
    if earlier.tzinfo is None:
        earlier = earlier.replace(tzinfo=UTC)
    return (later - earlier).total_seconds()


def _authorized(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format. With `AGENTHUB_METRICS_TOKEN` set, only for its bearer."""
    hub = hub_of(request)
    token = hub.settings.metrics_token
    if token is not None and not _authorized(request, token.get_secret_value()):
        return Response(
            "Unauthorized\n",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body = render(await read_database_gauges(hub))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
