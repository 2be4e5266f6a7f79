"""Rate limits in a real Redis: 429 + Retry-After past the limit, per client, per account
(login) and per user, and Redis trouble lets requests through."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.main import create_app
from app.middleware.ratelimit import WINDOW_S
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


async def _early_in_a_window() -> None:
    """Fixed windows: a test that counts to a limit starts with time left in its window."""
    if WINDOW_S - time.time() % WINDOW_S < 5:
        await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.1)


async def test_login_attempts_are_limited_per_client(limited):
    login = {"user": {"email": "nobody@x.io", "password": "wrong-password"}}
    await _early_in_a_window()
    statuses = [(await limited.post("/users/login", json=login)).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    refused = await limited.post("/users/login", json=login)
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.json() == {"errors": {"body": ["too many requests, retry later"]}}


async def test_writes_are_limited_per_user(limited, engine, settings):
    alice, bob = await make_users(engine, settings, 2)
    body = {"article": {"title": "t", "description": "d", "body": "b"}}
    await _early_in_a_window()
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


def _from_many_addresses(app: ASGIApp) -> ASGIApp:
    """Each request from an address of its own, as a botnet (or a spoofable proxy) sends them."""
    addresses = itertools.count(1)

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": (f"10.0.{next(addresses)}.1", 40000)}
        await app(scope, receive, send)

    return asgi


@pytest.fixture
async def per_account(
    settings: Settings, committing_state: AppState, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    limits = {"rate_limit_auth_per_minute": 100, "rate_limit_login_per_account_per_minute": 3}
    limited_settings = settings.model_copy(update=limits)
    state = replace(committing_state, settings=limited_settings, redis=redis)
    app = _from_many_addresses(serve_with_state(create_app(limited_settings), state))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=ROOT + "/api"
    ) as client:
        yield client


def _login(email: str, password: str) -> dict[str, dict[str, str]]:
    return {"user": {"email": email, "password": password}}


async def test_login_attempts_are_limited_per_account_from_any_address(per_account):
    alice = {"username": "alice", "email": "alice@x.io", "password": "right-password"}
    assert (await per_account.post("/users", json={"user": alice})).status_code == 201
    await _early_in_a_window()
    attempts = [
        _login("alice@x.io", "right-password"),  # the body still reaches the app intact
        _login("alice@x.io", "wrong-password"),
        _login("alice@x.io", "wrong-password"),
        _login("alice@x.io", "right-password"),  # over the account's limit, even when right
        _login(" Alice@X.io ", "wrong-password"),  # same account, however it is spelled
    ]
    statuses = [
        (await per_account.post("/users/login", json=body)).status_code for body in attempts
    ]
    assert statuses == [200, 401, 401, 429, 429]
    other = await per_account.post("/users/login", json=_login("bob@x.io", "wrong-password"))
    assert other.status_code == 401  # another account has its own budget


async def test_login_bodies_without_an_email_still_reach_the_app(per_account):
    await _early_in_a_window()
    for _ in range(5):
        response = await per_account.post(
            "/users/login", content=b"not json", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        no_email = await per_account.post("/users/login", json={"user": {"email": 7}})
        assert no_email.status_code == 422


async def test_per_account_limit_fails_open_without_redis(per_account, redis_server):
    redis_server.stop()
    try:
        statuses = [
            (await per_account.post("/users/login", json=_login("c@x.io", "nope"))).status_code
            for _ in range(5)
        ]
    finally:
        redis_server.start()
    assert statuses == [401] * 5
