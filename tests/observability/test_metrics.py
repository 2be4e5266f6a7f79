"""/metrics after real traffic, in process: names, labels, route templates, the pool."""

import gc

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import make_engine, make_read_pool
from app.main import create_app
from app.middleware.request_edge import RequestEdge
from app.observability import metrics, recorder
from tests.conftest import ROOT
from tests.observability.scrape import family_names, parse, value

METRICS_URL = ROOT + "/metrics"
# Every family metrics.py defines, as the exposition names it (counters without _total).
DEFINED = {
    collector._name
    for collector in vars(metrics).values()
    if hasattr(collector, "_name") and hasattr(collector, "_type")
}


async def test_requests_are_counted_by_route_template(client: httpx.AsyncClient) -> None:
    before = parse((await client.get(METRICS_URL)).text)
    assert (await client.get("/articles/no-such-slug")).status_code == 404
    assert (await client.get("/articles/another-slug")).status_code == 404
    assert (await client.get("/tags")).status_code == 200
    assert (await client.get(ROOT + "/no/such/path")).status_code == 404
    scrape = await client.get(METRICS_URL)
    assert scrape.headers["content-type"].startswith("text/plain")
    after = parse(scrape.text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    slug = {"method": "GET", "route": "/api/articles/{slug}"}
    assert delta("conduit_http_requests_total", **slug, status="404") == 2
    assert delta("conduit_http_request_duration_seconds_count", **slug) == 2
    assert delta("conduit_http_request_duration_seconds_bucket", **slug, le="+Inf") == 2
    tags = {"method": "GET", "route": "/api/tags", "status": "200"}
    assert delta("conduit_http_requests_total", **tags) == 1
    assert delta("conduit_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert ("conduit_http_requests_in_flight", frozenset()) in after
    routes = {dict(labels).get("route") for _, labels in after}
    assert not {"/api/articles/no-such-slug", "/no/such/path", "/metrics"} & routes


async def test_metrics_are_not_counted_as_traffic(client: httpx.AsyncClient) -> None:
    await client.get(METRICS_URL)
    scrape = parse((await client.get(METRICS_URL)).text)
    assert not [labels for _, labels in scrape if ("route", "/metrics") in labels]


async def test_every_defined_metric_is_exposed(client: httpx.AsyncClient) -> None:
    exposed = family_names((await client.get(METRICS_URL)).text)
    assert exposed >= DEFINED, DEFINED - exposed
    assert {
        "conduit_http_requests",
        "conduit_http_request_errors",
        "conduit_http_request_duration_seconds",
        "conduit_http_requests_in_flight",
        "conduit_db_pool_checked_out_connections",
        "conduit_db_pool_wait_seconds",
        "conduit_db_retries",
        "conduit_db_reads",
        "conduit_db_read_fallbacks",
        "conduit_db_replica_lag_seconds",
        "conduit_db_replica_in_rotation",
        "conduit_db_write_positions_lost",
        "conduit_cache_requests",
        "conduit_idempotent_replays",
        "conduit_jobs",
        "conduit_job_queue_depth",
    } <= DEFINED


async def test_unhandled_errors_are_5xx_with_request_id(app: FastAPI) -> None:
    async def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/api/explode", explode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
        before = parse((await client.get("/metrics")).text)
        response = await client.get("/api/explode", headers={"X-Request-ID": "trace-me-1"})
        after = parse((await client.get("/metrics")).text)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-me-1"
    labels = {"method": "GET", "route": "/api/explode"}
    errors = "conduit_http_request_errors_total"
    assert value(after, errors, **labels) - value(before, errors, **labels) == 1
    total = "conduit_http_requests_total"
    assert (
        value(after, total, **labels, status="500") - value(before, total, **labels, status="500")
        == 1
    )


def _sample(name: str, pool: str) -> float:
    recorder.flush()  # as /metrics does before it answers
    return value(parse(metrics.exposition().decode()), name, pool=pool)


def _samples(name: str) -> tuple[float, float]:
    """(the ORM's pool, the reads' own)."""
    return _sample(name, "orm"), _sample(name, "reads")


async def test_pool_reports_checkouts_and_waits(engine: AsyncEngine) -> None:
    waits = _sample("conduit_db_pool_wait_seconds_count", "orm")
    lent = _sample("conduit_db_pool_checked_out_connections", "orm")
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        assert _sample("conduit_db_pool_checked_out_connections", "orm") == lent + 1
    assert _sample("conduit_db_pool_checked_out_connections", "orm") == lent
    assert _sample("conduit_db_pool_wait_seconds_count", "orm") == waits + 1


async def test_each_pool_counts_under_its_own_label(settings: Settings) -> None:
    """The gauges are by pool: the ORM's and the public reads' own (app/driver_pool.py), each
    its size while it is open, its checkouts, its waits, and not the other's."""
    gc.collect()  # pools of earlier tests' engines, forgotten: no longer counted
    orm_size, reads_size = _samples("conduit_db_pool_size")
    lent = _samples("conduit_db_pool_checked_out_connections")
    engine = make_engine(settings, autocommit=True, pool_size=settings.write_pool_size)
    reads = make_read_pool(settings, engine)
    try:
        assert _samples("conduit_db_pool_size") == (
            orm_size + settings.write_pool_size,
            reads_size + settings.read_pool_size,
        )
        waits = _samples("conduit_db_pool_wait_seconds_count")
        async with reads.connect() as db:
            await db.scalar(text("SELECT 1"))
            assert _samples("conduit_db_pool_checked_out_connections") == (lent[0], lent[1] + 1)
        assert _samples("conduit_db_pool_checked_out_connections") == lent
        assert _samples("conduit_db_pool_wait_seconds_count") == (waits[0], waits[1] + 1)
        await reads.close()
        assert _samples("conduit_db_pool_size") == (
            orm_size + settings.write_pool_size,
            reads_size,
        )
    finally:
        await reads.close()
        await engine.dispose()


async def test_metrics_can_be_switched_off(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_enabled": False}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
        response = await client.get("/metrics")
    assert response.status_code == 404


def test_observation_is_in_the_outermost_layer(app: FastAPI) -> None:
    """Outside every limiter (the edge's own admission, RateLimit): /metrics is answered
    before them, and what they refuse is still counted and logged."""
    assert isinstance(app.build_middleware_stack(), RequestEdge)
