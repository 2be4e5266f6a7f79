"""Probes: /healthz (process up), /livez (event loop turning), /readyz (dependencies answer)."""

import asyncio

from fastapi import APIRouter, Response
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.dependencies import EngineDep, RedisDep

router = APIRouter(tags=["Health"])
READY_TIMEOUT_S = 1.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The event loop is serving requests; depends on nothing else."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency does not answer"}})
async def readyz(engine: EngineDep, redis: RedisDep, response: Response) -> dict[str, str]:
    """PostgreSQL (through PgBouncer, when deployed so) and Redis answer within a short timeout."""
    checks = {"database": await _check_database(engine)}
    if redis is not None:
        checks["redis"] = await _check_redis(redis)
    if any(result != "ok" for result in checks.values()):
        response.status_code = 503
        response.headers["Retry-After"] = "1"
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
