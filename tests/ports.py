"""Private topologies for the suites that start one (stack, faults, cluster): free loopback
ports, one run at a time, and what an interrupted run left taken down first."""

import fcntl
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar


class Scripted(Protocol):
    """A stack or cluster driven by its script (`python -m scripts.stack|cluster ARGS`)."""

    def cli(self, *args: str, timeout: float = ...) -> None: ...


T = TypeVar("T", bound=Scripted)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nobody listened on a moment ago (all bound at once, so no two
    are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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
