"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from agenthub.deps import HubDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(hub: HubDep) -> Health | JSONResponse:
    """The database (and Redis, when configured) answers: ready for traffic."""
    checks: dict[str, str] = {}
    try:
        async with hub.db.session(read_only=True) as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if hub.settings.redis_url:
        ping = getattr(hub.events, "ping", None)
        checks["redis"] = "ok" if ping is not None and await ping() else "error: unreachable"
    ready = all(value == "ok" for value in checks.values())
    result = Health(status="ok" if ready else "unavailable", checks=checks)
    return result if ready else JSONResponse(result.model_dump(), status_code=503)
