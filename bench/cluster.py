"""Issue 21: user journeys with think time through `make cluster` (several API hosts, a
primary and a streaming replica), then one API host killed under that load.

    make cluster && python -m bench.cluster                 # ~6 min, report in bench/results/
    python -m bench.cluster --users 1000 --no-seed --kill-users 0

Journeys steps (bench/journeys.py through nginx, 127.0.0.1:8280 by default): members have
accounts of their own and read back each write at once (BENCH_CHECK_WRITES). Per step: reads
per node and the primary's fallbacks by reason, from every API host's /metrics, over the
measured window; stale own-write reads; PostgreSQL client backends of the app on the
primary and on the replica (each behind its PgBouncer pool) and PgBouncer's waiting
clients, sampled every 100 ms; CPU per component; p50/p99 and errors from Locust.

Kill step: the same journeys, then every process of one API host gets SIGKILL (its network
namespace's, as `python -m scripts.cluster kill apiN` does) and, a while later, the host is
started again. From every request's start and duration: the requests in flight at the kill
(on all hosts; the killed host's own from its in-flight gauge, read just before), the
errors and when they started, and successful answers per second around the kill.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from app.security import make_token
from bench.lib import markdown, runs, seeding
from bench.lib.database import dataset, plain_url, sample_data
from bench.lib.locust_run import LocustResult, run_locust
from bench.lib.machine import CpuShare, machine_info, package_versions, raise_nofile
from bench.lib.paths import ROOT, folder
from bench.lib.samplers import Sampler
from bench.lib.targets import Stack
from scripts.cluster.__main__ import components
from scripts.cluster.config import ClusterConfig
from scripts.cluster.nodes import HostApi

PRIMARY = "primary"
REPLICA = "replica-1"
OWN_WRITE = "own write: "  # bench/journeys.py's read-back requests
TOKEN_TTL_S = 4 * 3600


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--cluster-dir", type=Path, default=ROOT / ".cluster")
    parser.add_argument("--out", type=Path, help="results folder (default: timestamped)")
    parser.add_argument("--users", type=runs.ints, default=[1000, 3000], help="journeys steps")
    parser.add_argument("--journey-time", type=int, default=40, help="measured s per step")
    parser.add_argument("--think", default="5:15", help="seconds between page views, min:max")
    parser.add_argument("--ramp", type=float, default=10, help="seconds to start a step's users")
    parser.add_argument("--settle", type=float, default=10, help="seconds before measuring")
    parser.add_argument("--pause", type=float, default=3, help="seconds between steps")
    parser.add_argument(
        "--size", choices=sorted(seeding.PRESETS), default="default", help="data set"
    )
    parser.add_argument("--no-seed", action="store_true", help="keep the cluster's data")
    parser.add_argument("--members", type=int, default=1000, help="accounts members use")
    parser.add_argument("--kill-users", type=int, default=3000, help="0: no kill step")
    parser.add_argument(
        "--kill-hosts", type=runs.ints, default=[2, 3, 1], help="killed in turn, one run"
    )
    parser.add_argument("--before-kill", type=float, default=10, help="measured s before it")
    parser.add_argument("--after-kill", type=float, default=20, help="s from a kill to the next")
    parser.add_argument("--restart-after", type=float, default=8, help="s after the kill")
    args = parser.parse_args(argv)
    low, high = (float(x) for x in args.think.split(":"))
    args.think_s = (low, high)
    return args


class Cluster:
    """A running `make cluster`, known from its state directory and cluster.env."""

    def __init__(self, directory: Path) -> None:
        path = directory / "cluster.env"
        if not path.exists():
            raise SystemExit(f"{path} not found: start the cluster first (make cluster)")
        lines = path.read_text().splitlines()
        self.env = dict(line.split("=", 1) for line in lines if "=" in line)
        self.stack = Stack(directory, self.env)  # the stack's keys, for the shared helpers
        self.dir = directory
        self.hosts: list[str] = self.env["API_HOSTS"].split()
        self.base_url = self.env["API_URL"].removesuffix("/api")

    def roots(self) -> dict[str, Callable[[], int | None]]:
        pid = self.stack.pid
        hosts = {
            f"API host {n}": (lambda n=n: pid(f"api{n}/api.pid"))
            for n in range(1, len(self.hosts) + 1)
        }
        return {"nginx": lambda: pid("nginx/nginx.pid")} | hosts | {
            "PgBouncer (primary)": lambda: pid("pgbouncer/pgbouncer.pid"),
            "PgBouncer (replica)": lambda: pid("pgbouncer-replica/pgbouncer.pid"),
            "PostgreSQL primary": lambda: pid("postgres/data/postmaster.pid"),
            "PostgreSQL replica": lambda: pid("replica/data/postmaster.pid"),
            "Redis": lambda: pid("redis/redis.pid"),
            "job worker": lambda: pid("worker/worker.pid"),
        }  # fmt: skip

    def members(self, count: int) -> dict[str, Any]:
        """`tokens`: (email, token) of the first `count` seeded users, signed with the
        cluster's secret (logging in thousands through argon2 would take minutes and measure
        nothing here); `names`: their usernames by email (nobody follows themselves)."""
        secret = json.loads((self.dir / "secrets.json").read_text())["jwt"]
        with psycopg.connect(plain_url(self.env["DIRECT_DATABASE_URL"])) as conn:
            rows = conn.execute(
                "SELECT id, email, username, token_version FROM users"
                " WHERE email LIKE 'user%%@example.com'"
                " ORDER BY id LIMIT %s",
                (count,),
            ).fetchall()
        return {
            "tokens": [
                (email, make_token(uid, secret=secret, ttl_seconds=TOKEN_TTL_S, version=version))
                for uid, email, _, version in rows
            ],
            "names": {email: name for _, email, name, _ in rows},
        }


Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(host: str) -> Metrics:
    """One API host's /metrics (all its workers); empty when it does not answer."""
    try:
        text = httpx.get(f"{host}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_label(samples: Metrics, name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            key = dict(labels).get(label, "")
            found[key] = found.get(key, 0.0) + value
    return found


def read_counts(hosts: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per host: reads by node, fallbacks by reason, replica checks by result."""
    counts = {}
    for host in hosts:
        samples = scrape(host)
        counts[host] = {
            "reads": by_label(samples, "conduit_db_reads_total", "node"),
            "fallbacks": by_label(samples, "conduit_db_read_fallbacks_total", "reason"),
            "checks": by_label(samples, "conduit_db_replica_checks_total", "result"),
        }
    return counts


def delta(
    before: Mapping[str, Mapping[str, Mapping[str, float]]],
    after: Mapping[str, Mapping[str, Mapping[str, float]]],
    kind: str,
) -> dict[str, int]:
    """Summed over the hosts: what `kind` counted between the two scrapes."""
    total: dict[str, int] = {}
    for host, counts in after.items():
        for key, value in counts[kind].items():
            grown = value - before.get(host, {}).get(kind, {}).get(key, 0.0)
            total[key] = total.get(key, 0) + max(0, round(grown))
    return total


def share(reads: Mapping[str, int]) -> float | None:
    every = sum(reads.values())
    return round(reads.get(REPLICA, 0) / every, 3) if every else None


class Runner:
    def __init__(self, args: argparse.Namespace, cluster: Cluster, out: Path) -> None:
        self.args, self.cluster, self.out = args, cluster, out
        self.steps: list[dict[str, Any]] = []
        self.kill: dict[str, Any] = {}
        self.data: dict[str, Any] = {}

    def locust_env(self, timeline: Path | None = None) -> dict[str, str]:
        data_file = self.out / "journey-data.json"
        if not data_file.exists():
            data_file.write_text(json.dumps(self.data | {"run": self.out.name.lower()}))
        low, high = self.args.think_s
        env = {
            "BENCH_DATA": str(data_file),
            "BENCH_SCENARIO": "mixed",
            "BENCH_THINK": f"{low:g}:{high:g}",
            "BENCH_MEMBER_SHARE": str(runs.LOGGED_IN),
            "BENCH_SETTLE": f"{self.args.settle:g}",
            "BENCH_CHECK_WRITES": "1",
        }
        return env | ({"BENCH_TIMELINE": str(timeline)} if timeline else {})

    def samplers(self) -> tuple[Sampler, Sampler]:
        env, state = self.cluster.env, self.cluster.dir
        primary = Sampler(
            env["DIRECT_DATABASE_URL"],
            env["PGBOUNCER_ADMIN_URL"],
            state / "postgres" / "postgres.log",
        )
        replica = Sampler(
            env["REPLICA_DIRECT_URL"],
            env["REPLICA_PGBOUNCER_ADMIN_URL"],
            state / "replica" / "replica.log",
        )
        return primary, replica

    def locust(
        self, users: int, run_time_s: int, prefix: Path, timeline: Path | None = None
    ) -> LocustResult:
        return run_locust(
            self.cluster.base_url,
            users=users,
            spawn_rate=users / max(self.args.ramp, 0.1),
            run_time_s=run_time_s,
            out_prefix=prefix,
            env=self.locust_env(timeline),
        )

    def journeys(self, users: int) -> dict[str, Any]:
        """One step: the figures of its measured window."""
        args, hosts = self.args, self.cluster.hosts
        warm_s = 1 + args.ramp + args.settle  # Locust's start, then what it does not measure
        run_time = int(warm_s) + args.journey_time
        scraped: dict[str, Any] = {}

        def scrape_when_measuring() -> None:  # Locust resets its statistics about then
            time.sleep(warm_s)
            scraped["before"] = read_counts(hosts)

        primary, replica = self.samplers()
        cpu = CpuShare(self.cluster.roots(), own="load generator")
        with primary, replica:
            cpu.start()
            marker = threading.Thread(target=scrape_when_measuring, daemon=True)
            marker.start()
            result = self.locust(users, run_time, self.out / f"locust-{users}")
            marker.join()
            shares = cpu.stop()
        after = read_counts(hosts)
        reads = delta(scraped["before"], after, "reads")
        fallbacks = delta(scraped["before"], after, "fallbacks")
        replica_checks = delta(scraped["before"], after, "checks")
        checks = sum(
            int(v["requests"]) for k, v in result.by_name.items() if OWN_WRITE in k
        )  # fmt: skip
        stale = result.errors.get("stale", 0)
        return {
            "users": users,
            "requests": result.requests,
            "rps": round(result.requests / args.journey_time, 1),
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "max_ms": result.max_ms,
            "errors": {k: v for k, v in result.errors.items() if k != "stale"},
            "failures_total": result.failures,
            "reads": reads,
            "replica_share": share(reads),
            "fallbacks": fallbacks,
            "replica_checks": replica_checks,
            "own_write_reads": checks,
            "stale": stale,
            "pg_backends_peak": {
                PRIMARY: primary.samples.summary()["pg_backends_peak"],
                REPLICA: replica.samples.summary()["pg_backends_peak"],
            },
            "pgbouncer_waiting_peak": {
                PRIMARY: primary.samples.summary()["pgb_cl_waiting_peak"],
                REPLICA: replica.samples.summary()["pgb_cl_waiting_peak"],
            },
            "postgres_log": {
                PRIMARY: dict(primary.samples.postgres_log),
                REPLICA: dict(replica.samples.postgres_log),
            },
            "cpu": {k: round(v, 2) for k, v in shares.items()},
            "by_name": {k: dict(v) for k, v in result.by_name.items()},
            "locust_warnings": list(result.warnings),
        }

    def kill_step(self) -> dict[str, Any]:
        """One Locust run, a host killed (and started again) every --after-kill seconds."""
        args, cluster = self.args, self.cluster
        users, hosts = args.kill_users, args.kill_hosts
        warm_s = 1 + args.ramp + args.settle
        run_time = int(warm_s + args.before_kill + len(hosts) * args.after_kill)
        timeline = self.out / "kill-timeline.csv"
        kills: list[dict[str, float]] = []

        def faults() -> None:
            time.sleep(warm_s + args.before_kill)
            for host in hosts:
                cycle = time.monotonic()
                gauge = scrape(cluster.hosts[host - 1])
                moments = {
                    "host": host,
                    "in_flight_gauge": gauge.get(
                        ("conduit_http_requests_in_flight", frozenset()), -1
                    ),
                    "kill_started": time.time(),
                }
                kill_host(cluster.dir, host)
                moments["killed"] = time.time()
                time.sleep(args.restart_after)
                moments["restart_started"] = time.time()
                scripts_cluster(cluster.dir, "up", f"api{host}")
                moments["restarted"] = time.time()
                kills.append(moments)
                time.sleep(max(0.0, args.after_kill - (time.monotonic() - cycle)))

        thread = threading.Thread(target=faults, daemon=True)
        thread.start()
        result = self.locust(users, run_time, self.out / f"locust-kill-{users}", timeline)
        thread.join()
        requests = load_timeline(timeline)
        analysed = [analyse_kill(requests, moments) for moments in kills]
        in_flight = {r for kill in analysed for r in kill.pop("in_flight")}
        errors = [r for r in requests if r[2]]
        # Each host back: it serves requests again (nginx tries it after fail_timeout).
        answered = {
            f"api{n}": int(
                sum(by_label(scrape(url), "conduit_http_requests_total", "status").values())
            )
            for n, url in enumerate(cluster.hosts, start=1)
        }
        return {
            "users": users,
            "kills": analysed,
            "requests": len(requests),
            "errors": len(errors),
            "errors_in_flight_at_a_kill": sum(1 for r in errors if r in in_flight),
            "in_flight_killed_hosts_gauge": sum(k["in_flight_killed_host_gauge"] for k in analysed),
            "in_flight_all_hosts": sum(k["in_flight_all_hosts"] for k in analysed),
            "answered_since_restart": answered,
            "locust_errors": dict(result.errors),
            "p99_ms": result.p99_ms,
        }

    def run(self) -> None:
        for users in self.args.users:
            time.sleep(self.args.pause)
            step = self.journeys(users)
            print(f"  {one_line(step)}", flush=True)
            self.steps.append(step)
            self.save()
        if self.args.kill_users:
            time.sleep(self.args.pause)
            self.kill = self.kill_step()
            summary = {k: v for k, v in self.kill.items() if k != "kills"}
            print(f"  kills: {json.dumps(summary)}", flush=True)
            self.save()

    def save(self) -> None:
        (self.out / "results.json").write_text(
            json.dumps({"steps": self.steps, "kill": self.kill}, indent=2)
        )


def kill_host(state: Path, host: int) -> None:
    """SIGKILL to every process of the host's namespace, as `scripts.cluster kill` does, but
    from here: the moment is known to the millisecond."""
    config = ClusterConfig.from_env(os.environ | {"CLUSTER_DIR": str(state)})
    for component in components(config):
        if isinstance(component, HostApi) and component.name == f"api{host}":
            component.kill()


def scripts_cluster(state: Path, *args: str) -> None:
    subprocess.run(  # noqa: S603 - our own launcher
        [sys.executable, "-m", "scripts.cluster", *args],
        cwd=ROOT,
        env=os.environ | {"CLUSTER_DIR": str(state)},
        capture_output=True,
        timeout=180,
        check=True,
    )


Request = tuple[float, float, bool]  # start, end (epoch s), failed


def load_timeline(timeline: Path) -> list[Request]:
    with timeline.open() as rows:
        return [
            (float(r["start"]), float(r["start"]) + float(r["ms"]) / 1000, r["failed"] == "1")
            for r in csv.DictReader(rows)
        ]


def analyse_kill(requests: Sequence[Request], moments: Mapping[str, float]) -> dict[str, Any]:
    """One kill: the requests in flight at it, the errors among them and after it;
    successes per second around it; p99 of the requests started in the 5 s after it."""
    started, killed = moments["kill_started"], moments["killed"]
    in_flight = [r for r in requests if r[0] <= killed and r[1] >= started]
    errors_after = [r for r in requests if r[2] and killed - 1 <= r[1] <= killed + 15]

    def per_second(since: float, seconds: int) -> list[int]:
        buckets = [0] * seconds
        for _, ended, failed in requests:
            second = int(ended - since) if ended >= since else -1
            if not failed and 0 <= second < seconds:
                buckets[second] += 1
        return buckets

    before = per_second(started - 10, 10)
    after = per_second(killed, 15)
    baseline = sum(before) / len(before)
    back = next((s for s, n in enumerate(after) if n >= 0.9 * baseline), None)
    latencies = sorted(1000 * (e - s) for s, e, _ in requests if killed <= s < killed + 5)
    return {
        "host": int(moments["host"]),
        "kill_ms": round(1000 * (killed - started), 1),
        "in_flight": in_flight,
        "in_flight_all_hosts": len(in_flight),
        "in_flight_killed_host_gauge": int(moments["in_flight_gauge"]),
        "errors_around": len(errors_after),
        "errors_in_flight": sum(1 for r in errors_after if r in in_flight),
        "error_starts_s": [round(r[0] - killed, 3) for r in errors_after][:50],
        "per_second_before": before,
        "per_second_after": after,
        "baseline_per_second": round(baseline, 1),
        "back_within_s": None if back is None else back + 1,
        "restart_s": round(moments["restarted"] - moments["restart_started"], 1),
        "p99_ms_5s_after": round(latencies[int(0.99 * (len(latencies) - 1))], 1)
        if latencies
        else None,
    }


def one_line(step: Mapping[str, Any]) -> str:
    return (
        f"{step['users']:,} users: {step['rps']} req/s, p50 {step['p50_ms']:.0f} ms, "
        f"p99 {step['p99_ms']:.0f} ms, errors {sum(step['errors'].values())}, "
        f"replica share {step['replica_share']}, reads {step['reads']}, "
        f"fallbacks {step['fallbacks']}, checks {step['replica_checks']}, stale {step['stale']}/{step['own_write_reads']}, "
        f"backends {step['pg_backends_peak']}"
    )


def render(
    meta: Mapping[str, Any], steps: Sequence[Mapping[str, Any]], kill: Mapping[str, Any]
) -> str:
    pool = meta["cluster"].get("PGBOUNCER_POOL_SIZE", "?")
    rows = []
    for s in steps:
        reads = s["reads"]
        falls = s["fallbacks"]
        rows.append(
            [
                f"{s['users']:,}",
                f"{s['rps']:,.0f}",
                f"{s['p50_ms']:.0f}",
                f"{s['p99_ms']:.0f}",
                f"{sum(s['errors'].values()):,}",
                markdown.figure(
                    None if s["replica_share"] is None else 100 * s["replica_share"], ".1f"
                )
                + " %",
                f"{reads.get(REPLICA, 0):,} / {reads.get(PRIMARY, 0):,}",
                markdown.tally(sorted(falls.items(), key=lambda kv: -kv[1])) or "none",
                markdown.tally(sorted(s.get("replica_checks", {}).items())) or "none",
                f"{s['stale']} of {s['own_write_reads']:,}",
                f"{s['pg_backends_peak'][PRIMARY]} / {s['pg_backends_peak'][REPLICA]} (≤ {pool})",
            ]
        )
    table = markdown.table(
        [
            "users", "req/s", "p50 ms", "p99 ms", "errors", "replica share of reads",
            "reads replica / primary", "primary's reads by reason",
            "reads that asked the replica at once", "stale own-write reads",
            "PostgreSQL backends peak primary / replica",
        ],
        rows,
        text_from=7,
    )  # fmt: skip
    text = [
        "# Cluster benchmark (issue 21)\n\n",
        f"`{meta['command']}`, started {meta['started']}.\n\n",
        table,
    ]
    if kill:
        text.append(
            f"\nKills under {kill['users']:,} users, one Locust run ({kill['requests']:,} "
            f"requests): {kill['errors']} errors, {kill['errors_in_flight_at_a_kill']} of them "
            "in flight at a kill.\n\n"
        )
        text.append(
            markdown.table(
                [
                    "host",
                    "kill ms",
                    "in flight: killed host (gauge) / all hosts",
                    "errors (in flight)",
                    "successes/s before",
                    "back ≥ 90 % within",
                    "p99 ms, 5 s after",
                    "restart s",
                    "successes/s, each second after",
                ],
                [
                    [
                        f"api{k['host']}",
                        f"{k['kill_ms']:.0f}",
                        f"{k['in_flight_killed_host_gauge']} / {k['in_flight_all_hosts']}",
                        f"{k['errors_around']} ({k['errors_in_flight']})",
                        f"{k['baseline_per_second']:.0f}",
                        markdown.figure(k["back_within_s"], "d", "never") + " s",
                        markdown.figure(k["p99_ms_5s_after"], ".0f"),
                        f"{k['restart_s']:.1f}",
                        " ".join(str(n) for n in k["per_second_after"]),
                    ]
                    for k in kill["kills"]
                ],
                text_from=8,
            )
        )
        text.append(
            f"\nRequests answered by each host since its restart: {kill['answered_since_restart']}.\n"
        )
    text.append("\n## Machine\n\n" + markdown.facts(meta["machine"]))
    text.append("\n## CPU (cores) per step\n\n")
    for s in steps:
        text.append(
            f"- {s['users']:,} users: " + ", ".join(f"{k} {v}" for k, v in s["cpu"].items()) + "\n"
        )
    return "".join(text)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    started = datetime.now(UTC)
    out = folder(args.out, started, "-cluster")
    cluster = Cluster(args.cluster_dir.resolve())
    nofile = raise_nofile()
    direct = cluster.env["DIRECT_DATABASE_URL"]
    if not args.no_seed:
        seeding.fill(direct, seeding.PRESETS[args.size], truncate=True)
    runner = Runner(args, cluster, out)
    runner.data = sample_data(direct) | cluster.members(args.members)
    counts, pg = dataset(direct)
    info = machine_info() | pg | {"RLIMIT_NOFILE (load generator)": str(nofile)}
    wall = time.monotonic()
    try:
        runner.run()
    finally:
        meta = runs.record("bench.cluster", argv, args, started) | {
            "minutes": round((time.monotonic() - wall) / 60, 1),
            "machine": info,
            "packages": package_versions(),
            "dataset": counts,
            "cluster": {k: v for k, v in cluster.env.items() if "URL" not in k},
        }
        results = meta | {"steps": runner.steps, "kill": runner.kill}
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.md").write_text(render(meta, runner.steps, runner.kill))
    print(f"report: {out / 'report.md'}", flush=True)
    return out


if __name__ == "__main__":
    main()
