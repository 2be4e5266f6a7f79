import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.cache.store import Cache
from app.config import Settings
from app.main import create_app
from app.state import AppState
from tests.conftest import ROOT, serve_with_state


@pytest.fixture
def cache(redis: Redis) -> Cache:
    return Cache(redis)


@pytest.fixture
async def cached_client(
    settings: Settings, committing_state: AppState, cache: Cache
) -> AsyncIterator[httpx.AsyncClient]:
    """Real commits, real Redis: what a worker of the stack does."""
    app: FastAPI = create_app(settings)
    state = replace(committing_state, cache=cache, redis=cache.redis)
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        yield client


@pytest.fixture
async def uncached_client(
    settings: Settings, committing_state: AppState
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings)
    transport = httpx.ASGITransport(app=serve_with_state(app, committing_state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        yield client


class Rebuild:
    """The loads of an entry rebuilt while others read it: `old` gives the first document,
    `rebuild` sets `started` and gives the new one once `release` is set."""

    def __init__(self) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()

    async def old(self) -> str:
        return '{"tags": ["old"]}'

    async def rebuild(self) -> str:
        self.started.set()
        await self.release.wait()
        return '{"tags": ["new"]}'
