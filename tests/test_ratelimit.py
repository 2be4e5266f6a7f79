"""Rate limits in a real Redis: 429 + Retry-After past the limit, per client and per user,
and Redis trouble lets requests through."""

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.main import create_app
from app.state import AppState
from tests.concurrency.conftest import make_users
from tests.conftest import ROOT, serve_with_state


@pytest.fixture
async def limited(
    settings: Settings, committing_state: AppState, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    limits = {"rate_limit_auth_per_minute": 3, "rate_limit_writes_per_minute": 5}
    limited_settings = settings.model_copy(update=limits)
    app = create_app(limited_settings)
    state = replace(committing_state, settings=limited_settings, redis=redis)
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        yield client


async def test_login_attempts_are_limited_per_client(limited):
    login = {"user": {"email": "nobody@x.io", "password": "wrong-password"}}
    statuses = [(await limited.post("/users/login", json=login)).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    refused = await limited.post("/users/login", json=login)
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.json() == {"errors": {"body": ["too many requests, retry later"]}}


async def test_writes_are_limited_per_user(limited, engine, settings):
    alice, bob = await make_users(engine, settings, 2)
    body = {"article": {"title": "t", "description": "d", "body": "b"}}
    alices = [
        (await limited.post("/articles", json=body, headers=alice)).status_code for _ in range(6)
    ]
    assert alices == [201] * 5 + [429]
    assert (await limited.post("/articles", json=body, headers=bob)).status_code == 201
    assert (await limited.get("/articles", headers=alice)).status_code == 200  # reads are free


async def test_redis_down_lets_requests_through(limited, redis_server, engine, settings):
    (alice,) = await make_users(engine, settings, 1)
    body = {"article": {"title": "t", "description": "d", "body": "b"}}
    redis_server.stop()
    try:
        statuses = [
            (await limited.post("/articles", json=body, headers=alice)).status_code
            for _ in range(7)
        ]
    finally:
        redis_server.start()
    assert statuses == [201] * 7
