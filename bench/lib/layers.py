"""CPU cost of each layer of one read request, measured in isolation, in one process, one
request at a time: nothing waits for a CPU of ours, so `time.process_time()` is this
process's own work, and PostgreSQL's share shows as the gap to wall time. Run by
`python -m bench.anatomy`, and by `python -m bench.api_speed --anatomy`.

It depends only on the app's stable surface (create_app, Settings, make_engine): the SQL
each endpoint runs is captured during one request (SQLAlchemy's `before_cursor_execute` for
the ORM's statements, `app.db_reads.listen` for reads on the driver), then replayed on its
own. Rows, outermost first:

- ASGI: the whole app called in-process (middleware, routing, dependencies, session,
  queries, models, JSON), without uvicorn/httptools; `/livez` is the framework's floor.
  "The document in hand" is the one row that reaches inside: the article's read
  (`app.articles.service.get_cached`) stands in with the document it returned, so the row is
  the API's own layers around a read (the edge, the hot read, the answer and its ETag).
- SQLAlchemy session: open, `SELECT 1`, commit, close, as the app's engine does it.
- psycopg: each statement the endpoint ran, with its parameters, on a plain connection
  (prepare_threshold=None, like the app); the note is PostgreSQL's own planning and
  execution time from EXPLAIN ANALYZE.
- round trips: `SELECT 1`, and an empty BEGIN/COMMIT, on psycopg.
"""

import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import psycopg
from sqlalchemy import Engine, event, text

from app import db_reads
from app.articles import service as articles_service
from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from bench.lib import markdown
from bench.lib.database import plain_url

Step = Callable[[], Awaitable[object]]
Row = tuple[str, float, float, str]


