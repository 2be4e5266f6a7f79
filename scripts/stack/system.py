"""Processes and the machine: packages, the service user, pid files, signals, waiting."""

# ruff: noqa: S603, S607 - this module exists to run system programs (apt-get, test, daemons)

import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from scripts.stack.config import StackError

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
# binary -> Debian package that provides it
PACKAGES = {
    str(POSTGRES_BIN / "initdb"): "postgresql-15",
    "pgbouncer": "pgbouncer",
    "nginx": "nginx",
    "redis-server": "redis-server",
    "openssl": "openssl",
    "prometheus": "prometheus",  # and promtool, which `make test` uses on the alert rules
}
# PostgreSQL and PgBouncer refuse to run as root; as root, every daemon but nginx (whose
# master drops its workers to `nobody` itself) runs as this user.
SERVICE_USER = "postgres"


def log(message: str) -> None:
    print(f"stack: {message}", flush=True)  # noqa: T201 - a command-line tool's progress


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_packages(also: Mapping[str, str] | None = None) -> None:
    """Every binary of PACKAGES, and of `also` (binary -> package: an option's own), or
    apt-get them when root."""
    wanted = PACKAGES | dict(also or {})
    missing = sorted({pkg for binary, pkg in wanted.items() if not shutil.which(binary)})
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if not is_root():
        raise StackError(f"missing packages; as root run: {' '.join(command)}")
    log(f"installing {' '.join(missing)}")
    # Debian's postinst scripts start each service (PgBouncer on our port 6432); a
    # policy-rc.d that answers 101 stops them, as in containers and chroots.
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = not policy.exists()
    if created_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(command, check=True, env=env)
    finally:
        if created_policy:
            policy.unlink()


def raise_nofile_limit() -> int:
    """Soft limit up to the hard limit, inherited by every daemon started from here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def service_ids() -> tuple[int, int] | None:
    """(uid, gid) to run daemons as, or None to run them as ourselves."""
    if not is_root():
        return None
    entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def make_service_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    chown_to_service(path)
    return path


def chown_to_service(path: Path) -> None:
    if ids := service_ids():
        os.chown(path, *ids)


def write_service_file(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)
    chown_to_service(path)


def check_service_can_reach(path: Path) -> None:
    """The service user must traverse every parent of the state dir (not so under /root)."""
    if not is_root():
        return
    probe = subprocess.run(["test", "-x", str(path)], user=SERVICE_USER, check=False)
    if probe.returncode != 0:
        raise StackError(
            f"user {SERVICE_USER!r} cannot reach {path}: let it traverse the parent directories "
            "(chmod o+x) or set STACK_DIR to a directory it can reach"
        )


def run_as_service(
    command: Sequence[str], *, log_file: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run a (daemonising) command as the service user; its output goes to log_file, never to a
    pipe that a daemon could inherit and hold open."""
    ids = service_ids()
    if log_file:
        log_file.touch(mode=0o640)
        chown_to_service(log_file)  # the daemon appends to it too (pg_ctl -l)
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
            extra_groups=[] if ids else None,
            cwd="/",
            check=False,
        )
    finally:
        if log_file:
            output.close()  # type: ignore[union-attr]
    if check and result.returncode != 0:
        where = f"; see {log_file}" if log_file else ""
        raise StackError(f"{' '.join(command)} exited {result.returncode}{where}")
    return result


def read_pid(pid_file: Path, *expect: str) -> int | None:
    """The pid in pid_file if that process is alive and its command line (NUL-separated
    arguments) contains every `expect`: a stale pid file whose pid was reused does not count."""
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None
    return pid if all(part in cmdline for part in expect) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def stop_process(pid: int, name: str, sig: signal.Signals, grace_s: float) -> None:
    """Send `sig`, wait up to grace_s for the process to exit, then SIGKILL it."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if wait_until(lambda: not alive(pid), grace_s):
        log(f"{name} stopped")
        return
    log(f"{name} still running after {grace_s:.0f}s, sending SIGKILL")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_until(lambda: not alive(pid), 5)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def check_port_free(host: str, port: int, name: str, variable: str) -> None:
    if port_open(host, port):
        raise StackError(
            f"{name}: port {port} is taken by a process this stack did not start; "
            f"stop it or choose another port with {variable}=..."
        )


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def require(predicate: Callable[[], bool], timeout_s: float, what: str, log_file: Path) -> None:
    if not wait_until(predicate, timeout_s, 0.2):
        tail = ""
        if log_file.exists():
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        raise StackError(f"{what} did not answer within {timeout_s:.0f}s; {log_file}:\n{tail}")


def python() -> str:
    return sys.executable
