"""The cache may be evicted, the job queue and the rate-limit counters may not: with the
cache on its own Redis (REDIS_CACHE_URL, `maxmemory` + `volatile-lru`), a cache filled by
anonymous reads of distinct pages evicts cache entries only, and jobs and limits go on.
Only the usual pages are cached at all, so a crawl of odd limits and offsets adds nothing."""

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from app.cache.store import Cache
from app.config import Settings
from app.main import create_app
from app.queue import make_queue
from app.redis import make_cache_redis, make_redis
from tests.concurrency.conftest import make_users, publish
from tests.conftest import ROOT, serve_with_state
from tests.redis_server import RedisServer

ARTICLE = {"article": {"title": "Queued", "description": "d", "body": "b"}}


@pytest.fixture(scope="module")
def cache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("cache-redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def cache_redis(cache_server: RedisServer, settings: Settings) -> AsyncIterator[Redis]:
    """The cache's instance, as the deployment configures it: a small `maxmemory`, and only
    keys with a TTL (entries, leases) may go; versions have none, so they stay."""
    client = make_cache_redis(
        settings.model_copy(update={"redis_cache_url": cache_server.url}), shared=None
    )
    assert client is not None
    await client.flushdb()
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", used + 2**20)
    await client.config_set("maxmemory-policy", "volatile-lru")
    yield client
    await client.config_set("maxmemory", 0)
    await client.flushdb()
    await client.aclose()


def test_the_cache_shares_the_queues_redis_unless_told_otherwise(settings, redis_server):
    shared = settings.model_copy(update={"redis_url": redis_server.url})
    main = make_redis(shared)
    assert make_cache_redis(shared, shared=main) is main
    same = shared.model_copy(update={"redis_cache_url": redis_server.url})
    assert make_cache_redis(same, shared=main) is main
    other = shared.model_copy(update={"redis_cache_url": "redis://127.0.0.1:1/0"})
    assert make_cache_redis(other, shared=main) is not main


async def test_a_full_cache_never_stops_the_queue_or_the_rate_limits(
    settings, committing_state, engine, redis, cache_redis, redis_server
):
    limited = settings.model_copy(
        update={
            "redis_url": redis_server.url,
            "queue_name": "split-test",
            "rate_limit_writes_per_minute": 3,
        }
    )
    jobs = make_queue(limited, redis)
    state = replace(
        committing_state, settings=limited, redis=redis, jobs=jobs, cache=Cache(cache_redis)
    )
    transport = httpx.ASGITransport(app=serve_with_state(create_app(limited), state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        author, *others = await make_users(engine, limited, 3)
        slug = await publish(client, author, "Kept")  # write 1

        # An anonymous crawl of distinct pages, until the cache's Redis has evicted plenty.
        n = 0
        while int((await cache_redis.info("stats"))["evicted_keys"]) < 100:
            page = await client.get("/articles", params={"tag": f"t{n}", "limit": 20})
            assert page.status_code == 200
            n += 1
            assert n < 20_000, "the cache never filled"
        assert await cache_redis.exists("v:articles")  # versions are never evicted

        # Still a working cache: a read after a write sees the write (versions kept).
        edited = await client.put(
            f"/articles/{slug}", json={"article": {"body": "after the crawl"}}, headers=author
        )  # write 2
        assert edited.status_code == 200
        for _ in range(2):
            seen = await client.get(f"/articles/{slug}")
            assert seen.json()["article"]["body"] == "after the crawl"

        # Jobs are still queued: an import's job is in the queue's Redis.
        imported = await client.post(
            "/imports", content=b'{"title": "a", "description": "d", "body": "b"}\n', headers=author
        )  # write 3
        assert imported.status_code == 202, imported.text
        assert await redis.exists(f"saq:job:split-test:import:{imported.json()['import']['id']}")

        # And rate limits still count: a user's fourth write within a minute is refused.
        for writer in others:  # a burst that straddles a minute's end would prove nothing
            minute = time.time() // 60
            statuses = [
                (await client.post("/articles", json=ARTICLE, headers=writer)).status_code
                for _ in range(4)
            ]
            if time.time() // 60 == minute:
                break
    assert statuses == [201, 201, 201, 429]
    assert await redis.dbsize() > 0
    assert await redis.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


async def test_only_the_usual_pages_are_cached(settings, committing_state, engine, redis):
    state = replace(committing_state, redis=redis, cache=Cache(redis))
    transport = httpx.ASGITransport(app=serve_with_state(create_app(settings), state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        (author,) = await make_users(engine, settings, 1)
        await publish(client, author, "Paged")
        before = await redis.dbsize()
        for params in ({"limit": 7}, {"limit": 10, "offset": 3}, {"limit": 20, "offset": 10_000}):
            page = await client.get("/articles", params=params)
            assert page.status_code == 200
            assert page.json()["articlesCount"] == 1
        assert await redis.dbsize() == before  # served, not cached
        for params in ({}, {"limit": 10, "offset": 20}, {"limit": 5, "offset": 245}):
            assert (await client.get("/articles", params=params)).status_code == 200
        entries = [key async for key in redis.scan_iter("c:articles:*")]
    assert len(entries) == 3
