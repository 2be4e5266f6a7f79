"""Cursor pagination: round trips, tampering, deep offsets, and no article skipped or repeated
while articles are published between pages."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.articles import cursors
from app.errors import Invalid
from tests.conftest import auth, token_for
from tests.factories import follow, make_article, make_user

KEY = cursors.signing_key("test-secret")
NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_a_cursor_decodes_to_its_position_for_its_query_only():
    position = cursors.Position(NOON + timedelta(microseconds=7), 42, tier=1)
    token = cursors.encode(position, key=KEY, query="a")
    assert cursors.decode(token, key=KEY, query="a") == position
    for query, key in (("b", KEY), ("a", cursors.signing_key("another secret"))):
        with pytest.raises(Invalid):
            cursors.decode(token, key=key, query=query)


@pytest.mark.parametrize("mangle", [lambda t: t[:-1], lambda t: t + "A", lambda t: "x" + t[1:]])
def test_a_changed_cursor_is_refused(mangle):
    token = cursors.encode(cursors.Position(NOON, 1), key=KEY, query="")
    with pytest.raises(Invalid):
        cursors.decode(mangle(token), key=KEY, query="")


async def _walk(client: httpx.AsyncClient, query: str) -> list[str]:
    """Every slug of a list, page by page, following nextCursor."""
    seen: list[str] = []
    url = f"/articles{query}"
    for _ in range(100):
        body = (await client.get(url)).json()
        seen += [a["slug"] for a in body["articles"]]
        if body["nextCursor"] is None:
            return seen
        separator = "&" if "?" in query else "?"
        url = f"/articles{query}{separator}cursor={body['nextCursor']}"
    raise AssertionError("no last page")


async def test_cursor_pages_cover_the_list_once_in_order(client, session):
    author = await make_user(session)
    # Equal timestamps too: ties are broken by id, as the index orders them.
    made = [
        await make_article(session, author, created_at=NOON - timedelta(minutes=n // 3))
        for n in range(23)
    ]
    newest_first = [a.slug for a in sorted(made, key=lambda a: (a.created_at, a.id), reverse=True)]
    assert await _walk(client, "?limit=5") == newest_first
    assert await _walk(client, f"?limit=4&author={author.username}") == newest_first
    by_offset = (await client.get("/articles?limit=100")).json()["articles"]
    assert [a["slug"] for a in by_offset] == newest_first


async def test_publishing_between_pages_neither_skips_nor_repeats(client, session):
    author = await make_user(session)
    old = [
        await make_article(session, author, created_at=NOON - timedelta(minutes=n))
        for n in range(30)
    ]
    seen: list[str] = []
    url = "/articles?limit=6"
    minute = 0
    while url:
        body = (await client.get(url)).json()
        seen += [a["slug"] for a in body["articles"]]
        # New articles land before, among and exactly at the pages already read.
        for created_at in (NOON + timedelta(hours=1), NOON - timedelta(minutes=minute)):
            await make_article(session, author, created_at=created_at)
        minute += 6
        url = f"/articles?limit=6&cursor={body['nextCursor']}" if body["nextCursor"] else ""
    assert len(seen) == len(set(seen))
    assert {a.slug for a in old} <= set(seen)


async def test_the_feed_pages_by_cursor(client, session, settings):
    reader = await make_user(session)
    author = await make_user(session)
    await follow(session, reader, author)
    for n in range(5):
        await make_article(session, author, created_at=NOON - timedelta(minutes=n))
    headers = auth(token_for(reader.id, settings))
    first = (await client.get("/articles/feed?limit=3", headers=headers)).json()
    rest = (
        await client.get(f"/articles/feed?limit=3&cursor={first['nextCursor']}", headers=headers)
    ).json()
    assert len(first["articles"]) + len(rest["articles"]) == 5 == first["articlesCount"]
    assert rest["nextCursor"] is None


async def test_a_cursor_of_another_list_or_changed_is_422(client, session):
    author = await make_user(session)
    for _ in range(3):
        await make_article(session, author, tag_list=["t"])
    cursor = (await client.get("/articles?limit=1")).json()["nextCursor"]
    for url in (
        f"/articles?limit=1&tag=t&cursor={cursor}",
        f"/articles?limit=1&cursor={cursor[:-2]}xy",
        "/articles?cursor=not-a-cursor",
        f"/articles?limit=1&offset=1&cursor={cursor}",
    ):
        response = await client.get(url)
        assert response.status_code == 422, url
        assert response.json()["errors"]["body"]


async def test_a_deep_offset_is_422_pointing_to_the_cursor(client):
    assert (await client.get("/articles?offset=10000")).status_code == 200
    for offset in (10_001, 10**30):
        response = await client.get(f"/articles?offset={offset}")
        assert response.status_code == 422
        assert "cursor" in response.json()["errors"]["body"][0]
