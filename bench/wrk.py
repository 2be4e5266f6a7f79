"""Running wrk: its Lua scripts, one timed run, and the numbers it reports."""

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Appended to every script: wrk prints its summary as one JSON line we can parse,
# next to its usual text (kept in the report as is).
DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# Each wrk thread starts at its own place in the list, then walks it round.
ROTATE_LUA = """
local threads = 0
setup = function(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end
local counter = 0
init = function(args)
  counter = offset or 0
end
request = function()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: int  # connect + read + write + timeout
    output: str

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is missing: install the Debian package `wrk` (apt-get install wrk)")
    print("installing wrk (apt-get install wrk)", flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    # apt-get from PATH, as `make stack` uses it; an outdated package list is refreshed once.
    if subprocess.run(install, env=env, timeout=300, check=False).returncode != 0:  # noqa: S603
        update = ["apt-get", "update", "-qq"]
        subprocess.run(update, env=env, timeout=300, check=True)  # noqa: S603
        subprocess.run(install, env=env, timeout=300, check=True)  # noqa: S603
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get installed wrk, yet it is not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version and usage, and exits 1.
    version = [wrk, "-v"]
    run = subprocess.run(version, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    return (run.stdout + run.stderr).splitlines()[0].strip()


def plain_script() -> str:
    return DONE_LUA


def auth_script(token: str) -> str:
    return f'wrk.headers["Authorization"] = "Token {token}"\n' + DONE_LUA


def rotate_script(paths: Sequence[str]) -> str:
    listed = ",\n".join(json.dumps(path) for path in paths)  # JSON strings are Lua strings here
    return f"paths = {{\n{listed}\n}}\n" + ROTATE_LUA + DONE_LUA


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    *,
    connections: int,
    threads: int,
    duration_s: int,
    timeout_s: float = 2.0,
) -> WrkResult:
    command = [
        wrk,
        f"--connections={connections}",
        f"--threads={threads}",
        f"--duration={duration_s}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        f"--script={script}",
        url,
    ]
    run = subprocess.run(  # noqa: S603 - wrk found on PATH, arguments built here
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr.strip()}")
    return parse(run.stdout)


def parse(output: str) -> WrkResult:
    line = next(x for x in output.splitlines() if x.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    text = "\n".join(x for x in output.splitlines() if not x.startswith("BENCH_JSON "))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        max_ms=data["max_us"] / 1e3,
        non_2xx=data["status"],
        socket_errors=errors,
        output=text.strip(),
    )
