"""The write path under real concurrency: exact counts, single effects, distinct slugs, no 5xx."""

import random
from collections import Counter

from tests.concurrency.conftest import favorite_rows, gather, make_users, publish


async def test_favorite_storm_keeps_the_count_exact(committing_client, engine, settings):
    client = committing_client
    fans = await make_users(engine, settings, 1000)
    slug = await publish(client, fans[0])
    quitters = random.Random(7).sample(fans, 300)

    storm = [client.post(f"/articles/{slug}/favorite", headers=fan) for fan in fans]
    storm += [client.delete(f"/articles/{slug}/favorite", headers=fan) for fan in quitters]
    responses = await gather(storm)

    assert Counter(r.status_code for r in responses) == {200: 1300}
    rows = await favorite_rows(engine, slug)
    shown = (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"]
    assert shown == rows
    assert 700 <= rows <= 1000  # an unfavorite may run before its favorite


async def test_same_user_favoriting_twice_at_once_makes_one_row(
    committing_client, engine, settings
):
    client = committing_client
    fans = await make_users(engine, settings, 50)
    slug = await publish(client, fans[0])
    responses = await gather(
        client.post(f"/articles/{slug}/favorite", headers=fan) for fan in fans for _ in range(2)
    )
    assert [r.status_code for r in responses] == [200] * 100
    assert await favorite_rows(engine, slug) == 50
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 50


async def test_concurrent_follows_make_one_row(committing_client, engine, settings):
    client = committing_client
    fan, celeb = await make_users(engine, settings, 2)
    celeb_name = (await client.get("/user", headers=celeb)).json()["user"]["username"]
    responses = await gather(
        client.post(f"/profiles/{celeb_name}/follow", headers=fan) for _ in range(20)
    )
    assert {r.status_code for r in responses} == {200}
    responses = await gather(
        client.delete(f"/profiles/{celeb_name}/follow", headers=fan) for _ in range(20)
    )
    assert {r.status_code for r in responses} == {200}
    profile = (await client.get(f"/profiles/{celeb_name}", headers=fan)).json()["profile"]
    assert profile["following"] is False


async def test_hundred_same_titles_get_distinct_slugs(committing_client, engine, settings):
    client = committing_client
    authors = await make_users(engine, settings, 100)
    body = {"article": {"title": "Breaking news", "description": "d", "body": "b"}}
    responses = await gather(
        client.post("/articles", json=body, headers=author) for author in authors
    )
    assert [r.status_code for r in responses] == [201] * 100
    slugs = {r.json()["article"]["slug"] for r in responses}
    assert len(slugs) == 100
    assert "breaking-news" in slugs


async def test_one_idempotency_key_applies_once_under_concurrency(
    committing_client, engine, settings
):
    client = committing_client
    (author,) = await make_users(engine, settings, 1)
    body = {"article": {"title": "Exactly once", "description": "d", "body": "b"}}
    keyed = author | {"Idempotency-Key": "burst"}
    responses = await gather(client.post("/articles", json=body, headers=keyed) for _ in range(30))

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    fresh = [
        r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    ]
    assert len(fresh) == 1
    replays = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert all(r.json() == fresh[0].json() for r in replays)
    listed = (await client.get("/articles", params={"author": "crowd1"})).json()
    assert listed["articlesCount"] == 1
    # once the first has finished, the key only ever replays
    again = await client.post("/articles", json=body, headers=keyed)
    assert again.headers["Idempotent-Replayed"] == "true"
