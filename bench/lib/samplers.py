"""What the stack does while it is loaded, sampled from a thread of its own: PostgreSQL's client
backends of the app (pg_stat_activity), PgBouncer's pools (SHOW POOLS), and the lines
PostgreSQL logs meanwhile (too many clients, prepared statements, ...)."""

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.lib.machine import CpuShare
from bench.lib.targets import Stack, Target, api_port
from bench.lib.tiers import Tiers

INTERVAL_S = 0.1
# The app's backends: its role and database, through PgBouncer or straight (a baseline).
BACKENDS = """
SELECT count(*) FILTER (WHERE state = 'active'), count(*)
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND datname = %s AND usename = %s
   AND pid <> pg_backend_pid()
"""
# PostgreSQL log lines worth counting, by what they say.
LOG_PATTERNS = {
    "too many clients": "too many clients",
    "remaining connection slots are reserved": "connection slots reserved",
    "prepared statement": "prepared statement",
    "canceling statement": "statement canceled",
    "deadlock detected": "deadlock",
    "could not serialize": "serialization failure",
}


@dataclass
class Samples:
    backends: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    cl_waiting: list[int] = field(default_factory=list)
    maxwait_ms: list[float] = field(default_factory=list)
    sv_active: list[int] = field(default_factory=list)
    sampler_errors: Counter[str] = field(default_factory=Counter)
    postgres_log: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "pg_samples": len(self.backends),
            "pg_backends_peak": max(self.backends, default=None),
            "pg_active_peak": max(self.active, default=None),
            "pgb_samples": len(self.cl_waiting),
            "pgb_cl_waiting_peak": max(self.cl_waiting, default=None),
            "pgb_maxwait_ms_peak": max(self.maxwait_ms, default=None),
            "pgb_sv_active_peak": max(self.sv_active, default=None),
            "postgres_log": dict(self.postgres_log),
            "sampler_errors": dict(self.sampler_errors),
        }


class Sampler:
    """Every INTERVAL_S until stopped; a failed sample is counted, never fatal (PostgreSQL
    refusing even the sampler is what a collapsing baseline looks like)."""

    def __init__(
        self,
        direct_url: str,
        pgbouncer_admin_url: str | None,
        postgres_log: Path | None,
        *,
        database: str = "conduit",
        role: str = "conduit",
    ) -> None:
        self._direct_url = direct_url
        self._admin_url = pgbouncer_admin_url
        self._log = postgres_log
        self._who = (database, role)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._log_offset = 0
        self.samples = Samples()

    def __enter__(self) -> "Sampler":
        if self._log and self._log.exists():
            self._log_offset = self._log.stat().st_size
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._read_log()

    def _read_log(self) -> None:
        if not self._log or not self._log.exists():
            return
        with self._log.open("rb") as log:
            log.seek(self._log_offset)
            for raw in log:
                line = raw.decode(errors="replace")
                for pattern, name in LOG_PATTERNS.items():
                    if pattern in line:
                        self.samples.postgres_log[name] += 1

    def _run(self) -> None:
        # One monitoring connection, opened before the load starts and kept: a baseline that
        # exhausts max_connections cannot lock the sampler out (the owner role has no
        # reserved slot, so reconnecting could fail).
        pg = self._connect(self._direct_url)
        admin = self._connect(self._admin_url, admin=True) if self._admin_url else None
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                pg = self._sample_postgres(pg)
                if self._admin_url:
                    admin = self._sample_pgbouncer(admin)
                self._stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - started)))
        finally:
            for conn in (pg, admin):
                if conn is not None:
                    conn.close()

    def _connect(self, url: str | None, *, admin: bool = False) -> psycopg.Connection[Any] | None:
        if url is None:
            return None
        try:
            if admin:  # the admin console speaks the simple query protocol only
                return psycopg.connect(
                    url, autocommit=True, connect_timeout=2, cursor_factory=psycopg.ClientCursor
                )
            return psycopg.connect(url, autocommit=True, connect_timeout=2)
        except psycopg.Error as exc:
            self.samples.sampler_errors[type(exc).__name__] += 1
            return None

    def _sample_postgres(
        self, conn: psycopg.Connection[Any] | None
    ) -> psycopg.Connection[Any] | None:
        conn = conn or self._connect(self._direct_url)
        if conn is None:
            return None
        try:
            row = conn.execute(BACKENDS, self._who).fetchone()
        except psycopg.Error as exc:
            self.samples.sampler_errors[type(exc).__name__] += 1
            conn.close()
            return None
        if row:
            self.samples.active.append(row[0])
            self.samples.backends.append(row[1])
        return conn

    def _sample_pgbouncer(
        self, conn: psycopg.Connection[Any] | None
    ) -> psycopg.Connection[Any] | None:
        conn = conn or self._connect(self._admin_url, admin=True)
        if conn is None:
            return None
        try:
            cursor = conn.execute("SHOW POOLS")
            names = [c.name for c in cursor.description or []]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except psycopg.Error as exc:
            self.samples.sampler_errors[type(exc).__name__] += 1
            conn.close()
            return None
        pools = [r for r in rows if r.get("database") == self._who[0]]
        self.samples.cl_waiting.append(sum(int(r["cl_waiting"]) for r in pools))
        self.samples.sv_active.append(sum(int(r["sv_active"]) for r in pools))
        waits = [int(r["maxwait"]) * 1000 + int(r.get("maxwait_us", 0)) / 1000 for r in pools]
        self.samples.maxwait_ms.append(max(waits, default=0.0))
        return conn


