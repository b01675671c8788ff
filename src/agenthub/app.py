"""The ASGI application: routers, error handlers and the lifespan that owns shared state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agenthub import __version__
from agenthub.errors import install_error_handlers
from agenthub.health import router as health_router
from agenthub.hub import Hub
from agenthub.limits import BodySizeLimitMiddleware
from agenthub.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub.from_settings(settings)
        app.state.hub = hub
        await start_runtime(hub)
        try:
            yield
        finally:
            await hub.close()

    app = FastAPI(
        title="Agent Hub",
        version=__version__,
        description="Connects messaging platforms (WhatsApp, Telegram, web chat) to AI agents.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    install_error_handlers(app)
    _include_routers(app)
    return app


async def start_runtime(hub: Hub) -> None:
    """Default mode: events and jobs in this process, resuming whatever a previous run left."""
    from agenthub.delivery.engine import release_leases, run_due_work
    from agenthub.runtime.jobs import InProcessJobRunner

    await hub.events.start()
    await release_leases(hub)
    hub.jobs = InProcessJobRunner(
        lambda now: run_due_work(hub, now), sweep_seconds=hub.settings.job_sweep_seconds
    )
    await hub.jobs.start()


def _include_routers(app: FastAPI) -> None:
    from agenthub.agents.router import router as agents_router
    from agenthub.auth.router import router as auth_router
    from agenthub.channels.router import router as channels_router
    from agenthub.chats.router import router as chats_router
    from agenthub.realtime.router import router as realtime_router
    from agenthub.webhooks.router import router as webhooks_router

    app.include_router(health_router)
    app.include_router(auth_router)
    app.include_router(agents_router)
    app.include_router(channels_router)
    app.include_router(chats_router)
    app.include_router(webhooks_router)
    app.include_router(realtime_router)
