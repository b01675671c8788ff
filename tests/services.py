"""Access to the real PostgreSQL and Redis on loopback, skipping (or failing) when absent.

`AGENTHUB_TEST_SERVICES=required` (set by .ci/run) turns a missing service into a failure, so CI
can never pass by skipping the PostgreSQL half of the suite.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "AGENTHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("AGENTHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def services_required() -> bool:
    return os.environ.get("AGENTHUB_TEST_SERVICES", "").lower() == "required"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(message + " and AGENTHUB_TEST_SERVICES=required", pytrace=False)
    pytest.skip(message)


def require_postgres() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)


def require_redis() -> None:
    require_service("Redis", "127.0.0.1", 6379)
