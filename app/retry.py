"""Transient database failures (serialization failure 40001, deadlock 40P01) are retried
from a savepoint with exponential backoff and jitter, a bounded number of times, using
tenacity; the request's transaction and everything before the savepoint survive.

Under READ COMMITTED (our default) a deadlock aborts only the statement that detected it,
so replaying the unit of work from its savepoint is enough once the other side has moved on.
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from app.observability import metrics

T = TypeVar("T")
TRANSIENT_SQLSTATES = {"40001": "serialization_failure", "40P01": "deadlock"}
ATTEMPTS = 5


def _sqlstate(exc: BaseException | None) -> str | None:
    return getattr(exc.orig, "sqlstate", None) if isinstance(exc, DBAPIError) else None


def is_transient(exc: BaseException) -> bool:
    return _sqlstate(exc) in TRANSIENT_SQLSTATES


def _count(state: RetryCallState) -> None:
    failure = state.outcome.exception() if state.outcome is not None else None
    reason = TRANSIENT_SQLSTATES.get(_sqlstate(failure) or "", "other")
    metrics.DB_RETRIES.labels(reason).inc()


async def in_savepoint(session: AsyncSession, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` inside a SAVEPOINT, replaying it when the database reports a transient
    conflict; the last failure propagates after ATTEMPTS tries."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_random_exponential(multiplier=0.01, max=0.5),
        stop=stop_after_attempt(ATTEMPTS),
        before_sleep=_count,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            async with session.begin_nested():
                return await work()
    raise AssertionError("unreachable: tenacity re-raises the last failure")
