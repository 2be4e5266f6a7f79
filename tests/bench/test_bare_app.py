"""The speed floor (bench/bare_app.py) must do the API's work, or its figures mean nothing:
for the same data it answers the same documents as the API, for every read it is measured on."""

from typing import Any

import httpx
import pytest

from app.config import Settings
from app.models import Tag
from app.state import AppState
from bench import bare_app
from bench.lib.database import plain_url
from tests import factories
from tests.conftest import auth, token_for


@pytest.fixture
async def bare(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    async with bare_app.pool(plain_url(database_url), 1) as pool:
        monkeypatch.setattr(bare_app, "_pool", pool)
        transport = httpx.ASGITransport(app=bare_app.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bare") as client:
            yield client


async def test_floor_answers_what_the_api_answers(
    committing_client: httpx.AsyncClient,
    committing_state: AppState,
    settings: Settings,
    bare: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with committing_state.sessions() as session:
        author = await factories.make_user(session)
        fan = await factories.make_user(session)
        articles = [await factories.make_article(session, author) for _ in range(3)]
        await factories.favorite(session, fan, articles[0])
        await factories.follow(session, fan, author)
        await factories.make_comment(session, articles[0], fan)
        await factories.make_comment(session, articles[0], author)
        session.add(Tag(name="bench"))
        await session.commit()
        slug, fan_id, name = articles[0].slug, fan.id, author.username
    monkeypatch.setattr(bare_app, "VIEWER_ID", fan_id)  # the floor reads no token
    viewer = auth(token_for(fan_id, settings))

    reads = [
        ("/articles?limit=20", None),
        ("/articles?limit=20", viewer),
        ("/articles/feed?limit=20", viewer),
        (f"/articles/{slug}", None),
        (f"/articles/{slug}", viewer),
        (f"/articles/{slug}/comments", None),
        (f"/articles/{slug}/comments", viewer),
        (f"/profiles/{name}", None),
        (f"/profiles/{name}", viewer),
        ("/tags", None),
    ]
    floors = []
    for path, headers in reads:
        api = await committing_client.get(path, headers=headers)
        floor = await bare.get("/api" + path, headers=headers)
        assert (api.status_code, floor.status_code) == (200, 200), path
        assert floor.json() == api.json(), path
        floors.append(floor.json())
    # The data shows what it should: the comparison above compared something.
    assert floors[2]["articlesCount"] == 3
    assert floors[4]["article"]["favorited"]
    assert [c["author"]["following"] for c in floors[6]["comments"]] == [False, True]
    assert floors[8]["profile"]["following"]
    assert floors[9] == {"tags": ["bench"]}
    for path in ("/articles/no-such-slug", "/articles/no-such-slug/comments", "/profiles/nobody"):
        assert (await bare.get("/api" + path)).status_code == 404


async def test_floor_of_a_cached_read_answers_from_memory(
    bare: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bare_app, "_memo", {})
    first = await bare.get("/api/tags")
    monkeypatch.setattr(bare_app, "_pool", None)  # no database from here on
    again = await bare.get("/api/tags")
    assert (again.status_code, again.content) == (first.status_code, first.content)


async def test_floor_reads_in_autocommit_as_the_api_does(database_url: str) -> None:
    """One statement per read, no BEGIN before it nor COMMIT after: the API's read pool is in
    autocommit, and a floor with two more round trips per read would flatter the API."""
    async with bare_app.pool(plain_url(database_url), 1) as pool, pool.connection() as conn:
        await conn.execute("SELECT 1")
        assert conn.autocommit
        assert conn.info.transaction_status.name == "IDLE"
