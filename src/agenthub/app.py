"""The ASGI application: routers, error handlers and the lifespan that owns shared state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.staticfiles import StaticFiles

from agenthub import __version__
from agenthub.callbacks import describe_callbacks
from agenthub.console.web import ConsoleHeadersMiddleware
from agenthub.errors import install_error_handlers
from agenthub.health import router as health_router
from agenthub.hub import Hub
from agenthub.limits import BodySizeLimitMiddleware
from agenthub.logs import RequestIdMiddleware, install_redaction
from agenthub.openapi_errors import declare_error_responses
from agenthub.realtime.frames import RawSendMiddleware
from agenthub.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    from agenthub import metrics, tracing
    from agenthub.mcp_route import LazyMCPEndpoint

    settings = settings or get_settings()
    mcp = LazyMCPEndpoint()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Also when the app is hosted another way than `agenthub serve` (uvicorn's CLI).
        install_redaction()
        hub = Hub.from_settings(settings)
        app.state.hub = hub
        tracing.instrument_hub(hub)
        await start_runtime(hub)
        hub.settle_memory()
        try:
            async with mcp.lifespan():
                yield
        finally:
            await hub.close()
            metrics.process_exit()

    # The API docs (/docs, /redoc) load Swagger UI and ReDoc from files in the installed
    # package, not from a CDN, so they work offline and under a strict CSP.
    app = FastAPIOffline(
        title="Agent Hub",
        version=__version__,
        description="Connects messaging platforms (WhatsApp, Telegram, web chat) to AI agents.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(ConsoleHeadersMiddleware)
    # Outermost: the request id covers every log line of the request, uvicorn's access line too.
    app.add_middleware(RequestIdMiddleware)
    # Around everything: WebSockets keep the server's own `send` for the event fan-out.
    app.add_middleware(RawSendMiddleware)
    # OTEL_EXPORTER_OTLP_ENDPOINT set: the SDK, once per process (uvicorn's workers build
    # their own app); else nothing is imported.
    if tracing.setup():
        tracing.instrument_app(app)
    install_error_handlers(app)
    _include_routers(app)
    app.router.routes.append(mcp.route)  # `POST /mcp`, outside the OpenAPI schema
    declare_error_responses(app)
    describe_callbacks(app)
    return app


async def start_runtime(hub: Hub) -> None:
    """Default mode: events and jobs in this process, resuming whatever a previous run left.
    With Redis: the Redis event bus, and wake-ups sent to the Celery workers."""
    if hub.settings.redis_url:
        await _use_redis_runtime(hub, worker=False)
        return
    from agenthub.delivery.engine import release_leases, run_due_work
    from agenthub.runtime.jobs import InProcessJobRunner

    await hub.events.start()
    await hub.presence.start()
    await release_leases(hub)
    hub.jobs = InProcessJobRunner(
        lambda now: run_due_work(hub, now), sweep_seconds=hub.settings.job_sweep_seconds
    )
    await hub.jobs.start()


async def _use_redis_runtime(hub: Hub, *, worker: bool) -> None:
    from agenthub.runtime.celery_jobs import CeleryJobRunner, WorkerJobRunner, create_celery
    from agenthub.runtime.presence import RedisPresence
    from agenthub.runtime.redis_events import RedisStreamEventBus

    settings = hub.settings
    assert settings.redis_url
    bus = RedisStreamEventBus(settings.redis_url, buffer_size=settings.events_buffer_size)
    hub.events = bus
    if not worker:  # workers only publish; serve processes also read for their WebSockets
        await hub.events.start()
        # Shared by every serve process, each sweeping lapsed entries (workers have no sockets).
        hub.presence = RedisPresence(
            bus, settings.presence_viewing_seconds, settings.presence_typing_seconds
        )
        await hub.presence.start()
    celery = create_celery(settings)
    hub.jobs = WorkerJobRunner(celery, settings) if worker else CeleryJobRunner(celery, settings)
    await hub.jobs.start()


async def build_production_hub(settings: Settings, *, worker: bool) -> Hub:
    """The Hub of a Celery worker process (Redis events, inline wake-ups)."""
    hub = Hub.from_settings(settings)
    await _use_redis_runtime(hub, worker=worker)
    return hub


def _include_routers(app: FastAPI) -> None:
    from agenthub.agents.router import router as agents_router
    from agenthub.audit.router import router as audit_router
    from agenthub.auth.router import router as auth_router
    from agenthub.channels.router import router as channels_router
    from agenthub.chats.router import router as chats_router
    from agenthub.chats.typing import router as typing_router
    from agenthub.console.actions import router as console_actions_router
    from agenthub.console.admin import router as console_admin_router
    from agenthub.console.pages import router as console_pages_router
    from agenthub.console.web import STATIC_DIR as CONSOLE_STATIC
    from agenthub.delivery.router import router as deliveries_router
    from agenthub.metrics import router as metrics_router
    from agenthub.operators.canned.router import router as canned_router
    from agenthub.operators.router import router as operators_router
    from agenthub.realtime.router import router as realtime_router
    from agenthub.transports.a2a_push import router as a2a_push_router
    from agenthub.webhooks.router import router as webhooks_router

    # Webhooks first: the busiest routes, and Starlette tries routes in order.
    app.include_router(webhooks_router)
    app.include_router(health_router)
    app.include_router(auth_router)
    app.include_router(agents_router)
    app.include_router(canned_router)
    app.include_router(channels_router)
    app.include_router(chats_router)
    app.include_router(typing_router)
    app.include_router(deliveries_router)
    app.include_router(audit_router)
    app.include_router(operators_router)
    app.include_router(realtime_router)
    app.include_router(metrics_router)  # `GET /metrics`, outside the OpenAPI schema
    app.include_router(a2a_push_router, include_in_schema=False)  # A2A push notifications
    # The operator console: HTML pages and their static files, left out of the OpenAPI schema.
    app.include_router(console_pages_router, include_in_schema=False)
    app.include_router(console_actions_router, include_in_schema=False)
    app.include_router(console_admin_router, include_in_schema=False)
    app.mount("/console/static", StaticFiles(directory=CONSOLE_STATIC), name="console-static")
