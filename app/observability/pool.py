"""SQLAlchemy pool metrics: configured size, connections lent out, overflow, wait for one.

SQLAlchemy has no event before a checkout starts waiting, so a subclass of the async engine's
default pool times `Pool.connect()`; the lent-out and overflow gauges are set from the pool's
own counts after every checkout and return, so they cannot drift. (Pool events cannot be
listened to on an async pool class, and per instance they would be copied on `recreate()`.)
"""

from time import perf_counter
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection

from app.observability import metrics


class MeteredQueuePool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool that reports to the `conduit_db_pool_*` metrics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        metrics.DB_POOL_SIZE.set(self.size())
        metrics.DB_POOL_MAX_OVERFLOW.set(max(self._max_overflow, 0))

    def connect(self) -> PoolProxiedConnection:
        started = perf_counter()
        try:
            connection = super().connect()
        except PoolTimeout:
            metrics.DB_POOL_TIMEOUTS.inc()
            raise
        finally:
            metrics.DB_POOL_WAIT.observe(perf_counter() - started)
        self._report()
        return connection

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        self._report()

    def _report(self) -> None:
        metrics.DB_POOL_CHECKED_OUT.set(self.checkedout())
        metrics.DB_POOL_OVERFLOW.set(max(self.overflow(), 0))
