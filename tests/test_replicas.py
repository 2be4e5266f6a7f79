"""The read router (app/replicas.py) without a real replica: nodes are given the state a poll
would give them; the "replica" is the test database itself, reached through a pool of its
own. tests/cluster runs the same code against a streaming replica under load."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import replicas, transaction
from app.cache.store import Cache, changed
from app.config import Settings
from app.db import make_sessionmaker
from app.observability import context
from app.replicas import MARK, Node, Replicas, RoutedCache, WritePositions, user_key


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(node: Node, replayed: int) -> None:
    node.replayed, node.lag_s, node.polled_at = replayed, 0.0, time.monotonic()


def _count(metric: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(metric, labels)
    return value or 0.0


@pytest.fixture
async def positions(redis: Redis, api_engine: AsyncEngine) -> WritePositions:
    return WritePositions(redis, api_engine, sticky_s=10)


@pytest.fixture
async def router(
    settings: Settings, api_engine: AsyncEngine, positions: WritePositions
) -> AsyncIterator[Replicas]:
    routed = settings.model_copy(update={"database_replica_urls": [settings.database_url]})
    router = Replicas(routed, api_engine, positions)  # no poller: the tests set the state
    yield router
    await router.close()


async def _record_as(positions: WritePositions, user_id: int | None) -> int:
    with context.bound(None, user_id=user_id):
        await positions.record()
    return int(await positions.redis.get(MARK) or b"", 16)


def test_replica_urls_come_from_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_REPLICA_URLS", '["postgresql://u:p@r1:6432/conduit"]')
    settings = Settings(jwt_secret="test-secret-" + "x" * 32)
    assert settings.database_replica_urls == ["postgresql+psycopg://u:p@r1:6432/conduit"]


def test_lag_is_how_long_ago_the_primary_was_where_the_replica_is() -> None:
    samples = replicas._Samples(keep_s=3)
    for at, lsn in ((10.0, 100), (10.1, 200), (10.2, 300)):
        samples.add(at, lsn)
    assert samples.lag(300, now=10.25) == 0.0  # has everything polled so far
    assert samples.lag(250, now=10.25) == pytest.approx(0.15)  # the primary was at 200 then
    assert samples.lag(50, now=10.25) > 3  # behind everything kept: out of rotation
    samples.add(20.0, 400)
    assert [lsn for _, lsn in samples.points] == [400]  # older than keep_s: dropped


async def test_a_writer_reads_from_a_replica_only_once_it_has_replayed_the_write(
    router: Replicas, positions: WritePositions
) -> None:
    lsn = await _record_as(positions, user_id=7)
    assert int(await positions.redis.get(user_key(7)) or b"", 16) == lsn
    assert 0 < await positions.redis.pttl(user_key(7)) <= 10_000
    node = router.nodes[0]
    _ready(node, lsn - 1)
    behind = _count("conduit_db_read_fallbacks_total", reason="behind")
    with context.bound(None, user_id=7):
        assert await router.choose() is None  # the writer: not yet
    with context.bound(None, user_id=8):
        assert await router.choose() is node  # anybody else: within the lag bound
    assert await router.choose() is node  # anonymous
    assert _count("conduit_db_read_fallbacks_total", reason="behind") == behind + 1
    _ready(node, lsn)
    with context.bound(None, user_id=7):
        assert await router.choose() is node


async def test_a_replica_the_poll_saw_close_behind_is_asked_at_once(
    router: Replicas, positions: WritePositions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a steady stream of writes the last poll is almost always behind the mark; the
    replica itself is not. Concurrent reads share one question, and its answer serves the
    reads after it without another."""
    lsn = await _record_as(positions, user_id=7)
    node = router.nodes[0]
    _ready(node, lsn - 1)
    monkeypatch.setattr(replicas, "_REPLAYED_LSN", text(f"SELECT {lsn}::bigint"))
    asked: list[str] = []
    event.listen(node.engine.sync_engine, "before_cursor_execute", _note(asked))
    caught_up = _count("conduit_db_replica_checks_total", result="caught_up")
    with context.bound(None, user_id=7):
        chosen = await asyncio.gather(*(router.choose() for _ in range(10)))
    assert chosen == [node] * 10
    assert node.replayed == lsn
    assert len(asked) == 1
    # Counted per read that waited for an answer: those before it came, at least the first.
    assert 1 <= _count("conduit_db_replica_checks_total", result="caught_up") - caught_up <= 10


async def test_a_replica_asked_at_once_but_still_behind_leaves_the_read_to_the_primary(
    router: Replicas, positions: WritePositions, monkeypatch: pytest.MonkeyPatch
) -> None:
    lsn = await _record_as(positions, user_id=7)
    node = router.nodes[0]
    _ready(node, lsn - 2)
    monkeypatch.setattr(replicas, "_REPLAYED_LSN", text(f"SELECT {lsn - 1}::bigint"))
    behind = _count("conduit_db_replica_checks_total", result="behind")
    with context.bound(None, user_id=7):
        assert await router.choose() is None
    assert node.replayed == lsn - 1
    assert _count("conduit_db_replica_checks_total", result="behind") == behind + 1


