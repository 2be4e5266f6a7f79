"""Fixtures: one migrated database per run; each test in a transaction rolled back at the end.

The real `get_session` runs (commit included): it commits a SAVEPOINT inside the test's
outer transaction ("Joining a Session into an External Transaction", SQLAlchemy docs).
"""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import Base, make_engine, make_sessionmaker
from app.dependencies import (
    get_engine,
    get_hashing,
    get_reader,
    get_reader_engine,
    get_redis,
    get_sessionmaker,
)
from app.main import create_app
from app.security import PasswordHashing, make_token
from tests.database import fresh_database

ROOT = "http://test"  # the app's root; the client's base URL is ROOT + "/api"

# Cheap argon2 parameters: tests check behaviour, not hashing cost.
FAST_HASHING = PasswordHashing(4, PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="session")
def database_url() -> str:
    return fresh_database("conduit_test")


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, jwt_secret="test-secret-" + "x" * 32)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings)
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


@pytest.fixture
def app(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    connection: AsyncConnection,
) -> FastAPI:
    app = create_app(settings)
    app.dependency_overrides[get_sessionmaker] = lambda: sessions
    app.dependency_overrides[get_hashing] = lambda: FAST_HASHING
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_redis] = lambda: None
    app.dependency_overrides[get_reader] = lambda: connection  # sees the test's own rows
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        yield client


@pytest.fixture
async def committing_client(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests commit for real, through the pool, so they can run concurrently.
    Tables are emptied afterwards."""
    app = create_app(settings)
    app.dependency_overrides[get_sessionmaker] = lambda: make_sessionmaker(engine)
    app.dependency_overrides[get_hashing] = lambda: FAST_HASHING
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_redis] = lambda: None
    app.dependency_overrides[get_reader_engine] = lambda: engine.execution_options(
        isolation_level="AUTOCOMMIT"
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
            yield client
    finally:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def token_for(user_id: int, settings: Settings, **overrides: Any) -> str:
    ttl = overrides.get("ttl_seconds", settings.jwt_ttl_seconds)
    return make_token(user_id, secret=overrides.get("secret", settings.jwt_secret), ttl_seconds=ttl)
