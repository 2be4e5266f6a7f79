from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.cache import Cache
from app.config import Settings
from app.main import create_app
from app.redis import make_redis
from tests.conftest import ROOT, serve_with_state
from tests.redis_server import RedisServer


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


@pytest.fixture
def cache(redis: Redis) -> Cache:
    return Cache(redis)


@pytest.fixture
async def cached_client(
    settings: Settings, committing_state: dict[str, Any], cache: Cache
) -> AsyncIterator[httpx.AsyncClient]:
    """Real commits, real Redis: what a worker of the stack does."""
    app: FastAPI = create_app(settings)
    state = committing_state | {"cache": cache, "redis": cache.redis}
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        yield client


@pytest.fixture
async def uncached_client(
    settings: Settings, committing_state: dict[str, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings)
    transport = httpx.ASGITransport(app=serve_with_state(app, committing_state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        yield client
