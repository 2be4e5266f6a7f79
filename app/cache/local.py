"""The in-process tier (L1): copies of the shared cache's documents in this worker's memory,
bounded by bytes, least recently used first out, and emptied by push.

An entry is kept with the version names it depends on. An invalidation names versions
(app/cache/channel.py delivers them from every writer of the cluster), and every entry that
depends on one of them is dropped. An entry may be filled only if none of its names was
invalidated while it was being read from Redis: a short log of recent invalidations tells
(`since`/`fill`), so a read that raced a write never plants its old copy here.

L1 only holds what a missed invalidation could not make wrong for long: the channel's
listener empties it whenever it cannot be sure it heard everything, and readers skip it
until the listener says so again (`Cache.get_or_load`).
"""

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

# How many recent invalidations a fill may be checked against; a fill that started longer
# ago (in invalidations) than this is not kept.
LOG_SIZE = 4096
ENTRY_OVERHEAD = 200  # bytes of bookkeeping per entry, beside the document itself
# A belt to the push's braces: no entry outlives this, whatever was (not) heard.
MAX_AGE_S = 60.0

T = TypeVar("T")


@dataclass(slots=True)
class Entry:
    document: str
    names: tuple[str, ...]  # the versions (and items) it was built from
    expires: float  # time.monotonic() after which it is not served
    stored_at: float  # time.time() of the shared cache's entry it copies
    memo: Any = None  # something derived from the document once (app/cache/viewer.py)


class LocalCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._keys_by_name: dict[str, set[str]] = {}
        self._log: deque[tuple[int, frozenset[str]]] = deque(maxlen=LOG_SIZE)
        self._count = 0  # invalidations seen, including flushes

    def get(self, key: str) -> str | None:
        entry = self.entry(key)
        return None if entry is None else entry.document

    def entry(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() > entry.expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def memo(self, key: str, document: str, derive: Callable[[str], T]) -> T:
        """`derive(document)`, computed once while `document` is the entry for `key`."""
        entry = self._entries.get(key)
        if entry is None or entry.document is not document:
            return derive(document)
        if entry.memo is None:
            entry.memo = derive(document)
        memo: T = entry.memo
        return memo

    def since(self) -> int:
        """A mark to take before reading from Redis; hand it to `fill`."""
        return self._count

    def fill(
        self,
        key: str,
        document: str,
        names: Iterable[str],
        mark: int,
        *,
        stored_at: float | None = None,
    ) -> bool:
        """Keep `document` (stored in the shared cache at `stored_at`, by default now) unless
        one of `names` was invalidated after `mark` (or too long ago to know). True if kept."""
        names = tuple(names)
        if self._count - mark > len(self._log):  # too long ago to tell
            return False
        wanted = frozenset(names)
        for count, invalidated in reversed(self._log):
            if count <= mark:
                break
            if not invalidated or invalidated & wanted:  # empty: a flush
                return False
        cost = len(document) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return False
        self._drop(key)
        expires = time.monotonic() + MAX_AGE_S
        stored_at = time.time() if stored_at is None else stored_at
        self._entries[key] = Entry(document, names, expires, stored_at)
        self.size += cost
        for name in names:
            self._keys_by_name.setdefault(name, set()).add(key)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return True

    def invalidate(self, names: Iterable[str]) -> None:
        """Drop every entry built from one of `names`."""
        names = frozenset(names)
        self._record(names)
        for name in names:
            for key in self._keys_by_name.pop(name, ()):
                self._drop(key)

    def flush(self) -> None:
        """Drop everything (and every fill in progress)."""
        self._record(frozenset())
        self._entries.clear()
        self._keys_by_name.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _record(self, names: frozenset[str]) -> None:
        self._count += 1
        self._log.append((self._count, names))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.size -= len(entry.document) + ENTRY_OVERHEAD
        for name in entry.names:
            keys = self._keys_by_name.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_by_name[name]
