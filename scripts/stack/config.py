"""Stack settings from environment variables, the connection sizing rule, generated secrets."""

import json
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from app import jwt_secret
from app.config import pool_split

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "deploy" / "stack"

# PostgreSQL connections beyond PgBouncer's server pool: superuser_reserved_connections (3),
# migrations, monitoring (pg_stat_activity samplers), an operator's psql.
POSTGRES_HEADROOM = 30
# PgBouncer client slots kept free of the API's pools: admin console, bench, operators.
PGBOUNCER_CLIENT_RESERVE = 100
# What a variant (STACK_VARIANT) runs of its own, beside the stack's data tier.
VARIANT_COMPONENTS = ("api", "haproxy", "nginx")
API_DATABASES = ("pgbouncer", "direct")
# STACK_ADMISSION: where the line in front of the API lives. "haproxy" (the default): HAProxy
# between nginx and the API holds a line for reads and one for writes
# (scripts/stack/haproxy.py); "nginx": nginx passes at most max_conns and refuses the rest at
# once, the API keeps its own line (as `make cluster` does on each host).
ADMISSIONS = ("haproxy", "nginx")


class StackError(Exception):
    """A stack operation failed; the message says what to do about it."""


@dataclass(frozen=True)
class Ports:
    http: int
    https: int
    api: int
    pgbouncer: int
    postgres: int
    redis: int
    prometheus: int = 9090
    exporter: int = 9127
    redis_cache: int = 6381
    haproxy: int = 8002


@dataclass(frozen=True)
class Sizing:
    """Connection budget, documented in deploy/stack/README.md.

    K workers x (DB_POOL_SIZE + DB_MAX_OVERFLOW) client connections to PgBouncer must fit in
    max_client_conn; PgBouncer lends at most `server_pool` PostgreSQL connections (a hard cap:
    max_db_connections); PostgreSQL's max_connections is that pool plus headroom.
    """

    workers: int
    server_pool: int
    max_client_conn: int
    db_pool_size: int
    db_max_overflow: int
    db_pool_timeout: float
    # Admission at nginx: requests proxied to the API at once, all nginx workers together
    # (0: no limit); beyond it nginx answers 503 + Retry-After without queueing anything.
    upstream_max_conns: int = 0
    # uvicorn --backlog: connections nginx opened that no worker has accepted yet.
    api_backlog: int = 4096
    # STACK_ADMISSION=haproxy: reads (GET, HEAD) and writes (every other method) HAProxy lets
    # work at the API at once, each class in its own line; the rest wait in that line.
    haproxy_maxconn: int = 0
    haproxy_write_maxconn: int = 0
    # What nginx's count rule holds (at work and waiting): a class's line holds no more
    # until its own service rate has been measured.
    haproxy_prior: int = 0

    @property
    def api_client_connections(self) -> int:
        return self.workers * (self.db_pool_size + self.db_max_overflow)

    @property
    def postgres_max_connections(self) -> int:
        return self.server_pool + POSTGRES_HEADROOM

    def check(self) -> None:
        limit = self.max_client_conn - PGBOUNCER_CLIENT_RESERVE
        if self.api_client_connections > limit:
            raise StackError(
                f"{self.workers} workers x (DB_POOL_SIZE {self.db_pool_size} + DB_MAX_OVERFLOW "
                f"{self.db_max_overflow}) = {self.api_client_connections} client connections, "
                f"more than PgBouncer's max_client_conn {self.max_client_conn} - "
                f"{PGBOUNCER_CLIENT_RESERVE} reserved; lower them or raise STACK_MAX_CLIENT_CONN"
            )


def default_db_pool_size(server_pool: int, workers: int) -> int:
    """Together the workers offer PgBouncer about twice its server pool: a server connection
    freed by a commit always finds a queued transaction, and each worker's own queue stays short."""
    return max(2, math.ceil(2 * server_pool / workers))


def admission(
    workers: int,
    server_pool: int,
    number: Callable[[str, int], int],
    where: str,
    orm_connections: int,
) -> dict[str, int]:
    """`where` is "nginx": the API decides who waits and who is refused
    (app/middleware/admission.py): it sees the real line and each request's budget. nginx
    passes on what K workers can hold (each MAX_IN_FLIGHT at work + MAX_QUEUED waiting,
    app/config.py's defaults) and answers 503 at once beyond. A request that waited in the
    API's listen backlog has spent that time of its budget: nginx stamps X-Request-Start when
    it hands it on (app/middleware/request_edge.py).

    "haproxy": nginx passes everything on; HAProxy lets K x MAX_IN_FLIGHT reads and at most
    as many writes work at the API at once as there are connections for them, the ORM's pools'
    (`orm_connections`) or the PostgreSQL server pool if smaller (a write holds one for its
    transaction: more would only wait unseen in the API's pool or in PgBouncer) and
    keeps the rest in one line per class (scripts/stack/haproxy.py), so the API's line only
    evens out the kernel's share of connections between its workers, and its listen backlog
    holds no more than HAProxy's few connections."""
    in_flight = number("MAX_IN_FLIGHT", 32)
    count_rule = workers * (in_flight + number("MAX_QUEUED", 256))
    if where == "haproxy":
        reads = number("STACK_HAPROXY_MAXCONN", workers * in_flight)
        return {
            "upstream_max_conns": number("STACK_UPSTREAM_MAX_CONNS", 0),
            "api_backlog": number("STACK_API_BACKLOG", 256),
            "haproxy_maxconn": reads,
            "haproxy_write_maxconn": number(
                "STACK_HAPROXY_WRITE_MAXCONN",
                min(workers * in_flight, server_pool, orm_connections),
            ),
            "haproxy_prior": count_rule,
        }
    max_conns = number("STACK_UPSTREAM_MAX_CONNS", count_rule)
    backlog = min(max(max_conns, 256), 4096) if max_conns else 4096
    return {"upstream_max_conns": max_conns, "api_backlog": number("STACK_API_BACKLOG", backlog)}


