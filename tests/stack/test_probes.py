"""Probes through nginx: a stopped dependency makes /readyz 503 while /livez stays 200, and
the API recovers by itself when the dependency is back (no API restart)."""

import asyncio

import httpx
import pytest

from tests.stack.conftest import Stack

# nginx hands requests to either worker: a state counts once this many answers in a row agree.
IN_A_ROW = 6


async def _wait_for_status(
    http: httpx.AsyncClient, path: str, status: int, timeout_s: float
) -> None:
    seen: list[int] = []
    async with asyncio.timeout(timeout_s):
        while seen[-IN_A_ROW:] != [status] * IN_A_ROW:
            seen.append((await http.get(path)).status_code)
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("component", ["redis", "pgbouncer"])
async def test_readyz_follows_a_dependency_livez_does_not(
    stack: Stack, http: httpx.AsyncClient, component: str
) -> None:
    api_pids = (stack.api_master_pid(), stack.api_worker_pids())
    await _wait_for_status(http, "/readyz", 200, 10)
    stack.cli("down", component)
    try:
        await _wait_for_status(http, "/readyz", 503, 15)
        response = await http.get("/readyz")
        assert response.headers["retry-after"] == "1"
        assert response.json()["redis" if component == "redis" else "database"] != "ok"
        for _ in range(IN_A_ROW):
            assert (await http.get("/livez")).status_code == 200
    finally:
        stack.cli("up")  # starts only what is not running
    await _wait_for_status(http, "/readyz", 200, 20)
    assert (stack.api_master_pid(), stack.api_worker_pids()) == api_pids, "the API was restarted"
