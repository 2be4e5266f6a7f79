"""Every Prometheus metric of the API and its workers, defined once, here.

Features increment these objects; nobody defines a metric elsewhere. Names and labels are a
contract with deploy/prometheus (alerts) and deploy/grafana (the dashboard), checked by
tests/observability. Every label takes a bounded set of values: route templates, never raw
paths; status codes; names chosen in code.

Several worker processes (`uvicorn --workers K`): with PROMETHEUS_MULTIPROC_DIR set, each
process writes its samples to memory-mapped files in that directory and /metrics, in whichever
worker answers, adds up the files of all of them (prometheus_client's multiprocess mode). So one
scrape of the one listening port is the whole API, and a restarted worker's counts survive it.
The launcher empties the directory before the first worker starts (`prepare_multiprocess_dir`);
a worker that exits cleanly withdraws its live gauges (`withdraw_this_process`), and the
gauges of a worker killed outright are withdrawn at the next scrape.
"""

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> Path | None:
    raw = os.environ.get(MULTIPROC_ENV)
    return Path(raw) if raw else None


def prepare_multiprocess_dir(path: Path) -> None:
    """For the launcher, before any worker starts: no samples left from an earlier run.
    The launcher's own files stay (importing this module may already have made them)."""
    path.mkdir(parents=True, exist_ok=True)
    own = f"_{os.getpid()}.db"
    for stale in path.glob("*.db"):
        if not stale.name.endswith(own):
            stale.unlink(missing_ok=True)


if (_dir := multiprocess_dir()) is not None:
    # The metric objects below open their files at import: the directory must exist.
    _dir.mkdir(parents=True, exist_ok=True)

# Latency buckets: fine where the API lives (1-100 ms), coarse out to the 10 s timeouts.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAIT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# ---- HTTP (app/middleware/request_edge.py) ----
HTTP_REQUESTS = Counter(
    "conduit_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_ERRORS = Counter(
    "conduit_http_request_errors_total",
    "Requests answered with a 5xx status or ended by an unhandled exception.",
    ["method", "route"],
)
HTTP_DURATION = Histogram(
    "conduit_http_request_duration_seconds",
    "Time from the request reaching the API to the last byte of its response.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "conduit_http_requests_in_flight",
    "Requests being served right now, all worker processes together.",
    multiprocess_mode="livesum",
)
HTTP_TIERS = Counter(
    "conduit_http_requests_by_tier_total",
    "HTTP requests answered, by method, route template and the deepest tier they waited on: "
    "none, local (the worker's in-process cache only), redis, database (a PostgreSQL "
    "connection was checked out).",
    ["method", "route", "tier"],
)
HTTP_SHED = Counter(
    "conduit_http_requests_shed_total",
    "Requests refused early to protect the service (load shedding, rate limit, deadline).",
    ["reason"],
)

# ---- Database (app/observability/pool.py; retries in the write path) ----
# The `pool` label: `orm`, SQLAlchemy's (writes; all of a job worker's), or `reads`, the public
# reads' own (app/driver_pool.py); a process with replicas adds each node's to the same two.
POOLS = ("orm", "reads")
DB_POOL_SIZE = Gauge(
    "conduit_db_pool_size",
    "Configured connections, by pool, summed over worker processes.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_MAX_OVERFLOW = Gauge(
    "conduit_db_pool_max_overflow",
    "Configured max_overflow (the ORM's pool has one), summed over worker processes.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_OUT = Gauge(
    "conduit_db_pool_checked_out_connections",
    "Pooled connections lent to a request right now, by pool.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_OVERFLOW = Gauge(
    "conduit_db_pool_overflow_connections",
    "Connections open beyond the pool size (as of the last checkout), by pool.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_WAIT = Histogram(
    "conduit_db_pool_wait_seconds",
    "Time to get a connection from the pool, connecting included, by pool.",
    ["pool"],
    buckets=WAIT_BUCKETS,
)
DB_POOL_TIMEOUTS = Counter(
    "conduit_db_pool_timeouts_total",
    "Checkouts that gave up after DB_POOL_TIMEOUT (answered 503), by pool.",
    ["pool"],
)
DB_RETRIES = Counter(
    "conduit_db_retries_total",
    "Transactions run again after a transient database error, by reason.",
    ["reason"],
)

