"""The speed floor (bench/bare_app.py) must do the API's work, or its figures mean nothing:
for the same data it answers the same documents as the API."""

from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from app.state import AppState
from bench import bare_app
from bench.lib.database import plain_url
from tests import factories


@pytest.fixture
async def bare(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    async with AsyncConnectionPool(plain_url(database_url), min_size=1, max_size=1) as pool:
        monkeypatch.setattr(bare_app, "_pool", pool)
        transport = httpx.ASGITransport(app=bare_app.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bare") as client:
            yield client


async def test_floor_answers_what_the_api_answers(
    committing_client: httpx.AsyncClient,
    committing_state: AppState,
    bare: httpx.AsyncClient,
) -> None:
    sessions = committing_state.sessions
    async with sessions() as session:
        author = await factories.make_user(session)
        fan = await factories.make_user(session)
        articles = [await factories.make_article(session, author) for _ in range(3)]
        await factories.favorite(session, fan, articles[0])
        await session.commit()
        slug = articles[0].slug

    for path in ("/articles?limit=20", f"/articles/{slug}"):
        api = await committing_client.get(path)
        floor = await bare.get("/api" + path)
        assert (api.status_code, floor.status_code) == (200, 200)
        assert floor.json() == api.json()
    assert floor.json()["article"]["favoritesCount"] == 1
    assert (await bare.get("/api/articles/no-such-slug")).status_code == 404
