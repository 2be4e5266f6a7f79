"""The shared cache against a real Redis and real PostgreSQL: same answers as without it,
writes visible at once, one query per cold key, Redis outages survived."""

import asyncio
import uuid

import pytest

from app.cache import viewer
from app.cache.store import ITEMS_EPOCH, Cache
from tests.cache.conftest import Rebuild
from tests.concurrency.conftest import make_users, publish
from tests.statements import count_statements

PATHS = [
    "/articles",
    "/articles?tag=t1",
    "/articles?author=crowd2",
    "/articles?favorited=crowd3",
    "/articles/{slug}",
    "/articles/{slug}/comments",
    "/profiles/crowd2",
    "/tags",
]


async def _world(client, engine, settings):
    """crowd1 reads; crowd2 writes an article that crowd3 favorites and comments; crowd1
    follows crowd2."""
    reader, author, fan = await make_users(engine, settings, 3)
    body = {"article": {"title": "Cached", "description": "d", "body": "b", "tagList": ["t1"]}}
    slug = (await client.post("/articles", json=body, headers=author)).json()["article"]["slug"]
    await client.post(f"/articles/{slug}/favorite", headers=fan)
    await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "hi"}}, headers=fan)
    await client.post("/profiles/crowd2/follow", headers=reader)
    return {"anonymous": {}, "reader": reader, "author": author, "fan": fan}, slug


async def test_cached_answers_equal_uncached_for_every_endpoint_and_viewer(
    cached_client, uncached_client, engine, settings, cache
):
    viewers, slug = await _world(uncached_client, engine, settings)
    for path in (p.format(slug=slug) for p in PATHS):
        for name, headers in viewers.items():
            expected = (await uncached_client.get(path, headers=headers)).json()
            for attempt in ("miss", "hit"):
                got = await cached_client.get(path, headers=headers)
                assert got.status_code == 200, (path, name)
                assert got.json() == expected, (path, name, attempt)
    hits = sum(n for (family, result), n in cache.stats.items() if result == "hit")
    assert hits >= len(PATHS) * len(viewers)


async def test_writes_are_visible_to_the_writer_and_to_others_at_once(
    cached_client, engine, settings
):
    client = cached_client
    reader, author, fan = await make_users(engine, settings, 3)
    slug = await publish(client, author, "Fresh")
    for headers in ({}, reader, author):  # warm the cache for every viewer kind
        await client.get(f"/articles/{slug}", headers=headers)
        await client.get("/articles", headers=headers)

    await client.put(f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=author)
    for headers in ({}, reader, author):
        assert (await client.get(f"/articles/{slug}", headers=headers)).json()["article"][
            "body"
        ] == "edited"

    await client.post(f"/articles/{slug}/favorite", headers=fan)
    listed = (await client.get("/articles", headers=reader)).json()["articles"][0]
    assert (listed["favoritesCount"], listed["favorited"]) == (1, False)
    mine = (await client.get(f"/articles/{slug}", headers=fan)).json()["article"]
    assert (mine["favoritesCount"], mine["favorited"]) == (1, True)

    await client.get(f"/articles/{slug}/comments")
    await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "new"}}, headers=fan)
    assert len((await client.get(f"/articles/{slug}/comments")).json()["comments"]) == 1

    await client.put("/user", json={"user": {"bio": "now famous"}}, headers=author)
    assert (await client.get(f"/articles/{slug}")).json()["article"]["author"][
        "bio"
    ] == "now famous"
    assert (await client.get("/profiles/crowd2")).json()["profile"]["bio"] == "now famous"

    await client.delete(f"/articles/{slug}", headers=author)
    assert (await client.get(f"/articles/{slug}")).status_code == 404
    assert (await client.get("/articles")).json()["articlesCount"] == 0


