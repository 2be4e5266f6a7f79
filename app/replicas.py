"""Read replicas: public reads on a streaming replica whenever it has replayed what the reader
must see, everything else on the primary (docs/ARCHITECTURE.md "Replicas").

- `WritePositions`: after a commit that changed what reads show (app/transaction.py), the
  primary's WAL insert position goes to Redis twice, in one script: as the writer's own (for
  a few seconds) and as the mark of the last write whose cache invalidation anyone can see.
- `Replicas`: one pool per replica (read on the driver, app/db_reads.py) and a poller (per process, every REPLICA_POLL_S) of each
  replica's replayed position and of the primary's, from which each replica's lag follows. A
  replica that is down, or further behind than REPLICA_MAX_LAG_S, is out of rotation until a
  poll finds it well again. `Replicas.connect` is the lifespan state's `connect`.
- A read goes to a replica in rotation whose replayed position is at least the one it needs:
  the reader's last write (the request's user, app/observability/context.py) and, for a load
  that fills the shared cache (`RoutedCache`), the mark. When the last poll is behind that,
  a replica that was close (`CHECK_LAG_POLLS` polls) is asked at once, one question per
  replica and process at a time, shared by the reads that wait for it: under a steady
  stream of writes the mark is almost always ahead of the last poll, while the replica
  itself is milliseconds behind. Otherwise to the primary.
- A replica failing under a read (stopped, PgBouncer gone) is taken out of rotation and the
  statement runs again on the primary: reads are single autocommit statements, so nothing
  is repeated that could differ from a read that went to the primary in the first place.
"""

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement

from app.cache.store import Cache, Items, Loader
from app.config import Settings
from app.db import is_unavailable, make_engine, make_read_pool
from app.db_reads import ReadConnection, ReadPool, Releasing, Row
from app.driver_pool import Connection as Driver
from app.observability import context, metrics

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("conduit.replicas")

