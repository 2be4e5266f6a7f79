"""Writes racing the deletion of their article: each answers as if it came before the deletion
or after it (404 in the RealWorld shape), never 500 or a wait until the deadline, and leaves
no row behind on the deleted article.

The race is made exact: the deletion runs in a transaction of the test's own and stays
uncommitted until the write, which looked the article up and found it, waits on one of the
deletion's row locks (the foreign key's check of the article row, a cascaded row); then the
deletion commits."""

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.concurrency.conftest import gather, make_users, publish
from tests.concurrency.test_counts import _drift

Headers = dict[str, str]
Write = Callable[[httpx.AsyncClient, str, Headers], Awaitable[httpx.Response]]
WAIT_S = 10.0  # far below the request deadline of this folder's settings (120 s)
POLL_S = 0.01


@asynccontextmanager
async def _deletion_held(engine: AsyncEngine, slug: str) -> AsyncIterator[int]:
    """Delete the article in a transaction that commits when the block ends; yields the
    deleting backend's pid."""
    async with engine.connect() as conn, conn.begin():
        pid = int(await conn.scalar(text("SELECT pg_backend_pid()")) or 0)
        deleted = await conn.execute(
            text("DELETE FROM articles WHERE slug = :slug"), {"slug": slug}
        )
        assert deleted.rowcount == 1
        yield pid


async def _until_blocked_by(engine: AsyncEngine, pid: int) -> None:
    """Wait until some backend waits on a lock that `pid` holds."""
    blocked = text(
        "SELECT count(*) FROM pg_stat_activity WHERE CAST(:pid AS int) = ANY(pg_blocking_pids(pid))"
    )
    async with engine.connect() as conn:
        for _ in range(int(WAIT_S / POLL_S)):
            if await conn.scalar(blocked, {"pid": pid}):
                return
            await asyncio.sleep(POLL_S)
    raise AssertionError("the write never waited on the deletion")


async def _comment(client: httpx.AsyncClient, slug: str, fan: Headers) -> httpx.Response:
    body = {"comment": {"body": "too late"}}
    return await client.post(f"/articles/{slug}/comments", json=body, headers=fan)


async def _favorite(client: httpx.AsyncClient, slug: str, fan: Headers) -> httpx.Response:
    return await client.post(f"/articles/{slug}/favorite", headers=fan)


async def _unfavorite(client: httpx.AsyncClient, slug: str, fan: Headers) -> httpx.Response:
    return await client.delete(f"/articles/{slug}/favorite", headers=fan)


async def _retitle(client: httpx.AsyncClient, slug: str, author: Headers) -> httpx.Response:
    body = {"article": {"title": "A new title"}}
    return await client.put(f"/articles/{slug}", json=body, headers=author)


# (the write, who sends it, whether the fan favorited the article first)
RACES = {
    "comment": (_comment, "fan", False),
    "favorite": (_favorite, "fan", False),
    "unfavorite": (_unfavorite, "fan", True),
    "retitle": (_retitle, "author", False),
}


@pytest.mark.parametrize("race", RACES)
async def test_a_write_racing_the_deletion_of_its_article_is_404(
    committing_client, engine, settings, race
):
    client = committing_client
    write, sender, favorited = RACES[race]
    author, fan = await make_users(engine, settings, 2)
    slug = await publish(client, author, "Doomed")
    if favorited:
        assert (await _favorite(client, slug, fan)).status_code == 200

    async with _deletion_held(engine, slug) as pid:
        answer = asyncio.create_task(write(client, slug, author if sender == "author" else fan))
        await _until_blocked_by(engine, pid)
    response = await asyncio.wait_for(answer, WAIT_S)

    assert response.status_code == 404, response.text
    assert response.json() == {"errors": {"body": [f"article {slug!r} not found"]}}
    async with engine.connect() as conn:
        for table in ("articles", "comments", "favorites", "article_slugs"):
            left = await conn.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 - ours
            assert left == 0, table
    assert await _drift(engine) == []


async def test_writes_racing_deletions_through_the_api_never_fail(
    committing_client, engine, settings
):
    """The same races left to chance: many articles deleted by their authors while fans
    comment, favorite and unfavorite them."""
    client = committing_client
    rng = random.Random(21)
    authors = await make_users(engine, settings, 20)
    fans = authors[:5]
    slugs = await gather(publish(client, author, "Contested") for author in authors)
    doomed = set(rng.sample(slugs, 10))
    storm: list[Awaitable[httpx.Response]] = []
    for slug, author in zip(slugs, authors, strict=True):
        if slug in doomed:
            storm.append(client.delete(f"/articles/{slug}", headers=author))
        for fan in fans:
            storm += [_comment(client, slug, fan), _favorite(client, slug, fan)]
        storm.append(_unfavorite(client, slug, fans[0]))
    rng.shuffle(storm)
    responses = await gather(storm)

    assert set(Counter(r.status_code for r in responses)) <= {200, 204, 404}
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT slug, id FROM articles"))
        kept: dict[str, int] = dict(rows.all())
        comments = Counter(
            (await conn.execute(text("SELECT article_id FROM comments"))).scalars().all()
        )
    assert set(kept) == set(slugs) - doomed
    assert set(comments) <= set(kept.values())
    for slug, article_id in kept.items():  # nothing raced these: every comment landed
        assert comments[article_id] == len(fans), slug
        shown = (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"]
        async with engine.connect() as conn:
            rows = await conn.scalar(
                text("SELECT count(*) FROM favorites WHERE article_id = :id"), {"id": article_id}
            )
        assert shown == rows, slug
    assert await _drift(engine) == []
