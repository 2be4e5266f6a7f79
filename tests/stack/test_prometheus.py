"""`make stack` serves Prometheus (PROMETHEUS_URL) and every target it scrapes is up: the API
(all workers through one port), the exporter (PgBouncer, nginx, readiness), Prometheus."""

import time
from typing import Any

import httpx

from tests.stack.conftest import Stack

JOBS = {"conduit-api", "conduit-exporter", "prometheus"}


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def wait_for(
    prometheus: str, promql: str, count: int, timeout_s: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        result = query(prometheus, promql)
        if len(result) >= count or time.monotonic() > deadline:
            return result
        time.sleep(1)


async def test_prometheus_scrapes_every_target(stack: Stack, http: httpx.AsyncClient) -> None:
    prometheus = stack.env["PROMETHEUS_URL"]
    for _ in range(20):
        assert (await http.get("/api/tags")).status_code == 200
    up = wait_for(prometheus, "up == 1", len(JOBS))
    assert {series["metric"]["job"] for series in up} == JOBS, up
    assert query(prometheus, "up == 0") == []


async def test_prometheus_sees_api_pgbouncer_and_nginx(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    prometheus = stack.env["PROMETHEUS_URL"]
    for _ in range(20):
        await http.get("/api/tags")
    tags = 'conduit_http_requests_total{route="/api/tags",status="200"}'
    assert wait_for(prometheus, tags, 1)
    for promql in (
        'pgbouncer_pools_client_active_connections{database="conduit"}',
        "nginx_connections_active",
        "conduit_ready == 1",
        "conduit_db_pool_size > 0",
    ):
        assert wait_for(prometheus, promql, 1), promql
