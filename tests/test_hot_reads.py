"""The hot reads' own layer (app/hot_reads.py) answers exactly as the FastAPI routes do: the
same requests, sent to the app and to the same app without it, get the same status, body
and headers; the plain cases are served by the hot reads, the others by FastAPI's routes."""

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.articles import service as articles_service
from app.config import Settings
from app.db_reads import borrowed
from app.hot_reads import HotRead, HotReads
from app.main import Conduit, create_app
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
    hot, plain = create_app(settings), _without_hot_reads(settings)
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=serve_with_state(hot, state)), base_url=ROOT
        ) as with_hot,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=serve_with_state(plain, state)), base_url=ROOT
        ) as without,
    ):
        yield with_hot, without


def _without_hot_reads(settings: Settings) -> Conduit:
    app = create_app(settings)
    layers = len(app.edge_middleware)
    app.edge_middleware = [m for m in app.edge_middleware if m.cls is not cast(Any, HotReads)]
    assert len(app.edge_middleware) == layers - 1
    return app


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


@pytest.mark.parametrize(
    "fault",
    [
        RuntimeError("boom"),
        # A database error that is no outage: its handler declines it, so it is a 500 too.
        ProgrammingError("SELECT", {}, Exception("syntax error")),
        # An outage: its own handler's 503.
        OperationalError("SELECT", {}, Exception("server closed the connection")),
    ],
)
async def test_a_fault_in_a_read_is_answered_alike_on_either_route(
    settings: Settings,
    engine: AsyncEngine,
    served: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Exception,
) -> None:
    """The hot reads sit outside Starlette's exception layers (app/main.py): a fault gets
    the same answer there, with the request id, and an unhandled one still goes on up."""

    async def failing(*_: object, **__: object) -> str:
        raise fault

    monkeypatch.setattr(articles_service, "get_cached", failing)
    state = make_state(settings, engine)
    answers = []
    for app in (create_app(settings), _without_hot_reads(settings)):
        transport = httpx.ASGITransport(
            app=serve_with_state(app, state), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
            answers.append(
                await client.get("/api/articles/some-slug", headers={"X-Request-ID": "fault-1"})
            )
    assert served == ["/api/articles/some-slug"]  # the first app's hot route answered
    hot, plain = answers
    expected = 503 if isinstance(fault, OperationalError) else 500
    assert hot.status_code == plain.status_code == expected
    assert hot.json() == plain.json()
    assert list(hot.json()["errors"]) == ["body"]
    assert hot.headers.get_list("x-request-id") == ["fault-1"]
    assert plain.headers.get_list("x-request-id") == ["fault-1"]
    # The 500s are the app's handler's, on either route (logged with the exception).
    logged = [r for r in caplog.records if r.getMessage().startswith("unhandled error on GET")]
    assert len(logged) == (2 if expected == 500 else 0)
    assert all(record.exc_info is not None for record in logged)