# ---- Read replicas (app/replicas.py; only with DATABASE_REPLICA_URLS) ----
DB_READS = Counter(
    "conduit_db_reads_total",
    "Public reads (connections opened for them), by the node that served them: primary or replica-N.",
    ["node"],
)
DB_READ_FALLBACKS = Counter(
    "conduit_db_read_fallbacks_total",
    "Reads sent to the primary although replicas are configured, by reason: no_replica (none "
    "in rotation), behind (none has replayed what the reader must see), unknown (Redis "
    "unavailable), error (a replica failed under the read, which ran again on the primary).",
    ["reason"],
)
DB_REPLICA_CHECKS = Counter(
    "conduit_db_replica_checks_total",
    "Reads that waited for a replica's replay position asked at once (the last poll was behind "
    "what they needed; one question per replica and process, shared), by result: caught_up "
    "(the read went to the replica), behind, no_answer.",
    ["result"],
)
DB_REPLICA_LAG = Gauge(
    "conduit_db_replica_lag_seconds",
    "How long ago the primary was where the replica has replayed to (+Inf: down), as polled.",
    ["replica"],
    multiprocess_mode="livemax",
)
DB_REPLICA_IN_ROTATION = Gauge(
    "conduit_db_replica_in_rotation",
    "1 while every API process sends reads to the replica, else 0.",
    ["replica"],
    multiprocess_mode="livemin",
)
DB_WRITE_POSITIONS_LOST = Counter(
    "conduit_db_write_positions_lost_total",
    "Commits whose WAL position could not be recorded (Redis or the primary unreachable).",
)

# ---- Cache and idempotency ----
CACHE_REQUESTS = Counter(
    "conduit_cache_requests_total",
    "Cache lookups by family (what is cached) and result: hit, miss or error.",
    ["family", "result"],
)
IDEMPOTENT_REPLAYS = Counter(
    "conduit_idempotent_replays_total",
    "Requests answered with the stored response of an earlier one with the same Idempotency-Key.",
)

# ---- Jobs (the job worker) ----
JOBS = Counter(
    "conduit_jobs_total",
    "Jobs finished, by job name and outcome: success, failure or retry.",
    ["job", "outcome"],
)
JOB_DURATION = Histogram(
    "conduit_job_duration_seconds",
    "Time a job ran, by job name.",
    ["job"],
    buckets=JOB_BUCKETS,
)
JOB_QUEUE_WAIT = Histogram(
    "conduit_job_queue_wait_seconds",
    "Time from enqueueing a job to a worker starting it, by job name.",
    ["job"],
    buckets=JOB_BUCKETS,
)
JOB_QUEUE_DEPTH = Gauge(
    "conduit_job_queue_depth",
    "Jobs waiting in the queue, as last sampled.",
    ["queue"],
    multiprocess_mode="mostrecent",
)

# ---- Exact counts (app/counts/drift.py, the worker's periodic check_counts job) ----
COUNTS_DRIFTED = Gauge(
    "conduit_counts_drifted",
    "List counters that differed from count(*) at the last check; must be 0.",
    multiprocess_mode="mostrecent",
)
COUNTS_CHECKED = Gauge(
    "conduit_counts_checked_timestamp_seconds",
    "When the last check of the list counters against count(*) finished (Unix time).",
    multiprocess_mode="mostrecent",
)


def exposition() -> bytes:
    """The text /metrics answers: every process's samples when multi-process, else ours."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY)
    _withdraw_dead_processes(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def withdraw_this_process() -> None:
    """At a worker's clean exit: its live gauges (in flight, pool) stop counting."""
    if (directory := multiprocess_dir()) is not None:
        multiprocess.mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]


def _withdraw_dead_processes(directory: Path) -> None:
    """A worker killed outright never withdrew its live gauges: do it for it."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(directory))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