async def test_comments_written_through_an_old_slug_are_visible_under_the_current_one(
    cached_client, engine, settings
):
    """The write names the article by a slug it had before: the cached page it changes is
    the one under the slug it has now."""
    client = cached_client
    (author,) = await make_users(engine, settings, 1)
    old = await publish(client, author, "First name")
    renamed = {"article": {"title": "Second name"}}
    new = (await client.put(f"/articles/{old}", json=renamed, headers=author)).json()["article"][
        "slug"
    ]
    assert (await client.get(f"/articles/{new}/comments")).json() == {"comments": []}  # cached

    body = {"comment": {"body": "hi"}}
    created = await client.post(f"/articles/{old}/comments", json=body, headers=author)
    listed = (await client.get(f"/articles/{new}/comments")).json()["comments"]
    assert [c["id"] for c in listed] == [created.json()["comment"]["id"]]
    await client.delete(f"/articles/{old}/comments/{listed[0]['id']}", headers=author)
    assert (await client.get(f"/articles/{new}/comments")).json() == {"comments": []}


async def test_five_hundred_concurrent_misses_run_one_query(
    api_engine, cached_client, engine, settings, cache
):
    (author,) = await make_users(engine, settings, 1)
    slug = await publish(cached_client, author, "Viral")
    with count_statements(api_engine) as statements:
        responses = await asyncio.gather(
            *(cached_client.get(f"/articles/{slug}") for _ in range(500))
        )
    loads = [statement for statement in statements if "json_build_object('article'" in statement]
    assert {r.status_code for r in responses} == {200}
    assert len(loads) == 1
    assert cache.stats["article", "collapsed"] >= 499 - cache.stats["article", "hit"]


async def test_redis_outage_costs_no_errors_and_the_cache_comes_back(
    cached_client, engine, settings, cache, redis_server
):
    (author,) = await make_users(engine, settings, 1)
    slug = await publish(cached_client, author, "Resilient")
    await cached_client.get(f"/articles/{slug}")
    redis_server.stop()
    try:
        during = [await cached_client.get(f"/articles/{slug}") for _ in range(20)]
        edited = await cached_client.put(
            f"/articles/{slug}", json={"article": {"body": "while redis was down"}}, headers=author
        )
    finally:
        redis_server.start()
    assert {r.status_code for r in during} == {200}
    assert edited.status_code == 200
    assert cache.stats["article", "error"] >= 1

    await asyncio.sleep(1.1)  # the circuit closes again by itself
    hits_before = cache.stats["article", "hit"]
    for _ in range(3):
        response = await cached_client.get(f"/articles/{slug}")
        assert response.status_code == 200
        assert response.json()["article"]["body"] == "while redis was down"
    assert cache.stats["article", "hit"] > hits_before


async def test_invalidation_lost_to_a_redis_blip_is_published_once_redis_answers(
    cached_client, engine, settings, cache, redis
):
    """Redis keeps its data but does not answer for a moment while a write commits: the
    writer's process must not serve the old entry afterwards."""
    (author,) = await make_users(engine, settings, 1)
    slug = await publish(cached_client, author, "Blip")
    assert (await cached_client.get(f"/articles/{slug}")).status_code == 200  # cached now
    await redis.execute_command("CLIENT", "PAUSE", "600", "WRITE")  # INCR times out
    edited = await cached_client.put(
        f"/articles/{slug}", json={"article": {"body": "during the blip"}}, headers=author
    )
    assert edited.status_code == 200
    assert cache._unpublished, "the blip did not hit the invalidation: not a real test"
    await asyncio.sleep(1.2)  # the pause ends, the circuit closes
    after = (await cached_client.get(f"/articles/{slug}")).json()["article"]["body"]
    assert after == "during the blip"
    assert not cache._unpublished


async def test_a_failed_early_refresh_serves_the_current_entry(cache, monkeypatch):
    """PostgreSQL down while an entry is in its early-refresh window: the entry is still valid,
    so the reader gets it, not the database's error."""

    async def document() -> str:
        return '{"tags": ["early"]}'

    async def database_down() -> str:
        raise ConnectionError("PostgreSQL is down")

    key = f"tags-early-{uuid.uuid4().hex}"
    assert await cache.get_or_load("tags", key, ["tags"], document) == '{"tags": ["early"]}'
    monkeypatch.setattr(cache, "_refresh_early", lambda _stored_at: True)
    assert await cache.get_or_load("tags", key, ["tags"], database_down) == '{"tags": ["early"]}'
    monkeypatch.setattr(cache, "_refresh_early", lambda _stored_at: False)
    with pytest.raises(ConnectionError):  # a miss has nothing to fall back on
        await cache.get_or_load("tags", f"{key}-cold", ["tags"], database_down)


