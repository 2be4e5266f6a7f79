"""Full-text search: stems, title matches first, filters, both ways of paging, the count."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.articles import queries, search
from tests.factories import make_article, make_user

NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)


async def _slugs(client: httpx.AsyncClient, query: str) -> tuple[list[str], dict[str, Any]]:
    body = (await client.get(f"/articles{query}")).json()
    return [a["slug"] for a in body["articles"]], body


async def test_search_finds_words_by_their_stem(client, session):
    author = await make_user(session)
    await make_article(session, author, slug="trains", title="Training dragons", body="x")
    await make_article(session, author, slug="flying", title="Flying", body="The dragon flew")
    await make_article(session, author, slug="other", title="Cats", body="nothing here")
    found, body = await _slugs(client, "?q=dragon")
    assert sorted(found) == ["flying", "trains"]
    assert (body["articlesCount"], body["articlesCountExact"]) == (2, True)
    assert (await _slugs(client, "?q=trained"))[0] == ["trains"]
    assert (await _slugs(client, '?q="dragon flew"'))[0] == ["flying"]
    assert (await _slugs(client, "?q=dragon -flying"))[0] == ["trains"]
    assert (await _slugs(client, "?q=the"))[0] == []  # a stop word alone matches nothing
    blank = await _slugs(client, "?q=%20")  # a blank search is no search
    assert (len(blank[0]), "articlesCountExact" in blank[1]) == (3, False)


async def test_title_matches_come_first_then_newest(client, session):
    author = await make_user(session)
    made = [
        ("body-new", "Plain", "about rust", NOON),
        ("title-old", "Rust in practice", "b", NOON - timedelta(days=2)),
        ("description-mid", "Plain", "b", NOON - timedelta(days=1)),
        ("title-new", "Why rust", "b", NOON - timedelta(hours=1)),
    ]
    for slug, title, body, created_at in made:
        description = "rust notes" if slug.startswith("description") else "d"
        await make_article(
            session,
            author,
            slug=slug,
            title=title,
            description=description,
            body=body,
            created_at=created_at,
        )
    found, _ = await _slugs(client, "?q=rust")
    assert found == ["title-new", "title-old", "body-new", "description-mid"]
    # By cursor, one at a time, across the two tiers: the same order.
    walked, url = [], "/articles?q=rust&limit=1"
    while url:
        body = (await client.get(url)).json()
        walked += [a["slug"] for a in body["articles"]]
        url = f"/articles?q=rust&limit=1&cursor={body['nextCursor']}" if body["nextCursor"] else ""
    assert walked == found
    by_offset = [(await _slugs(client, f"?q=rust&limit=1&offset={n}"))[0][0] for n in range(4)]
    assert by_offset == found


async def test_search_combines_with_filters(client, session):
    alice = await make_user(session, username="alice")
    bob = await make_user(session, username="bob")
    await make_article(session, alice, slug="a1", title="Postgres tips", tag_list=["db"])
    await make_article(session, alice, slug="a2", title="Postgres news", tag_list=["news"])
    await make_article(session, bob, slug="b1", title="Postgres too", tag_list=["db"])
    assert sorted((await _slugs(client, "?q=postgres&tag=db"))[0]) == ["a1", "b1"]
    found, body = await _slugs(client, "?q=postgres&author=alice&tag=db")
    assert (found, body["articlesCount"]) == (["a1"], 1)


async def test_a_search_counts_up_to_its_limit(client, session, monkeypatch):
    monkeypatch.setattr(search, "COUNT_LIMIT", 3)
    queries._page.cache_clear()  # statements are built once per shape: rebuild with the limit
    try:
        author = await make_user(session)
        for _ in range(5):
            await make_article(session, author, title="Common word")
        _, body = await _slugs(client, "?q=common&limit=2")
        assert (body["articlesCount"], body["articlesCountExact"]) == (3, False)
    finally:
        queries._page.cache_clear()


async def test_lists_without_a_search_have_no_exactness_flag(client, session):
    await make_article(session, await make_user(session))
    body = (await client.get("/articles")).json()
    assert "articlesCountExact" not in body
