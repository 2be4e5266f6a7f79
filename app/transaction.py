"""The one owner of "commit, then its after-effects".

Every transaction that changes data ends here, whoever opened it: the request's session
(app/dependencies.py), the idempotency middleware (which commits the effect together with
the stored response) and the job worker's `session_scope`. After the commit, in this order:

1. with read replicas, a transaction that changed what reads show records the primary's
   WAL position (app/replicas.py): the writer's reads, and cache loads, then go only to a
   replica that has replayed it;
2. the cache versions the transaction recorded (`app.cache.store.changed`) are bumped, so
   the next read of any process rebuilds what the write changed;
3. the jobs it deferred (`app.queue.defer`) are enqueued, so a job never refers to rows
   that were rolled back.

No step raises: a Redis outage postpones the invalidation (this process reads from
PostgreSQL until it is published) and leaves the jobs to the worker's periodic relay.
A rollback forgets both.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from saq.queue import Queue
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import queue
from app.cache.store import Cache, take_changes
from app.config import Settings
from app.replicas import WritePositions


class Effects(Protocol):
    """Where a commit's after-effects go (the API's AppState, the worker's AfterCommit)."""

    @property
    def cache(self) -> Cache: ...
    @property
    def jobs(self) -> Queue | None: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def positions(self) -> WritePositions | None: ...


@dataclass(frozen=True, slots=True)
class AfterCommit:
    cache: Cache
    jobs: Queue | None
    settings: Settings
    positions: WritePositions | None = None


@asynccontextmanager
async def begin(
    sessions: async_sessionmaker[AsyncSession], effects: Effects
) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits, with its after-effects, when the block ends, and
    rolls back when the block raises or is cancelled."""
    async with sessions() as session:
        try:
            yield session
        except Exception:
            await rollback(session)
            raise
        except BaseException:
            forget(session)  # cancelled: closing the session rolls back
            raise
        await commit(session, effects)


async def commit(session: AsyncSession, effects: Effects) -> None:
    await session.commit()
    # Committed: its after-effects happen even if the request is cancelled now (its deadline,
    # its client gone). Cut short, the cache would serve what the write changed until the
    # entries expire, and the jobs would wait for the relay.
    await asyncio.shield(_after_commit(session, effects))


async def _after_commit(session: AsyncSession, effects: Effects) -> None:
    changes = take_changes(session)
    if changes and effects.positions is not None:
        await effects.positions.record()  # before the invalidations: see app/replicas.py
    await effects.cache.publish(changes)
    await queue.flush(session, effects.jobs, effects.settings)


async def rollback(session: AsyncSession) -> None:
    forget(session)
    await session.rollback()


def forget(session: AsyncSession) -> None:
    """Drop the after-effects a transaction recorded: it will not commit."""
    take_changes(session)
    queue.discard(session)