PRIMARY = "primary"
MARK = "lsn:mark"  # the last write whose invalidation may have been seen (cache loads)
_INSERT_LSN = text("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
_REPLAYED_LSN = text("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint")
# Positions are 16 hex digits, so Lua compares them as strings, exactly (no float rounding).
_RECORD = """
local lsn = ARGV[1]
local mark = redis.call('GET', KEYS[1])
if not mark or mark < lsn then redis.call('SET', KEYS[1], lsn) end
if KEYS[2] then
  local own = redis.call('GET', KEYS[2])
  if own and own > lsn then lsn = own end
  redis.call('SET', KEYS[2], lsn, 'PX', ARGV[2])
end
"""
# A replica whose lag, as polled, is within this many poll intervals is asked at once when a
# read needs more than the last poll saw; one further behind is not (a paused or slow
# replay would cost every such read a useless round trip).
CHECK_LAG_POLLS = 4
# How long a read waits for that answer before it goes to the primary (the question goes on
# in the background; the next reads wait for the same one).
CHECK_WAIT_S = 0.05
# A load for the shared cache is running (set by RoutedCache around its loader).
_SHARED: ContextVar[bool] = ContextVar("conduit_shared_load", default=False)


def user_key(user_id: int) -> str:
    return f"lsn:u:{user_id}"


def _reader() -> int | None:
    request = context.current()
    return None if request is None else request.user_id


class WritePositions:
    """Where commits leave their WAL position and reads find the one they need (the shared
    Redis, REDIS_URL: it never evicts)."""

    def __init__(self, redis: Redis, primary: AsyncEngine, *, sticky_s: float) -> None:
        self.redis = redis
        # One round trip, no BEGIN/ROLLBACK, whatever the engine's own mode.
        self.primary = primary.execution_options(isolation_level="AUTOCOMMIT")
        self.sticky_ms = int(sticky_s * 1000)
        self._script = redis.register_script(_RECORD)

    async def record(self) -> None:
        """After the commit, before its invalidations are published: a reader who sees them
        then finds a mark at least this high. Never raises (the commit stands)."""
        writer = _reader()
        try:
            async with self.primary.connect() as conn:
                lsn = await conn.scalar(_INSERT_LSN)
            keys = [MARK] if writer is None else [MARK, user_key(writer)]
            await self._script(keys=keys, args=[f"{lsn:016x}", self.sticky_ms])
        except (DBAPIError, PoolTimeout, RedisError, OSError, TimeoutError) as exc:
            # Until the writer's next write, their reads are as fresh as REPLICA_MAX_LAG_S.
            metrics.DB_WRITE_POSITIONS_LOST.inc()
            log.warning("WAL position of a write not recorded: %s", type(exc).__name__)

    async def required(self, *, reader: int | None, shared: bool) -> int | None:
        """The position a read needs a replica to have replayed; None: unknown (Redis
        unavailable), so the primary."""
        keys = ([MARK] if shared else []) + ([] if reader is None else [user_key(reader)])
        if not keys:
            return 0
        try:
            values = await self.redis.mget(keys)
        except (RedisError, OSError, TimeoutError):
            return None
        return max((int(value, 16) for value in values if value), default=0)


@dataclass(eq=False)
class Node:
    name: str
    engine: AsyncEngine
    reads: ReadPool  # on `engine`'s database
    replayed: int = -1  # as of the last good poll; only ever below the truth
    lag_s: float = math.inf
    polled_at: float = -math.inf  # monotonic time of the last good poll

    def in_rotation(self, now: float, max_lag_s: float) -> bool:
        return self.lag_s <= max_lag_s and now - self.polled_at <= max_lag_s

    def out(self) -> None:
        self.lag_s = math.inf


@dataclass
class _Samples:
    """The primary's insert position over the last seconds: (monotonic time, position)."""

    keep_s: float
    points: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, at: float, lsn: int) -> None:
        self.points.append((at, lsn))
        while self.points and self.points[0][0] < at - self.keep_s:
            self.points.popleft()

    def lag(self, replayed: int, now: float) -> float:
        """How long ago the primary was last known to be where the replica is: everything
        committed before then is on the replica. 0 when it has everything polled so far."""
        if not self.points or replayed >= self.points[-1][1]:
            return 0.0
        caught = [at for at, lsn in self.points if lsn <= replayed]
        return now - (caught[-1] if caught else self.points[0][0] - self.keep_s)


