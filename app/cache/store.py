"""Shared read cache in Redis, with request collapsing, early refresh and versioned
invalidation. Hand-written on redis.asyncio (docs/ARCHITECTURE.md, "Cache", says why not cashews).

Entries are whole anonymous JSON documents (what a reader without a token sees). Each entry
is stored with the versions of everything it was built from; a write bumps those versions
after its commit (`changed()`, then `Cache.publish` from app/transaction.py), so the next read of any process sees
the entry as stale and rebuilds it: a writer always reads its own write. Reading an entry and
its versions is one MGET; a reader that built an entry from data older than a concurrent
write stores it under the old versions, where nobody will ever read it.

A document that shows many items (a page of articles) also depends on each item's own
version (`article:<slug>`), checked by a second MGET, so a favorite bumps one article's version
and the pages that show it, not every page of every list. Which items a page shows is known
only after loading it, too late to read their versions before the load as above; so item
writes also bump one epoch (`item_changed`), read before the load and again with the items'
versions after it: if it moved, a write may have landed in between and the entry is stored
untrusted (the next reader rebuilds it).

Misses are collapsed: within a process by a shared future per key, across processes by a
short Redis lease (SET NX PX); the other readers wait briefly for the leaseholder's entry.
Hot entries are refreshed early (probabilistically, before the TTL) by one reader, while
everyone else goes on with the entry, which is still current (its versions say so).

In front of Redis, each worker may keep an in-process copy of what it read (L1,
app/cache/local.py), emptied by push from every writer (app/cache/channel.py): a hot read then
costs no network round trip at all. An L1 reader also takes part in the early refresh of the
Redis entry its copy was read from (one of them rebuilds it, the others go on reading the
copy): L1 reads Redis at most once a minute per key, so without that the entry of a hot key
was never refreshed early and, at its TTL, gone for every reader at once.

Redis trouble never fails a request: every call has a timeout of milliseconds, an error
counts as a miss and opens a short circuit (Redis is skipped for CIRCUIT_S), after which
the cache is tried again by itself. An invalidation that could not be published is kept and
published before this process uses the cache again; until then this process reads from
PostgreSQL. (Another process may serve the entry it already has until then: the window is
the outage plus the writer's next request, and TTL_S bounds it in any case.)
"""

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.cache.channel import CHANNEL, PUBLISH_SCRIPT, SEQUENCE, Listener
from app.cache.local import LocalCache
from app.observability import context, metrics

log = logging.getLogger("conduit.cache")

TTL_S = 120  # an upper bound only: versions, not time, keep entries correct
EARLY_REFRESH_S = 30  # in the last 30 s of its life an entry may be rebuilt early
LEASE_MS = 2000
WAIT_FOR_LEASE_S = 0.5
CIRCUIT_S = 1.0
_CHANGES = "conduit.cache.changes"  # session.info key: versions a transaction bumps
ITEMS_EPOCH = "items"  # bumped with every item version (`item_changed`)

Loader = Callable[[], Awaitable[str | None]]
# The version names of the items a document shows, e.g. ["article:a-slug", ...].
Items = Callable[[str], list[str]]


class Fetched(NamedTuple):
    document: str | None
    names: list[str] | None  # what it was built from, when known to be current (for L1)
    stored_at: float  # time.time() of its Redis entry


def changed(session: AsyncSession, *versions: str) -> None:
    """Record, inside the write's transaction, which versions it changes; they are bumped
    after commit by `Cache.publish`, called by app/transaction.py."""
    session.info.setdefault(_CHANGES, set()).update(versions)


def item_changed(session: AsyncSession, *versions: str) -> None:
    """As `changed`, for versions that documents of many items depend on (see the module)."""
    changed(session, ITEMS_EPOCH, *versions)


def take_changes(session: AsyncSession) -> set[str]:
    changes: set[str] = session.info.pop(_CHANGES, set())
    return changes


