"""The API under test: uvicorn started and stopped by the benchmark, and tiny HTTP helpers."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench.lib.machine import processes
from bench.lib.paths import ROOT

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15


class Api:
    """`uvicorn app.main:create_app` with N workers on 127.0.0.1, talking straight to
    PostgreSQL: no Redis (no cache), no PgBouncer."""

    def __init__(
        self,
        database_url: str,
        *,
        port: int,
        workers: int,
        logs: Path,
        target: str = "app.main:create_app",  # or a plain ASGI app (bench.bare_app:app)
    ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._port = port
        self._workers = workers
        self._target = target
        self._env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
        # Straight to PostgreSQL, so the run uses what only a direct connection allows:
        # prepared statements, and a pool as large as the connections wrk keeps per worker
        # (waiting for a pooled connection costs more CPU than PostgreSQL spends per
        # connection). Either can be overridden from the environment.
        self._env = {"DB_PREPARED_STATEMENTS": "true", "DB_POOL_SIZE": "32"} | self._env
        self._env |= {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
        # A throwaway signing key of the run's own: the API refuses to start without one.
        self._env.setdefault("JWT_SECRET", secrets.token_urlsafe(48))
        self._factory = target.endswith(":create_app")
        self._log = logs / ("uvicorn.log" if self._factory else "uvicorn-bare.log")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes (not multiprocessing's resource tracker)."""
        children = [p.pid for p in processes().values() if p.ppid == self.pid]
        return sorted(pid for pid in children if b"spawn_main" in _cmdline(pid))

    def __enter__(self) -> Self:
        if _listening(self._port):
            raise SystemExit(f"port {self._port} is taken: pass --port")
        command = [
            str(Path(sys.executable).parent / "uvicorn"),
            self._target,
            *(["--factory"] if self._factory else []),
            f"--workers={self._workers}",
            "--loop=uvloop",
            "--http=httptools",
            "--host=127.0.0.1",
            f"--port={self._port}",
            "--no-access-log",
        ]
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - uvicorn from our venv
                command,
                cwd=ROOT,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers go down with it
            )
        try:
            self._wait_ready()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise SystemExit(f"uvicorn exited; see {self._log}")
            try:
                get_json(self.base + "/readyz", timeout=1)
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
                continue
            if len(self.worker_pids()) >= self._workers:
                return
            time.sleep(0.2)
        raise SystemExit(f"the API was not ready within {READY_TIMEOUT_S} s; see {self._log}")

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # uvicorn stops its workers, then itself
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def get_json(url: str, *, token: str | None = None, timeout: float = 5) -> Any:
    request = urllib.request.Request(url)  # noqa: S310 - loopback URL built here
    if token:
        request.add_header("Authorization", f"Token {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def login(base: str, email: str, password: str) -> str:
    body = json.dumps({"user": {"email": email, "password": password}}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URL built here
        base + "/api/users/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        token: str = json.loads(response.read())["user"]["token"]
    return token
