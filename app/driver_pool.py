"""The public reads' own connections: psycopg connections in autocommit, lent one at a time.

It does what SQLAlchemy's pool does for the ORM, for reads on the driver (app/db_reads.py):
lend an idle connection (the one returned last: its backend is warm), make one when fewer than
`size` exist, else wait up to `timeout_s` for one to come back, and give up with SQLAlchemy's
pool `TimeoutError` (a 503, as an exhausted ORM pool is); take back only a connection that is
healthy, idle (no statement running, no transaction) and younger than `recycle_s`.

Written here rather than taken from a library because the two at hand each miss a property the
request path relies on. SQLAlchemy's pool costs two greenlet switches and its fairy and event
machinery on every checkout and return, the largest share of what a read spent above its floor
(docs/BENCHMARKS.md, "The request path against its floor"). psycopg_pool makes connections in
background tasks that the request waits for, so with the database down a read waits out the
whole pool timeout (and its deadline ends it as a 504) where it should fail at once with a 503
that the client retries; here a connection is made by the request that needs it, and its error
is that request's.
"""

import asyncio
import time
from collections import deque
from time import perf_counter
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.observability import recorder
from app.observability.pool import checked_out

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


class DriverPool:
    """At most `size` connections to `conninfo`, made on demand (module docstring)."""

    metrics_label = "reads"  # the `pool` label of conduit_db_pool_*

    def __init__(
        self,
        conninfo: str,
        *,
        size: int,
        timeout_s: float,
        recycle_s: float = 1800.0,
        **connect_kwargs: Any,
    ) -> None:
        self._conninfo = conninfo
        self._size = size
        self.timeout_s = timeout_s
        self.recycle_s = recycle_s
        self._connect_kwargs = {"autocommit": True, **connect_kwargs}
        self._idle: list[Connection] = []  # a stack: the last returned is lent first
        self._made: dict[Connection, float] = {}  # every open connection: when it was made
        self._making = 0  # connections being made, or places handed to a waiter to make one
        # Checkouts waiting for a connection; each gets one, or None: "make one, in my place"
        # (a connection was closed and its place in `size` handed on).
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False
        recorder.POOL.track(self)

    # The pool's figures, as SQLAlchemy's pool gives them (recorder.py sums the process's).
    def size(self) -> int:
        return self._size

    def checkedout(self) -> int:
        return len(self._made) + self._making - len(self._idle)

    def overflow(self) -> int:
        return 0

    def max_overflow(self) -> int:
        return 0

    async def get(self) -> Connection:
        """A connection of one's own until `put` (a timeout: SQLAlchemy's pool TimeoutError)."""
        started = perf_counter()
        try:
            connection = await self._get()
        except PoolTimeout:
            checked_out(self, started, timed_out=True)
            raise
        checked_out(self, started)
        return connection

    async def _get(self) -> Connection:
        if self._closed:
            raise PoolTimeout("the read pool is closed")
        while self._idle:
            connection = self._idle.pop()
            if not (connection.closed or connection.broken):
                return connection
            await self._close(connection)  # died while idle (a restarted PgBouncer)
        if len(self._made) + self._making < self._size:
            return await self._connect()
        return await self._wait()

    async def _connect(self, *, reserved: bool = False) -> Connection:
        """A new connection, in a place of `size` that this checkout takes, or was handed
        (`reserved`: counted as being made already)."""
        if not reserved:
            self._making += 1
        try:
            connection: Connection = await psycopg.AsyncConnection.connect(
                self._conninfo, **self._connect_kwargs
            )
        except BaseException:
            self._making -= 1
            self._hand_on(None)
            raise
        self._making -= 1
        self._made[connection] = time.monotonic()
        return connection

    async def _wait(self) -> Connection:
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout_s):
                handed = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Given at the moment this checkout gave up: to the next one.
                if (handed := waiter.result()) is None:
                    self._making -= 1  # the place it was handed
                self._hand_on(handed)
            else:
                waiter.cancel()  # skipped by `_hand_on`
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(
                    f"read pool limit of size {self._size} reached, connection timed out, "
                    f"timeout {self.timeout_s:g}"
                ) from None
            raise
        return handed if handed is not None else await self._connect(reserved=True)

    async def put(self, connection: Connection, *, discard: bool = False) -> None:
        """Take a connection back: for the next checkout, or closed if `discard`, if it is
        not idle (a statement cancelled mid-way, a transaction left open), broken or old."""
        recorder.POOL.used(self)
        reusable = (
            not discard
            and not self._closed
            and not connection.broken
            and connection.info.transaction_status == TransactionStatus.IDLE
            and time.monotonic() - self._made.get(connection, 0.0) < self.recycle_s
        )
        if reusable:
            self._hand_on(connection)
        else:
            await self._close(connection)

    async def discard_idle(self) -> None:
        """Close the idle connections: one was found dead, they were made before it (what
        SQLAlchemy does on a disconnect, by invalidating the pool's older connections)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._close(connection)

    async def close(self) -> None:
        """Close the idle connections now, the lent ones when they come back."""
        self._closed = True
        recorder.POOL.forget(self)
        while self._waiters:
            self._waiters.popleft().cancel()
        await self.discard_idle()

    def _hand_on(self, connection: Connection | None) -> None:
        """A returned connection, or a freed place (None), to the first waiting checkout."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if connection is None:
                    self._making += 1  # the place is the waiter's from now on
                waiter.set_result(connection)
                return
        if connection is not None:
            self._idle.append(connection)

    async def _close(self, connection: Connection) -> None:
        self._made.pop(connection, None)
        try:
            await connection.close()
        finally:
            if not self._closed:
                self._hand_on(None)
