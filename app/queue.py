"""The job queue (SAQ on Redis) as the API and the worker see it, and jobs held back until
the transaction that asked for them commits.

`defer(session, ...)` only notes a job on the session; `flush(session, queue)` enqueues the
notes after the commit (app/transaction.py, whoever owns the transaction), and
`discard(session)` drops them on rollback. So a job never refers to rolled-back rows, and a
Redis outage at commit time costs a log line, not the work: the state of every job is in
PostgreSQL and the worker's periodic relay enqueues whatever is due (app/workers/jobs.py).
"""

import asyncio
import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq.queue import Queue
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings

log = logging.getLogger("conduit.queue")

PENDING = "conduit.deferred_jobs"
ENQUEUE_TIMEOUT_S = 1.0

# Job names: the worker registers functions of these names (app/workers/jobs.py).
RUN_IMPORT = "run_import"
RELAY_EVENT = "relay_event"
DELIVER_WEBHOOK = "deliver_webhook"


@dataclass(frozen=True, slots=True)
class Deferred:
    function: str
    key: str  # SAQ drops a second job with the key of one not yet finished
    kwargs: dict[str, int] = field(default_factory=dict)
    scheduled: float = 0.0  # epoch seconds; 0 = now


def make_queue(settings: Settings, redis: Redis | None) -> Queue | None:
    """A SAQ queue over the process's Redis client (None without Redis)."""
    if redis is None:
        return None
    return RedisQueue(redis, name=settings.queue_name)


def job_options(function: str, settings: Settings) -> dict[str, float | int]:
    """Timeout, heartbeat and retries per job: a killed worker's job is retried once its
    heartbeat is `job_heartbeat_s` old (SAQ's sweep)."""
    if function == RUN_IMPORT:
        return {"timeout": 0, "heartbeat": settings.job_heartbeat_s, "retries": 5, "ttl": 3600}
    if function == DELIVER_WEBHOOK:
        # Retries of a delivery are scheduled by the job itself (PostgreSQL keeps the count);
        # SAQ's own retry only covers a crash between claiming and recording the attempt.
        return {"timeout": int(settings.webhook_timeout_s) + 10, "retries": 2}
    return {"timeout": 60, "retries": 3}


def defer(
    session: AsyncSession,
    function: str,
    *,
    key: str,
    scheduled: float = 0.0,
    **kwargs: int,
) -> None:
    """Enqueue `function(**kwargs)` once this session's transaction commits."""
    pending: list[Deferred] = session.info.setdefault(PENDING, [])
    pending.append(Deferred(function, key, kwargs, scheduled))


def discard(session: AsyncSession) -> None:
    """The transaction rolled back: forget its jobs."""
    session.info.pop(PENDING, None)


async def flush(session: AsyncSession, queue: Queue | None, settings: Settings) -> None:
    """After commit: enqueue the session's deferred jobs. Never raises: a job that cannot be
    enqueued now is enqueued by the periodic relay, which reads the state in PostgreSQL."""
    pending: list[Deferred] = session.info.pop(PENDING, [])
    if queue is None or not pending:
        return
    await enqueue_all(queue, pending, settings)


async def enqueue_all(queue: Queue, jobs: list[Deferred], settings: Settings) -> int:
    """Enqueue `jobs`, returning how many made it; a Redis failure is logged, not raised."""
    done = 0
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT_S * max(1, len(jobs) // 100)):
            for job in jobs:
                options = job_options(job.function, settings)
                await queue.enqueue(
                    job.function,
                    key=job.key,
                    # An int 0 means "now" to SAQ's enqueue script (0.0 would never run).
                    scheduled=job.scheduled if job.scheduled > 0 else 0,
                    **options,
                    **job.kwargs,
                )
                done += 1
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "job queue unavailable (%s): %d job(s) left to the periodic relay",
            type(exc).__name__,
            len(jobs) - done,
        )
    return done
