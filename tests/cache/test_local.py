"""The in-process tier (L1) and HTTP caching: pushed invalidations reach every worker, a lost
channel empties L1, a writer never reads stale on any worker, 304s only for what the client
already has. Two `Cache` objects with their own L1 play two workers, over one real Redis."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import partial

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from app.cache.local import LocalCache
from app.cache.store import Cache
from app.cache.viewer import Layout, _personalize_parsed
from app.config import Settings
from app.main import create_app
from app.observability import recorder
from app.observability.context import TIERS
from app.state import AppState
from tests.cache.conftest import Rebuild
from tests.concurrency.conftest import make_users, publish
from tests.conftest import ROOT, serve_with_state
from tests.redis_server import RedisServer

L1_BYTES = 1 << 20


async def _until(check: Callable[[], bool], within: float = 5.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "not within the bound"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def _trusted(cache: Cache) -> bool:
    return cache.listener is not None and cache.listener.trusted


@pytest.fixture
async def workers(
    settings: Settings, committing_state: AppState, redis: Redis, redis_server: RedisServer
) -> AsyncIterator[list[tuple[httpx.AsyncClient, Cache]]]:
    """Two workers of one cluster: each its own app, L1 and listener; one Redis, one database."""
    pairs = []
    clients = []
    for _ in range(2):
        cache = Cache(redis, local_bytes=L1_BYTES)
        cache.listen(redis_server.url, connect_timeout_s=1.0)
        app: FastAPI = create_app(settings)
        state = replace(committing_state, cache=cache, redis=redis)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=serve_with_state(app, state)),
            base_url=ROOT + "/api",
        )
        clients.append(client)
        pairs.append((client, cache))
    for _, cache in pairs:
        await _until(partial(_trusted, cache))
    yield pairs
    for client, cache in pairs:
        await client.aclose()
        await cache.close()


def test_local_cache_is_bounded_by_bytes_and_drops_the_least_recently_used():
    local = LocalCache(max_bytes=3 * (1000 + 200))
    for key in "abc":
        assert local.fill(key, "x" * 1000, ["n"], local.since())
    assert local.get("a") is not None  # a is now the most recently used
    local.fill("d", "x" * 1000, ["n"], local.since())
    assert (local.get("b"), len(local)) == (None, 3)
    assert local.size <= local.max_bytes


def test_local_cache_keeps_no_copy_read_while_its_versions_were_invalidated():
    local = LocalCache(max_bytes=L1_BYTES)
    mark = local.since()  # a reader starts reading from Redis ...
    local.invalidate(["article:a"])  # ... a write lands meanwhile
    assert not local.fill("article:a", "old", ["article:a", "authors"], mark)
    assert local.fill("article:b", "other", ["article:b"], mark)  # unrelated: kept
    local.invalidate(["authors"])
    assert local.get("article:b") is not None  # not built from "authors"
    local.fill("article:a", "new", ["article:a", "authors"], local.since())
    local.invalidate(["authors"])
    assert local.get("article:a") is None
    mark = local.since()
    local.flush()
    assert not local.fill("article:c", "any", ["article:c"], mark)


async def test_in_the_early_refresh_window_one_l1_reader_rebuilds_while_the_others_read_l1(
    workers, redis, monkeypatch
):
    """L1 reads Redis at most once a minute per key, so its readers draw the early refresh of
    the Redis entry their copy came from: one of them rebuilds it while the others are served
    the copy, and another worker's reader who draws it later takes the rebuilt entry instead
    of rebuilding it again. Without that the entry of a hot key was never refreshed early, and
    at its TTL every reader of the key waited for the rebuild at once."""
    (_, cache), (_, other) = workers
    assert cache.local is not None
    assert other.local is not None
    loads = Rebuild()

    async def never() -> str:
        raise AssertionError("the others read L1")

    key = "tags-window"
    await cache.get_or_load("tags", key, ["tags"], loads.old)
    assert await other.get_or_load("tags", key, ["tags"], never) == '{"tags": ["old"]}'
    copy = cache.local.entry(key)
    assert copy is not None
    stored_at = orjson.loads(await redis.get(f"c:{key}"))["t"]
    assert copy.stored_at == stored_at  # what is drawn on
    for each in (cache, other):  # the old entry is due, the rebuilt one not
        monkeypatch.setattr(each, "_refresh_early", lambda at: at == stored_at)
    rebuilding = asyncio.create_task(cache.get_or_load("tags", key, ["tags"], loads.rebuild))
    await asyncio.wait_for(loads.started.wait(), 5)
    before = cache.stats["tags", "local"]
    readers = [cache.get_or_load("tags", key, ["tags"], never) for _ in range(5)]
    assert await asyncio.gather(*readers) == ['{"tags": ["old"]}'] * 5
    assert cache.stats["tags", "local"] == before + 5
    loads.release.set()
    assert await rebuilding == '{"tags": ["new"]}'
    assert await cache.get_or_load("tags", key, ["tags"], never) == '{"tags": ["new"]}'
    assert cache.stats["tags", "local"] == before + 6
    hits = other.stats["tags", "hit"]
    assert await other.get_or_load("tags", key, ["tags"], never) == '{"tags": ["new"]}'
    assert other.stats["tags", "hit"] == hits + 1
    assert await other.get_or_load("tags", key, ["tags"], never) == '{"tags": ["new"]}'
    assert other.stats["tags", "local"] == 1  # its copy is the rebuilt entry now


async def test_a_write_reaches_every_workers_l1_by_push(workers, engine, settings):
    (writer, writer_cache), (other, other_cache) = workers
    (author,) = await make_users(engine, settings, 1)
    slug = await publish(writer, author, "Pushed")
    for client, _ in workers:  # anonymous: each worker now has it in L1
        await client.get(f"/articles/{slug}")
        assert (await client.get(f"/articles/{slug}")).status_code == 200
    assert other_cache.stats["article", "local"] >= 1
    key = f"article:{slug}"
    assert other_cache.local is not None
    assert other_cache.local.get(key) is not None

    edited = await writer.put(
        f"/articles/{slug}", json={"article": {"body": "pushed"}}, headers=author
    )
    assert edited.status_code == 200
    assert writer_cache.local is not None
    assert writer_cache.local.get(key) is None
    took = await _until(
        lambda: other_cache.local is not None and other_cache.local.get(key) is None
    )
    assert took < 1.0
    body = (await other.get(f"/articles/{slug}")).json()["article"]["body"]
    assert body == "pushed"


def _by_tier(route: str = "/api/articles/{slug}") -> dict[str, float]:
    recorder.flush()
    name = "conduit_http_requests_by_tier_total"
    return {
        tier: REGISTRY.get_sample_value(name, {"method": "GET", "route": route, "tier": tier})
        or 0.0
        for tier in TIERS
    }


async def test_each_request_counts_once_under_the_deepest_tier_it_waited_on(
    workers, engine, settings
):
    (writer, _), (other, _) = workers
    (author,) = await make_users(engine, settings, 1)
    slug = await publish(writer, author, "Tiers")
    counted = []
    # Built from PostgreSQL, then from L1; logged in: the viewer's flags from PostgreSQL, then
    # L1 again after one GET of the sequence number from Redis (`caught_up`).
    for headers in ({}, {}, author, author):
        before = _by_tier()
        assert (await other.get(f"/articles/{slug}", headers=headers)).status_code == 200
        after = _by_tier()
        counted.append({t: after[t] - before[t] for t in TIERS if after[t] != before[t]})
    assert counted == [{"database": 1}, {"local": 1}, {"database": 1}, {"redis": 1}]


async def test_the_writer_reads_their_own_write_on_another_worker_at_once(
    workers, engine, settings, monkeypatch
):
    (writer, _), (other, other_cache) = workers
    author, reader = await make_users(engine, settings, 2)
    slug = await publish(writer, author, "Own write")
    for headers in (author, reader, {}):
        for _ in range(2):  # warm both tiers on the other worker
            await other.get(f"/articles/{slug}", headers=headers)
    assert other_cache.stats["article", "local"] >= 2
    # The other worker hears invalidations late, as a busy one does under load.
    listener = other_cache.listener
    assert listener is not None
    apply = listener._apply
    monkeypatch.setattr(
        listener, "_apply", lambda data: asyncio.get_running_loop().call_later(0.3, apply, data)
    )
    for n in range(20):
        await writer.put(f"/articles/{slug}", json={"article": {"body": f"v{n}"}}, headers=author)
        # The very next request, on the other worker, before its listener may have heard:
        seen = (await other.get(f"/articles/{slug}", headers=author)).json()["article"]
        assert seen["body"] == f"v{n}"
        await other.post(f"/articles/{slug}/favorite", headers=reader)
        flags = (await other.get(f"/articles/{slug}", headers=reader)).json()["article"]
        assert flags["favorited"] is True
        await writer.delete(f"/articles/{slug}/favorite", headers=reader)
        flags = (await other.get(f"/articles/{slug}", headers=reader)).json()["article"]
        assert flags["favorited"] is False


async def test_a_lost_invalidation_channel_empties_l1_until_it_is_back(
    workers, engine, settings, redis_server
):
    (client, cache), _ = workers
    (author,) = await make_users(engine, settings, 1)
    slug = await publish(client, author, "Channel")
    await client.get(f"/articles/{slug}")
    assert cache.local is not None
    assert len(cache.local) >= 1
    listener = cache.listener
    assert listener is not None
    redis_server.stop()
    try:
        await _until(lambda: not listener.trusted)
        assert len(cache.local) == 0
        response = await client.get(f"/articles/{slug}")  # served, from PostgreSQL
        assert response.status_code == 200
        assert len(cache.local) == 0  # nothing kept while the channel is down
    finally:
        redis_server.start()
    await _until(lambda: listener.trusted, within=10)
    await asyncio.sleep(1.1)  # the read circuit closes again by itself
    await client.get(f"/articles/{slug}")
    await client.get(f"/articles/{slug}")
    assert len(cache.local) >= 1


async def test_an_unchanged_document_is_answered_304_without_a_body(workers, engine, settings):
    (client, _), (other, _) = workers
    (author,) = await make_users(engine, settings, 1)
    slug = await publish(client, author, "Tagged")
    for path in (f"/articles/{slug}", "/articles", f"/articles/{slug}/comments", "/tags"):
        first = await client.get(path)
        etag = first.headers["etag"]
        assert first.headers["cache-control"].startswith("public")
        assert first.headers["x-accel-expires"].startswith("@")  # nginx: this second only
        again = await other.get(path, headers={"If-None-Match": etag})  # any worker, any tier
        assert (again.status_code, again.content) == (304, b""), path
        assert again.headers["etag"] == etag
    mine = await client.get(f"/articles/{slug}", headers=author)
    assert mine.headers["cache-control"] == "private, no-cache"
    assert "x-accel-expires" not in mine.headers
    assert "Authorization" in mine.headers["vary"]

    etag = (await client.get(f"/articles/{slug}")).headers["etag"]
    await client.put(f"/articles/{slug}", json={"article": {"body": "changed"}}, headers=author)
    # Another worker's anonymous reader sees the write once the push reaches it (the stated
    # bound is 1 s; until then its L1 copy, and so the 304, is still allowed).
    started = time.monotonic()
    for _ in range(1000):
        changed = await other.get(f"/articles/{slug}", headers={"If-None-Match": etag})
        if changed.status_code != 304 or time.monotonic() - started > 1:
            break
        await asyncio.sleep(0.005)
    assert changed.status_code == 200
    assert changed.json()["article"]["body"] == "changed"
    assert changed.headers["etag"] != etag


@pytest.mark.parametrize(
    "body",
    [
        "plain",
        'a body that says "favorited": false and \\"following\\":false',
        'unicode: é 中文 😀 and a lone quote "',
    ],
)
def test_flags_set_by_splicing_equal_flags_set_by_parsing(body):
    author = {"username": "ann", "bio": None, "image": None, "following": False}
    articles = [
        {"slug": f"s{n}", "title": "t é", "body": body, "author": author, "favorited": False}
        for n in range(4)
    ]
    for document in (
        orjson.dumps({"articles": articles, "articlesCount": 4}).decode(),
        orjson.dumps({"articles": articles}, option=orjson.OPT_INDENT_2).decode(),
        '{"article" : {"slug" : "s1", "favorited" : false, "author" : '
        '{"username" : "ann", "following" : false}, "body" : "x\\"favorited\\" : false"}}',
    ):
        layout = Layout.of(document)
        assert all(offset >= 0 for offset, _ in layout.favorited + layout.following)
        for favorited, following in ((set(), set()), ({"s1", "s3"}, {"ann"}), ({"s0"}, set())):
            spliced = layout.personalize(document, frozenset(favorited), frozenset(following))
            parsed = _personalize_parsed(document, frozenset(favorited), frozenset(following))
            assert orjson.loads(spliced) == orjson.loads(parsed)
