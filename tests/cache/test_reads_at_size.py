"""Searches are cached like the other lists; `fields` shapes cached documents; cursor pages
mint no entries; a new title moves the article's cached documents along."""

from app.cache.store import Cache
from tests.concurrency.conftest import make_users, publish


def _hits(cache: Cache, family: str) -> int:
    return cache.stats[family, "hit"]


async def test_a_search_is_cached_and_sees_new_articles_at_once(
    cached_client, engine, settings, cache
):
    client = cached_client
    (author,) = await make_users(engine, settings, 1)
    await publish(client, author, "Caching searches")
    first = (await client.get("/articles?q=cache")).json()
    hits = _hits(cache, "articles")
    assert (await client.get("/articles?q=cache")).json() == first
    assert _hits(cache, "articles") == hits + 1
    await publish(client, author, "Cached again")
    after = (await client.get("/articles?q=cache")).json()
    assert [a["title"] for a in after["articles"]] == ["Cached again", "Caching searches"]
    shaped = (await client.get("/articles?q=cache&fields=title")).json()
    assert shaped["articles"] == [{"title": "Cached again"}, {"title": "Caching searches"}]


async def test_cursor_pages_are_not_cached(cached_client, engine, settings, redis):
    client = cached_client
    (author,) = await make_users(engine, settings, 1)
    for n in range(3):
        await publish(client, author, f"Page {n}")
    cursor = (await client.get("/articles?limit=1")).json()["nextCursor"]
    keys = await redis.dbsize()
    for _ in range(2):
        page = (await client.get(f"/articles?limit=1&cursor={cursor}")).json()
        assert [a["title"] for a in page["articles"]] == ["Page 1"]
    assert await redis.dbsize() == keys


async def test_a_new_title_moves_cached_documents(cached_client, engine, settings):
    client = cached_client
    (author,) = await make_users(engine, settings, 1)
    slug = await publish(client, author, "Old name")
    for path in (f"/articles/{slug}", "/articles", f"/articles/{slug}/comments"):
        assert (await client.get(path)).status_code == 200  # warm
    body = {"article": {"title": "New name"}}
    new = (await client.put(f"/articles/{slug}", json=body, headers=author)).json()["article"]
    assert new["slug"] == "new-name"
    moved = await client.get(f"/articles/{slug}")
    assert (moved.status_code, moved.headers["location"]) == (301, "/api/articles/new-name")
    assert (await client.get("/articles")).json()["articles"][0]["slug"] == "new-name"
    comments = await client.get(f"/articles/{slug}/comments")  # was cached under the old slug
    assert (comments.status_code, comments.headers["location"]) == (
        301,
        "/api/articles/new-name/comments",
    )
