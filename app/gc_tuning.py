"""The garbage collector set for a process that serves requests.

A request allocates a few hundred container objects (coroutines, dicts, frames' locals), and
CPython's default first threshold (700 allocations) runs a young collection every couple of
requests, every tenth of those an older one, and now and then a full one that walks every
object the app built at startup (SQLAlchemy, pydantic, FastAPI: hundreds of thousands). So,
once the app has started: what exists then is moved out of the collector's sight
(`gc.freeze()`, as the gc module's documentation suggests for long-lived servers), and the
young generation is let grow to GEN0_THRESHOLD allocations before it is collected. Cycles
are still collected; only less often. Measured: docs/BENCHMARKS.md "The request path against
its floor", the garbage collector lever.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GEN0_THRESHOLD = 10_000
OLDER_THRESHOLD = 20  # collections of the younger generation before the older one's


@contextmanager
def tuned_for_serving() -> Iterator[None]:
    """For the lifetime of an app: startup's objects frozen, collections less frequent; the
    collector as it was afterwards (tests start many apps in one process)."""
    previous = gc.get_threshold()
    # No collection first: startup leaves little cyclic garbage, and a full collection costs
    # a tenth of a second in a test process that starts an app per test.
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