async def test_readers_during_an_early_refresh_are_served_the_current_entry_at_once(
    cache, redis, monkeypatch
):
    """One reader rebuilds an entry in its early-refresh window; the entry is still current,
    so the readers of the same process that waited on that reader, those that come after it
    and those of another process get it without waiting for the rebuild (a rebuild of a
    search takes hundreds of ms under load), and the rebuilt entry is served after."""
    loads = Rebuild()

    async def never() -> str:
        raise AssertionError("one reader rebuilds it, the others wait for nothing")

    key = f"tags-refresh-{uuid.uuid4().hex}"
    assert await cache.get_or_load("tags", key, ["tags"], loads.old) == '{"tags": ["old"]}'
    other = Cache(redis)  # another process
    for each in (cache, other):
        monkeypatch.setattr(each, "_refresh_early", lambda _stored_at: True)
    leader = asyncio.create_task(cache.get_or_load("tags", key, ["tags"], loads.rebuild))
    await asyncio.sleep(0)  # the leader is reading Redis
    waiting = asyncio.create_task(cache.get_or_load("tags", key, ["tags"], never))
    await loads.started.wait()
    assert await asyncio.wait_for(waiting, 1) == '{"tags": ["old"]}'
    assert cache.stats["tags", "collapsed"] == 1  # it did wait on the leader
    assert await cache.get_or_load("tags", key, ["tags"], never) == '{"tags": ["old"]}'
    assert await other.get_or_load("tags", key, ["tags"], never) == '{"tags": ["old"]}'
    assert other.stats["tags", "hit"] == 1  # at once, not after polling for the new entry
    assert not leader.done()
    loads.release.set()
    assert await leader == '{"tags": ["new"]}'
    for each in (cache, other):
        monkeypatch.setattr(each, "_refresh_early", lambda _stored_at: False)
        assert await each.get_or_load("tags", key, ["tags"], never) == '{"tags": ["new"]}'


async def test_a_cancelled_leader_does_not_cancel_the_readers_waiting_for_it(cache):
    """Collapsed misses wait for one leader's load; when the leader's request is cancelled (its
    deadline, its client gone), the others were not: one of them loads instead."""
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return '{"tags": ["slow"]}'

    async def quick() -> str:
        return '{"tags": ["quick"]}'

    key = f"tags-leader-{uuid.uuid4().hex}"
    leader = asyncio.create_task(cache.get_or_load("tags", key, ["tags"], slow))
    await started.wait()
    followers = [
        asyncio.create_task(cache.get_or_load("tags", key, ["tags"], quick)) for _ in range(3)
    ]
    await asyncio.sleep(0.05)  # the followers wait for the leader
    leader.cancel()
    assert await asyncio.gather(*followers) == ['{"tags": ["quick"]}'] * 3
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_logged_in_reader_of_a_warm_page_costs_no_sql(
    api_engine, cached_client, engine, settings
):
    reader, author, fan = await make_users(engine, settings, 3)
    slug = await publish(cached_client, author, "Hot")
    await cached_client.post(f"/articles/{slug}/favorite", headers=reader)
    paths = ["/articles", f"/articles/{slug}", f"/articles/{slug}/comments", "/profiles/crowd2"]
    for path in paths:  # warm: the page, and this reader's flags on it
        await cached_client.get(path, headers=reader)
    with count_statements(api_engine) as statements:
        pages = [(await cached_client.get(path, headers=reader)).json() for path in paths]
        other = (await cached_client.get(f"/articles/{slug}", headers=fan)).json()
    assert (pages[0]["articles"][0]["favorited"], pages[1]["article"]["favorited"]) == (True, True)
    assert other["article"]["favorited"] is False  # another viewer: their own flags
    assert len(statements) == 1  # the other viewer's first read only


