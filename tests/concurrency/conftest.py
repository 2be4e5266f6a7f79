"""Concurrency tests: real commits through a real pool, many requests in flight at once.

Each test gets an app over a pool large enough that the requests really overlap in
PostgreSQL; tables are emptied afterwards (see `committing_client`)."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import make_engine
from tests.conftest import auth, token_for

T = TypeVar("T")


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    # A generous pool wait: these tests queue hundreds of requests on purpose.
    return Settings(
        database_url=database_url,
        jwt_secret="test-secret-" + "x" * 32,
        db_pool_timeout=60,
        max_in_flight=100_000,
        request_deadline_s=120,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """This folder's own engine, built from the settings above (not the suite's)."""
    engine = make_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def api_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The app's engine (autocommit) over this folder's pool settings."""
    engine = make_engine(settings, autocommit=True)
    yield engine
    await engine.dispose()


async def gather(requests: Iterable[Awaitable[T]]) -> list[T]:
    """Start every request at once and wait for all of them."""
    return list(await asyncio.gather(*requests))


async def make_users(engine: AsyncEngine, settings: Settings, count: int) -> list[dict[str, str]]:
    """`count` committed users, returned as ready-to-use auth headers."""
    async with engine.begin() as conn:
        ids = (
            await conn.execute(
                text(
                    "INSERT INTO users (username, email, password_hash) "
                    "SELECT 'crowd' || n, 'crowd' || n || '@x.io', 'x' "
                    "FROM generate_series(1, :count) AS n RETURNING id"
                ),
                {"count": count},
            )
        ).scalars()
        return [auth(token_for(user_id, settings)) for user_id in ids]


async def publish(client: httpx.AsyncClient, headers: dict[str, str], title: str = "Hot") -> str:
    body = {"article": {"title": title, "description": "d", "body": "b"}}
    response = await client.post("/articles", json=body, headers=headers)
    assert response.status_code == 201, response.text
    slug: str = response.json()["article"]["slug"]
    return slug


async def favorite_rows(engine: AsyncEngine, slug: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM favorites f JOIN articles a ON a.id = f.article_id "
                "WHERE a.slug = :slug"
            ),
            {"slug": slug},
        )
        return int(count or 0)
