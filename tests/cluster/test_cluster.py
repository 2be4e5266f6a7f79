"""Several API hosts, a primary and a streaming replica, real processes, faults under load:
read-your-writes across hosts while the replica's replay is paused, the replica stopped and
started again, an API host killed and started again (docs/OPERATIONS.md "Several hosts")."""

import asyncio
import time
import uuid

import httpx
import psycopg
import pytest

from tests.cluster.conftest import MAX_LAG_S, Cluster
from tests.cluster.load import Outcome, load, per_second, total

REPLICA = {"replica": "replica-1"}


@pytest.fixture(scope="module")
def people(cluster: Cluster) -> list[tuple[int, dict[str, str]]]:
    return cluster.users(8)


@pytest.fixture(scope="module")
def slugs(cluster: Cluster, people: list[tuple[int, dict[str, str]]]) -> list[str]:
    """A few articles by the first user, published through nginx."""
    made = []
    with httpx.Client(base_url=cluster.api_url.removesuffix("/api"), timeout=10) as http:
        for n in range(4):
            body = {
                "article": {"title": f"c {uuid.uuid4().hex}", "description": "d", "body": f"b{n}"}
            }
            response = http.post("/api/articles", json=body, headers=people[0][1])
            assert response.status_code == 201, response.text
            made.append(response.json()["article"]["slug"])
    return made


def _base(cluster: Cluster) -> str:
    return cluster.api_url.removesuffix("/api")


def _errors(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if outcome.failed]


