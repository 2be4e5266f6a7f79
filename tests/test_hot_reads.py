"""The hot reads' own layer (app/hot_reads.py) answers exactly as the FastAPI routes do: the
same requests, sent to the app and to the same app without it, get the same status, body
and headers; the plain cases are served by the hot reads, the others by FastAPI's routes."""

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db_reads import borrowed
from app.hot_reads import HotRead, HotReads
from app.main import create_app
from tests.conftest import ROOT, auth, make_state, serve_with_state, token_for
from tests.factories import favorite, follow, make_article, make_comment, make_user

# Headers that may differ between any two answers (nginx's expiry names the current second).
_PER_REQUEST = {"x-request-id", "date", "x-accel-expires"}


@pytest.fixture
async def clients(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    connection: AsyncConnection,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(the app, the same app without its hot reads' layer), over one state."""
    state = make_state(settings, engine, connect=lambda: borrowed(connection), sessions=sessions)
    hot = create_app(settings)
    plain: FastAPI = create_app(settings)
    layers = len(plain.user_middleware)
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not cast(Any, HotReads)]
    assert len(plain.user_middleware) == layers - 1
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=serve_with_state(hot, state)), base_url=ROOT
        ) as with_hot,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=serve_with_state(plain, state)), base_url=ROOT
        ) as without,
    ):
        yield with_hot, without


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the hot reads served."""
    paths: list[str] = []
    answer = HotReads._answer

    async def counted(self: HotReads, read: HotRead, scope: Any, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await answer(self, read, scope, receive, send)

    monkeypatch.setattr(HotReads, "_answer", counted)
    return paths


async def _same(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], url: str, **headers: str
) -> httpx.Response:
    with_hot, without = clients
    expected = await without.get(url, headers=headers)
    answer = await with_hot.get(url, headers=headers)
    assert (answer.status_code, answer.content) == (expected.status_code, expected.content), url
    assert _headers(answer) == _headers(expected), url
    return answer


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.multi_items() if k not in _PER_REQUEST)


async def test_hot_routes_answer_as_the_fastapi_routes(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    served: list[str],
    session: AsyncSession,
    settings: Settings,
) -> None:
    author = await make_user(session, username="hot-author")
    reader = await make_user(session, username="hot-reader")
    article = await make_article(session, author, tag_list=["hot"], body="a word to find")
    await make_comment(session, article, author)
    await favorite(session, reader, article)
    await follow(session, reader, author)
    token = auth(token_for(reader.id, settings))
    slug = article.slug

    plain = [
        "/api/articles",
        "/api/articles?limit=5&offset=0",
        "/api/articles?tag=hot",
        "/api/articles?author=hot-author&limit=1",
        "/api/articles?favorited=hot-reader",
        "/api/articles?q=word",
        "/api/articles?offset=20000",  # plainly a number: the service's own 422
        "/api/articles?tag=",
        "/api/articles/feed",
        "/api/articles/feed?limit=1&offset=1",
        f"/api/articles/{slug}",
        f"/api/articles/{slug}/comments",
        "/api/articles/no-such-article",
        "/api/articles/no-such-article/comments",
        "/api/profiles/hot-author",
        "/api/profiles/nobody",
        "/api/tags",
    ]
    for url in plain:
        await _same(clients, url)
        await _same(clients, url, **token)
        await _same(clients, url, Authorization="Token not-a-jwt")
    assert len(served) == 3 * len(plain)  # every one of them by its hot route
    etag = (await _same(clients, f"/api/articles/{slug}")).headers["etag"]
    assert (
        await _same(clients, f"/api/articles/{slug}", **{"If-None-Match": etag})
    ).status_code == 304
    tags_etag = (await _same(clients, "/api/tags")).headers["etag"]
    assert (await _same(clients, "/api/tags", **{"If-None-Match": tags_etag})).status_code == 304

    served.clear()
    for url in (
        "/api/articles?limit=0",
        "/api/articles?limit=101",
        "/api/articles?limit=abc",
        "/api/articles?limit=5&limit=6",
        "/api/articles?offset=99999999999",
        "/api/articles?fields=slug,title",
        "/api/articles?unknown=1",
        "/api/articles?tag=" + "t" * 201,
        "/api/articles/feed?tag=hot",
        "/api/articles/feed?limit=0",
        f"/api/articles/{slug}?fields=title",
        "/api/articles/a%00b",
        "/api/profiles/" + "u" * 65,
    ):
        await _same(clients, url)
        await _same(clients, url, **token)
    assert served == []  # each of them went to FastAPI's route


async def test_an_old_slug_moves_on_either_route(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    served: list[str],
    session: AsyncSession,
    settings: Settings,
) -> None:
    author = await make_user(session)
    token = auth(token_for(author.id, settings))
    with_hot, _ = clients
    new = {"article": {"title": "Before", "description": "d", "body": "b"}}
    old_slug = (await with_hot.post("/api/articles", json=new, headers=token)).json()["article"][
        "slug"
    ]
    renamed = {"article": {"title": "After"}}
    moved = await with_hot.put(f"/api/articles/{old_slug}", json=renamed, headers=token)
    assert moved.status_code == 200
    new_slug = moved.json()["article"]["slug"]
    answer = await _same(clients, f"/api/articles/{old_slug}")
    assert answer.status_code == 301
    assert answer.headers["location"] == f"/api/articles/{new_slug}"
    comments = await _same(clients, f"/api/articles/{old_slug}/comments")
    assert comments.status_code == 301
    assert comments.headers["location"] == f"/api/articles/{new_slug}/comments"
    assert served == [f"/api/articles/{old_slug}", f"/api/articles/{old_slug}/comments"]
