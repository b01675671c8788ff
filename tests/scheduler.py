"""A Hub with no job runner and a clock the test moves: the test is the scheduler.

For the property tests that drive the real handlers (`create_due_deliveries`,
`claim_due_attempts`, `record_outcome`, …) step by step, with nothing sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from agenthub.hub import Hub
from agenthub.settings import Settings
from tests.conftest import _empty_tables

BASE = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = BASE

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def scheduler_hub(settings: Settings, **overrides: Any) -> AsyncIterator[Hub]:
    """A Hub on the test's database whose clock is a `FakeClock` (message timestamps, and so
    the buffer's arrival times, come from it too); its tables are emptied afterwards."""
    hub = Hub.from_settings(settings.model_copy(update=overrides))
    hub.clock = FakeClock()
    await hub.events.start()
    try:
        yield hub
    finally:
        await _empty_tables(hub)
        await hub.close()
