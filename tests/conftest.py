"""Fixtures: one migrated database per run; each test in a transaction rolled back at the end.

The real `get_session` runs (commit included): it commits a SAVEPOINT inside the test's
outer transaction ("Joining a Session into an External Transaction", SQLAlchemy docs).
"""

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from app.cache.store import Cache
from app.config import Settings
from app.db import Base, make_engine, make_read_pool, make_sessionmaker
from app.db_reads import ReadPool, borrowed
from app.main import create_app
from app.redis import make_redis
from app.security import PasswordHashing, make_token
from app.state import AppState, as_lifespan_state
from tests.database import drop_database, fresh_database
from tests.redis_server import RedisServer

# Servers and workers the tests start inherit a secret of this run's own: the API refuses to
# start without one (app/jwt_secret.py); the tests of that refusal remove it themselves.
os.environ["JWT_SECRET"] = secrets.token_urlsafe(48)

ROOT = "http://test"  # the app's root; the client's base URL is ROOT + "/api"

# Cheap argon2 parameters: tests check behaviour, not hashing cost.
FAST_HASHING = PasswordHashing(4, PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


# Suites that start a whole stack of their own: `make test-fast` leaves them out.
_STACK_SUITES = ("stack", "faults", "cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(Path(__file__).parent).parts[0] in _STACK_SUITES:
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = fresh_database("conduit_test")
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    # Tests fire hundreds of in-process requests at once on purpose: no admission limit
    # (tests/test_lifetime.py sets its own).
    return Settings(
        database_url=database_url, jwt_secret="test-secret-" + "x" * 32, max_in_flight=100_000
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def api_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The engine as the app's lifespan makes it: autocommit, sessions switch to transactions."""
    engine = make_engine(settings, autocommit=True)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        transaction = await conn.begin()
        yield conn
        await transaction.rollback()


@pytest.fixture
def sessions(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
        autoflush=False,
    )


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


def serve_with_state(app: FastAPI, state: AppState) -> ASGIApp:
    """The app as uvicorn runs it after the lifespan: each request's scope carries the state
    (httpx's ASGITransport runs no lifespan). Dependency overrides still apply on top."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": as_lifespan_state(state)}, receive, send)

    return asgi


# The read pools `make_state` made, one per engine, closed when the session ends.
_READ_POOLS: dict[AsyncEngine, ReadPool] = {}


@pytest.fixture(scope="session", autouse=True)
async def _close_read_pools() -> AsyncIterator[None]:
    yield
    for pool in _READ_POOLS.values():
        await pool.close()


def read_pool(settings: Settings, engine: AsyncEngine) -> ReadPool:
    """A read pool on `engine`'s database, as the lifespan makes it; one per engine."""
    if engine not in _READ_POOLS:
        _READ_POOLS[engine] = make_read_pool(settings, engine)
    return _READ_POOLS[engine]


def make_state(settings: Settings, engine: AsyncEngine, **fields: Any) -> AppState:
    """The lifespan's state over `engine`, without Redis; `fields` replace any part."""
    connect = fields.pop("connect", None) or read_pool(settings, engine).connect
    state = AppState(
        settings=settings,
        engine=engine,
        connect=connect,
        sessions=make_sessionmaker(engine),
        redis=None,
        jobs=None,
        cache=Cache(None),
        hashing=FAST_HASHING,
    )
    return replace(state, **fields)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(
    app: FastAPI,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    connection: AsyncConnection,
) -> AsyncIterator[httpx.AsyncClient]:
    state = make_state(
        settings,
        engine,
        # Reads use the test's own connection, so they see its uncommitted rows.
        connect=lambda: borrowed(connection),
        sessions=sessions,  # every request's transaction is a savepoint of the test's
    )
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        yield client


@pytest.fixture
def committing_app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def committing_state(
    settings: Settings, engine: AsyncEngine, api_engine: AsyncEngine
) -> AsyncIterator[AppState]:
    """Lifespan state over a real pool, as the app has it: requests commit for real. Tables
    are emptied afterwards."""
    try:
        yield make_state(settings, api_engine)
    finally:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def committing_client(
    committing_app: FastAPI, committing_state: AppState
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests commit for real, through the pool, so they can run concurrently."""
    transport = httpx.ASGITransport(app=serve_with_state(committing_app, committing_state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        yield client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer, settings: Settings) -> AsyncIterator[Redis]:
    client = make_redis(settings.model_copy(update={"redis_url": redis_server.url}))
    assert client is not None
    await client.flushdb()
    yield client
    await client.aclose()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def token_for(user_id: int, settings: Settings, **overrides: Any) -> str:
    ttl = overrides.get("ttl_seconds", settings.jwt_ttl_seconds)
    return make_token(user_id, secret=overrides.get("secret", settings.jwt_secret), ttl_seconds=ttl)