async def test_the_viewers_own_follow_and_favorite_show_on_their_next_cached_read(
    cached_client, engine, settings
):
    reader, author = await make_users(engine, settings, 2)
    slug = await publish(cached_client, author, "Followed")

    async def seen() -> tuple[bool, bool, bool]:
        article = (await cached_client.get(f"/articles/{slug}", headers=reader)).json()
        listed = (await cached_client.get("/articles", headers=reader)).json()["articles"][0]
        profile = (await cached_client.get("/profiles/crowd2", headers=reader)).json()
        following = article["article"]["author"]["following"]
        assert listed["author"]["following"] == profile["profile"]["following"] == following
        return following, article["article"]["favorited"], listed["favorited"]

    assert await seen() == (False, False, False)  # warm, flags cached
    await cached_client.post("/profiles/crowd2/follow", headers=reader)
    assert await seen() == (True, False, False)
    await cached_client.post(f"/articles/{slug}/favorite", headers=reader)
    assert await seen() == (True, True, True)
    await cached_client.delete("/profiles/crowd2/follow", headers=reader)
    await cached_client.delete(f"/articles/{slug}/favorite", headers=reader)
    assert await seen() == (False, False, False)


async def test_a_favorite_rebuilds_only_the_pages_that_show_the_article(
    api_engine, cached_client, engine, settings
):
    """A favorite changes one article's favoritesCount and its fan's favorites page: a page
    that does not show the article stays cached (no SQL), every page that does shows the
    new count on its next read."""
    author, fan = await make_users(engine, settings, 2)
    tagged = {}
    for tag in ("older", "newer"):
        body = {"article": {"title": tag, "description": "d", "body": "b", "tagList": [tag]}}
        response = await cached_client.post("/articles", json=body, headers=author)
        tagged[tag] = response.json()["article"]["slug"]
    pages = [
        "/articles?tag=older",
        "/articles?tag=newer",
        "/articles",
        "/articles?favorited=crowd2",
    ]
    for path in pages:
        await cached_client.get(path)  # warm
    await cached_client.post(f"/articles/{tagged['older']}/favorite", headers=fan)

    with count_statements(api_engine) as statements:
        other_tag = (await cached_client.get("/articles?tag=newer")).json()
        assert statements == []  # still a hit: the favorite is not on this page
        shown = [pages[0], pages[2], pages[3]]
        older, front, favorites = [(await cached_client.get(path)).json() for path in shown]
    assert other_tag["articles"][0]["favoritesCount"] == 0
    assert older["articles"][0]["favoritesCount"] == 1
    assert {a["slug"]: a["favoritesCount"] for a in front["articles"]} == {
        tagged["older"]: 1,
        tagged["newer"]: 0,
    }
    assert [a["slug"] for a in favorites["articles"]] == [tagged["older"]]
    assert len(statements) == 3  # the three pages that show the favorite, rebuilt


async def test_an_item_write_during_a_page_load_leaves_no_stale_entry(cache):
    """A page learns which items it shows only from its load: a write to one of them that is
    published while the load runs (after the load's snapshot) must not leave the old page
    cached under the new item version."""
    key = f"page-race-{uuid.uuid4().hex}"
    item = f"article:{key}"

    def items(_document: str) -> list[str]:
        return [item]

    async def load_while_a_write_lands() -> str:
        await cache.publish([ITEMS_EPOCH, item])  # committed and published mid-load
        return "before the write"

    async def load_after() -> str:
        return "after the write"

    async def never() -> str:
        raise AssertionError("a hit loads nothing")

    first = await cache.get_or_load("articles", key, ["articles"], load_while_a_write_lands, items)
    assert first == "before the write"  # right for a request that began before the write
    assert await cache.get_or_load("articles", key, ["articles"], load_after, items) == (
        "after the write"
    )
    assert await cache.get_or_load("articles", key, ["articles"], never, items) == (
        "after the write"
    )  # an undisturbed load is trusted: a hit


async def test_a_publish_rebuilds_the_lists_it_is_on_and_no_other_tag_or_author_page(
    api_engine, cached_client, engine, settings
):
    """A new article changes the front page, its tags' pages and its author's: those show it
    on their next read; another tag's or author's page stays cached (no SQL)."""
    author, other = await make_users(engine, settings, 2)

    async def post(headers: dict[str, str], title: str, tag: str) -> str:
        body = {"article": {"title": title, "description": "d", "body": "b", "tagList": [tag]}}
        response = await cached_client.post("/articles", json=body, headers=headers)
        return str(response.json()["article"]["slug"])

    await post(other, "Elsewhere", "quiet")
    untouched = ["/articles?tag=quiet", "/articles?author=crowd2"]
    changed = ["/articles", "/articles?tag=loud", "/articles?author=crowd1"]
    for path in untouched + changed:
        await cached_client.get(path)  # warm
    slug = await post(author, "Fresh news", "loud")

    with count_statements(api_engine) as statements:
        for path in untouched:
            assert (await cached_client.get(path)).json()["articlesCount"] == 1
    assert statements == []
    for path in changed:
        assert slug in [a["slug"] for a in (await cached_client.get(path)).json()["articles"]]


