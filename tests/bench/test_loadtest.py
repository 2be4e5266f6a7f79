"""The load-test harness end to end, at the smallest step of `make bench --quick`, so it does
not rot: a stack of its own (state in .stack/bench-test, free ports), small data, every
architecture and phase for a few seconds each. Nothing skips: a harness that cannot run fails."""

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.lib.targets import free_ports
from tests.stack.conftest import PORT_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".stack" / "bench-test"
PORTS = PORT_VARIABLES  # every port of the stack, picked free


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own scripts
        [sys.executable, *args],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def stack_env() -> Iterator[dict[str, str]]:
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE.parent / "bench-test.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits for this one
        ports_file = STATE / "ports"
        if ports_file.exists():  # left over from an interrupted run
            # (a file from before a port was added names fewer: the rest were never used)
            old = dict(zip(PORTS, ports_file.read_text().split(), strict=False))
            _run(["-m", "scripts.stack", "down"], {"STACK_DIR": str(STATE)} | old, 120)
        ports = free_ports(len(PORTS))
        ports_file.write_text(" ".join(map(str, ports)))
        env = {"STACK_DIR": str(STATE), "STACK_WORKERS": "2"} | {
            name: str(port) for name, port in zip(PORTS, ports, strict=True)
        }
        try:
            up = _run(["-m", "scripts.stack", "up"], env, 240)
            assert up.returncode == 0, up.stdout + up.stderr
            yield env
        finally:
            _run(["-m", "scripts.stack", "down"], env, 120)
            ports_file.unlink()


@pytest.mark.stack  # a private stack of its own: `make test-fast` leaves it out
def test_quick_smallest_step_runs_end_to_end(stack_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ["-m", "bench.loadtest", "--quick", "--stack-dir", str(STATE), "--out", str(out)]
    args += ["--connections", "100", "--users", "100", "--duration", "2", "--warmup", "0"]
    args += ["--pause", "0", "--journey-time", "3", "--ramp", "0.5", "--think", "1:2"]
    args += ["--storm", "20", "--logins", "20", "--burst", "6", "--viral-users", "20"]
    # The stack and one baseline: the other baselines are the same machinery with other
    # settings (tests/bench/test_variants.py), and each costs ~15 s of start and stop.
    args += ["--architectures", "stack,direct"]
    run = _run(args, stack_env, 300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    steps = {(s["phase"], s["architecture"]): s for s in results["steps"]}
    expected = {(p, a) for p in ("wrk", "mixed", "storm") for a in ("stack", "direct")}
    assert expected | {("viral", "stack"), ("burst", "stack")} == set(steps)
    for step in results["steps"]:
        assert step["requests" if step["phase"] != "storm" else "favorite_requests"] > 0, step
        assert step["pg_samples"] > 0, step
    for phase in ("wrk", "mixed", "storm"):
        stack = steps[phase, "stack"]
        assert 0 < stack["pg_backends_peak"] <= 20, stack  # PgBouncer's server pool
        # At 100 connections the stack should not fail; a few shed requests on a starved
        # CI machine are the app's business (tests/stack), not the harness's.
        failed = stack.get("non_2xx", 0) + stack.get("socket_errors", 0)
        failed += stack.get("failures_total", 0)
        assert failed <= 0.05 * stack.get("requests", stack.get("favorite_requests", 0)), stack
    storm = steps["storm", "stack"]
    assert storm["exact"], storm
    report = (out / "report.md").read_text()
    assert "## Targets for the stack" in report
    for chart in ("p99.png", "postgres-connections.png", "rps.png"):
        assert (out / chart).stat().st_size > 10_000
        assert f"]({chart})" in report
