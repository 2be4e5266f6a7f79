"""CPU per read statement by execution path, in one process, one read at a time: the ORM's
(`engine.connect()` + `scalar`, how public reads ran before app/db_reads.py), the driver
path (`ReadPool` on the reads' own pool, app/driver_pool.py), and a plain psycopg_pool (the
floor). Rounds alternate the paths, so the machine's drift affects each alike.

    .venv/bin/python -m bench.read_paths --database-url postgresql://...   # a seeded database
"""

import argparse
import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.articles import queries
from app.config import Settings, async_url
from app.db import make_engine, make_read_pool
from app.db_reads import ReadPool, compiled
from bench.lib.database import plain_url

Step = Callable[[], Awaitable[object]]


async def _cpu_us(step: Step, n: int) -> float:
    for _ in range(max(n // 10, 3)):
        await step()
    started = time.process_time()
    for _ in range(n):
        await step()
    return (time.process_time() - started) * 1e6 / n


async def measure(url: str, n: int, rounds: int) -> dict[str, list[float]]:
    settings = Settings(
        database_url=async_url(url), jwt_secret=secrets.token_urlsafe(48), db_pool_size=2
    )
    engine = make_engine(settings, autocommit=True, pool_size=settings.write_pool_size)
    reads = make_read_pool(settings, engine)  # one connection, as the floor's
    floor: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
        plain_url(url),
        min_size=1,
        max_size=1,
        open=False,
        kwargs={"prepare_threshold": None, "autocommit": True},
    )
    await floor.open(wait=True)
    try:
        statements: dict[str, tuple[Select[*tuple[Any, ...]], dict[str, object]]] = {
            "article": queries.single(await _first_slug(reads), None),
            "list of 20": queries.page(queries.Filters(), None, queries.Window(limit=20)),
        }
        results: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, (statement, params) in statements.items():
                for path, step in _paths(engine, reads, floor, statement, params).items():
                    results.setdefault(f"{name}: {path}", []).append(await _cpu_us(step, n))
        return results
    finally:
        await floor.close()
        await reads.close()
        await engine.dispose()


async def _first_slug(reads: ReadPool) -> str:
    async with reads.connect() as db:
        slug: str | None = await db.scalar(text("SELECT slug FROM articles ORDER BY id LIMIT 1"))
    if slug is None:
        raise SystemExit("no articles: seed the database first (python -m bench.seed)")
    return slug


def _paths(
    engine: AsyncEngine,
    reads: ReadPool,
    floor: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]],
    statement: Select[*tuple[Any, ...]],
    params: dict[str, object],
) -> dict[str, Step]:
    done = compiled(statement, engine.dialect)
    values = done.values(params)

    async def orm() -> object:
        async with engine.connect() as db:
            return (await db.execute(statement, params)).all()

    async def driver() -> object:
        async with reads.connect() as db:
            return await db.all(statement, params)

    async def psycopg_pool() -> object:
        async with floor.connection() as conn:
            cursor = await conn.execute(done.sql, values)
            return await cursor.fetchall()

    return {"ORM": orm, "driver": driver, "psycopg_pool": psycopg_pool}


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per read statement by execution path")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("-n", type=int, default=1000, help="reads per path and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not args.database_url:
        raise SystemExit("pass --database-url or set DATABASE_URL (a seeded database)")
    results = asyncio.run(measure(args.database_url, args.n, args.rounds))
    print(f"CPU µs per read, {args.n} reads per path and round, {args.rounds} rounds:")
    for name, values in results.items():
        print(f"  {name:<28} median {statistics.median(values):6.0f}  min {min(values):6.0f}")


if __name__ == "__main__":
    main()
