"""Settings from `AGENTHUB_*` environment variables and a `.env` file."""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from agenthub.logs import LogFormat, LogLevel
from agenthub.security import secret_keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGENTHUB_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # A refused value may be a secret (a malformed AGENTHUB_SECRET_KEY): never echo it.
        hide_input_in_errors=True,
    )

    database_url: str = "sqlite:///./agent_hub.db"
    redis_url: str | None = None
    public_url: str | None = Field(
        default=None, description="URL platforms reach the hub at; defaults to http://<host>:<port>"
    )
    secret_key: SecretStr | None = None
    # When set, `POST /auth/signup` also needs the header `X-Setup-Token` with this value, so
    # that whoever reaches a fresh server first cannot make themselves its admin.
    setup_token: SecretStr | None = None
    allow_private_agent_urls: bool | None = None
    # Level of `serve` (uvicorn and the hub's loggers) and `worker` (Celery). Except at DEBUG,
    # httpx2's line per request and Celery beat's line per sweep are held at WARNING.
    log_level: LogLevel = "INFO"
    host: str = "127.0.0.1"
    port: int = 8000
    user_token_ttl_hours: int = Field(default=24 * 7, ge=1)
    # Login protection (`auth/throttle.py`): this many failed logins for one username, or from
    # one client address, within the window, and further attempts get 429 until it has passed.
    login_max_failures_per_username: int = Field(default=10, ge=1)
    login_max_failures_per_address: int = Field(default=30, ge=1)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    db_pool_size: int = Field(default=10, ge=1)
    # Agent deliveries: attempts in all, and the first retry delay (then x3 per attempt).
    delivery_max_attempts: int = Field(default=6, ge=1, le=50)
    delivery_backoff_base_seconds: float = Field(default=2.0, ge=0)
    # The agent health breaker (delivery/health.py): this many failed attempts in a row, across
    # the agent's chats, make it unavailable; it then gets one probe per `agent_probe_seconds`,
    # and a chat whose delivery has waited longer than the handoff time is flagged for a human.
    agent_failure_threshold: int = Field(default=5, ge=1)
    agent_probe_seconds: float = Field(default=30.0, gt=0)
    agent_unavailable_handoff_seconds: float = Field(default=60.0, ge=0)
    # An agent's answer is read up to this many bytes; a larger one fails the attempt
    # (`too_large`, not retried) without the rest being read.
    agent_max_response_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Attempts keep the excerpt of the agent's answer this long (then it is dropped).
    attempt_retention_days: int = Field(default=30, ge=1)
    # An attempt in flight holds a lease on its delivery this long, renewed every third of it
    # by the process running the attempt (`delivery/leases.py`) until its outcome is recorded.
    # When that process dies mid-delivery, the delivery is retried (same webhook-id) once the
    # lease runs out: within this many seconds of the death, whatever the agent's timeout. A
    # process that cannot renew for a whole lease (its database away, its event loop stalled)
    # may see the attempt made again, never a second recorded reply.
    delivery_lease_seconds: float = Field(default=5.0, ge=0.3)
    outbound_max_attempts: int = Field(default=5, ge=1, le=50)
    # The job runner looks for due work at least this often, whatever it was told.
    job_sweep_seconds: float = Field(default=1.0, gt=0)
    # Production mode (AGENTHUB_REDIS_URL set): the Celery queue and each worker's processes.
    celery_queue: str = "agenthub"
    worker_concurrency: int = Field(default=2, ge=1)
    # Events kept for WebSocket replay (`last_event_id`).
    events_buffer_size: int = Field(default=1000, ge=10)
    # WebSocket presence: how long a `viewing` / `typing` signal counts (runtime/presence.py).
    presence_viewing_seconds: float = Field(default=30, gt=0)
    presence_typing_seconds: float = Field(default=6, gt=0)
    # The Graph API version WhatsApp Cloud channels call (`/{version}/{phone_number_id}/…`).
    whatsapp_graph_version: str = Field(default="v21.0", pattern=r"^v\d+\.\d+$")
    # After startup, move the long-lived objects out of the garbage collector's reach
    # (`Hub.settle_memory`). Off in the test suite, which starts hundreds of hubs in one process
    # and would pay a full collection for each.
    freeze_memory_after_startup: bool = True
    # Observability (docs/production.md, "Metrics, traces and logs").
    # `text` (uvicorn's usual lines) or `json`: one JSON object per line, with `request_id`.
    log_format: LogFormat = "text"
    # Where serve and worker processes keep their metric files (prometheus-client's
    # multiprocess mode). Unset: a new temporary directory per `serve` run, which workers do
    # not see. `serve` empties it at start.
    metrics_dir: str | None = None
    # When set, `GET /metrics` needs `Authorization: Bearer <this>`.
    metrics_token: SecretStr | None = None

    @property
    def delivery_lease(self) -> timedelta:
        return timedelta(seconds=self.delivery_lease_seconds)

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def private_agent_urls_allowed(self) -> bool:
        if self.allow_private_agent_urls is None:
            return self.is_sqlite
        return self.allow_private_agent_urls

    @field_validator("secret_key")
    @classmethod
    def _secret_keys_well_formed(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked at start (a malformed list must not wait for the first secret to decrypt).
        if value is not None:
            secret_keys(value.get_secret_value())
        return value

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def resolved_secret_key(self) -> str:
        """The key that encrypts credentials at rest.

        Without `AGENTHUB_SECRET_KEY`, a key is generated once and kept beside the SQLite file
        (mode 0600), so a laptop install needs no setup and survives restarts.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        key_file = self._secret_key_file()
        if key_file.exists():
            return key_file.read_text().strip()
        key = secrets.token_urlsafe(32)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(key)
        return key

    def _secret_key_file(self) -> Path:
        url = make_url(self.database_url)
        if url.get_backend_name() != "sqlite":
            raise RuntimeError("AGENTHUB_SECRET_KEY must be set when the database is not SQLite")
        database = url.database
        if not database or database == ":memory:":
            return Path(".agenthub-secret-key")
        return Path(f"{database}.secret-key")


@lru_cache
def get_settings() -> Settings:
    return Settings()
