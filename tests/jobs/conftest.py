"""Background jobs against real PostgreSQL, a real Redis (tests/redis_server.py), a real SAQ
worker (in this event loop, or a subprocess where one is killed) and a real HTTP receiver on
127.0.0.1. Requests commit for real (`committing_state`); tables are emptied afterwards."""

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis
from saq import Worker
from starlette.requests import Request
from starlette.responses import Response

from app.config import Settings
from app.main import create_app
from app.queue import make_queue
from app.state import AppState
from app.workers.jobs import Ctx
from app.workers.main import build_worker
from tests.conftest import ROOT, serve_with_state
from tests.redis_server import RedisServer


@pytest.fixture
def job_settings(settings: Settings, redis_server: RedisServer) -> Settings:
    """Short timers, so recovery and retries happen within a test; a queue of its own."""
    return settings.model_copy(
        update={
            "redis_url": redis_server.url,
            "queue_name": f"test-{uuid.uuid4().hex[:8]}",
            "job_heartbeat_s": 2,
            "worker_sweep_s": 1,
            "relay_interval_s": 1,
            "import_batch_lines": 100,
            "webhook_timeout_s": 2.0,
            "webhook_max_attempts": 4,
            "webhook_backoff_base_s": 0.8,
            "webhook_allowed_networks": ["127.0.0.1/32"],
        }
    )


@pytest.fixture
async def jobs_client(
    job_settings: Settings, committing_state: AppState, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over the real pool and Redis, with the job queue in its state."""
    app: FastAPI = create_app(job_settings)
    state = replace(
        committing_state, settings=job_settings, redis=redis, jobs=make_queue(job_settings, redis)
    )
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api", timeout=30) as client:
        yield client


@pytest.fixture
async def worker(job_settings: Settings) -> AsyncIterator[Worker[Ctx]]:
    """A SAQ worker running in this event loop, as `python -m app.workers.main` runs it."""
    worker = build_worker(job_settings)
    await worker.queue.connect()
    task = asyncio.create_task(worker.start())
    for _ in range(100):  # startup has filled the context
        if "sessions" in worker.context:
            break
        await asyncio.sleep(0.02)
    yield worker
    await worker.stop()
    await task
    await worker.queue.disconnect()


@pytest.fixture
async def ctx(job_settings: Settings) -> AsyncIterator[Ctx]:
    """A worker's context without the worker running: jobs are called as plain functions."""
    worker = build_worker(job_settings)
    await worker.queue.connect()
    assert worker.startup is not None
    for startup in worker.startup:
        await startup(worker.context)
    yield worker.context
    assert callable(worker.shutdown)
    await worker.shutdown(worker.context)
    await worker.queue.disconnect()


@dataclass
class Hit:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: records every request, answers `status`."""

    url: str = ""
    status: int = 200
    hits: list[Hit] = field(default_factory=list)

    async def wait_for(self, count: int, within: float = 20) -> list[Hit]:
        deadline = time.monotonic() + within
        while len(self.hits) < count:
            assert time.monotonic() < deadline, f"{len(self.hits)} of {count} deliveries arrived"
            await asyncio.sleep(0.05)
        return self.hits


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        state.hits.append(Hit(time.monotonic(), dict(request.headers), body))
        await Response(status_code=state.status)(scope, receive, send)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    state.url = f"http://127.0.0.1:{port}/hook"
    yield state
    server.should_exit = True
    await task


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 20, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval)


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for `python -m app.workers.main` with these settings."""
    return os.environ | {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url or "",
        "QUEUE_NAME": settings.queue_name,
        "JOB_HEARTBEAT_S": str(settings.job_heartbeat_s),
        "WORKER_SWEEP_S": str(settings.worker_sweep_s),
        "RELAY_INTERVAL_S": str(settings.relay_interval_s),
        "JWT_SECRET": settings.jwt_secret,
        "LOG_LEVEL": "WARNING",
    }
