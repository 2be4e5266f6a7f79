"""Settings, from environment variables only (documented in docs/OPERATIONS.md)."""

from functools import cached_property
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import jwt_secret


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


class Settings(BaseSettings):
    # hide_input_in_errors: a refused JWT_SECRET or URL must not reach the logs.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    database_url: str = "postgresql://postgres@127.0.0.1:5432/conduit"
    # Shared cache and job queue; unset, the API runs without Redis.
    redis_url: str | None = None
    redis_timeout_s: float = Field(default=0.25, gt=0)
    # The shared read cache in Redis (docs/ARCHITECTURE.md "Cache"); off, every read goes to PostgreSQL.
    cache_enabled: bool = True
    # Per-minute limits in Redis (429 + Retry-After); 0 = off. Off by default because the
    # load tests send every user from 127.0.0.1; the deployment manifests turn them on.
    rate_limit_auth_per_minute: int = Field(default=0, ge=0)
    rate_limit_writes_per_minute: int = Field(default=0, ge=0)
    # Overload (docs/ARCHITECTURE.md "Overload"): each request's time budget (then 504); how
    # many requests one process works on at once; and how many more may wait for a turn, each
    # only if the wait the process predicts fits its budget (else 503 + Retry-After at once).
    # MAX_QUEUED=0: no waiting at all, 503 as soon as MAX_IN_FLIGHT are busy.
    request_deadline_s: float = Field(default=5.0, gt=0)
    max_in_flight: int = Field(default=32, ge=1)
    max_queued: int = Field(default=256, ge=0)
    # Migrations and DDL bypass PgBouncer; defaults to DATABASE_URL.
    direct_database_url: str | None = None
    # Connections per API process: the public reads' own pool (app/driver_pool.py) and the
    # ORM's, which takes DB_WRITE_POOL_SIZE of them (default: a quarter, at least one) and
    # DB_MAX_OVERFLOW beyond. A process without public reads (the job worker) gives the ORM all.
    db_pool_size: int = Field(default=10, ge=1)
    db_write_pool_size: int | None = Field(default=None, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    # Server-side prepared statements save PostgreSQL the planning of hot queries, but only
    # on direct connections: PgBouncer 1.18 in transaction mode cannot route them.
    db_prepared_statements: bool = False
    idempotency_retention_s: int = Field(default=24 * 3600, gt=0)

    # The one switch for development mode (docs/SECURITY.md): APP_ENV=development. Only
    # there may JWT_SECRET be left unset: a random one is then kept in $DATA_DIR/jwt_secret.
    app_env: Literal["development", "production"] = "production"
    # Unset (""), the API refuses to start (app/jwt_secret.py); a published, placeholder or
    # short value is refused in every mode.
    jwt_secret: str = ""
    jwt_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    password_hash_threads: int = Field(default=4, ge=1)

    cors_origins: list[str] = ["*"]
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    log_level: str = "INFO"

    # Observability (docs/ARCHITECTURE.md "Observability"): /metrics and one JSON log line per request.
    metrics_enabled: bool = True
    access_log: bool = True
    # Traces are exported over OTLP/HTTP only when an endpoint is set (e.g. http://otel:4318).
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "conduit-api"

    # Background jobs (docs/ARCHITECTURE.md "Background jobs"): the SAQ worker, imports, webhooks.
    queue_name: str = "conduit"
    worker_concurrency: int = Field(default=10, ge=1)
    # A job whose worker stops touching it for this long (killed) is retried elsewhere.
    job_heartbeat_s: int = Field(default=30, ge=1)
    worker_sweep_s: int = Field(default=10, ge=1)
    # Periodic relay of outbox events, due deliveries and stalled imports (Redis lost them).
    relay_interval_s: int = Field(default=10, ge=1, le=59)
    # The list counters against count(*) (docs/DATA.md "Periodic check"): a cron line (UTC)
    # for the worker's check_counts job; "" turns it off. It reads every row of articles and
    # favorites, so daily, not every minute.
    counts_check_cron: str = "17 4 * * *"
    worker_metrics_port: int | None = None
    # Where the worker's metrics listen: loopback unless a scraper must reach them (k8s).
    worker_metrics_host: str = "127.0.0.1"
    import_max_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    import_max_lines: int = Field(default=100_000, gt=0)
    import_batch_lines: int = Field(default=1000, ge=1)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_base_s: float = Field(default=2.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    # CIDRs that webhooks may target although private or loopback (e.g. ["127.0.0.1/32"]), on
    # any port; other targets only on these ports (app/webhooks/targets.py).
    webhook_allowed_networks: list[str] = []
    webhook_allowed_ports: list[int] = [80, 443, 8080, 8443]

    # Login attempts per account (the email in the body) per minute, beside the per-address
    # RATE_LIMIT_AUTH_PER_MINUTE: spreading attempts over many addresses gains nothing. 0 = off.
    rate_limit_login_per_account_per_minute: int = Field(default=0, ge=0)
    # Request line and headers together; beyond it 431 (httptools, the server's HTTP parser,
    # has no limit of its own; nginx refuses far less in front of it).
    max_header_bytes: int = Field(default=16_384, gt=0)
    # Bulk imports are paced, not timed: each piece of a streamed upload must arrive within
    # this many seconds of the one before (then 408), however long the whole upload takes.
    import_chunk_idle_s: float = Field(default=30.0, gt=0)
    # Uploads at once per process; each holds a pooled connection while it streams, so keep
    # it well below DB_POOL_SIZE. Beyond it 503 + Retry-After (one per user: 429).
    import_max_concurrent: int = Field(default=4, ge=1)
    # The read cache's own Redis (docs/OPERATIONS.md): unset, the cache shares REDIS_URL.
    # Point it at an instance with `maxmemory-policy volatile-lru` (entries and leases expire;
    # versions and the invalidation sequence must not be evicted), and keep REDIS_URL (job
    # queue, rate limits) on one with `noeviction`: a full cache then evicts cache entries,
    # never queued jobs or counters.
    redis_cache_url: str | None = None
    # The in-process tier in front of the shared cache, per worker (docs/ARCHITECTURE.md
    # "Cache"): bytes of documents kept; 0 turns it off.
    cache_local_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    # Streaming replicas for public reads (docs/ARCHITECTURE.md "Replicas"): a JSON list of
    # URLs, each through a PgBouncer of its own; empty, every read goes to DATABASE_URL. A
    # replica further behind than REPLICA_MAX_LAG_S, or down, serves nothing until it is
    # back; each API process polls every replica's replayed position every REPLICA_POLL_S.
    database_replica_urls: list[str] = []
    replica_max_lag_s: float = Field(default=2.0, gt=0, le=60)
    replica_poll_s: float = Field(default=0.1, gt=0, le=5)

    @field_validator("database_replica_urls")
    @classmethod
    def _normalise_replicas(cls, urls: list[str]) -> list[str]:
        return [async_url(url) for url in urls]

    @field_validator("database_url", "direct_database_url")
    @classmethod
    def _normalise(cls, url: str | None) -> str | None:
        return None if url is None else async_url(url)

    @model_validator(mode="after")
    def _no_published_secret(self) -> Self:
        if not self.jwt_secret and self.app_env == "development":
            path = jwt_secret.data_dir() / "jwt_secret"
            try:
                generated = jwt_secret.load_or_create(path)
            except OSError as exc:
                raise ValueError(
                    f"APP_ENV=development keeps a generated JWT secret in {path}, which "
                    f"failed ({exc}); set DATA_DIR to a writable directory or set JWT_SECRET"
                ) from exc
            object.__setattr__(self, "jwt_secret", generated)  # frozen: set once, here
        if self.jwt_secret and (reason := jwt_secret.problem(self.jwt_secret)):
            raise ValueError(f"JWT_SECRET {reason}")
        return self

    @property
    def write_pool_size(self) -> int:
        return pool_split(self.db_pool_size, self.db_write_pool_size)[1]

    @property
    def read_pool_size(self) -> int:
        return pool_split(self.db_pool_size, self.db_write_pool_size)[0]

    @cached_property
    def migration_url(self) -> str:
        return self.direct_database_url or self.database_url


def pool_split(size: int, writes: int | None = None) -> tuple[int, int]:
    """(reads, writes): an API process's DB_POOL_SIZE connections between the public reads'
    pool and the ORM's, `writes` (DB_WRITE_POOL_SIZE) or a quarter for the ORM, at least one
    each."""
    writes = writes or max(1, size // 4)
    return max(1, size - writes), writes