def measured(
    stack: Stack,
    target: Target,
    measure: Callable[[], dict[str, Any]],
    then: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Run `measure` with the samplers and CPU accounting around it: its result, plus the
    cores each component used, Redis's hit ratio and the samples' peaks. `then` runs as soon
    as `measure` returns, outside the CPU accounting and before the summaries (reading the
    logs takes seconds): what must watch the moments right after the load."""
    env = stack.env
    cpu = CpuShare(target.roots, own="load generator")
    try:
        metrics_url: str | None = f"http://127.0.0.1:{api_port(target)}/metrics"
    except ValueError:  # the API is not running, or not uvicorn with --port
        metrics_url = None
    tiers = Tiers(target.access_log, metrics_url)
    postgres_log = stack.dir / "postgres" / "postgres.log"
    with Sampler(env["DIRECT_DATABASE_URL"], env["PGBOUNCER_ADMIN_URL"], postgres_log) as s:
        time.sleep(0.3)  # a first sample before the load
        keyspace = redis_keyspace(stack.cache_redis_url)
        tiers.start()
        cpu.start()
        result = measure()
        shares = cpu.stop()
        if then is not None:
            then()
        cache = hit_ratio(keyspace, redis_keyspace(stack.cache_redis_url))
    cpu_cores = {"cpu": {k: round(v, 2) for k, v in shares.items()}}
    return result | cpu_cores | cache | s.samples.summary() | tiers.stop()


def redis_keyspace(url: str) -> tuple[int, int] | None:
    """Redis's (keyspace_hits, keyspace_misses) so far; None when Redis does not answer."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        stats = client.info("stats")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return int(stats["keyspace_hits"]), int(stats["keyspace_misses"])


def hit_ratio(before: tuple[int, int] | None, after: tuple[int, int] | None) -> dict[str, Any]:
    if before is None or after is None:
        return {"redis_hit_ratio": None}
    hits, misses = after[0] - before[0], after[1] - before[1]
    ratio = round(hits / (hits + misses), 3) if hits + misses else None
    return {"redis_hits": hits, "redis_misses": misses, "redis_hit_ratio": ratio}


def pgbouncer_totals(admin_url: str, database: str = "conduit") -> dict[str, int]:
    """PgBouncer's SHOW STATS totals for one database: statements and transactions so far
    (live counters; only the avg_ columns wait for stats_period)."""
    with psycopg.connect(
        admin_url, autocommit=True, connect_timeout=5, cursor_factory=psycopg.ClientCursor
    ) as conn:
        cursor = conn.execute("SHOW STATS")
        names = [c.name for c in cursor.description or []]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    row = next(r for r in rows if r["database"] == database)
    return {"queries": int(row["total_query_count"]), "transactions": int(row["total_xact_count"])}