class Replicas:
    """The read router of one API process (made and closed by the lifespan)."""

    def __init__(
        self,
        settings: Settings,
        primary: AsyncEngine,
        positions: WritePositions | None,
        tracer_provider: "TracerProvider | None" = None,
    ) -> None:
        self.primary = primary
        self.reads = make_read_pool(settings, primary, tracer_provider)
        self.positions = positions
        self.max_lag_s = settings.replica_max_lag_s
        self.poll_s = settings.replica_poll_s
        self.nodes = []
        for n, url in enumerate(settings.database_replica_urls, start=1):
            engine = make_engine(settings, url, autocommit=True, pool_size=settings.write_pool_size)
            reads = make_read_pool(settings, engine, tracer_provider)
            self.nodes.append(Node(f"replica-{n}", engine, reads))
        self._samples = _Samples(keep_s=self.max_lag_s + 1)
        self._poller: asyncio.Task[None] | None = None
        # The position question in flight to each node, shared (`_question`).
        self._questions: dict[str, asyncio.Future[int | None]] = {}

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever(), name="replica-poller")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        waiting = list(self._questions.values())
        for pending in waiting:
            pending.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await self.reads.close()
        for node in self.nodes:
            await node.reads.close()
            await node.engine.dispose()

    def connect(self) -> "RoutedCheckout":
        """The `Connect` of reads: a connection on the node chosen when it is entered."""
        return RoutedCheckout(self)

    async def choose(self) -> Node | None:
        now = time.monotonic()
        ready = [node for node in self.nodes if node.in_rotation(now, self.max_lag_s)]
        if not ready:
            return self._fallback("no_replica")
        reader, shared = _reader(), _SHARED.get()
        if self.positions is not None:
            required = await self.positions.required(reader=reader, shared=shared)
        else:  # no Redis: nobody's writes can be tracked
            required = 0 if reader is None and not shared else None
        if required is None:
            return self._fallback("unknown")
        fresh = [node for node in ready if node.replayed >= required]
        if not fresh:
            fresh = [node for node in ready if await self._caught_up(node, required)]
        if not fresh:
            return self._fallback("behind")
        return fresh[0] if len(fresh) == 1 else random.choice(fresh)  # noqa: S311 - spreading load

    async def _caught_up(self, node: Node, required: int) -> bool:
        """Whether a node the last poll saw behind `required` has replayed it by now: asked
        at once if it was close (CHECK_LAG_POLLS), its answer raising what the poll saw
        (replay only moves forward). Concurrent reads share one question per node; a read
        waits CHECK_WAIT_S for the answer at most."""
        if node.lag_s > CHECK_LAG_POLLS * self.poll_s:
            return False
        pending = self._question(node.name, node.engine, _REPLAYED_LSN)
        done, _ = await asyncio.wait({pending}, timeout=CHECK_WAIT_S)
        position = pending.result() if done and not pending.cancelled() else None
        if position is None:
            metrics.DB_REPLICA_CHECKS.labels("no_answer").inc()
            return False
        node.replayed = max(node.replayed, position)
        caught_up = node.replayed >= required
        metrics.DB_REPLICA_CHECKS.labels("caught_up" if caught_up else "behind").inc()
        return caught_up

    def failed(self, node: Node, exc: BaseException) -> None:
        node.out()
        metrics.DB_READ_FALLBACKS.labels("error").inc()
        log.warning("replica %s failed a read (%s): out of rotation", node.name, type(exc).__name__)

    @staticmethod
    def _fallback(reason: str) -> None:
        metrics.DB_READ_FALLBACKS.labels(reason).inc()

    async def _poll_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll()
            except Exception:  # the poller must outlive anything one round raises
                log.exception("replica poll failed")
            await asyncio.sleep(max(0.0, self.poll_s - (time.monotonic() - started)))

    async def poll(self) -> None:
        """One round: the primary's position and every replica's, at once."""
        at = time.monotonic()
        primary, *replayed = await asyncio.gather(
            self._ask(PRIMARY, self.primary, _INSERT_LSN),
            *(self._ask(node.name, node.engine, _REPLAYED_LSN) for node in self.nodes),
        )
        if primary is not None:  # else: no new writes can happen, keep judging by the last
            self._samples.add(at, primary)
        now = time.monotonic()
        for node, position in zip(self.nodes, replayed, strict=True):
            if position is None:  # down, unreachable, or promoted (no longer replaying)
                node.out()
            else:
                node.replayed = position
                node.lag_s = self._samples.lag(node.replayed, now)
                node.polled_at = now
            metrics.DB_REPLICA_LAG.labels(node.name).set(node.lag_s)
            in_rotation = node.in_rotation(now, self.max_lag_s)
            metrics.DB_REPLICA_IN_ROTATION.labels(node.name).set(int(in_rotation))

    async def _ask(self, name: str, engine: AsyncEngine, query: Any) -> int | None:
        """The node's position, None if it failed or has not answered within the round's
        time."""
        pending = self._question(name, engine, query)
        done, _ = await asyncio.wait({pending}, timeout=max(self.poll_s * 5, 0.5))
        return pending.result() if done and not pending.cancelled() else None

    def _question(self, name: str, engine: AsyncEngine, query: Any) -> asyncio.Future[int | None]:
        """The position question in flight to the node `name`, asked now if there is none:
        the poll and the reads that cannot wait for it share one question per node. A query
        that hangs (a PgBouncer waiting for its stopped server) is left to finish in the
        background, and the node is not asked again before it has: cancelling it would wait
        just as long, for the connection to be cleaned up."""
        if (pending := self._questions.get(name)) is None:
            pending = asyncio.ensure_future(_position(engine, query))
            self._questions[name] = pending

            def forget(done: asyncio.Future[int | None]) -> None:
                if self._questions.get(name) is done:
                    del self._questions[name]

            pending.add_done_callback(forget)
        return pending


