"""What the load test points at: the running stack (`make stack`) and its baselines, which are
the same code started by `scripts.stack` with other settings (STACK_VARIANT), beside it.

    stack    nginx → HAProxy's line → K uvicorn workers → PgBouncer (transaction mode, 20 server
             conns) → PostgreSQL
    nocache  the stack with its Redis read cache switched off (CACHE_ENABLED=false)
    direct   nginx → HAProxy's line → K uvicorn workers → PostgreSQL, naive pools: 20 + 30
             overflow per worker
    single   one uvicorn process, clients straight to it (no nginx) → PgBouncer → PostgreSQL
"""

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from bench.lib.paths import ROOT
from scripts.stack.config import StackConfig

DEFAULT_STACK_DIR = ROOT / ".stack"


@dataclass(frozen=True)
class Architecture:
    key: str
    label: str
    description: str
    # Environment for `python -m scripts.stack` (beside the stack's own), None for the stack.
    variant_env: Mapping[str, str] | None = None
    nginx: bool = True


STACK = Architecture(
    "stack",
    "stack (nginx + PgBouncer)",
    "nginx → HAProxy's line (STACK_ADMISSION's default) → K uvicorn workers (pool per "
    "`deploy/stack/README.md`) → PgBouncer "
    "(transaction mode, ≤ 20 server connections) → PostgreSQL",
)
NOCACHE = Architecture(
    "nocache",
    "stack, cache off",
    "the stack with CACHE_ENABLED=false: Redis stays, every read goes to PostgreSQL",
    {"CACHE_ENABLED": "false"},
)
DIRECT = Architecture(
    "direct",
    "naive pools, no PgBouncer",
    "nginx → HAProxy's line → K uvicorn workers → PostgreSQL directly, DB_POOL_SIZE=20 + "
    "DB_MAX_OVERFLOW=30 per worker",
    {"STACK_API_DATABASE": "direct", "DB_POOL_SIZE": "20", "DB_MAX_OVERFLOW": "30"},
)
SINGLE = Architecture(
    "single",
    "one process, no nginx",
    "clients → one uvicorn process (no nginx; pool by the same sizing rule with K = 1) → "
    "PgBouncer → PostgreSQL",
    # No nginx, so no HAProxy line either: the API's own line, as under nginx's rule.
    {"STACK_ADMISSION": "nginx", "STACK_WORKERS": "1"},
    nginx=False,
)
# bench.overload's "count rule": admission as it was before the waiting line (MAX_QUEUED=0:
# 503 as soon as MAX_IN_FLIGHT are busy; nginx passes at most 64 per worker, 2 workers here).
COUNT = Architecture(
    "count",
    "stack, count rule",
    "the stack with MAX_IN_FLIGHT=256, MAX_QUEUED=0 and nginx max_conns 128 (2 workers x 64): "
    "refused at once beyond a fixed count, as before admission by waiting time",
    {
        "STACK_ADMISSION": "nginx",
        "MAX_IN_FLIGHT": "256",
        "MAX_QUEUED": "0",
        "STACK_UPSTREAM_MAX_CONNS": "128",
    },
)
# The stack as it was before the cache hierarchy and admission by waiting time: Redis the
# only cache tier (no L1, no nginx micro-cache) and the count rule. The same code, configured
# back: what issue 19's and 18's figures are compared with.
BEFORE = Architecture(
    "before",
    "stack, Redis cache only, count rule",
    "the stack with CACHE_LOCAL_BYTES=0 (no in-process tier), STACK_MICROCACHE=0 (no nginx "
    "micro-cache), MAX_IN_FLIGHT=256, MAX_QUEUED=0 and nginx max_conns 128 (the count rule)",
    {
        "STACK_ADMISSION": "nginx",
        "CACHE_LOCAL_BYTES": "0",
        "STACK_MICROCACHE": "0",
        "MAX_IN_FLIGHT": "256",
        "MAX_QUEUED": "0",
        "STACK_UPSTREAM_MAX_CONNS": "128",
    },
)
# "haproxy" (bench.overload; bench.loadtest's storm): the lines in front of the API held by
# HAProxy (C) instead of the API's event loops, one for reads and one for writes, each
# bounded by what the API serves of its class within half the budget at its measured rate,
# or by nginx's count rule until measured (scripts/stack/haproxy.py); nginx passes every
# miss on.
HAPROXY = Architecture(
    "haproxy",
    "stack, HAProxy's line",
    "the stack with STACK_ADMISSION=haproxy: nginx → HAProxy (a line for reads, K x "
    "MAX_IN_FLIGHT at the API at once, and one for writes, the server pool's worth; refused "
    "at once when a line exceeds what the API serves of its class in half the budget at its "
    "measured throughput, or nginx's count rule until measured; timeout queue 0.8 x budget) "
    "→ API",
    {"STACK_ADMISSION": "haproxy"},
)
# "nginx": admission as `make stack` did it before HAProxy's line, and as `make cluster` still
# does: nginx passes at most K x (MAX_IN_FLIGHT + MAX_QUEUED), the API keeps its own line.
NGINX = Architecture(
    "nginx",
    "stack, nginx's count",
    "the stack with STACK_ADMISSION=nginx: nginx max_conns K x (MAX_IN_FLIGHT + MAX_QUEUED), "
    "503 at once beyond; the API's own line by waiting time",
    {"STACK_ADMISSION": "nginx"},
)
ARCHITECTURES = {a.key: a for a in (STACK, NOCACHE, DIRECT, SINGLE, COUNT, BEFORE, HAPROXY, NGINX)}
# bench.overload's "shedding off" (not one of make bench's baselines): no admission control,
# the request deadline and the rest of the stack as they are.
NOSHED = Architecture(
    "noshed",
    "stack, shedding off",
    "the stack with MAX_IN_FLIGHT=1000000 and no nginx max_conns: no 503 at admission; "
    "REQUEST_DEADLINE_S stays",
    {"STACK_ADMISSION": "nginx", "MAX_IN_FLIGHT": "1000000", "STACK_UPSTREAM_MAX_CONNS": "0"},
)


