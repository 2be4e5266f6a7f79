"""The floor under issue 2's speed targets: the API's own read statements, served by a bare
ASGI callable on the same uvicorn settings and pool size, with nothing else.

No FastAPI, no middleware (metrics, deadlines, CORS, idempotency), no SQLAlchemy at request
time, no JWT check (an `Authorization` header just selects the viewer statement for user 1),
no validation. What it costs per request is what uvicorn, psycopg and PostgreSQL cost on this
machine; the API can only be slower. `bench.api_speed --bare` measures both in one run, so the
report shows how far the full API is from this floor, and whether a target lies above it.

    uvicorn bench.bare_app:app --workers 2 --loop uvloop --http httptools   # DATABASE_URL set
"""

import os
from typing import Any
from urllib.parse import parse_qs

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from starlette.types import Message, Receive, Scope, Send

from app.articles import cursors, pages, queries
from bench.lib.database import plain_url

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


def _sql(statement: Select[*tuple[Any, ...]]) -> tuple[str, dict[str, object]]:
    """The statement exactly as SQLAlchemy sends it through psycopg (`%(name)s` parameters),
    and the values of its literal parameters."""
    compiled = statement.compile(dialect=_DIALECT)
    return str(compiled), dict(compiled.params)


_ANONYMOUS = {"page": _sql(queries.page(queries.Filters(), None, queries.Window(limit=1))[0])}
_ANONYMOUS["single"] = _sql(queries.single("", None)[0])
_VIEWER = {"page": _sql(queries.page(queries.Filters(), 1, queries.Window(limit=1))[0])}
_VIEWER["single"] = _sql(queries.single("", 1)[0])
_PREFIX = "/api/articles"
# The API's nextCursor, signed the same way (its key comes from the same JWT_SECRET).
_CURSOR_KEY = cursors.signing_key(os.environ.get("JWT_SECRET", ""))
_LIST = queries.Filters().signature()

_pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    if path in ("/livez", "/readyz"):
        await _answer(send, 200, b'{"status":"ok"}')
        return
    statements = _VIEWER if _has_authorization(scope) else _ANONYMOUS
    if path == _PREFIX:
        query = parse_qs(scope["query_string"].decode())
        sql, params = statements["page"]
        params = params | {"limit": int(query.get("limit", ["20"])[0]), "offset": 0, "viewer_id": 1}
    elif path.startswith(_PREFIX + "/"):
        sql, params = statements["single"]
        params = params | {"slug": path.removeprefix(_PREFIX + "/"), "viewer_id": 1}
    else:
        await _answer(send, 404, b'{"errors":{"body":["not found"]}}')
        return
    assert _pool is not None  # noqa: S101 - opened by the lifespan
    async with _pool.connection() as conn:
        cursor = await conn.execute(sql, params, prepare=True)
        row = await cursor.fetchone()
    if row is None:  # an unknown slug
        await _answer(send, 404, b'{"errors":{"body":["article not found"]}}')
        return
    if path == _PREFIX:
        document, on_page, last = row
        limit = int(str(params["limit"]))
        page = pages.finish(document, on_page, last, limit=limit, key=_CURSOR_KEY, query=_LIST)
        await _answer(send, 200, page.encode())
        return
    await _answer(send, 200, row[0].encode())


def _has_authorization(scope: Scope) -> bool:
    return any(name == b"authorization" for name, _ in scope["headers"])


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    global _pool  # one pool per worker process, like the API's engine
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            size = int(os.environ.get("DB_POOL_SIZE", "32"))
            url = plain_url(os.environ["DATABASE_URL"])
            _pool = AsyncConnectionPool(url, min_size=size, max_size=size, open=False)
            await _pool.open(wait=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _pool is not None:
                await _pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
