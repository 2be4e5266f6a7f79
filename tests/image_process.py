"""The Docker image's own command line as a real process, for the checks that only hold
through one (start-up refusals, the HTTP parser, proxy headers): started, waited for, stopped."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.deploy.manifests import dockerfile_cmd

ROOT = Path(__file__).resolve().parent.parent
# What a test's server must not inherit from the run: it names its own.
_INHERITED_AWAY = (
    "JWT_SECRET",
    "APP_ENV",
    "DATA_DIR",
    "REDIS_URL",
    "FORWARDED_ALLOW_IPS",
    "PROMETHEUS_MULTIPROC_DIR",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment(**variables: str) -> dict[str, str]:
    """This run's environment without any secret or mode, plus `variables`."""
    base = {k: v for k, v in os.environ.items() if k not in _INHERITED_AWAY}
    base = {k: v for k, v in base.items() if not k.startswith("RATE_LIMIT_")}
    return base | {"ACCESS_LOG": "false", "LOG_LEVEL": "WARNING"} | variables


def image_command(port: int) -> list[str]:
    """The Docker image's CMD, with this venv's uvicorn, on 127.0.0.1:port."""
    argv = dockerfile_cmd()
    argv = [str(Path(sys.executable).parent / argv[0]), *argv[1:]]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return argv


def refused(argv: list[str], env: Mapping[str, str], timeout: float = 60) -> str:
    """Run a command that must refuse to start: its output, once it has exited non-zero."""
    result = subprocess.run(  # noqa: S603 - our own server
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{argv[:3]} started:\n{output}"
    return output


@contextmanager
def serving(
    argv: list[str], env: Mapping[str, str], url: str, log: Path, timeout: float = 90
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, once `url`/livez answers; SIGINT (Ctrl-C) at the end."""
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - our own server
            argv, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(url + "/livez", process, log, timeout)
            yield process
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"server did not answer {url} within {timeout}s:\n{log.read_text()}")
