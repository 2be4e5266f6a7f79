"""2,000 concurrent connections, mixed reads and writes: nginx → API workers → PgBouncer →
PostgreSQL. Every answer is 2xx, counts are exact, and PostgreSQL never sees more client
backends than PgBouncer's server pool."""

import asyncio
import json
import logging
import re
import resource
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field

import httpx
import psycopg

from tests.stack.conftest import STATE, Stack

CONNECTIONS = 2000
USERS = 20  # argon2 makes sign-ups slow on purpose; each user favorites every article
ARTICLES = CONNECTIONS // USERS  # connection i: user i % USERS, article i // USERS
SAMPLE_EVERY_S = 0.05
# One context shared by every client: building 2,000 SSL contexts takes seconds.
SHARED_SSL = ssl.create_default_context()
log = logging.getLogger(__name__)


@dataclass
class Sampler:
    """Samples PostgreSQL's client backends (app role and database) and nginx's active
    connections every 50 ms in a thread of its own, away from the event loop under load."""

    direct_url: str
    nginx_status_url: str
    backends: list[int] = field(default_factory=list)
    nginx_active: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND datname = 'conduit' AND usename = 'conduit'"
        )
        with (
            psycopg.connect(self.direct_url, autocommit=True) as conn,
            httpx.Client(timeout=5) as http,
        ):
            while not self._stop.is_set():
                row = conn.execute(query).fetchone()
                self.backends.append(row[0] if row else -1)
                status = http.get(self.nginx_status_url).text
                if match := re.search(r"Active connections: (\d+)", status):
                    self.nginx_active.append(int(match[1]))
                self._stop.wait(SAMPLE_EVERY_S)


@dataclass
class Outcome:
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    async def call(self, what: str, request: Awaitable[httpx.Response]) -> None:
        started = time.monotonic()
        try:
            response = await request
        except httpx.HTTPError as exc:
            self.failures.append(f"{what}: {type(exc).__name__} {exc}")
            return
        self.latencies_s.append(time.monotonic() - started)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        if not response.is_success or "prepared statement" in response.text:
            self.failures.append(f"{what}: {response.status_code} {response.text[:200]}")


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values) or [0.0]
    at = {"p50": 0.50, "p95": 0.95, "p99": 0.99, "max": 1.0}
    return {
        name: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
        for name, q in at.items()
    }


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= needed, (
        f"RLIMIT_NOFILE hard limit {hard} < {needed}: cannot open the connections"
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, needed * 2)), hard))


async def _register(client: httpx.AsyncClient, name: str) -> str:
    user = {"username": name, "email": f"{name}@example.com", "password": "password123"}
    response = await client.post("/users", json={"user": user})
    assert response.status_code == 201, response.text
    token: str = response.json()["user"]["token"]
    return token


async def _publish(client: httpx.AsyncClient, token: str, tag: str, n: int) -> str:
    article = {"title": f"{tag} {n}", "description": "d", "body": "b", "tagList": [tag]}
    response = await client.post(
        "/articles", json={"article": article}, headers={"Authorization": f"Token {token}"}
    )
    assert response.status_code == 201, response.text
    slug: str = response.json()["article"]["slug"]
    return slug


async def _connection(
    i: int,
    api_url: str,
    tokens: list[str],
    slugs: list[str],
    outcome: Outcome,
    barrier: asyncio.Barrier,
) -> None:
    """One client with one keep-alive connection, like a browser tab of its own."""
    token, slug = tokens[i % USERS], slugs[i // USERS]
    auth = {"Authorization": f"Token {token}"}
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(
        base_url=api_url, verify=SHARED_SSL, trust_env=False, timeout=150, limits=limits
    ) as client:
        await outcome.call("GET /tags", client.get("/tags"))
        await barrier.wait()  # all connections are open: now everyone at once
        await outcome.call("favorite", client.post(f"/articles/{slug}/favorite", headers=auth))
        comment = {"comment": {"body": f"comment from connection {i}"}}
        await outcome.call(
            "comment", client.post(f"/articles/{slug}/comments", json=comment, headers=auth)
        )
        await outcome.call("GET article", client.get(f"/articles/{slug}", headers=auth))


async def test_2000_connections_mixed_reads_and_writes_stay_within_the_pool(stack: Stack) -> None:
    _raise_nofile(CONNECTIONS + 500)
    tag = f"load{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as setup:
        tokens = await asyncio.gather(*(_register(setup, f"{tag}u{n}") for n in range(USERS)))
        slugs = await asyncio.gather(
            *(_publish(setup, tokens[n % USERS], tag, n) for n in range(ARTICLES))
        )
    log_offset = stack.postgres_log.stat().st_size
    sampler = Sampler(stack.env["DIRECT_DATABASE_URL"], f"{stack.base_url}/nginx_status")
    outcome = Outcome()
    barrier = asyncio.Barrier(CONNECTIONS)
    sampler.start()
    started = time.monotonic()
    try:
        async with asyncio.timeout(180):
            await asyncio.gather(
                *(
                    _connection(i, stack.api_url, tokens, slugs, outcome, barrier)
                    for i in range(CONNECTIONS)
                )
            )
    finally:
        duration = time.monotonic() - started
        sampler.stop()

    with stack.postgres_log.open(errors="replace") as server_log:
        server_log.seek(log_offset)
        prepared_errors = [line for line in server_log if "prepared statement" in line]
    report = {
        "connections": CONNECTIONS,
        "requests": sum(outcome.statuses.values()),
        "duration_s": round(duration, 2),
        "statuses": outcome.statuses,
        "latency_s": _percentiles(outcome.latencies_s),
        "failures": len(outcome.failures),
        "prepared_statement_errors": len(prepared_errors),
        "peak_postgres_backends": max(sampler.backends, default=-1),
        "postgres_samples": len(sampler.backends),
        "pgbouncer_server_pool": stack.pool_size,
        "peak_nginx_active_connections": max(sampler.nginx_active, default=-1),
    }
    (STATE / "load-report.json").write_text(json.dumps(report, indent=2))
    log.info("load report: %s", report)

    assert outcome.failures == [], (
        f"{len(outcome.failures)} failures, first: {outcome.failures[:5]}"
    )
    assert prepared_errors == []
    assert len(sampler.backends) >= 10, report
    assert 0 < max(sampler.backends) <= stack.pool_size, report
    assert max(sampler.nginx_active) >= CONNECTIONS, report
    await _assert_exact_counts(stack, slugs, tokens[0])


async def _assert_exact_counts(stack: Stack, slugs: list[str], token: str) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
        for slug in slugs:
            article = (
                await client.get(f"/articles/{slug}", headers={"Authorization": f"Token {token}"})
            ).json()
            assert article["article"]["favoritesCount"] == USERS, article
            assert article["article"]["favorited"] is True
            comments = (await client.get(f"/articles/{slug}/comments")).json()["comments"]
            assert len(comments) == USERS
    with psycopg.connect(stack.env["DIRECT_DATABASE_URL"]) as conn:
        favorites, comments = conn.execute(
            "SELECT (SELECT count(*) FROM favorites f JOIN articles a ON a.id = f.article_id"
            "         WHERE a.slug = ANY(%(slugs)s)),"
            "       (SELECT count(*) FROM comments c JOIN articles a ON a.id = c.article_id"
            "         WHERE a.slug = ANY(%(slugs)s))",
            {"slugs": slugs},
        ).fetchone() or (None, None)
    assert (favorites, comments) == (CONNECTIONS, CONNECTIONS)
