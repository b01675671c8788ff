"""OpenTelemetry tracing, switched on by the standard `OTEL_*` variables.

`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set: each serve
process (when it builds its app) and each Celery worker process (at `worker_process_init`: the
batch span processor's thread does not survive a fork) installs the SDK with an OTLP/HTTP
exporter, which reads the other `OTEL_*` variables itself (headers, protocol, sampler via
`OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`…). Requests (FastAPI), SQL (SQLAlchemy), Redis
and Celery tasks are traced by the `opentelemetry-instrumentation-*` packages; agent attempts
and platform sends get spans here, because those packages patch `httpx` and the hub uses
`httpx2`, and the hub's HTTP client then carries a W3C `traceparent` on every outgoing request.

Unset: nothing of the SDK is imported or installed; `span()` and `traced()` are one check of a
module variable. The SDK and instrumentations are the `otel` extra (`agenthub[otel]`): when the
variable is set without them, a warning says so and the hub runs untraced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from agenthub import logs

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from agenthub.hub import Hub

log = logging.getLogger(__name__)
T = TypeVar("T")
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Probes and scrapes: frequent, and of no interest in a trace.
EXCLUDED_URLS = "/healthz,/readyz,/metrics"


class _State:
    provider: TracerProvider | None = None
    tracer: Any = None


def wanted() -> bool:
    """Whether the environment asks for tracing (an OTLP endpoint, and the SDK not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def enabled() -> bool:
    return _State.tracer is not None


def setup(exporter: SpanExporter | None = None) -> bool:
    """Install the SDK in this process, once: with `exporter` (tests: synchronously), else
    when the environment asks for it. Returns whether tracing is on."""
    if _State.provider is not None:
        return True
    if exporter is None and not wanted():
        return False
    try:
        provider = _provider(exporter)
    except ImportError as exc:
        log.warning("OTEL_* is set but tracing is off: install agenthub[otel] (%s)", exc)
        return False
    from opentelemetry import trace

    trace.set_tracer_provider(provider)  # the global one: instrumentations default to it
    _State.provider = provider
    _State.tracer = provider.get_tracer("agenthub")
    _instrument_libraries(provider)
    logs.set_trace_id_source(current_trace_id)
    return True


def _provider(exporter: SpanExporter | None) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` override this default.
    provider = TracerProvider(resource=Resource.create({"service.name": "agenthub"}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _instrument_libraries(provider: TracerProvider) -> None:
    """Redis (class-level patches) and Celery (its signals: publish in serve, run in workers)."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]


def shutdown() -> None:
    """Flush the spans and switch tracing off in this process (tests; process exit)."""
    provider = _State.provider
    if provider is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().uninstrument()
    CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    logs.set_trace_id_source(None)
    _State.provider, _State.tracer = None, None
    provider.shutdown()


def instrument_app(app: FastAPI) -> None:
    """Server spans for every request of `app` (when tracing is on)."""
    if _State.provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_State.provider, excluded_urls=EXCLUDED_URLS
    )


def instrument_hub(hub: Hub) -> None:
    """Spans for the hub's SQL, and `traceparent` on its outgoing HTTP requests."""
    if _State.provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    # Per engine, not `SQLAlchemyInstrumentor().instrument()`: that patches engine creation
    # once per process, after the hub's modules already hold `create_async_engine`.
    usage = get_meter("agenthub").create_up_down_counter("db.client.connections.usage")
    for engine in hub.db.engines:
        EngineTracer(_State.tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]
    hub.http.event_hooks["request"].append(_inject_traceparent)


async def _inject_traceparent(request: Any) -> None:
    if _State.tracer is not None:
        from opentelemetry.propagate import inject

        inject(request.headers)


def current_trace_id() -> str | None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def span(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """A client span around the block (a no-op context when tracing is off)."""
    if _State.tracer is None:
        return nullcontext(None)
    return _client_span(name, attributes)


@contextmanager
def _client_span(name: str, attributes: Mapping[str, Any] | None) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind

    with _State.tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=dict(attributes or {})
    ) as current:
        yield current


async def traced(awaitable: Awaitable[T], name: str, **attributes: Any) -> T:
    """`await awaitable` inside a client span (an exception is recorded on it)."""
    with span(name, attributes):
        return await awaitable


def set_attributes(current: Any, **attributes: Any) -> None:
    """Set the attributes that are not None on the span from `span()` (None when off)."""
    if current is not None:
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def mark_failed(current: Any, description: str) -> None:
    """Give the span from `span()` an error status (for outcomes that do not raise)."""
    if current is not None:
        from opentelemetry.trace import Status, StatusCode

        current.set_status(Status(StatusCode.ERROR, description))
