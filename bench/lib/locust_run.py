"""Running Locust headless on bench/journeys.py and reading its CSV statistics."""

import csv
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.lib.paths import ROOT

LOCUSTFILE = ROOT / "bench" / "journeys.py"


@dataclass(frozen=True)
class LocustResult:
    users: int
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    by_name: Mapping[str, Mapping[str, float]]  # per request name: requests, failures, p50, p99
    errors: Mapping[str, int] = field(default_factory=dict)  # error text -> occurrences
    warnings: tuple[str, ...] = ()


def run_locust(
    base_url: str,
    *,
    users: int,
    spawn_rate: float,
    run_time_s: int,
    out_prefix: Path,
    env: Mapping[str, str],
) -> LocustResult:
    """Ramp to `users` at `spawn_rate`, reset the statistics once all are running, go on for
    the rest of `run_time_s`; the figures cover that steady part only."""
    command = [
        str(Path(sys.executable).parent / "locust"),
        *("-f", str(LOCUSTFILE), "--headless", "--host", base_url),
        *("--users", str(users), "--spawn-rate", f"{spawn_rate:g}"),
        *("--run-time", f"{run_time_s}s", "--stop-timeout", "5"),
        *("--csv", str(out_prefix), "--reset-stats", "--only-summary"),
        *("--exit-code-on-error", "0", "--loglevel", "WARNING"),
    ]
    log = out_prefix.with_suffix(".log")
    with log.open("w") as output:
        run = subprocess.run(  # noqa: S603 - locust from our venv, arguments built here
            command,
            cwd=ROOT,
            env=os.environ | {"PYTHONPATH": str(ROOT)} | dict(env),  # journeys imports bench
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=run_time_s + 120,
            check=False,
        )
    if run.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"locust exited {run.returncode}; {log}:\n{tail}")
    warnings = tuple(
        line.strip()
        for line in log.read_text(errors="replace").splitlines()
        if "CPU usage" in line or "ulimit" in line.lower()
    )
    return parse(out_prefix, users, warnings)


def error_kind(text: str) -> str:
    """`HTTP 503 shed` (journeys.py's own) as it is, `LocustBadStatusCode(code=503)` ->
    `HTTP 503`; otherwise the exception's name."""
    if match := re.search(r"HTTP \d{3}(?: [a-z]+)?", text):
        return match[0]
    if match := re.search(r"code=(\d+)", text):
        return f"HTTP {match[1]}"
    return re.split(r"[(:]", text, maxsplit=1)[0].strip()[:80] or "error"


def _number(row: Mapping[str, str], key: str) -> float:
    value = row.get(key) or "0"
    return 0.0 if value == "N/A" else float(value)


def parse(prefix: Path, users: int, warnings: tuple[str, ...] = ()) -> LocustResult:
    with Path(f"{prefix}_stats.csv").open() as stats:
        rows = list(csv.DictReader(stats))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    by_name = {
        f"{r['Type']} {r['Name']}": {
            "requests": _number(r, "Request Count"),
            "failures": _number(r, "Failure Count"),
            "rps": _number(r, "Requests/s"),
            "p50_ms": _number(r, "50%"),
            "p99_ms": _number(r, "99%"),
        }
        for r in rows
        if r["Name"] != "Aggregated"
    }
    errors: dict[str, int] = {}
    failures_csv = Path(f"{prefix}_failures.csv")
    if failures_csv.exists():
        with failures_csv.open() as failures:
            for r in csv.DictReader(failures):
                key = error_kind(r["Error"])
                errors[key] = errors.get(key, 0) + int(r["Occurrences"])
    return LocustResult(
        users=users,
        requests=int(_number(total, "Request Count")),
        failures=int(_number(total, "Failure Count")),
        rps=_number(total, "Requests/s"),
        p50_ms=_number(total, "50%"),
        p95_ms=_number(total, "95%"),
        p99_ms=_number(total, "99%"),
        max_ms=_number(total, "100%"),
        by_name=by_name,
        errors=errors,
        warnings=warnings,
    )