def deeper_line(max_queued: int) -> Architecture:
    """bench.overload's `queued<N>`: the stack with a waiting line of `max_queued` per worker,
    everything else as it is; nginx's max_conns follows from the stack's rule (K x
    (MAX_IN_FLIGHT + MAX_QUEUED), scripts/stack/config.py)."""
    return Architecture(
        f"queued{max_queued}",
        f"stack, line of {max_queued:,}",
        f"the stack with MAX_QUEUED={max_queued} (MAX_IN_FLIGHT as it is) and nginx max_conns "
        "by the stack's rule, workers x (MAX_IN_FLIGHT + MAX_QUEUED)",
        {"STACK_ADMISSION": "nginx", "MAX_QUEUED": str(max_queued)},
    )


# bench.onoff's "observability off" (not one of make bench's baselines either): no /metrics,
# no HTTP metrics, no access log lines, no traces whatever the environment says.
NOOBS = Architecture(
    "noobs",
    "stack, observability off",
    "the stack with METRICS_ENABLED=false ACCESS_LOG=false and no OTEL_EXPORTER_OTLP_ENDPOINT",
    {"METRICS_ENABLED": "false", "ACCESS_LOG": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
)


@dataclass(frozen=True)
class Stack:
    """A running `make stack`, known from its state directory and stack.env."""

    dir: Path
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def load(cls, directory: Path) -> "Stack":
        path = directory / "stack.env"
        if not path.exists():
            raise SystemExit(f"{path} not found: start the stack first (make stack)")
        lines = path.read_text().splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line)
        return cls(directory, env)

    @property
    def api_url(self) -> str:
        return self.env["API_URL"]

    @property
    def workers(self) -> int:
        return int(self.env.get("API_WORKERS", "2"))

    def pid(self, relative: str) -> int | None:
        """The pid in one of the stack's pid files, if that process is alive."""
        try:
            pid = int((self.dir / relative).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def data_tier_roots(self) -> dict[str, Callable[[], int | None]]:
        """ "Redis" is the read cache's instance (REDIS_CACHE_URL, redis-cache/) where the stack
        has one, "Redis queue" the other (jobs, rate limits); one instance: "Redis" only."""
        roots: dict[str, Callable[[], int | None]] = {
            "PgBouncer": lambda: self.pid("pgbouncer/pgbouncer.pid"),
            "PostgreSQL": lambda: self.pid("postgres/data/postmaster.pid"),
        }
        if self.cache_redis_url == self.env["REDIS_URL"]:
            return roots | {"Redis": lambda: self.pid("redis/redis.pid")}
        return roots | {
            "Redis": lambda: self.pid("redis-cache/redis.pid"),
            "Redis queue": lambda: self.pid("redis/redis.pid"),
        }

    @property
    def cache_redis_url(self) -> str:
        """The Redis the API's read cache uses (app/redis.py)."""
        return self.env.get("REDIS_CACHE_URL") or self.env["REDIS_URL"]

    def scripts_env(self) -> dict[str, str]:
        """STACK_* settings that point `scripts.stack` at this stack's data tier."""
        pgbouncer = urlsplit(self.env["DATABASE_URL"]).port
        postgres = urlsplit(self.env["DIRECT_DATABASE_URL"]).port
        redis = urlsplit(self.env["REDIS_URL"]).port
        redis_cache = urlsplit(self.env.get("REDIS_CACHE_URL") or self.env["REDIS_URL"]).port
        return {
            "STACK_DIR": str(self.dir),
            "STACK_PGBOUNCER_PORT": str(pgbouncer),
            "STACK_POSTGRES_PORT": str(postgres),
            "STACK_REDIS_PORT": str(redis),
            "STACK_REDIS_CACHE_PORT": str(redis_cache),
            "STACK_WORKERS": str(self.workers),
            "STACK_PGBOUNCER_POOL_SIZE": self.env.get("PGBOUNCER_POOL_SIZE", "20"),
        }


@dataclass(frozen=True)
class Target:
    """One architecture, running: where clients connect and which processes are its own."""

    architecture: Architecture
    base_url: str  # without /api
    roots: Mapping[str, Callable[[], int | None]]
    access_log: Path | None = None  # nginx's, when clients go through one


def reconnect_pgbouncer(stack: Stack) -> None:
    """Close PgBouncer's idle server connections, so a baseline starts with PostgreSQL's
    connection slots free (they hold up to 20 for 60 s after the last use)."""
    try:
        with psycopg.connect(
            stack.env["PGBOUNCER_ADMIN_URL"], autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as conn:
            conn.execute("RECONNECT")
    except psycopg.Error as exc:
        print(f"  (PgBouncer RECONNECT failed: {exc})", flush=True)


def cmdline(pid: int | None) -> list[str]:
    if pid is None:
        return []
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def api_port(target: Target) -> int:
    """The port uvicorn itself listens on (nginx does not pass /metrics on)."""
    args = cmdline(target.roots["API"]())
    return int(args[args.index("--port") + 1])


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nobody listened on a moment ago (all bound at once, so no two
    are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _scripts_stack(env: Mapping[str, str], *args: str) -> None:
    run = subprocess.run(  # noqa: S603 - our own launcher
        [sys.executable, "-m", "scripts.stack", *args],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "DB_"))}
        | dict(env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"scripts.stack {' '.join(args)} failed:\n{run.stdout}{run.stderr}")


@contextmanager
def running(stack: Stack, architecture: Architecture) -> Iterator[Target]:
    """The stack itself, or a baseline started beside it for the duration of the block."""
    data = stack.data_tier_roots()
    if architecture.variant_env is None:
        base = stack.api_url.removesuffix("/api")
        roots = {
            "nginx": lambda: stack.pid("nginx/nginx.pid"),
            "API": lambda: stack.pid("api/api.pid"),
            "HAProxy": lambda: stack.pid("haproxy/haproxy.pid"),  # STACK_ADMISSION=haproxy
        }
        yield Target(architecture, base, roots | data, stack.dir / "nginx" / "access.log")
        return
    http, https, api, haproxy = free_ports(4)
    env = stack.scripts_env() | dict(architecture.variant_env)
    env |= {
        "STACK_VARIANT": architecture.key,
        "STACK_HTTP_PORT": str(http),
        "STACK_HTTPS_PORT": str(https),
        "STACK_API_PORT": str(api),
        "STACK_HAPROXY_PORT": str(haproxy),
    }
    # HAProxy's line sits between nginx and the API: only a variant with nginx has one.
    queue = architecture.nginx and StackConfig.from_env(env).admission == "haproxy"
    components = [
        "api",
        *(["haproxy"] if queue else []),
        *(["nginx"] if architecture.nginx else []),
    ]
    variant = f"variants/{architecture.key}"
    _scripts_stack(env, "down")  # left over from an interrupted run
    try:
        _scripts_stack(env, "up", *components)
        roots = {"API": lambda: stack.pid(f"{variant}/api/api.pid")}
        if queue:
            roots |= {"HAProxy": lambda: stack.pid(f"{variant}/haproxy/haproxy.pid")}
        if architecture.nginx:
            roots = {"nginx": lambda: stack.pid(f"{variant}/nginx/nginx.pid")} | roots
        base = f"http://127.0.0.1:{http if architecture.nginx else api}"
        log = stack.dir / variant / "nginx" / "access.log" if architecture.nginx else None
        yield Target(architecture, base, roots | data, log)
    finally:
        _scripts_stack(env, "down")