async def test_an_edit_shows_in_the_searches_it_now_matches_or_no_longer_matches(
    cached_client, engine, settings
):
    """A search page names which articles match: an edit of the text may change that, and
    the next search shows it, where the article's own item version only changes what the
    page shows of it."""
    (author,) = await make_users(engine, settings, 1)
    body = {"article": {"title": "Plain", "description": "d", "body": "b", "tagList": []}}
    slug = (await cached_client.post("/articles", json=body, headers=author)).json()["article"][
        "slug"
    ]

    async def found(q: str) -> list[str]:
        page = (await cached_client.get(f"/articles?q={q}")).json()
        return [article["slug"] for article in page["articles"]]

    assert await found("zeppelin") == []  # cached: no match
    assert await found("plain") == [slug]
    edit = {"article": {"body": "a zeppelin, not plain any more"}}
    await cached_client.put(f"/articles/{slug}", json=edit, headers=author)
    assert await found("zeppelin") == [slug]
    edit = {"article": {"body": "now about airships"}}
    await cached_client.put(f"/articles/{slug}", json=edit, headers=author)
    assert await found("zeppelin") == []


async def test_a_viewers_flags_on_a_page_never_read_before_cost_no_sql(
    api_engine, cached_client, engine, settings
):
    """The flags come from the viewer's cached sets (all their favorites and follows), not
    from a query per page: a page they open for the first time costs nothing."""
    reader, author = await make_users(engine, settings, 2)
    first, second = (
        await publish(cached_client, author, "One"),
        await publish(cached_client, author, "Two"),
    )
    await cached_client.post(f"/articles/{second}/favorite", headers=reader)
    await cached_client.post("/profiles/crowd2/follow", headers=reader)
    await cached_client.get(f"/articles/{second}")  # the page, cached anonymously
    await cached_client.get(f"/articles/{first}", headers=reader)  # the reader's sets

    with count_statements(api_engine) as statements:
        seen = (await cached_client.get(f"/articles/{second}", headers=reader)).json()
    assert statements == []
    assert (seen["article"]["favorited"], seen["article"]["author"]["following"]) == (True, True)


async def test_a_deleted_favorites_slug_taken_by_a_new_article_is_not_flagged(
    cached_client, engine, settings
):
    """A viewer's set names slugs: a deletion frees one, and the article that takes it next
    is not one they favorited."""
    fan, author = await make_users(engine, settings, 2)
    slug = await publish(cached_client, author, "Same title")
    await cached_client.post(f"/articles/{slug}/favorite", headers=fan)
    assert (await cached_client.get(f"/articles/{slug}", headers=fan)).json()["article"][
        "favorited"
    ]
    await cached_client.delete(f"/articles/{slug}", headers=author)
    assert await publish(cached_client, author, "Same title") == slug  # the freed slug
    again = (await cached_client.get(f"/articles/{slug}", headers=fan)).json()["article"]
    assert again["favorited"] is False


async def test_a_viewer_with_more_favorites_than_a_set_holds_gets_their_flags_per_page(
    cached_client, engine, settings, monkeypatch
):
    monkeypatch.setattr(viewer, "SET_LIMIT", 1)
    reader, author = await make_users(engine, settings, 2)
    slugs = [await publish(cached_client, author, title) for title in ("A", "B", "C")]
    for slug in slugs[:2]:
        await cached_client.post(f"/articles/{slug}/favorite", headers=reader)
    listed = (await cached_client.get("/articles", headers=reader)).json()["articles"]
    assert {a["slug"]: a["favorited"] for a in listed} == {
        slugs[0]: True,
        slugs[1]: True,
        slugs[2]: False,
    }
