"""Settings, from environment variables only (documented in the README)."""

from functools import cached_property
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def async_url(url: str) -> str:
    """Point a plain `postgresql://` URL at the project's one async driver (psycopg 3)."""
    for prefix in (
        "postgresql+psycopg://",
        "postgresql+asyncpg://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


DEV_JWT_SECRET = "change-me-in-production-please-32b"  # noqa: S105 - development only


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/conduit"
    # Shared cache and job queue; unset, the API runs without Redis.
    redis_url: str | None = None
    redis_timeout_s: float = Field(default=0.25, gt=0)
    # The shared read cache in Redis (README "Cache"); off, every read goes to PostgreSQL.
    cache_enabled: bool = True
    # Per-minute limits in Redis (429 + Retry-After); 0 = off. Off by default because the
    # load tests send every user from 127.0.0.1; the deployment manifests turn them on.
    rate_limit_auth_per_minute: int = Field(default=0, ge=0)
    rate_limit_writes_per_minute: int = Field(default=0, ge=0)
    # Overload: each request's time budget (then 504), and how many requests one process
    # takes at once before it answers 503 + Retry-After instead of queueing (README).
    request_deadline_s: float = Field(default=5.0, gt=0)
    max_in_flight: int = Field(default=256, ge=1)
    # Migrations and DDL bypass PgBouncer; defaults to DATABASE_URL.
    direct_database_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    # Server-side prepared statements save PostgreSQL the planning of hot queries, but only
    # on direct connections: PgBouncer 1.18 in transaction mode cannot route them.
    db_prepared_statements: bool = False
    idempotency_retention_s: int = Field(default=24 * 3600, gt=0)

    # "production" refuses a placeholder or short JWT_SECRET at start-up.
    app_env: Literal["development", "production"] = "development"
    jwt_secret: str = DEV_JWT_SECRET
    jwt_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    password_hash_threads: int = Field(default=4, ge=1)

    cors_origins: list[str] = ["*"]
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    log_level: str = "INFO"

    # Observability (README "Observability"): /metrics and one JSON log line per request.
    metrics_enabled: bool = True
    access_log: bool = True
    # Traces are exported over OTLP/HTTP only when an endpoint is set (e.g. http://otel:4318).
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "conduit-api"

    # Background jobs (README "Background jobs"): the SAQ worker, imports, webhooks.
    queue_name: str = "conduit"
    worker_concurrency: int = Field(default=10, ge=1)
    # A job whose worker stops touching it for this long (killed) is retried elsewhere.
    job_heartbeat_s: int = Field(default=30, ge=1)
    worker_sweep_s: int = Field(default=10, ge=1)
    # Periodic relay of outbox events, due deliveries and stalled imports (Redis lost them).
    relay_interval_s: int = Field(default=10, ge=1, le=59)
    worker_metrics_port: int | None = None
    import_max_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    import_max_lines: int = Field(default=100_000, gt=0)
    import_batch_lines: int = Field(default=1000, ge=1)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_base_s: float = Field(default=2.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    # CIDRs that webhooks may target although private or loopback (e.g. ["127.0.0.1/32"]).
    webhook_allowed_networks: list[str] = []

    @field_validator("database_url", "direct_database_url")
    @classmethod
    def _normalise(cls, url: str | None) -> str | None:
        return None if url is None else async_url(url)

    @model_validator(mode="after")
    def _real_secret_in_production(self) -> Self:
        placeholder = self.jwt_secret == DEV_JWT_SECRET or "change-me" in self.jwt_secret.lower()
        if self.app_env == "production" and (placeholder or len(self.jwt_secret) < 32):
            raise ValueError(
                "JWT_SECRET must be a real secret of at least 32 characters in production"
            )
        return self

    @cached_property
    def migration_url(self) -> str:
        return self.direct_database_url or self.database_url
