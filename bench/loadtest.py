"""`make bench`: load against the running stack and its baselines, in one run, same data.

    make stack && make bench                       # full run (~20 min), report in bench/results/
    make bench BENCH_ARGS=--quick                  # small data, shorter and fewer steps (< 5 min)
    .venv/bin/python -m bench.loadtest --stack-dir .stack --phases wrk --architectures stack

Phases, each run against every architecture (bench/lib/targets.py: the stack, naive pools
straight to PostgreSQL, one process without nginx):
  wrk        mixed reads, closed loop (no think time), 100 / 1,000 / 5,000 connections
  journeys   Locust users with think time (bench/journeys.py), 100 / 1,000 / 5,000 / 10,000
  storm      N users favorite one article at the same moment; counts checked afterwards
  scenarios  the stack only: a viral article, a sign-up/login burst
Every step samples PostgreSQL's client backends and PgBouncer's pools every 100 ms and the
CPU of each component. Everything targets loopback and every step is bounded in time.
The database of the stack is emptied and seeded first (bench/lib/seeding.py) unless --no-seed.
"""

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.lib import charts, load_report, runs, seeding, storm
from bench.lib.database import dataset
from bench.lib.locust_run import run_locust
from bench.lib.machine import machine_info, package_versions, raise_nofile, tool_versions
from bench.lib.paths import folder
from bench.lib.samplers import measured
from bench.lib.targets import ARCHITECTURES, Stack, Target, reconnect_pgbouncer, running
from bench.lib.wrk import ensure_wrk, mixed_script, run_wrk, wrk_version

