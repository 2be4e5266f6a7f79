"""Public reads on the driver (app/db_reads.py): the SQL and parameters SQLAlchemy would send,
the same rows, and what SQLAlchemy's execution gave besides: outages as 503 with a pool that
recovers, cancellation, statement listeners, tracing spans."""

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Integer, bindparam, event, literal, select, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg
from sqlalchemy.exc import InvalidRequestError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app import db_reads
from app.articles import queries, slugs
from app.articles.cursors import Position
from app.cache import viewer
from app.comments import service as comments
from app.config import Settings
from app.db import make_engine, make_read_pool
from app.db_reads import ReadPool, borrowed, compiled
from app.main import create_app
from app.observability import tracing
from app.profiles import service as profiles
from app.tags import service as tags
from tests.conftest import ROOT, make_state, serve_with_state
from tests.factories import favorite, follow, make_article, make_comment, make_user

_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _shapes(slug: str, username: str, viewer_id: int) -> list[tuple[Any, ...]]:
    """(statement, parameters) of every public read, in each of its shapes."""
    shapes: list[tuple[Any, ...]] = []
    for who in (None, viewer_id):
        for filters in (
            queries.Filters(),
            queries.Filters(tag="dragons"),
            queries.Filters(author=username),
            queries.Filters(favorited_by=username),
            queries.Filters(tag="dragons", author=username),
            queries.Filters(followed_by=viewer_id),
            queries.Filters(q="dragon"),
            queries.Filters(q="dragon", tag="dragons"),
        ):
            windows = [queries.Window(limit=20), queries.Window(limit=5, offset=5)]
            # after a cursor: in a search, in either tier (title matches first)
            for tier in (0, 1) if filters.q else (0,):
                windows.append(queries.Window(limit=5, after=Position(_AT, 10**9, tier)))
            shapes += [queries.page(filters, who, window) for window in windows]
        shapes.append(queries.single(slug, who))
        shown = who is not None
        shapes.append((comments._comments_query(viewer=shown), {"slug": slug, "viewer_id": who}))
        shapes.append(
            (profiles._profile_query(viewer=shown), {"username": username, "viewer_id": who})
        )
    params = {"viewer_id": viewer_id, "slugs": (slug, "other"), "usernames": [username]}
    shapes.append((viewer._flags_statement(page=True), params))
    shapes.append((viewer._flags_statement(page=False), {"viewer_id": viewer_id, "limit": 3}))
    shapes.append((slugs._MOVED_TO, {"slug": slug}))
    shapes.append((tags._NAMES, None))
    return shapes


