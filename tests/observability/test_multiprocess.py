"""Two uvicorn workers, one /metrics: whichever worker answers reports both workers' traffic."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import multiprocess

from app.config import pool_split
from app.observability import recorder
from tests.observability.scrape import parse, value

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`uvicorn --workers 2` with PROMETHEUS_MULTIPROC_DIR, as `make stack` runs it."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = _free_port()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "ACCESS_LOG": "false",
    }
    command = [
        *(sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--no-access-log"),
    ]
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - our own server
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, tmp_path / "uvicorn.log")
        yield url, metrics_dir
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/livez", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"uvicorn did not answer:\n{log.read_text()}")


async def test_metrics_add_up_every_worker(server: tuple[str, Path]) -> None:
    url, metrics_dir = server

    async def one(client: httpx.AsyncClient) -> None:
        # A new connection each time, so the kernel spreads them over both workers.
        response = await client.get("/api/tags", headers={"Connection": "close"})
        assert response.status_code == 200

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(REQUESTS // 20):
            await asyncio.gather(*(one(client) for _ in range(20)))
        await asyncio.sleep(recorder.FLUSH_INTERVAL_S + 0.5)  # each worker writes its tallies
        scrapes = [parse((await client.get("/metrics")).text) for _ in range(6)]

    labels = {"method": "GET", "route": "/api/tags", "status": "200"}
    per_worker = _per_worker(metrics_dir, labels)
    assert len(per_worker) == 2, per_worker  # both workers served some of them
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert sum(per_worker.values()) == REQUESTS
    for scrape in scrapes:  # any worker answering sees them all
        assert value(scrape, "conduit_http_requests_total", **labels) == REQUESTS
        duration = {"method": "GET", "route": "/api/tags"}
        assert value(scrape, "conduit_http_request_duration_seconds_count", **duration) == REQUESTS
        assert value(scrape, "conduit_http_requests_in_flight") == 0
        # Two workers, DB_POOL_SIZE 10 each, split between the reads' pool and the ORM's.
        reads, writes = pool_split(10)
        assert value(scrape, "conduit_db_pool_size", pool="reads") == 2 * reads
        assert value(scrape, "conduit_db_pool_size", pool="orm") == 2 * writes


def _per_worker(metrics_dir: Path, labels: dict[str, str]) -> dict[str, float]:
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        merged = multiprocess.MultiProcessCollector.merge([str(path)])
        for family in merged:
            for sample in family.samples:
                if sample.name == "conduit_http_requests_total" and sample.labels == labels:
                    counts[path.stem] = sample.value
    return counts


def test_a_killed_workers_live_gauges_are_withdrawn(tmp_path: Path) -> None:
    """A worker that never ran its shutdown (kill -9) leaves its live gauges behind: the next
    scrape withdraws them. Its counts stay: counters never go back."""
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    killed = (
        "from app.observability import metrics\n"
        "metrics.HTTP_IN_FLIGHT.inc(3)\n"
        "metrics.HTTP_REQUESTS.labels('GET', '/api/tags', '200').inc()\n"
    )
    scrape = (
        "import sys\n"
        "from app.observability import metrics\n"
        "sys.stdout.write(metrics.exposition().decode())\n"
    )
    subprocess.run([sys.executable, "-c", killed], cwd=ROOT, env=env, check=True)  # noqa: S603
    assert list(tmp_path.glob("gauge_livesum_*.db"))
    output = subprocess.run(  # noqa: S603
        [sys.executable, "-c", scrape],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    samples = parse(output)
    assert value(samples, "conduit_http_requests_in_flight") == 0
    labels = {"method": "GET", "route": "/api/tags", "status": "200"}
    assert value(samples, "conduit_http_requests_total", **labels) == 1