async def _wait_for(check, timeout_s: float, interval_s: float = 0.1) -> float:  # type: ignore[no-untyped-def]
    """Seconds until `await check()` held; fails past the timeout."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s}s"
        await asyncio.sleep(interval_s)
    return time.monotonic() - started


async def _in_rotation_everywhere(cluster: Cluster, wanted: float) -> bool:
    values = [
        await total([host], "conduit_db_replica_in_rotation", **REPLICA) for host in cluster.hosts
    ]
    return all(value == wanted for value in values)


def _replay(cluster: Cluster, verb: str) -> None:
    with psycopg.connect(cluster.replica_superuser_url, autocommit=True) as conn:
        conn.execute(f"SELECT pg_wal_replay_{verb}()")


async def _feed_slugs(http: httpx.AsyncClient, host: str, headers: dict[str, str]) -> set[str]:
    response = await http.get(f"{host}/api/articles/feed?limit=50", headers=headers)
    assert response.status_code == 200, response.text
    return {article["slug"] for article in response.json()["articles"]}


async def test_writers_read_their_writes_on_any_host_while_replay_is_paused(
    cluster: Cluster, people: list[tuple[int, dict[str, str]]], slugs: list[str]
) -> None:
    author, writer, other = people[1], people[2], people[3]
    host1, host2, host3 = cluster.hosts
    headers = [h for _, h in people[4:]]
    background = asyncio.create_task(load(_base(cluster), headers, slugs, duration_s=8, clients=4))
    async with httpx.AsyncClient(timeout=10) as http:
        name = (await http.get(f"{host1}/api/user", headers=author[1])).json()["user"]["username"]
        response = await http.post(f"{host2}/api/profiles/{name}/follow", headers=other[1])
        assert response.status_code == 200
        await _wait_for(lambda: _in_rotation_everywhere(cluster, 1.0), 5)
        behind = await total(cluster.hosts, "conduit_db_read_fallbacks_total", reason="behind")
        _replay(cluster, "pause")
        try:
            # The writer follows through host 1, then reads the feed through the others: the
            # replica has not replayed the follow, so only the primary can answer.
            response = await http.post(f"{host1}/api/profiles/{name}/follow", headers=writer[1])
            assert response.status_code == 200
            body = {"article": {"title": f"p {uuid.uuid4().hex}", "description": "d", "body": "b"}}
            published = await http.post(f"{host3}/api/articles", json=body, headers=author[1])
            assert published.status_code == 201
            fresh = published.json()["article"]["slug"]
            acknowledged = time.monotonic()
            for host in (host2, host3, host2, host3):
                assert fresh in await _feed_slugs(http, host, writer[1])
            # Another reader (no recent write) may read the replica, until it lags too far.
            stale_seen = False
            while fresh not in await _feed_slugs(http, host2, other[1]):
                stale_seen = True
                assert time.monotonic() - acknowledged < MAX_LAG_S + 1.0, "stale beyond the bound"
                await asyncio.sleep(0.05)
            assert stale_seen, "the other reader never read from the replica"
            await _wait_for(lambda: _in_rotation_everywhere(cluster, 0.0), MAX_LAG_S + 2)
        finally:
            _replay(cluster, "resume")
        assert (
            await total(cluster.hosts, "conduit_db_read_fallbacks_total", reason="behind") > behind
        )
        # Back by itself once it has caught up.
        await _wait_for(lambda: _in_rotation_everywhere(cluster, 1.0), 5)
        assert fresh in await _feed_slugs(http, host3, other[1])
    outcomes = await background
    assert not _errors(outcomes), _errors(outcomes)[:5]


async def test_reads_move_to_the_primary_and_back_when_the_replica_stops(
    cluster: Cluster, people: list[tuple[int, dict[str, str]]], slugs: list[str]
) -> None:
    headers = [h for _, h in people[4:]]
    background = asyncio.create_task(load(_base(cluster), headers, slugs, duration_s=12, clients=6))
    await asyncio.sleep(2)
    primary_reads = await total(cluster.hosts, "conduit_db_reads_total", node="primary")
    await asyncio.to_thread(cluster.cli, "down", "replica")
    await _wait_for(lambda: _in_rotation_everywhere(cluster, 0.0), 2)
    await asyncio.sleep(1)
    assert await total(cluster.hosts, "conduit_db_reads_total", node="primary") > primary_reads
    await asyncio.to_thread(cluster.cli, "up", "replica")
    rejoined = await _wait_for(lambda: _in_rotation_everywhere(cluster, 1.0), 5)
    replica_reads = await total(cluster.hosts, "conduit_db_reads_total", node="replica-1")
    await asyncio.sleep(1)
    assert await total(cluster.hosts, "conduit_db_reads_total", node="replica-1") > replica_reads
    outcomes = await background
    assert len(outcomes) > 200
    assert not _errors(outcomes), (rejoined, _errors(outcomes)[:5])


async def test_a_killed_host_costs_only_its_requests_in_flight(
    cluster: Cluster, people: list[tuple[int, dict[str, str]]], slugs: list[str]
) -> None:
    headers = [h for _, h in people[4:]]
    host2 = cluster.hosts[1]
    background = asyncio.create_task(
        load(_base(cluster), headers, slugs, duration_s=11, clients=12, think_s=0.0)
    )
    await asyncio.sleep(3)
    kill_started = time.monotonic()
    await asyncio.to_thread(cluster.cli, "kill", "api2")
    kill_done = time.monotonic()
    outcomes = await background
    in_flight = [o for o in outcomes if o.started <= kill_done and o.ended >= kill_started]
    errors = _errors(outcomes)
    assert all(o in in_flight for o in errors), [o for o in errors if o not in in_flight][:5]
    assert len(errors) <= len(in_flight)
    before = per_second([o for o in outcomes if o.ended < kill_started], kill_started - 3)
    after = per_second(outcomes, kill_done)
    baseline = sum(before) / max(1, len(before))
    recovered = [second for second, count in enumerate(after[:5]) if count >= 0.75 * baseline]
    assert recovered, (before, after)
    # Back: nginx tries the host again after fail_timeout and it takes its share again.
    await asyncio.to_thread(cluster.cli, "up", "api2")
    await load(_base(cluster), headers, slugs, duration_s=4, clients=6, writes=False)
    assert (
        await total(
            [host2],
            "conduit_http_requests_total",
            method="GET",
            route="/api/articles",
            status="200",
        )
        > 0
    )
    await _connections_within_the_pools(cluster)


async def _connections_within_the_pools(cluster: Cluster) -> None:
    env, pool = cluster.env, int(cluster.env["PGBOUNCER_POOL_SIZE"])
    for url in (env["DIRECT_DATABASE_URL"], env["REPLICA_DIRECT_URL"]):
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'conduit'"
            ).fetchone()
        assert row is not None
        assert row[0] <= pool
