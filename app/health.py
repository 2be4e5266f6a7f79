"""Probes: /healthz (process up), /livez (event loop turning), /readyz (dependencies answer)."""

import asyncio
import time
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Response
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.dependencies import EngineDep, RedisDep

router = APIRouter(tags=["Health"])
READY_TIMEOUT_S = 1.0
# /readyz is never shed (app/middleware/request_edge.py), so it must not cost a query per call:
# within this many seconds a process answers from its last check, and probes that arrive
# while a check runs wait for that one.
READY_CACHE_S = 1.0

Checks = dict[str, str]


# The request edge answers /healthz and /livez itself (app/middleware/request_edge.py), with
# the same body: these routes document them, and serve them under an app without the edge.


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The event loop is serving requests; depends on nothing else."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency does not answer"}})
async def readyz(engine: EngineDep, redis: RedisDep, response: Response) -> Checks:
    """PostgreSQL (through PgBouncer, when deployed so) and Redis answer within a short timeout
    (checked at most once a second per process)."""
    checks = await _recent_checks(engine, redis)
    if any(result != "ok" for result in checks.values()):
        response.status_code = 503
        response.headers["Retry-After"] = "1"
    return checks


@dataclass(slots=True)
class _Recent:
    redis: Redis | None
    until: float  # monotonic; the check's result is reused until then
    check: "asyncio.Task[Checks]"


# Per engine (one per process; tests make several), forgotten with it.
_recent: WeakKeyDictionary[AsyncEngine, _Recent] = WeakKeyDictionary()


async def _recent_checks(engine: AsyncEngine, redis: Redis | None) -> Checks:
    now = time.monotonic()
    recent = _recent.get(engine)
    if (
        recent is None
        or recent.redis is not redis
        or recent.until <= now
        or recent.check.get_loop() is not asyncio.get_running_loop()
    ):
        recent = _Recent(redis, now + READY_CACHE_S, asyncio.create_task(_checks(engine, redis)))
        _recent[engine] = recent
    # Shielded: a probe whose client gives up does not cancel the check others wait for.
    return dict(await asyncio.shield(recent.check))


async def _checks(engine: AsyncEngine, redis: Redis | None) -> Checks:
    checks = {"database": await _check_database(engine)}
    if redis is not None:
        checks["redis"] = await _check_redis(redis)
    return checks


async def _check_database(engine: AsyncEngine) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except TimeoutError:
        # Every pooled connection busy serving requests is load, not failure: stay in rotation.
        if _pool_saturated(engine):
            return "ok"
        return "unavailable: timed out"
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return f"unavailable: {type(exc).__name__}"
    return "ok"


def _pool_saturated(engine: AsyncEngine) -> bool:
    pool = engine.pool
    return (
        isinstance(pool, QueuePool) and pool.checkedin() == 0 and pool.checkedout() >= pool.size()
    )


async def _check_redis(redis: Redis) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await redis.ping()
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return f"unavailable: {type(exc).__name__}"
    return "ok"
