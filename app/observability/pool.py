"""Pool metrics: configured size, connections lent out, overflow, wait for one.

SQLAlchemy has no event before a checkout starts waiting, so a subclass of the async engine's
default pool times `Pool.connect()` (and the reads' own pool, app/driver_pool.py, its `get`,
both through `checked_out`); every checkout and return is tallied in plain Python
(recorder.py: written at most once a second, and before /metrics answers), the lent-out and
overflow gauges then set from the pool's own counts, so they cannot drift. (Pool events cannot be
listened to on an async pool class, and per instance they would be copied on `recreate()`.)
"""

from time import perf_counter
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection

from app.observability import context, metrics, recorder


class MeteredQueuePool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool that reports to the `conduit_db_pool_*` metrics."""

    metrics_label = "orm"  # the `pool` label of conduit_db_pool_*

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        recorder.POOL.track(self)

    def max_overflow(self) -> int:
        return max(self._max_overflow, 0)

    def dispose(self) -> None:
        super().dispose()
        recorder.POOL.forget(self)  # `Engine.dispose` goes on with a new one (tracked)

    def connect(self) -> PoolProxiedConnection:
        started = perf_counter()
        try:
            connection = super().connect()
        except PoolTimeout:
            checked_out(self, started, timed_out=True)
            raise
        checked_out(self, started)
        return connection

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        recorder.POOL.used(self)


def checked_out(pool: recorder.Pool, started: float, *, timed_out: bool = False) -> None:
    """A checkout from `pool` (this one, the reads' own in app/driver_pool.py) that began at
    `started` (`perf_counter`) is over: its wait tallied, and it timed out (counted) or the
    request has reached the database."""
    if timed_out:
        metrics.DB_POOL_TIMEOUTS.labels(pool.metrics_label).inc()
    recorder.POOL.used(pool, perf_counter() - started)
    if not timed_out:
        context.reached(context.DATABASE)
