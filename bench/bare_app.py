"""The floor under the API's read speed: the API's own read statements, served by a bare ASGI
callable on the same server settings and pool size, with nothing else.

No FastAPI, no middleware (metrics, deadlines, CORS, idempotency), no SQLAlchemy at request
time (bench/lib/statements.py compiles the statements once), no JWT check (an
`Authorization` header just selects the viewer statements, for the user BARE_VIEWER_ID
names), no validation. What it costs per request is what the server, psycopg and PostgreSQL
cost on this machine; the API can only be slower. `bench.api_speed --bare` measures both in
one run, so the report shows how far the full API is from this floor. With BARE_MEMO=1 each
worker keeps every answer it gave and answers the same request again from memory: the floor
of a cached read.

    uvicorn bench.bare_app:app --workers 2 --loop uvloop --http httptools   # DATABASE_URL set
"""

import os
from typing import Any
from urllib.parse import parse_qs

import orjson
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.types import Message, Receive, Scope, Send

from app import gc_tuning
from app.articles import cursors, pages, queries
from app.config import pool_split
from bench.lib import statements
from bench.lib.database import plain_url
from bench.lib.statements import Statement

VIEWER_ID = int(os.environ.get("BARE_VIEWER_ID", "1"))
_ARTICLES = "/api/articles"
_FEED = "/api/articles/feed"
_PROFILES = "/api/profiles/"
_NOT_FOUND = (404, b'{"errors":{"body":["not found"]}}')


def _statements(viewer_id: int | None) -> dict[str, Statement]:
    return {
        "page": statements.page(queries.Filters(), viewer_id),
        "single": statements.single(viewer_id),
        "comments": statements.comments_of(viewer_id),
        "profile": statements.profile(viewer_id),
    }


_ANONYMOUS = _statements(None)
_VIEWER = _statements(statements.VIEWER)
_FEED_PAGE = statements.page(queries.Filters(followed_by=statements.VIEWER), statements.VIEWER)
_TAGS = statements.tag_names()
# The API's nextCursor, signed the same way (its key comes from the same JWT_SECRET).
_CURSOR_KEY = cursors.signing_key(os.environ.get("JWT_SECRET", ""))
_LIST = queries.Filters().signature()
_FEED_LIST = queries.Filters(followed_by=VIEWER_ID).signature()

_pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None
_memo: dict[tuple[str, bytes, bool], tuple[int, bytes]] | None = (
    {} if os.environ.get("BARE_MEMO") == "1" else None
)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if _memo is None:
        await _answer(send, *await _respond(scope))
        return
    key = (scope["path"], scope["query_string"], _has_authorization(scope))
    if (answer := _memo.get(key)) is None:
        answer = _memo[key] = await _respond(scope)
    await _answer(send, *answer)


async def _respond(scope: Scope) -> tuple[int, bytes]:
    """(status, body) as the API answers a GET of this path, from the same statements."""
    path: str = scope["path"]
    if path in ("/livez", "/readyz"):
        return 200, b'{"status":"ok"}'
    viewer = _has_authorization(scope)
    ours = _VIEWER if viewer else _ANONYMOUS
    values: dict[str, object] = {"viewer_id": VIEWER_ID}
    if path == _ARTICLES:
        return await _page(ours["page"], _limit(scope), _LIST)
    if path == _FEED:
        if not viewer:
            return 401, b'{"errors":{"body":["authentication required"]}}'
        return await _page(_FEED_PAGE, _limit(scope), _FEED_LIST)
    if path == "/api/tags":
        names = [name for (name,) in await _rows(_TAGS, values)]
        return 200, orjson.dumps({"tags": names})
    if path.startswith(_PROFILES):
        values["username"] = path.removeprefix(_PROFILES)
        return await _document(ours["profile"], values)
    if not path.startswith(_ARTICLES + "/"):
        return _NOT_FOUND
    slug, _, rest = path.removeprefix(_ARTICLES + "/").partition("/")
    values["slug"] = slug
    return await _document(ours["comments" if rest == "comments" else "single"], values)


async def _document(statement: Statement, values: dict[str, object]) -> tuple[int, bytes]:
    """A document PostgreSQL rendered (an article, its comments, a profile), or 404."""
    found = await _rows(statement, values)
    return (200, found[0][0].encode()) if found else _NOT_FOUND


async def _page(statement: Statement, limit: int, query: str) -> tuple[int, bytes]:
    ((document, on_page, last),) = await _rows(statement, {"limit": limit, "viewer_id": VIEWER_ID})
    body = pages.finish(document, on_page, last, limit=limit, key=_CURSOR_KEY, query=query)
    return 200, body.encode()


async def _rows(statement: Statement, values: dict[str, object]) -> list[Any]:
    assert _pool is not None  # noqa: S101 - opened by the lifespan
    async with _pool.connection() as conn:
        cursor = conn.cursor()
        await cursor.execute(statement.sql, statement.bind(**values), prepare=True)
        return await cursor.fetchall()


def _limit(scope: Scope) -> int:
    return int(parse_qs(scope["query_string"].decode()).get("limit", ["20"])[0])


def _has_authorization(scope: Scope) -> bool:
    return any(name == b"authorization" for name, _ in scope["headers"])


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def pool(url: str, size: int) -> AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]:
    """The floor's pool, not yet open. Autocommit, as the API's read pool (app/db.py): one
    statement, one round trip. Without it psycopg opens a transaction before the statement
    and the pool commits it after: two round trips the API does not make."""
    return AsyncConnectionPool(
        url, min_size=size, max_size=size, open=False, kwargs={"autocommit": True}
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    global _pool  # one pool per worker process, like the API's engine
    # The garbage collector set as the API sets it (app/gc_tuning.py): the floor is what the
    # same statements cost at best, and this process imports the API's modules too.
    with gc_tuning.tuned_for_serving():
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                # As large as the API's read pool on the same settings.
                total, writes = os.environ.get("DB_POOL_SIZE"), os.environ.get("DB_WRITE_POOL_SIZE")
                size, _ = pool_split(int(total or 10), int(writes) if writes else None)
                _pool = pool(plain_url(os.environ["DATABASE_URL"]), size)
                await _pool.open(wait=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _pool is not None:
                    await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