async def test_every_read_sends_what_sqlalchemy_sends_and_gets_the_same_rows(
    session: AsyncSession, connection: AsyncConnection, engine: AsyncEngine
) -> None:
    reader, author = await make_user(session), await make_user(session)
    article = await make_article(session, author, title="Dragons", tag_list=["dragons"])
    await make_comment(session, article, author)
    await favorite(session, reader, article)
    await follow(session, reader, author)

    sent: list[tuple[str, Any]] = []

    def orm(_conn: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
        sent.append((statement, parameters))

    def driver(statement: str, parameters: Mapping[str, object]) -> None:
        sent.append((statement, dict(parameters)))

    shapes = _shapes(article.slug, author.username, reader.id)
    event.listen(engine.sync_engine, "before_cursor_execute", orm)
    db_reads.listen(engine, driver)
    try:
        async with borrowed(connection) as db:
            for statement, params in shapes:
                by_orm = [tuple(row) for row in await connection.execute(statement, params)]
                assert await db.all(statement, params) == by_orm, statement
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", orm)
        db_reads.remove(engine, driver)
    assert len(sent) == 2 * len(shapes)
    for orm_sent, driver_sent in zip(sent[::2], sent[1::2], strict=True):
        assert driver_sent == orm_sent


# Not an engine's: a shape compiled here must not be what that engine's reads find cached.
_DIALECT = PGDialectAsync_psycopg()


def test_a_shape_is_compiled_once() -> None:
    statement, _ = queries.single("x", None)
    first = compiled(statement, _DIALECT)
    assert compiled(queries.single("y", None)[0], _DIALECT) is first
    assert "%(slug)s" in first.sql


def test_values_are_processed_as_sqlalchemy_binds_them() -> None:
    done = compiled(viewer._flags_statement(page=True), _DIALECT)
    values = done.values({"viewer_id": 1, "slugs": ("a", "b"), "usernames": ["c"], "extra": 0})
    assert values == {"viewer_id": 1, "slugs": ["a", "b"], "usernames": ["c"]}  # ARRAY: a list
    with pytest.raises(InvalidRequestError, match="viewer_id"):
        done.values({"slugs": [], "usernames": []})
    built = compiled(select(literal(7), bindparam("n", type_=Integer)), _DIALECT)
    assert built.values({"n": 1}) == {"param_1": 7, "n": 1}  # a literal keeps its value


def test_a_statement_rendered_per_execution_is_refused() -> None:
    expanding = select(literal(1)).where(literal(1).in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="compiled once"):
        compiled(expanding, _DIALECT)


# One connection for reads (and one for the ORM): the next read reuses exactly that one.
_SMALL = {"db_pool_size": 2, "db_write_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 2.0}


@pytest.fixture
async def small_pool(settings: Settings) -> AsyncIterator[ReadPool]:
    small = settings.model_copy(update=_SMALL)
    engine = make_engine(small, autocommit=True, pool_size=small.write_pool_size)
    pool = make_read_pool(small, engine)
    yield pool
    await pool.close()
    await engine.dispose()


def _lent(pool: ReadPool) -> int:
    assert pool.connections is not None
    return pool.connections.checkedout()


async def _backend(pool: ReadPool) -> int:
    async with pool.connect() as db:
        pid: int = await db.scalar(text("SELECT pg_backend_pid()"))
    return pid


async def _terminate(engine: AsyncEngine, pid: int) -> None:
    async with engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def test_a_connection_that_died_while_idle_is_replaced_under_the_read(
    settings: Settings, engine: AsyncEngine, small_pool: ReadPool
) -> None:
    """PostgreSQL or PgBouncer restarted since the connection was last used: the read runs
    again on a fresh connection, and the client never sees it."""
    lost = await _backend(small_pool)
    await _terminate(engine, lost)
    state = make_state(settings, small_pool.engine, connect=small_pool.connect)
    transport = httpx.ASGITransport(app=serve_with_state(create_app(settings), state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        response = await client.get("/tags")
    assert response.status_code == 200
    assert await _backend(small_pool) != lost  # the broken one never went back into the pool
    assert _lent(small_pool) == 0


# Each connection it runs on is lost under it: the read's one retry is lost too.
_FATAL = text("SELECT pg_terminate_backend(pg_backend_pid()) OR CAST(:secret AS text) = ''")


async def test_a_connection_lost_again_under_the_retry_raises_what_sqlalchemy_raises(
    small_pool: ReadPool,
) -> None:
    first = await _backend(small_pool)
    async with small_pool.connect() as db:
        with pytest.raises(OperationalError) as raised:
            await db.scalar(_FATAL, {"secret": "hunter2"})
    assert raised.value.connection_invalidated
    assert "CAST(%(secret)s AS text)" in str(raised.value)  # the statement...
    assert "hunter2" not in str(raised.value)  # ...never its values
    assert await _backend(small_pool) != first
    assert _lent(small_pool) == 0


async def test_a_read_whose_connections_are_lost_is_a_503(
    settings: Settings, small_pool: ReadPool
) -> None:
    app = create_app(settings)

    @app.get("/api/test/fatal")
    async def fatal_read() -> None:
        async with small_pool.connect() as db:
            await db.scalar(_FATAL, {"secret": "x"})

    state = make_state(settings, small_pool.engine, connect=small_pool.connect)
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        during = await client.get("/test/fatal")
        after = await client.get("/tags")
    assert during.status_code == 503
    assert during.headers["Retry-After"] == "1"
    assert after.status_code == 200


async def test_an_unreachable_database_is_an_operational_error_at_once(
    settings: Settings,
) -> None:
    """Not after the pool timeout: a read that cannot connect is a 503 the client retries,
    as SQLAlchemy's pool answers it."""
    url = "postgresql+psycopg://x@127.0.0.1:1/x"
    nowhere_settings = settings.model_copy(update={"database_url": url, "db_pool_timeout": 5.0})
    nowhere = make_engine(nowhere_settings, autocommit=True)
    pool = make_read_pool(nowhere_settings, nowhere)
    started = time.monotonic()
    try:
        for _ in range(3):  # and again: a failed attempt gives its place back
            with pytest.raises(OperationalError):
                async with pool.connect():
                    pass
    finally:
        await pool.close()
        await nowhere.dispose()
    assert time.monotonic() - started < 2.5
    assert _lent(pool) == 0


async def test_a_cancelled_read_stops_its_statement_and_leaves_a_healthy_pool(
    engine: AsyncEngine, small_pool: ReadPool
) -> None:
    pool = small_pool
    cancelled = await _backend(pool)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3), pool.connect() as db:
            await db.scalar(text("SELECT pg_sleep(5) /* db-reads-cancel */"))
    started = time.monotonic()
    async with engine.connect() as admin:
        while await admin.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE '%db-reads-cancel%' AND query NOT LIKE '%pg_stat_activity%'"
            )
        ):
            assert time.monotonic() - started < 3, "the statement kept running"
            await asyncio.sleep(0.05)
    # Discarded as SQLAlchemy discards a connection cancelled mid-statement; the next read
    # gets a fresh one.
    assert await _backend(pool) != cancelled
    assert _lent(pool) == 0


@pytest.mark.parametrize("prepared", [False, True])
async def test_reads_prepare_statements_only_when_the_settings_allow(
    settings: Settings, prepared: bool
) -> None:
    """Behind PgBouncer in transaction mode a named prepared statement would break: psycopg
    keeps the engine's `prepare_threshold` (DB_PREPARED_STATEMENTS) on the driver path too."""
    chosen = settings.model_copy(update=_SMALL | {"db_prepared_statements": prepared})
    engine = make_engine(chosen, autocommit=True)
    pool = make_read_pool(chosen, engine)
    try:
        async with pool.connect() as db:
            for _ in range(6):  # past psycopg's threshold of 5 when preparing is on
                await db.all(tags._NAMES)
            named = await db.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
    finally:
        await pool.close()
        await engine.dispose()
    assert (named > 0) is prepared


async def test_a_read_span_is_named_and_attributed_like_the_orms(small_pool: ReadPool) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = small_pool.engine
    tracing.instrument_engine(engine, provider)
    statement = queries.single("nowhere", None)[0]
    async with engine.connect() as conn:
        await conn.execute(statement, {"slug": "nowhere"})
    traced = ReadPool(engine, small_pool.connections, provider)
    async with traced.connect() as db:
        assert await db.scalar(statement, {"slug": "nowhere"}) is None
    orm, thin = exporter.get_finished_spans()
    assert thin.instrumentation_scope is not None
    assert thin.instrumentation_scope.name == "app.db_reads"
    assert (thin.name, thin.kind) == (orm.name, orm.kind) == ("SELECT", SpanKind.CLIENT)
    assert thin.attributes == orm.attributes
