"""What the numbers were measured on, and who used the CPU while they were (from /proc)."""

import os
import platform
import resource
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF, getrusage

from bench.lib.paths import ROOT

PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "sqlalchemy",
    "psycopg",
    "uvicorn",
    "uvloop",
    "httptools",
    "granian",
    "orjson",
)
TICKS = os.sysconf("SC_CLK_TCK")
NOFILE_NEEDED = 12_000  # 10,000 connections, and room for the rest


def machine_info() -> dict[str, str]:
    """CPU, memory, OS and Python; callers add PostgreSQL's and wrk's versions."""
    cpus = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0))
    return {
        "CPU": _cpu_model(),
        "cores (nproc)": f"{usable}" + (f" of {cpus}" if usable != cpus else ""),
        "memory": f"{_meminfo_kib('MemTotal') / 1024**2:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git": _git_revision(),
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


def tool_versions() -> dict[str, str]:
    """The stack's programs and the load generator's, as they report themselves."""

    def first_line(*command: str) -> str:
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
        except OSError:
            return "-"
        return ((run.stdout or run.stderr).strip().splitlines() or ["-"])[0]

    return {
        "PgBouncer": first_line("pgbouncer", "--version"),
        "nginx": first_line("nginx", "-v"),
        "Redis": first_line("redis-server", "--version"),
        "locust": first_line(str(Path(sys.executable).parent / "locust"), "--version"),
    }


def raise_nofile(needed: int = NOFILE_NEEDED) -> int:
    """Raise this process's open-files limit towards `needed` (wrk and Locust inherit it: a
    socket per connection); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(needed, hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    return min(needed, hard)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _git_revision() -> str:
    def git(*args: str) -> str:
        run = subprocess.run(  # noqa: S603 - fixed command
            ["git", *args],  # noqa: S607 - git from PATH, like the Makefile
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return run.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "app", "migrations")
    return revision + (" (app/ or migrations/ modified)" if dirty else "")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    cpu_s: float  # user + system


def processes() -> dict[int, Proc]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name may hold spaces and parentheses: fields start after the last ")".
        fields = stat.rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
        found[int(entry.name)] = Proc(int(entry.name), int(fields[1]), cpu)
    return found


def tree(procs: Mapping[int, Proc], root: int | None) -> set[int]:
    """`root` and all its descendants."""
    if root is None or root not in procs:
        return set()
    members = {root}
    grew = True
    while grew:
        more = {p.pid for p in procs.values() if p.ppid in members} - members
        members |= more
        grew = bool(more)
    return members


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user..steal; guest time is already inside user
    return (total - idle) / TICKS, total / TICKS


class CpuShare:
    """Cores used by each named process tree between `start()` and `stop()`, then by this
    process with the children it has waited for (wrk), then by everything else on the
    machine (`other`: other users' load, which makes the numbers noisy). A process of a
    tree that exits in between takes its time with it."""

    def __init__(self, roots: Mapping[str, Callable[[], int | None]], own: str) -> None:
        self._roots = roots
        self._own = own
        self._before: dict[str, dict[int, float]] = {}
        self._own_before = 0.0
        self._machine: tuple[float, float] = (0.0, 0.0)

    def _snapshot(self) -> dict[str, dict[int, float]]:
        procs = processes()
        claimed: set[int] = set()
        snapshot = {}
        for name, root in self._roots.items():  # a process counts for the first tree it is in
            members = tree(procs, root()) - claimed
            claimed |= members
            snapshot[name] = {pid: procs[pid].cpu_s for pid in members}
        return snapshot

    def start(self) -> None:
        self._before = self._snapshot()
        self._own_before = _own_cpu_s()
        self._machine = machine_busy_s()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        busy, total = machine_busy_s()
        cores = len(os.sched_getaffinity(0))
        wall = (total - self._machine[1]) / (os.cpu_count() or cores)
        shares: dict[str, float] = {}
        for name, pids in after.items():
            before = self._before.get(name, {})
            used = sum(cpu - before.get(pid, 0.0) for pid, cpu in pids.items())
            shares[name] = used / wall if wall else 0.0
        own = _own_cpu_s() - self._own_before
        shares[self._own] = own / wall if wall else 0.0
        machine = (busy - self._machine[0]) / wall if wall else 0.0
        shares["other"] = max(machine - sum(shares.values()), 0.0)
        shares["idle"] = max(cores - machine, 0.0)
        return shares


def _own_cpu_s() -> float:
    mine, waited = (getrusage(who) for who in (RUSAGE_SELF, RUSAGE_CHILDREN))
    return mine.ru_utime + mine.ru_stime + waited.ru_utime + waited.ru_stime
