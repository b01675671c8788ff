"""The process-wide state every request and job shares (built once in the app lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

from agenthub.db import Database
from agenthub.security import SecretBox
from agenthub.settings import Settings


@dataclass
class Hub:
    settings: Settings
    db: Database
    secrets: SecretBox

    @classmethod
    def from_settings(cls, settings: Settings) -> Hub:
        return cls(
            settings=settings,
            db=Database(settings.database_url, settings.db_pool_size),
            secrets=SecretBox(settings.resolved_secret_key()),
        )

    async def close(self) -> None:
        await self.db.dispose()
