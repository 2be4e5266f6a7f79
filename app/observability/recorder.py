"""The HTTP and database pool metrics of this process, tallied in plain Python and written
out in batches.

Each write to a multiprocess metric takes a lock, a getpid() and an mmap write, about a
microsecond, and a request makes five of them for HTTP (in flight up and down, count, two for
the histogram) and five more for the pool (two gauges at checkout and at return, the wait).
A dictionary increment costs a few tens of nanoseconds. So the edge and the pool tally here
and the tallies go to the Prometheus objects (app/observability/metrics.py) FLUSH_INTERVAL_S
after the first one not yet written, on the event loop, and right before this process
answers /metrics. Another worker's counts are at most that late in a scrape.
"""

import asyncio
from bisect import bisect_left
from typing import Protocol
from weakref import WeakSet

from prometheus_client import Histogram

from app.observability import metrics
from app.observability.context import TIERS

FLUSH_INTERVAL_S = 1.0
_BOUNDS = (*metrics.LATENCY_BUCKETS, float("inf"))
_WAIT_BOUNDS = (*metrics.WAIT_BUCKETS, float("inf"))


class HttpRecorder:
    def __init__(self) -> None:
        self.in_flight = 0
        self._in_flight_written: int | None = None
        self._requests: dict[tuple[str, str, int], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._tiers: dict[tuple[str, str, int], int] = {}  # (method, route, tier)
        # (method, route) -> [count in bucket 0, 1, ..., +Inf, sum of seconds]
        self._durations: dict[tuple[str, str], list[float]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop a flush is due on

    def started(self) -> None:
        self.in_flight += 1
        self._schedule()

    def finished(
        self, method: str, route: str, status: int, seconds: float, failed: bool, tier: int = 0
    ) -> None:
        self.in_flight -= 1
        self._tiers[method, route, tier] = self._tiers.get((method, route, tier), 0) + 1
        key = (method, route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        if (tally := self._durations.get(key[:2])) is None:
            tally = self._durations[key[:2]] = [0.0] * (len(_BOUNDS) + 1)
        tally[bisect_left(_BOUNDS, seconds)] += 1
        tally[-1] += seconds
        if failed or status >= 500:
            self._errors[key[:2]] = self._errors.get(key[:2], 0) + 1

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # none due, or due on a loop that has since gone (tests)
            self._loop = loop
            loop.call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        """Write the tallies to the Prometheus metrics (on the event loop: no lock needed)."""
        self._loop = None
        requests, self._requests = self._requests, {}
        errors, self._errors = self._errors, {}
        durations, self._durations = self._durations, {}
        tiers, self._tiers = self._tiers, {}
        for (method, route, status), count in requests.items():
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc(count)
        for labels, count in errors.items():
            metrics.HTTP_ERRORS.labels(*labels).inc(count)
        for labels, tally in durations.items():
            _add(metrics.HTTP_DURATION.labels(*labels), tally)
        for (method, route, tier), count in tiers.items():
            metrics.HTTP_TIERS.labels(method, route, TIERS[tier]).inc(count)
        if self.in_flight != self._in_flight_written:
            metrics.HTTP_IN_FLIGHT.set(self.in_flight)
            self._in_flight_written = self.in_flight
        if self.in_flight:  # a request still running will report when it ends
            self._schedule()


def _add(histogram: Histogram, tally: list[float]) -> None:
    # Histogram.observe() takes one value at a time; its per-bucket values and sum are what it
    # would add to (prometheus_client keeps bucket counts uncumulated).
    for bucket, observed in zip(histogram._buckets, tally, strict=False):
        if observed:
            bucket.inc(observed)
    histogram._sum.inc(tally[-1])


class Pool(Protocol):
    @property
    def metrics_label(self) -> str: ...  # one of metrics.POOLS
    def size(self) -> int: ...
    def max_overflow(self) -> int: ...
    def checkedout(self) -> int: ...
    def overflow(self) -> int: ...


class PoolRecorder:
    """The `conduit_db_pool_*` gauges and wait histogram of the process's pools, by the `pool`
    label (metrics.POOLS: the ORM's, the reads' own, app/driver_pool.py): waits tallied, the
    gauges read from the pools' own counts when they are written (so they cannot drift)."""

    def __init__(self) -> None:
        self._pools: WeakSet[Pool] = WeakSet()  # open ones; a pool forgotten is dropped
        self._waits = {label: _no_waits() for label in metrics.POOLS}
        self._loop: asyncio.AbstractEventLoop | None = None

    def track(self, pool: Pool) -> None:
        """Count `pool` in the gauges until `forget`."""
        self._pools.add(pool)
        self._write_sizes(self._by_label())

    def forget(self, pool: Pool) -> None:
        self._pools.discard(pool)
        self._write_sizes(self._by_label())

    def used(self, pool: Pool, waited_s: float | None = None) -> None:
        """A checkout from `pool` (that waited `waited_s`) or a return to it."""
        if waited_s is not None:
            waits = self._waits[pool.metrics_label]
            waits[bisect_left(_WAIT_BOUNDS, waited_s)] += 1
            waits[-1] += waited_s
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script's sync engine): at once
            self.flush()
            return
        if self._loop is not loop:
            self._loop = loop
            loop.call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        self._loop = None
        # Sizes too: a pool collected without `forget` (a test's engine) has left the set.
        by_label = self._by_label()
        self._write_sizes(by_label)
        for label, pools in by_label.items():
            metrics.DB_POOL_CHECKED_OUT.labels(label).set(sum(p.checkedout() for p in pools))
            metrics.DB_POOL_OVERFLOW.labels(label).set(sum(max(p.overflow(), 0) for p in pools))
        for label, waits in self._waits.items():
            if any(waits):
                self._waits[label] = _no_waits()
                _add(metrics.DB_POOL_WAIT.labels(label), waits)

    @staticmethod
    def _write_sizes(by_label: dict[str, list[Pool]]) -> None:
        for label, pools in by_label.items():
            metrics.DB_POOL_SIZE.labels(label).set(sum(pool.size() for pool in pools))
            metrics.DB_POOL_MAX_OVERFLOW.labels(label).set(sum(p.max_overflow() for p in pools))

    def _by_label(self) -> dict[str, list[Pool]]:
        """Every label, each with its open pools (none: its gauges read 0)."""
        pools: dict[str, list[Pool]] = {label: [] for label in metrics.POOLS}
        for pool in list(self._pools):
            pools[pool.metrics_label].append(pool)
        return pools


def _no_waits() -> list[float]:
    return [0.0] * (len(_WAIT_BOUNDS) + 1)


# One each per process: every app built in it (tests build many) shares the tallies.
HTTP = HttpRecorder()
POOL = PoolRecorder()


def flush() -> None:
    """Everything tallied, now (before this process answers /metrics, and at exit)."""
    HTTP.flush()
    POOL.flush()