MIX = {"list": 0.3, "tag": 0.1, "article": 0.3, "comments": 0.2, "profile": 0.1}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadtest", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    runs.add_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="small data, fewer and shorter steps")
    parser.add_argument(
        "--architectures",
        default="stack,nocache,direct,single",
        help=f"comma-separated, of {','.join(ARCHITECTURES)}",
    )
    parser.add_argument("--phases", default="wrk,journeys,storm,scenarios")
    parser.add_argument("--connections", type=runs.ints, help="wrk steps (default 100,1000,5000)")
    parser.add_argument(
        "--users", type=runs.ints, help="Locust steps (default 100,1000,5000,10000)"
    )
    parser.add_argument("--duration", type=int, help="seconds measured per wrk step (25)")
    parser.add_argument("--journey-time", type=int, help="seconds measured per Locust step (30)")
    parser.add_argument("--think", default="5:15", help="seconds between page views, min:max")
    parser.add_argument(
        "--ramp", type=float, help="seconds to start a step's users (default: mean think time)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds after a step's users all run before its measured window (default: mean "
        "think time; quick: 2); the arrival transient is the burst scenario's business",
    )
    parser.add_argument("--storm", type=int, help="favorite storm users (1000)")
    parser.add_argument("--burst", type=int, help="sign-up/login burst users (300)")
    parser.add_argument("--viral-users", type=int, help="viral article users (1000)")
    parser.add_argument(
        "--size", choices=sorted(seeding.PRESETS), help="data set (default; quick: small)"
    )
    parser.add_argument("--no-seed", action="store_true", help="keep the stack's data as it is")
    parser.add_argument("--logins", type=int, help="seeded users logged in for tokens (200)")
    parser.add_argument("--warmup", type=int, help="wrk warm-up seconds per target (3)")
    parser.add_argument("--pause", type=float, help="seconds of rest between steps (2)")
    parser.add_argument(
        "--wrk-timeout", type=float, default=60, help="wrk's per-request timeout (s)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "connections": [100, 1000] if quick else [100, 1000, 5000],
        "users": [100, 1000] if quick else [100, 1000, 5000, 10000],
        "duration": 5 if quick else 25,
        "journey_time": 6 if quick else 30,
        "warmup": 2 if quick else 3,
        "pause": 1 if quick else 2,
        "storm": 100 if quick else 1000,
        "burst": 40 if quick else 300,
        "viral_users": 100 if quick else 1000,
        "size": "small" if quick else "default",
        "logins": 50 if quick else 200,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.architectures = [a for a in args.architectures.split(",") if a]
    if unknown := set(args.architectures) - set(ARCHITECTURES):
        parser.error(f"unknown architectures {sorted(unknown)}; choose from {list(ARCHITECTURES)}")
    args.phases = [p for p in args.phases.split(",") if p]
    low, high = (float(x) for x in args.think.split(":"))
    args.think_s = (low, high)
    # Users arrive spread over one think time, so the first page views do not all land at once.
    if args.ramp is None:
        args.ramp = (low + high) / (8 if quick else 2)
    # Then every user has viewed about one more page: what is measured is the steady state.
    if args.settle is None:
        args.settle = 2.0 if quick else (low + high) / 2
    return args


class Runner:
    def __init__(self, args: argparse.Namespace, stack: Stack, out: Path) -> None:
        self.args, self.stack, self.out = args, stack, out
        self.steps: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []  # phases the harness could not run
        self.data: dict[str, Any] = {}
        self.wrk = ""

    def record(self, step: dict[str, Any]) -> None:
        self.steps.append(step)
        print("  " + load_report.one_line(step), flush=True)
        (self.out / "results.json").write_text(json.dumps({"steps": self.steps}, indent=2))

    def wrk_phase(self, target: Target) -> None:
        key = target.architecture.key
        script = self.out / f"mixed-{key}.lua"
        tokens = [t for _, t in self.data["tokens"][:50]]
        picks = {k: self.data[k] for k in ("slugs", "users", "tags")}
        script.write_text(mixed_script(**picks, tokens=tokens, mix=MIX, logged_in=runs.LOGGED_IN))
        if self.args.warmup:
            run_wrk(
                self.wrk, target.base_url, script, connections=64, threads=2,
                duration_s=self.args.warmup,
            )  # fmt: skip
        for connections in self.args.connections:
            time.sleep(self.args.pause)
            threads = 2 if connections >= 2 else 1

            def measure(connections: int = connections, threads: int = threads) -> dict[str, Any]:
                r = run_wrk(
                    self.wrk, target.base_url, script, connections=connections, threads=threads,
                    duration_s=self.args.duration, timeout_s=self.args.wrk_timeout,
                )  # fmt: skip
                (self.out / f"wrk-{key}-{connections}.txt").write_text(r.output)
                return {
                    "requests": r.requests, "rps": round(r.rps, 1), "p50_ms": r.p50_ms,
                    "p90_ms": r.p90_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms,
                    "non_2xx": r.non_2xx, "socket_errors": r.socket_errors,
                    "errors": dict(r.errors),
                }  # fmt: skip

            step = {"phase": "wrk", "architecture": key, "load": connections}
            self.record(step | measured(self.stack, target, measure))

    def journeys_phase(self, target: Target, scenario: str, users_steps: Sequence[int]) -> None:
        key = target.architecture.key
        for users in users_steps:
            time.sleep(self.args.pause)
            ramp = self.args.ramp
            prefix = self.out / f"locust-{scenario}-{key}-{users}"

            def measure(
                users: int = users, ramp: float = ramp, prefix: Path = prefix
            ) -> dict[str, Any]:
                settle = 0.0 if scenario == "burst" else self.args.settle  # arrival measured
                r = run_locust(
                    target.base_url, users=users, spawn_rate=users / max(ramp, 0.1),
                    run_time_s=int(ramp + 1 + settle) + self.args.journey_time, out_prefix=prefix,
                    env=self.locust_env(scenario) | {"BENCH_SETTLE": f"{settle:g}"},
                )  # fmt: skip
                result = asdict(r)
                # Locust's own rate spans first to last request; ours spans the window.
                result["rps"] = round(r.requests / self.args.journey_time, 1)
                result["errors"] = dict(r.errors)
                result["failures_total"] = result.pop("failures")
                return result

            step = {"phase": scenario, "architecture": key, "load": users}
            self.record(step | measured(self.stack, target, measure))

    def locust_env(self, scenario: str) -> dict[str, str]:
        data_file = self.out / "journey-data.json"
        if not data_file.exists():
            shared = {k: self.data[k] for k in ("slugs", "users", "tags", "viral")}
            tokens = self.data["tokens"][:200]
            data_file.write_text(
                json.dumps(shared | {"tokens": tokens, "run": self.out.name.lower()})
            )
        low, high = self.args.think_s
        return {
            "BENCH_DATA": str(data_file),
            "BENCH_SCENARIO": scenario,
            "BENCH_THINK": f"{low:g}:{high:g}",
            "BENCH_MEMBER_SHARE": str(runs.LOGGED_IN),
        }

    def storm_phase(self, target: Target) -> None:
        users = list(self.data["tokens"][: self.args.storm])
        run = f"{self.out.name}-{target.architecture.key}".lower()

        def measure() -> dict[str, Any]:
            result = asyncio.run(
                storm.favorite_storm(
                    target.base_url + "/api", self.stack.env["DIRECT_DATABASE_URL"], users, run
                )
            )
            return result.summary()

        step = {"phase": "storm", "architecture": target.architecture.key, "load": len(users)}
        self.record(step | measured(self.stack, target, measure))

    def run(self) -> None:
        args = self.args
        for key in args.architectures:
            architecture = ARCHITECTURES[key]
            print(f"{architecture.label}: {architecture.description}", flush=True)
            reconnect_pgbouncer(self.stack)
            try:
                with running(self.stack, architecture) as target:
                    self.phases(target)
            except Exception as exc:  # noted in the report; the next one runs
                self.failed(key, "start/stop", exc)

    def phases(self, target: Target) -> None:
        args, key = self.args, target.architecture.key
        planned: list[tuple[str, Callable[[], None]]] = []
        if "wrk" in args.phases:
            planned.append(("wrk", lambda: self.wrk_phase(target)))
        if "journeys" in args.phases:
            planned.append(("mixed", lambda: self.journeys_phase(target, "mixed", args.users)))
        if "storm" in args.phases:
            planned.append(("storm", lambda: self.storm_phase(target)))
        if "scenarios" in args.phases and key == "stack":
            planned.append(
                ("viral", lambda: self.journeys_phase(target, "viral", [args.viral_users]))
            )
            planned.append(("burst", lambda: self.journeys_phase(target, "burst", [args.burst])))
        for phase, run in planned:
            try:
                run()
            except Exception as exc:  # noted in the report; the next one runs
                self.failed(key, phase, exc)

    def failed(self, architecture: str, phase: str, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        print(f"  FAILED {phase} on {architecture}: {text}", flush=True)
        self.failures.append({"architecture": architecture, "phase": phase, "error": text})


def render(out: Path) -> None:
    results = json.loads((out / "results.json").read_text())
    steps = results.pop("steps")
    made = charts.draw(steps, out)
    (out / "report.md").write_text(load_report.render(results, steps, made))
    print(f"report: {out / 'report.md'}", flush=True)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.render:
        rendered: Path = args.render
        render(rendered)
        return rendered
    started = datetime.now(UTC)
    out = folder(args.out, started)
    stack = Stack.load(args.stack_dir.resolve())
    nofile = raise_nofile()
    runner = Runner(args, stack, out)
    runner.wrk = ensure_wrk()
    info = machine_info() | {"RLIMIT_NOFILE (load generator)": str(nofile)}
    size = None if args.no_seed else args.size
    runner.data = runs.prepare(stack, size=size, logins=max(args.storm, args.logins))
    counts, pg = dataset(stack.env["DIRECT_DATABASE_URL"])
    info |= pg | tool_versions() | {"wrk": wrk_version(runner.wrk)}
    wall = time.monotonic()
    try:
        runner.run()
    finally:
        meta = runs.record("bench.loadtest", argv, args, started) | {
            "minutes": round((time.monotonic() - wall) / 60, 1),
            "machine": info,
            "packages": package_versions(),
            "dataset": counts,
            "stack": {k: v for k, v in stack.env.items() if "URL" not in k},
            "harness_failures": runner.failures,
        }
        (out / "results.json").write_text(json.dumps(meta | {"steps": runner.steps}, indent=2))
    render(out)
    if runner.failures:
        raise SystemExit(f"{len(runner.failures)} phase(s) could not run; see {out / 'report.md'}")
    return out


if __name__ == "__main__":
    main()
