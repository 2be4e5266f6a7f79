"""`make run` (app/dev/run.py) stops what it started, whichever way it is stopped."""

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.image_process import environment, free_port, serving
from tests.redis_server import RedisServer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_make_run_stops_its_job_worker_when_it_is_stopped(
    database_url: str, redis_server: RedisServer, tmp_path: Path, stop: signal.Signals
) -> None:
    port = free_port()
    env = environment(
        DATABASE_URL=database_url,
        REDIS_URL=redis_server.url,
        DATA_DIR=str(tmp_path),
        PORT=str(port),
    )
    log = tmp_path / "run.log"
    with serving(
        [sys.executable, "-m", "app.dev.run"], env, f"http://127.0.0.1:{port}", log
    ) as run:
        found = re.search(r"job worker: pid (\d+)", log.read_text())
        assert found, log.read_text()
        worker = int(found[1])
        assert _alive(worker)
        run.send_signal(stop)
        assert run.wait(timeout=40) is not None
    deadline = time.monotonic() + 40
    while _alive(worker):
        assert time.monotonic() < deadline, "the job worker outlived make run"
        time.sleep(0.1)
