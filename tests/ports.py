"""Private topologies for the suites that start one (stack, faults, cluster): free loopback
ports, one run at a time, and what an interrupted run left taken down first."""

import fcntl
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from bench.lib.targets import free_ports

ROOT = Path(__file__).resolve().parent.parent


class Scripted(Protocol):
    """A stack or cluster driven by its script (`python -m scripts.stack|cluster ARGS`)."""

    def cli(self, *args: str, timeout: float = ...) -> None: ...


T = TypeVar("T", bound=Scripted)


def run_script(
    module: str, args: tuple[str, ...], settings: dict[str, str], timeout: float
) -> None:
    """`python -m MODULE ARGS` (scripts.stack, scripts.cluster) with `settings` in its
    environment; the test fails with its output if it does. The topology signs with the
    secret it generates (read by the tests from its state), not the one tests/conftest.py
    gives in-process apps."""
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "JWT_SECRET"} | settings,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"{module} {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


@contextmanager
def brought_up(state: Path, lock: Path, ports: int, make: Callable[[list[int]], T]) -> Iterator[T]:
    """`make(ports)` brought up under `state` on `ports` free ports and down at the end; a
    concurrent run waits on `lock`, and the ports an interrupted run used (kept in
    state/ports) are brought down first."""
    state.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        ports_file = state / "ports"
        if ports_file.exists():
            make([int(p) for p in ports_file.read_text().split()]).cli("down")
        chosen = free_ports(ports)
        ports_file.write_text(" ".join(map(str, chosen)))
        topology = make(chosen)
        try:
            topology.cli("up")
            yield topology
        finally:
            topology.cli("down")
            ports_file.unlink()