@dataclass(frozen=True)
class StackConfig:
    state: Path
    host: str
    ports: Ports
    sizing: Sizing
    max_body_bytes: int
    log_level: str
    graceful_shutdown_s: int
    jwt_secret: str | None  # None: generated once, kept in the state dir (secrets.json, 0600)
    # STACK_VARIANT: a second API (+ nginx) beside the stack, on ports of its own, sharing
    # its PostgreSQL, PgBouncer, Redis and secrets: the bench's baselines, same code.
    variant: str = ""
    # STACK_API_DATABASE: "pgbouncer" (the design) or "direct" (the API connects straight
    # to PostgreSQL, the naive baseline the bench compares against).
    api_database: str = "pgbouncer"
    admission: str = "haproxy"  # STACK_ADMISSION, one of ADMISSIONS
    # REQUEST_DEADLINE_S (app/config.py): HAProxy's queue is bounded by it.
    request_deadline_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "StackConfig":
        env = os.environ if env is None else env

        def number(name: str, default: int) -> int:
            raw = env.get(name, "")
            try:
                return int(raw) if raw else default
            except ValueError as exc:
                raise StackError(f"{name}={raw!r} is not an integer") from exc

        workers = number("STACK_WORKERS", os.cpu_count() or 1)
        where = env.get("STACK_ADMISSION") or "haproxy"
        if where not in ADMISSIONS:
            raise StackError(f"STACK_ADMISSION={where!r}: choose from {ADMISSIONS}")
        server_pool = number("STACK_PGBOUNCER_POOL_SIZE", 20)
        db_pool_size = number("DB_POOL_SIZE", default_db_pool_size(server_pool, workers))
        db_max_overflow = number("DB_MAX_OVERFLOW", 0)
        # Each worker's connections for writes: the ORM's share of its pool (app/config.py).
        _, orm_pool = pool_split(db_pool_size, number("DB_WRITE_POOL_SIZE", 0) or None)
        sizing = Sizing(
            workers=workers,
            server_pool=server_pool,
            max_client_conn=number("STACK_MAX_CLIENT_CONN", 10_000),
            db_pool_size=db_pool_size,
            db_max_overflow=db_max_overflow,
            db_pool_timeout=float(env.get("DB_POOL_TIMEOUT") or 10),
            **admission(
                workers, server_pool, number, where, workers * (orm_pool + db_max_overflow)
            ),
        )
        state = Path(env.get("STACK_DIR") or ROOT / ".stack")
        variant = env.get("STACK_VARIANT", "")
        if variant and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", variant):
            raise StackError(f"STACK_VARIANT={variant!r}: use lower-case letters, digits and -")
        given_secret = env.get("JWT_SECRET") or None
        if given_secret and (reason := jwt_secret.problem(given_secret)):
            # Refused here, not by every API worker in turn while the stack waits for them.
            raise StackError(f"JWT_SECRET {reason}; unset it and the stack generates one")
        api_database = env.get("STACK_API_DATABASE") or "pgbouncer"
        if api_database not in API_DATABASES:
            raise StackError(f"STACK_API_DATABASE={api_database!r}: choose from {API_DATABASES}")
        return cls(
            state=state if state.is_absolute() else ROOT / state,
            host="127.0.0.1",
            ports=Ports(
                http=number("STACK_HTTP_PORT", 8080),
                https=number("STACK_HTTPS_PORT", 8443),
                api=number("STACK_API_PORT", 8001),
                pgbouncer=number("STACK_PGBOUNCER_PORT", 6432),
                postgres=number("STACK_POSTGRES_PORT", 5433),
                redis=number("STACK_REDIS_PORT", 6380),
                prometheus=number("STACK_PROMETHEUS_PORT", 9090),
                exporter=number("STACK_EXPORTER_PORT", 9127),
                redis_cache=number("STACK_REDIS_CACHE_PORT", 6381),
                haproxy=number("STACK_HAPROXY_PORT", 8002),
            ),
            sizing=sizing,
            max_body_bytes=number("MAX_BODY_BYTES", 1_048_576),
            log_level=env.get("LOG_LEVEL") or "INFO",
            graceful_shutdown_s=number("STACK_GRACEFUL_SHUTDOWN_S", 20),
            jwt_secret=given_secret,
            variant=variant,
            api_database=api_database,
            admission=where,
            request_deadline_s=float(env.get("REQUEST_DEADLINE_S") or 5.0),
        )

    def dir(self, component: str) -> Path:
        if self.variant and component in VARIANT_COMPONENTS:
            return self.state / "variants" / self.variant / component
        return self.state / component

    @cached_property
    def secrets(self) -> "Secrets":
        return Secrets.load_or_create(self.state / "secrets.json")

    def postgres_url(self, user: str, password: str, port: int, database: str) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{port}/{database}"

    @property
    def database_url(self) -> str:
        """The API's URL: through PgBouncer, as the app role."""
        return self.postgres_url(APP_ROLE, self.secrets.app, self.ports.pgbouncer, DATABASE)

    @property
    def api_database_url(self) -> str:
        """Where the API's pool connects: PgBouncer, or PostgreSQL itself (a baseline)."""
        if self.api_database == "direct":
            return self.postgres_url(APP_ROLE, self.secrets.app, self.ports.postgres, DATABASE)
        return self.database_url

    @property
    def direct_database_url(self) -> str:
        """Straight to PostgreSQL as the owner role: migrations, DDL, pg_stat_activity."""
        return self.postgres_url(OWNER_ROLE, self.secrets.owner, self.ports.postgres, DATABASE)

    @property
    def superuser_url(self) -> str:
        return self.postgres_url("postgres", self.secrets.postgres, self.ports.postgres, "postgres")

    @property
    def pgbouncer_admin_url(self) -> str:
        return self.postgres_url(
            PGBOUNCER_ADMIN, self.secrets.pgbouncer_admin, self.ports.pgbouncer, "pgbouncer"
        )

    @property
    def redis_url(self) -> str:
        """The job queue and the rate limits: a Redis that never evicts."""
        return f"redis://{self.host}:{self.ports.redis}/0"

    @property
    def redis_cache_url(self) -> str:
        """The read cache (and its invalidation channel): a Redis that may evict (volatile-lru)."""
        return f"redis://{self.host}:{self.ports.redis_cache}/0"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}/api"

    def stack_env(self) -> dict[str, str]:
        """The contents of stack.env: the contract, then the sizing for whoever measures it."""
        return {
            "API_URL": self.api_url,
            "API_URL_HTTPS": f"https://{self.host}:{self.ports.https}/api",
            "DATABASE_URL": self.database_url,
            "DIRECT_DATABASE_URL": self.direct_database_url,
            "PGBOUNCER_ADMIN_URL": self.pgbouncer_admin_url,
            "REDIS_URL": self.redis_url,
            "REDIS_CACHE_URL": self.redis_cache_url,
            "PROMETHEUS_URL": f"http://{self.host}:{self.ports.prometheus}",
            "API_WORKERS": str(self.sizing.workers),
            "PGBOUNCER_POOL_SIZE": str(self.sizing.server_pool),
            "DB_POOL_SIZE": str(self.sizing.db_pool_size),
            "DB_MAX_OVERFLOW": str(self.sizing.db_max_overflow),
        }

    def api_env(self) -> dict[str, str]:
        """Environment variables the API workers read (app/config.py); the job worker too."""
        return {
            "DATABASE_URL": self.api_database_url,
            "DIRECT_DATABASE_URL": self.direct_database_url,
            "REDIS_URL": self.redis_url,
            "REDIS_CACHE_URL": self.redis_cache_url,
            "DB_POOL_SIZE": str(self.sizing.db_pool_size),
            "DB_MAX_OVERFLOW": str(self.sizing.db_max_overflow),
            "DB_POOL_TIMEOUT": str(self.sizing.db_pool_timeout),
            "JWT_SECRET": self.jwt_secret or self.secrets.jwt,
            "LOG_LEVEL": self.log_level,
            "MAX_BODY_BYTES": str(self.max_body_bytes),
        }


DATABASE = "conduit"
APP_ROLE = "conduit"  # DML only, through PgBouncer
OWNER_ROLE = "conduit_owner"  # owns the schema (migrations), member of pg_monitor
PGBOUNCER_ADMIN = "pgbouncer_admin"  # PgBouncer's admin console only, no PostgreSQL role


@dataclass(frozen=True)
class Secrets:
    postgres: str
    owner: str
    app: str
    pgbouncer_admin: str
    jwt: str

    @classmethod
    def load_or_create(cls, path: Path) -> "Secrets":
        if path.exists():
            return cls(**json.loads(path.read_text()))
        made = cls(**{name: secrets.token_urlsafe(24) for name in cls.__dataclass_fields__})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(made.__dict__, file)
        return made


_PLACEHOLDER = re.compile(r"\{\{ *(\w+) *\}\}")


def render(template: str, values: Mapping[str, object]) -> str:
    """`{{ NAME }}` placeholders (nginx's own `$vars` and `${...}` pass through untouched)."""
    text = (TEMPLATES / template).read_text()

    def value(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise StackError(f"deploy/stack/{template}: no value for {{{{ {match[1]} }}}}")
        return str(values[match[1]])

    return _PLACEHOLDER.sub(value, text)