class Cache:
    """One per process, in the lifespan state; `Cache(None)` is a cache that is always off.
    With `local_bytes`, an in-process tier of that size sits in front of Redis once
    `listen()` has started its invalidation listener."""

    def __init__(self, redis: Redis | None, *, local_bytes: int = 0) -> None:
        self.redis = redis
        # (family, local|hit|miss|collapsed|error)
        self.stats: Counter[tuple[str, str]] = Counter()
        self.local = LocalCache(local_bytes) if redis is not None and local_bytes > 0 else None
        self.listener: Listener | None = None
        self._inflight: dict[str, asyncio.Future[str | None]] = {}
        self._refreshing: set[str] = set()  # keys being rebuilt early by a reader here
        self._closed_until = 0.0
        self._unpublished: set[str] = set()
        self._publish_script = redis.register_script(PUBLISH_SCRIPT) if redis else None

    def listen(self, url: str, *, connect_timeout_s: float) -> None:
        """Start hearing invalidations (the lifespan; `close()` stops it). Until the listener
        has subscribed, L1 is not used."""
        if self.local is not None and self.listener is None:
            self.listener = Listener(url, self.local, connect_timeout_s=connect_timeout_s)
            self.listener.start()

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None

    async def caught_up(self) -> bool:
        """This worker has applied every invalidation published so far in the cluster (one
        GET): a reader who may have just written elsewhere can trust L1."""
        if self.listener is None or not self.listener.trusted or not self.available:
            return False
        assert self.redis is not None  # noqa: S101 - checked by `available`
        context.reached(context.REDIS)
        try:
            sequence = int(await self.redis.get(SEQUENCE) or 0)
        except (RedisError, OSError, TimeoutError):
            self._open_circuit()
            return False
        return self.listener.caught_up(sequence)

    @property
    def available(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._closed_until

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
        """The document for `key`; `load()` builds it from PostgreSQL on a miss (None: the
        thing does not exist, which is not cached). `items` names the item versions a built
        document depends on besides `versions`. `local=False`: not from L1 (a reader who may
        have just written, unless `caught_up()`)."""
        if not self.available or not await self._publish_pending():
            return await load()
        l1 = self.local if local and self.listener is not None and self.listener.trusted else None
        # The time of the Redis entry this reader rebuilds early while L1 serves its copy.
        refresh: float | None = None
        if l1 is not None and (copy := l1.entry(key)) is not None:
            busy = key in self._inflight or key in self._refreshing
            if busy or not self._refresh_early(copy.stored_at):
                self._count(family, "local")
                return copy.document
            refresh = copy.stored_at
        versions = sorted(versions)
        if (inflight := self._inflight.get(key)) is not None:
            self._count(family, "collapsed")
            try:
                return await asyncio.shield(inflight)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not inflight.cancelled() or (current is not None and current.cancelling()):
                    raise  # this request itself is cancelled
                # The leader's request was cancelled (its deadline, its client gone), not this
                # one: take over (the first to get here leads, the others follow it).
                return await self.get_or_load(family, key, versions, load, items)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future

        def serve_current(document: str) -> None:
            # An early refresh: the entry is still current, so the readers waiting here take
            # it now, and later ones read it as usual (L1 readers: their copy), instead of all
            # waiting for the rebuild.
            future.set_result(document)
            del self._inflight[key]
            self._refreshing.add(key)

        try:
            mark = l1.since() if l1 is not None else 0
            fetched = await self._fetch(
                family, key, versions, load, items, serve_current, refresh=refresh
            )
            document, names = fetched.document, fetched.names
            if l1 is not None and document is not None and names is not None:
                l1.fill(key, document, names, mark, stored_at=fetched.stored_at)
            if not future.done():
                future.set_result(document)
            return document
        except asyncio.CancelledError:
            # Not the followers' cancellation: handed to them as an error, it would end
            # requests nobody cancelled (a bare 500 from the server, or a spurious 503).
            future.cancel()
            raise
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
            elif key in self._refreshing:  # served early (serve_current): the rebuild is over
                self._refreshing.discard(key)

    async def publish(self, versions: Iterable[str]) -> None:
        """Bump versions after a commit; entries built from the old ones are stale from now,
        in Redis and in every worker's L1."""
        if self.redis is None:
            return
        self._unpublished.update(versions)
        if self.local is not None:
            self.local.invalidate(self._unpublished)  # this worker's own, at once
        if self.available:
            await self._publish_pending()

    async def _publish_pending(self) -> bool:
        """Publish the invalidations not yet published; False while that is impossible."""
        if not self._unpublished:
            return True
        names = sorted(self._unpublished)
        assert self._publish_script is not None  # noqa: S101
        try:
            await self._publish_script(
                keys=[f"v:{name}" for name in names], args=[SEQUENCE, CHANNEL, "\n".join(names)]
            )
        except (RedisError, OSError, TimeoutError):
            log.warning("cache invalidation of %s postponed: Redis unavailable", names)
            self._open_circuit()
            return False
        self._unpublished.difference_update(names)
        return True

    async def _fetch(
        self,
        family: str,
        key: str,
        versions: list[str],
        load: Loader,
        items: Items | None,
        serve_current: Callable[[str], None],
        *,
        refresh: float | None = None,
    ) -> Fetched:
        """The document, and the names it was built from when it is known to be current
        (what L1 may keep it under), else None. `serve_current(document)` is called when an
        early refresh starts, with the entry that is still current; `refresh`: the caller
        has drawn the early refresh of the entry stored at that time (if Redis has a newer
        one, another reader has rebuilt it already)."""
        redis = self.redis
        assert redis is not None  # noqa: S101 - checked by `available`
        names = [*versions, ITEMS_EPOCH] if items else versions
        try:
            entry, *current = await redis.mget([f"c:{key}", *(f"v:{name}" for name in names)])
            stamp = [int(value or 0) for value in current[: len(versions)]]
            stored = orjson.loads(entry) if entry is not None else None
            if stored is not None and not (
                stored["v"] == stamp and await self._items_current(stored)
            ):
                stored = None  # stale
        except (RedisError, OSError, TimeoutError):
            self._count(family, "error")
            self._open_circuit()
            return Fetched(await load(), None, time.time())
        current_document: str | None = None  # still valid, chosen for an early refresh
        if stored is not None:
            built_from, current_at = [*versions, *stored.get("x", [])], stored["t"]
            if current_at != refresh and not self._refresh_early(current_at):
                self._count(family, "hit")
                return Fetched(stored["d"], built_from, current_at)
            current_document = stored["d"]
        leased = await self._lease(key)
        if current_document is not None:
            if not leased:  # another process is refreshing it; it is still current
                self._count(family, "hit")
                return Fetched(current_document, built_from, current_at)
            serve_current(current_document)
        self._count(family, "miss")
        if not leased:
            waited = await self._wait_for(key, stamp)
            if waited is not None:
                self._count(family, "collapsed")
                # Its items are not known here: not for L1.
                return Fetched(waited, None, time.time())
        try:
            document_or_none = await load()
        except Exception:
            if current_document is None:
                raise
            # PostgreSQL is down or busy: the entry is still valid (no write has bumped its
            # versions), so an early refresh that failed costs the reader nothing.
            log.warning("early refresh of %s failed: serving the current entry", key)
            return Fetched(current_document, None, current_at)
        stored_at = time.time()
        if document_or_none is None:
            return Fetched(None, None, stored_at)
        if not items:
            await self._store(key, stamp, document_or_none, stored_at)
            return Fetched(document_or_none, versions, stored_at)
        names = items(document_or_none)
        item_stamp = await self._item_stamp(names, epoch=int(current[-1] or 0))
        await self._store(key, stamp, document_or_none, stored_at, (names, item_stamp))
        trusted = [*versions, *names] if item_stamp is not None else None
        return Fetched(document_or_none, trusted, stored_at)

    async def _items_current(self, stored: dict[str, Any]) -> bool:
        """The entry's items still have the versions it was built with (no items: true)."""
        names: list[str] = stored.get("x", [])
        built_with: list[int] | None = stored.get("xv", [])
        if built_with is None:  # stored untrusted: an item write raced its load
            return False
        if not names:
            return True
        assert self.redis is not None  # noqa: S101
        current = await self.redis.mget([f"v:{name}" for name in names])
        return [int(value or 0) for value in current] == built_with

    async def _item_stamp(self, names: list[str], epoch: int) -> list[int] | None:
        """The items' versions after the load, trusted only if no item write was published
        since the epoch was read before it (else None: the entry will not be served)."""
        assert self.redis is not None  # noqa: S101
        try:
            now, *current = await self.redis.mget(
                [f"v:{ITEMS_EPOCH}", *(f"v:{name}" for name in names)]
            )
        except (RedisError, OSError, TimeoutError):
            self._open_circuit()
            return None
        if int(now or 0) != epoch:
            return None
        return [int(value or 0) for value in current]

    def _refresh_early(self, stored_at: float) -> bool:
        # Probabilistic early expiration: the closer to the end of its life, the likelier
        # one reader rebuilds it, so a hot key never expires for everyone at once.
        left = stored_at + TTL_S - time.time()
        return left < EARLY_REFRESH_S and random.random() > left / EARLY_REFRESH_S  # noqa: S311

    async def _lease(self, key: str) -> bool:
        assert self.redis is not None  # noqa: S101
        try:
            return bool(await self.redis.set(f"l:{key}", b"1", nx=True, px=LEASE_MS))
        except (RedisError, OSError, TimeoutError):
            self._open_circuit()
            return True  # build it ourselves

    async def _wait_for(self, key: str, stamp: list[int]) -> str | None:
        """Another process holds the lease: poll for its entry a little, then give up."""
        assert self.redis is not None  # noqa: S101
        deadline = time.monotonic() + WAIT_FOR_LEASE_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            try:
                entry = await self.redis.get(f"c:{key}")
            except (RedisError, OSError, TimeoutError):
                self._open_circuit()
                return None
            if entry is not None and (stored := orjson.loads(entry))["v"] == stamp:
                document: str = stored["d"]
                return document
        return None

    async def _store(
        self,
        key: str,
        stamp: list[int],
        document: str,
        stored_at: float,
        items: tuple[list[str], list[int] | None] | None = None,
    ) -> None:
        """Stored even when untrusted: readers already waiting for this load take it
        (`_wait_for`), later ones rebuild it."""
        assert self.redis is not None  # noqa: S101
        fields: dict[str, Any] = {"v": stamp, "t": stored_at, "d": document}
        if items is not None:
            fields["x"], fields["xv"] = items
        entry = orjson.dumps(fields)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(f"c:{key}", entry, ex=TTL_S)
                pipe.delete(f"l:{key}")
                await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            self._open_circuit()

    def _open_circuit(self) -> None:
        self._closed_until = time.monotonic() + CIRCUIT_S

    def _count(self, family: str, result: str) -> None:
        self.stats[family, result] += 1
        # A follower of a lookup in flight in this worker counts as Redis, where its leader went.
        context.reached(context.LOCAL if result == "local" else context.REDIS)
        metrics.CACHE_REQUESTS.labels(family, result).inc()


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
