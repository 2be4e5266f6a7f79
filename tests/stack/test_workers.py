"""A killed API worker is replaced by uvicorn's supervisor while nginx keeps answering; a
reload replaces every worker without a failed request."""

import asyncio
import os
import signal
import time

import httpx

from tests.stack.conftest import WORKERS, Stack


async def _keep_requesting(
    http: httpx.AsyncClient, stop: asyncio.Event, statuses: list[int]
) -> None:
    while not stop.is_set():
        statuses.append((await http.get("/api/tags")).status_code)
        await asyncio.sleep(0.01)


async def test_kill_9_worker_is_restarted_and_requests_keep_succeeding(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    workers = stack.api_worker_pids()
    assert len(workers) == WORKERS
    victim = min(workers)
    statuses: list[int] = []
    stop = asyncio.Event()
    clients = [asyncio.create_task(_keep_requesting(http, stop, statuses)) for _ in range(4)]
    try:
        await asyncio.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            current = stack.api_worker_pids()
            if victim not in current and len(current) == WORKERS:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # requests keep flowing to the replacement as well
    finally:
        stop.set()
        await asyncio.gather(*clients)
    current = stack.api_worker_pids()
    assert victim not in current, current
    assert len(current) == WORKERS, current
    assert len(statuses) > 20
    assert set(statuses) == {200}, statuses
    assert (await http.get("/readyz")).status_code == 200


async def test_reload_replaces_every_worker_without_a_failed_request(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    before = stack.api_worker_pids()
    statuses: list[int] = []
    stop = asyncio.Event()
    clients = [asyncio.create_task(_keep_requesting(http, stop, statuses)) for _ in range(8)]
    try:
        await asyncio.sleep(0.3)
        stack.cli("reload", "api")
        deadline = time.monotonic() + 90  # workers start one by one; slow on a busy 2-core box
        while time.monotonic() < deadline:
            current = stack.api_worker_pids()
            if not current & before and len(current) == WORKERS:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    current = stack.api_worker_pids()
    assert not current & before, (before, current)
    assert len(current) == WORKERS
    assert set(statuses) == {200}, statuses