async def timed(step: Step, n: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per call, after a warm-up of n // 10 calls."""
    for _ in range(max(n // 10, 3)):
        await step()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await step()
    return (time.process_time() - cpu) * 1e3 / n, (time.perf_counter() - wall) * 1e3 / n


async def asgi_get(app: Any, state: dict[str, Any], path: str, query: bytes = b"") -> bytes:
    """One GET through the whole ASGI app; the response body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8100"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8100),
        "root_path": "",
        "state": dict(state),
    }
    status, body = 0, bytearray()

    received = False

    async def receive() -> dict[str, Any]:
        # Like a server: the (empty) body once, then nothing until the client goes away.
        nonlocal received
        if received:
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"GET {path}?{query.decode()} answered {status}")
    return bytes(body)


@contextmanager
def captured_sql() -> Iterator[list[tuple[str, Any]]]:
    """The (SQL, parameters) of every statement any engine runs inside the block."""
    statements: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:  # conn, cursor, statement, parameters, context, many
        statements.append((args[2], args[3]))

    def driver(statement: str, parameters: Mapping[str, object]) -> None:
        statements.append((statement, dict(parameters)))

    event.listen(Engine, "before_cursor_execute", record)
    db_reads.listen(None, driver)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        db_reads.remove(None, driver)


async def server_ms(conn: psycopg.AsyncConnection[Any], sql: str, params: Any) -> str:
    """PostgreSQL's planning + execution time for one statement (EXPLAIN ANALYZE, median of
    9 after a first one that fills the backend's caches)."""
    plans, runs = [], []
    for _ in range(10):
        cursor = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        row = await cursor.fetchone()
        plan = row[0][0] if row else {}
        plans.append(plan["Planning Time"])
        runs.append(plan["Execution Time"])
    plan_ms, run_ms = statistics.median(plans[1:]), statistics.median(runs[1:])
    return f"server: plan {plan_ms:.3f} + execute {run_ms:.3f} ms"


async def measure(url: str, n: int, only: str | None = None) -> list[Row]:
    rows: list[Row] = []

    async def add(name: str, step: Step, note: str = "") -> None:
        if only and only not in name:
            return
        cpu, wall = await timed(step, n)
        rows.append((name, cpu, wall, note))
        print(f"  {name[:70]:<70} cpu {cpu:7.3f} ms  wall {wall:7.3f} ms  {note}", flush=True)

    connect = psycopg.AsyncConnection.connect
    async with await connect(plain_url(url), prepare_threshold=None, autocommit=True) as conn:
        first = await (
            await conn.execute("SELECT slug FROM articles ORDER BY id LIMIT 1")
        ).fetchone()
        if first is None:
            raise SystemExit("no articles: seed the database first (python -m bench.seed)")
        slug: str = first[0]

    # A throwaway signing key: the API refuses to start without one of its own.
    settings = Settings(database_url=url, jwt_secret=secrets.token_urlsafe(48))
    app = create_app(settings)
    endpoints = {
        "GET /api/articles?limit=20": ("/api/articles", b"limit=20"),
        "GET /api/articles/{slug}": (f"/api/articles/{slug}", b""),
        "GET /livez (no database)": ("/livez", b""),
    }
    sql: dict[str, list[tuple[str, Any]]] = {}
    async with app.router.lifespan_context(app) as lifespan_state:
        state = dict(lifespan_state or {})
        for name, (path, query) in endpoints.items():
            with captured_sql() as statements:
                size = len(await asgi_get(app, state, path, query))
            sql[name] = statements
            note = f"{size:,} bytes, {len(statements)} statements"
            await add(f"ASGI {name}", _asgi(app, state, path, query), note)
        article = endpoints["GET /api/articles/{slug}"][0]
        with _document_in_hand(await asgi_get(app, state, article)):
            step = _asgi(app, state, article, b"")
            await add("ASGI GET /api/articles/{slug}, the document in hand", step, "no database")

    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)

    async def empty_session() -> object:
        async with sessions() as session:
            result = await session.scalar(text("SELECT 1"))
            await session.commit()
            return result

    await add("SQLAlchemy session: open, SELECT 1, commit, close", empty_session)
    await engine.dispose()

    async with await connect(plain_url(url), prepare_threshold=None, autocommit=True) as conn:
        for name, statements in sql.items():
            for number, (statement, params) in enumerate(statements, 1):
                note = await server_ms(conn, statement, params)
                label = f"psycopg: {name} statement {number}: {_short(statement)}"
                await add(label, _fetcher(conn, statement, params), note)
        await add("psycopg: SELECT 1 round trip", _fetcher(conn, "SELECT 1", None))
        await add("psycopg: empty BEGIN + COMMIT", lambda: _begin_commit(conn))
    return rows


def _short(sql: str) -> str:
    words = " ".join(sql.split())
    return words[:60] + ("…" if len(words) > 60 else "")


@contextmanager
def _document_in_hand(body: bytes) -> Iterator[None]:
    """The article's read answers `body` without a cache or a database."""
    document = body.decode()

    async def in_hand(*_: object, **__: object) -> str:
        return document

    with patch.object(articles_service, "get_cached", in_hand):
        yield


def _asgi(app: Any, state: dict[str, Any], path: str, query: bytes) -> Step:
    return lambda: asgi_get(app, state, path, query)


async def _fetch(conn: psycopg.AsyncConnection[Any], sql: str, params: Any) -> object:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


def _fetcher(conn: psycopg.AsyncConnection[Any], sql: str, params: Any) -> Step:
    return lambda: _fetch(conn, sql, params)


async def _begin_commit(conn: psycopg.AsyncConnection[Any]) -> None:
    async with conn.transaction():
        pass


def render(rows: list[Row], n: int) -> str:
    lines = [
        f"One request at a time, {n} calls per row; CPU is this process's, wall adds "
        "PostgreSQL, the socket and waiting for a CPU.",
        "",
        markdown.table(
            ["layer", "CPU ms/call", "wall ms/call", "note"],
            [[name, f"{cpu:.3f}", f"{wall:.3f}", note] for name, cpu, wall, note in rows],
            text_from=3,
        ),
    ]
    return "\n".join(lines)
