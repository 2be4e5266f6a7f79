"""The API as a real uvicorn process (`uvicorn app.main:create_app --factory`) on a free
loopback port, its JSON log lines in a file: for what only a real server shows (a thread of
the process dying, a connection dropped)."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Server:
    url: str
    jwt_secret: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, marker: str, within: float = 10) -> str:
        """The log once `marker` is in it. The process keeps running: INFO lines reach the
        file only through its log writer's flusher thread, so this shows that thread alive."""
        deadline = time.monotonic() + within
        while marker not in (text := self.log_text()):
            assert time.monotonic() < deadline, f"{marker!r} never logged:\n{text[-4000:]}"
            time.sleep(0.1)
        return text


@contextmanager
def serve(database_url: str, directory: Path, **env: str) -> Iterator[Server]:
    """One worker, no Redis, a random JWT secret of its own; `env` adds or replaces variables.

    The listening socket is bound here and handed over (`--fd`): a port found free and bound
    later could be taken meanwhile by another test's server, which would then answer ours."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    secret = secrets.token_urlsafe(48)
    inherited = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "APP_ENV")}
    environment = inherited | {
        "DATABASE_URL": database_url,
        "JWT_SECRET": secret,
        "LOG_LEVEL": "INFO",
    }
    environment |= env
    command = [
        *(sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"),
        *("--fd", str(listener.fileno()), "--no-access-log"),
    ]
    log_path = directory / "uvicorn.log"
    with listener, log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own server
            command,
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    server = Server(f"http://127.0.0.1:{port}", secret, log_path)
    try:
        _wait_ready(server, process)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, server.log_text()
        try:
            if httpx.get(server.url + "/livez", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"uvicorn did not answer:\n{server.log_text()}")
