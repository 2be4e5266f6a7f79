"""The stack tests run against a stack of their own: state in .stack/test, free ports picked at
start (a developer's `make stack` on the default ports is left alone), brought up with
scripts.stack and stopped at the end. A lock file serialises concurrent test runs, since
these tests stop and kill components. Nothing here skips: a stack that cannot start fails."""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ports import brought_up, run_script

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".stack" / "test"
PORT_VARIABLES = (
    "STACK_HTTP_PORT",
    "STACK_HTTPS_PORT",
    "STACK_API_PORT",
    "STACK_PGBOUNCER_PORT",
    "STACK_POSTGRES_PORT",
    "STACK_REDIS_PORT",
    "STACK_REDIS_CACHE_PORT",
    "STACK_PROMETHEUS_PORT",
    "STACK_EXPORTER_PORT",
    "STACK_HAPROXY_PORT",  # STACK_ADMISSION=haproxy only: a stack without HAProxy ignores it
)
WORKERS = 2  # at least two, whatever the CPU count: one is killed while the other serves


@dataclass(frozen=True)
class Stack:
    settings: dict[str, str]  # STACK_* variables the script runs with

    def cli(self, *args: str, timeout: float = 240) -> None:
        """Run `python -m scripts.stack ARGS` against this stack; fail with its output."""
        run_script("scripts.stack", args, self.settings, timeout)

    @property
    def env(self) -> dict[str, str]:
        """stack.env, as `make stack` writes it."""
        lines = (STATE / "stack.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    @property
    def api_url(self) -> str:
        return self.env["API_URL"]

    @property
    def base_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def pool_size(self) -> int:
        return int(self.env["PGBOUNCER_POOL_SIZE"])

    @property
    def postgres_log(self) -> Path:
        return STATE / "postgres" / "postgres.log"

    def api_master_pid(self) -> int:
        return int((STATE / "api" / "api.pid").read_text())

    def api_worker_pids(self) -> set[int]:
        """uvicorn's workers: the master's children started by multiprocessing's spawn_main,
        found by their parent in /proc/<pid>/stat (a task's `children` file may miss a child a
        thread started, or one whose thread has ended)."""
        master = self.api_master_pid()
        workers = set()
        for process in Path("/proc").iterdir():
            if not process.name.isdigit():
                continue
            try:
                stat = (process / "stat").read_text()
                cmdline = (process / "cmdline").read_bytes()
            except OSError:  # ended meanwhile
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # after the command's name
            if parent == master and b"spawn_main" in cmdline:
                workers.add(int(process.name))
        return workers


def _settings(ports: list[int]) -> dict[str, str]:
    return {
        "STACK_DIR": str(STATE),
        "STACK_WORKERS": str(WORKERS),
        # Patience for the 2,000-connection burst: on a 2-CPU runner the last request in the
        # SQLAlchemy queue waits well over the default 10s; that is queueing, not failure.
        "DB_POOL_TIMEOUT": "90",
        # The same patience end to end: the burst queues on purpose, so neither the request
        # deadline (504) nor admission control (503, the API's or nginx's max_conns) may cut
        # it short here.
        "REQUEST_DEADLINE_S": "100",  # under nginx's upstream timeout (DB_POOL_TIMEOUT + 20 s)
        "MAX_IN_FLIGHT": "100000",
        "STACK_UPSTREAM_MAX_CONNS": "0",
        **{name: str(port) for name, port in zip(PORT_VARIABLES, ports, strict=True)},
    }


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with brought_up(
        STATE,
        STATE.parent / "test.lock",
        len(PORT_VARIABLES),
        lambda ports: Stack(_settings(ports)),
    ) as stack:
        yield stack


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        yield client
