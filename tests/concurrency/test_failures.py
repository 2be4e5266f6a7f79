"""Failures in the middle: a response lost after commit, and transient database conflicts."""

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from app.retry import in_savepoint
from tests.concurrency.conftest import make_users
from tests.conftest import ROOT, serve_with_state


def dies_after_commit(app):
    """The process 'dies' once the app has produced its response: nothing reaches the client."""

    async def asgi(scope, receive, _send):
        async def lost(_message):
            raise ConnectionResetError("killed after commit, before the response")

        await app(scope, receive, lost)

    return asgi


async def test_retry_after_a_lost_response_returns_the_committed_result(
    committing_app, committing_state, committing_client, engine, settings
):
    (author,) = await make_users(engine, settings, 1)
    body = {"article": {"title": "Lost in transit", "description": "d", "body": "b"}}
    keyed = author | {"Idempotency-Key": "lost-1"}
    doomed = httpx.ASGITransport(
        app=dies_after_commit(serve_with_state(committing_app, committing_state))
    )
    async with httpx.AsyncClient(transport=doomed, base_url=ROOT + "/api") as client:
        with pytest.raises(ConnectionResetError):
            await client.post("/articles", json=body, headers=keyed)

    retry = await committing_client.post("/articles", json=body, headers=keyed)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    async with engine.connect() as conn:
        titles = (await conn.execute(text("SELECT slug FROM articles"))).scalars().all()
    assert titles == [retry.json()["article"]["slug"]]


async def test_deadlock_is_retried_from_the_savepoint(engine):
    """A real deadlock: the retried side succeeds and the retry is counted."""
    from app.db import make_sessionmaker

    async with engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE IF NOT EXISTS deadlock_demo (id int PRIMARY KEY, n int)")
        )
        await conn.execute(text("TRUNCATE deadlock_demo"))
        await conn.execute(text("INSERT INTO deadlock_demo VALUES (1, 0), (2, 0)"))
    before = _deadlock_retries()
    row_two_locked = asyncio.Event()
    sessions = make_sessionmaker(engine)

    async def other_side() -> None:
        await row_two_locked.wait()
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL deadlock_timeout = '10s'"))  # never the victim
            await conn.execute(text("UPDATE deadlock_demo SET n = n + 1 WHERE id = 1"))
            await conn.execute(text("UPDATE deadlock_demo SET n = n + 1 WHERE id = 2"))  # waits

    async def retried_side() -> None:
        async with sessions() as session:
            await session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
            attempts = 0

            async def work() -> None:
                nonlocal attempts
                attempts += 1
                await session.execute(text("UPDATE deadlock_demo SET n = n + 1 WHERE id = 2"))
                if attempts == 1:
                    row_two_locked.set()
                    await asyncio.sleep(0.3)  # the other side now holds row 1 and waits for row 2
                await session.execute(text("UPDATE deadlock_demo SET n = n + 1 WHERE id = 1"))

            await in_savepoint(session, work)
            await session.commit()

    try:
        await asyncio.gather(other_side(), retried_side())
        async with engine.connect() as conn:
            counts = (
                (await conn.execute(text("SELECT n FROM deadlock_demo ORDER BY id")))
                .scalars()
                .all()
            )
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE deadlock_demo"))
    assert counts == [2, 2]
    assert _deadlock_retries() > before


def _deadlock_retries() -> float:
    value = REGISTRY.get_sample_value("conduit_db_retries_total", {"reason": "deadlock"})
    return value or 0.0