async def _position(engine: AsyncEngine, query: Any) -> int | None:
    try:
        async with engine.connect() as conn:
            position: int | None = await conn.scalar(query)
    except (DBAPIError, PoolTimeout, OSError):
        return None
    return position


class RoutedCheckout(Releasing):
    """A read connection on the node chosen when it is entered: a replica in rotation that
    has what the reader must see, else the primary; a replica that fails the checkout is
    replaced by the primary at once."""

    __slots__ = ("_router",)

    def __init__(self, router: Replicas) -> None:
        super().__init__()
        self._router = router

    async def __aenter__(self) -> ReadConnection:
        router = self._router
        node = await router.choose()
        if node is not None:
            metrics.DB_READS.labels(node.name).inc()
            try:
                driver = await node.reads.checkout()
            except (DBAPIError, PoolTimeout) as exc:
                if not _replica_failure(exc):
                    raise
                router.failed(node, exc)
            else:
                self._connection = RoutedConnection(router, node, driver)
                return self._connection
        metrics.DB_READS.labels(PRIMARY).inc()
        self._connection = RoutedConnection(router, None, await router.reads.checkout())
        return self._connection


class RoutedConnection(ReadConnection):
    """A read connection on a replica (or the primary); when the replica fails under a
    statement, the statement runs again on the primary."""

    __slots__ = ("_node", "_router")

    def __init__(self, router: Replicas, node: Node | None, driver: Driver) -> None:
        super().__init__(router.reads if node is None else node.reads, driver)
        self._router = router
        self._node = node

    def retries_lost(self) -> bool:
        # On a replica, a lost connection takes the replica out of rotation and the statement
        # goes to the primary (`all`), rather than to the same replica again.
        return self._node is None and super().retries_lost()

    async def all(
        self, statement: ClauseElement, params: Mapping[str, object] | None = None
    ) -> list[Row]:
        try:
            return await super().all(statement, params)
        except DBAPIError as exc:
            if self._node is None or not _replica_failure(exc):
                raise
            self._router.failed(self._node, exc)
        self._node = None
        await self.move_to(self._router.reads)
        metrics.DB_READS.labels(PRIMARY).inc()
        return await super().all(statement, params)


def _replica_failure(exc: BaseException) -> bool:
    # An exhausted replica pool is load, not failure: it answers 503 like the primary's would.
    return is_unavailable(exc) and not isinstance(exc, PoolTimeout)


class RoutedCache(Cache):
    """The shared cache, whose loads go to a replica only if it has replayed the mark: an
    entry stored under versions bumped after a write must never be built from before it.
    A viewer's sets too (app/cache/viewer.py): they are theirs alone, but they name slugs
    and usernames that anyone's deletion or rename changes."""

    async def get_or_load(
        self,
        family: str,
        key: str,
        versions: Iterable[str],
        load: Loader,
        items: Items | None = None,
        *,
        local: bool = True,
    ) -> str | None:
        async def shared_load() -> str | None:
            token = _SHARED.set(True)
            try:
                return await load()
            finally:
                _SHARED.reset(token)

        return await super().get_or_load(family, key, versions, shared_load, items, local=local)


def write_positions(
    settings: Settings, redis: Redis | None, primary: AsyncEngine
) -> WritePositions | None:
    """For every process that commits (API, job worker): None without replicas or Redis."""
    if not settings.database_replica_urls or redis is None:
        return None
    # Beyond this a replica in rotation has the write anyway (REPLICA_MAX_LAG_S, polled).
    return WritePositions(redis, primary, sticky_s=2 * settings.replica_max_lag_s + 10)
