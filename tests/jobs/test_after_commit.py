"""Every commit has the same after-effects, whoever owns the transaction (app/transaction.py):
a request with an Idempotency-Key, a request without one, and a worker job."""

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import transaction
from app.cache.store import Cache, changed
from app.config import Settings
from app.main import create_app
from app.queue import make_queue
from app.state import AppState
from app.transaction import AfterCommit
from tests.concurrency.conftest import make_users
from tests.conftest import ROOT, serve_with_state
from tests.jobs.test_imports import upload, wait_done

ARTICLE = {"article": {"title": "Keyed", "description": "d", "body": "b", "tagList": ["k"]}}


async def _queued(redis: Redis, settings: Settings, key: str) -> bool:
    return bool(await redis.exists(f"saq:job:{settings.queue_name}:{key}"))


async def _event_ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(text("SELECT id FROM outbox_events ORDER BY id"))).scalars()
        )


@pytest.mark.parametrize("keyed", [True, False])
async def test_a_write_enqueues_its_deferred_jobs_before_the_response(
    jobs_client, engine, job_settings, redis, keyed
):
    """No worker runs here: the job can only be in the queue if the commit enqueued it."""
    [author] = await make_users(engine, job_settings, 1)
    hook = {"webhook": {"url": "http://127.0.0.1:9/hook", "events": ["article.published"]}}
    assert (await jobs_client.post("/webhooks", json=hook, headers=author)).status_code == 201

    headers = author | ({"Idempotency-Key": "publish-1"} if keyed else {})
    response = await jobs_client.post("/articles", json=ARTICLE, headers=headers)

    assert response.status_code == 201, response.text
    [event_id] = await _event_ids(engine)
    assert await _queued(redis, job_settings, f"event:{event_id}")


@pytest.fixture
async def cached_jobs_client(
    job_settings: Settings, committing_state: AppState, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the shared cache on and the job queue, over real commits."""
    app: FastAPI = create_app(job_settings)
    state = replace(
        committing_state,
        settings=job_settings,
        redis=redis,
        jobs=make_queue(job_settings, redis),
        cache=Cache(redis),
    )
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api", timeout=30) as client:
        yield client


@pytest.mark.usefixtures("worker")
async def test_imported_articles_and_tags_show_in_cached_reads_once_the_import_is_done(
    cached_jobs_client, engine, job_settings
):
    client = cached_jobs_client
    [author] = await make_users(engine, job_settings, 1)
    before = (await client.get("/articles")).json()
    assert (await client.get("/tags")).json() == {"tags": []}  # both now cached

    lines = [{"title": "Imported 0", "description": "d", "body": "b", "tagList": ["bulk"]}]
    lines += [{"title": f"Imported {n}", "description": "d", "body": "b"} for n in range(1, 5)]
    body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    import_id = await upload(client, author, body)
    assert (await wait_done(client, author, import_id))["state"] == "done"

    after = (await client.get("/articles")).json()
    assert (before["articlesCount"], after["articlesCount"]) == (0, 5)
    assert (await client.get("/tags")).json() == {"tags": ["bulk"]}


async def test_a_request_cancelled_after_its_commit_still_publishes_its_invalidations(settings):
    """The deadline or a client gone may cancel a request just after COMMIT: what it changed
    must still be invalidated, or every reader would be served the old version until the
    entries expire."""
    published: list[set[str]] = []

    class SlowCache(Cache):
        async def publish(self, versions: Iterable[str]) -> None:
            await asyncio.sleep(0.2)
            published.append(set(versions))

    class Committed:
        def __init__(self) -> None:
            self.info: dict[str, Any] = {}

        async def commit(self) -> None:
            return None

    session = Committed()
    changed(session, "article:a")  # type: ignore[arg-type]
    effects = AfterCommit(cache=SlowCache(None), jobs=None, settings=settings)
    request = asyncio.create_task(transaction.commit(session, effects))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.sleep(0.3)
    assert published == [{"article:a"}]