async def test_a_replica_the_poll_saw_well_behind_is_not_asked(
    router: Replicas, positions: WritePositions
) -> None:
    lsn = await _record_as(positions, user_id=7)
    node = router.nodes[0]
    _ready(node, lsn - 1)
    node.lag_s = replicas.CHECK_LAG_POLLS * router.poll_s + 0.1  # in rotation, but lagging
    asked: list[str] = []
    event.listen(node.engine.sync_engine, "before_cursor_execute", _note(asked))
    with context.bound(None, user_id=7):
        assert await router.choose() is None
    assert await router.choose() is node  # anonymous: within the lag bound
    assert asked == []


def _note(asked: list[str]) -> Callable[..., None]:
    """A `before_cursor_execute` listener noting each statement sent."""

    def before_cursor_execute(*args: object) -> None:
        asked.append(str(args[2]))  # (connection, cursor, statement, ...)

    return before_cursor_execute


async def test_cache_loads_need_the_last_write_anyone_made(
    router: Replicas, positions: WritePositions
) -> None:
    lsn = await _record_as(positions, user_id=None)  # e.g. the job worker's import
    node = router.nodes[0]
    _ready(node, lsn - 1)
    seen: list[bool] = []

    async def load() -> str:
        seen.append(await router.choose() is node)
        return "{}"

    cache = RoutedCache(None)  # off: every get_or_load loads
    await cache.get_or_load("article", "k", [], load)
    # One viewer's sets too: they name slugs another user's deletion frees.
    await cache.get_or_load("viewer", "sets:1", [], load)
    assert seen == [False, False]
    _ready(node, lsn)
    await cache.get_or_load("article", "k", [], load)
    assert seen[-1] is True


async def test_a_lagging_or_silent_replica_is_out_of_rotation(router: Replicas) -> None:
    node = router.nodes[0]
    _ready(node, 0)
    node.lag_s = router.max_lag_s + 0.1
    assert await router.choose() is None
    _ready(node, 0)
    node.polled_at -= router.max_lag_s + 0.1  # the poller has not heard from it since
    assert await router.choose() is None


async def test_without_redis_only_anonymous_reads_use_replicas(
    settings: Settings, api_engine: AsyncEngine
) -> None:
    routed = settings.model_copy(update={"database_replica_urls": [settings.database_url]})
    router = Replicas(routed, api_engine, positions=None)
    try:
        _ready(router.nodes[0], 0)
        assert await router.choose() is router.nodes[0]
        with context.bound(None, user_id=7):
            assert await router.choose() is None
    finally:
        await router.close()


async def test_poll_takes_a_node_that_replays_nothing_out(router: Replicas) -> None:
    node = router.nodes[0]
    _ready(node, 0)
    await router.poll()  # the test database is a primary: pg_last_wal_replay_lsn() is NULL
    assert not node.in_rotation(time.monotonic(), router.max_lag_s)
    assert router._samples.points  # the primary's position was sampled
    assert _count("conduit_db_replica_in_rotation", replica=node.name) == 0


async def test_a_replica_refusing_connections_is_replaced_by_the_primary(
    settings: Settings, api_engine: AsyncEngine
) -> None:
    dead = f"postgresql://nobody:x@127.0.0.1:{_closed_port()}/conduit"
    router = Replicas(
        settings.model_copy(update={"database_replica_urls": [dead]}), api_engine, positions=None
    )
    errors = _count("conduit_db_read_fallbacks_total", reason="error")
    try:
        _ready(router.nodes[0], 0)
        async with router.connect() as db:
            assert await db.scalar(text("SELECT 1")) == 1
        assert not router.nodes[0].in_rotation(time.monotonic(), router.max_lag_s)
        assert _count("conduit_db_read_fallbacks_total", reason="error") == errors + 1
    finally:
        await router.close()


async def test_a_replica_failing_under_a_read_hands_the_statement_to_the_primary(
    router: Replicas, api_engine: AsyncEngine
) -> None:
    node = router.nodes[0]
    _ready(node, 0)
    reads = _count("conduit_db_reads_total", node=node.name)
    async with router.connect() as db:
        backend = await db.scalar(text("SELECT pg_backend_pid()"))
        async with api_engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        assert await db.scalar(text("SELECT 2")) == 2  # ran again, on the primary's pool
        assert db.engine is api_engine
    assert _count("conduit_db_reads_total", node=node.name) == reads + 1
    assert not node.in_rotation(time.monotonic(), router.max_lag_s)


async def test_only_commits_that_change_reads_record_a_position(
    settings: Settings, api_engine: AsyncEngine, positions: WritePositions
) -> None:
    effects = transaction.AfterCommit(
        cache=Cache(None), jobs=None, settings=settings, positions=positions
    )
    sessions = make_sessionmaker(api_engine)
    with context.bound(None, user_id=5):
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
            await transaction.commit(session, effects)
        assert await positions.redis.get(user_key(5)) is None  # read-only: nothing recorded
        async with sessions() as session:
            changed(session, "tags")
            await transaction.commit(session, effects)
    assert await positions.redis.get(user_key(5)) is not None
    assert await positions.redis.get(MARK) is not None
