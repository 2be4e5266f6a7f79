"""Every commit has the same after-effects, whoever owns the transaction (app/transaction.py):
a request with an Idempotency-Key, a request without one, and a worker job."""

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache.store import Cache
from app.config import Settings
from app.main import create_app
from app.queue import make_queue
from app.state import AppState
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
