"""One switch, on and off, in the same run against the running stack (`make stack`).

    make stack && make bench-cache                  # issue 6: the read cache (~3 min)
    make stack && make bench-observability          # issue 8: metrics, access log, tracing (~6 min)
    .venv/bin/python -m bench.onoff cache --quick   # small data, short steps
    .venv/bin/python -m bench.onoff observability --render bench/results/<UTC>-observability

cache          The viral article: 2,000 wrk connections read one article, its comments, the
               front page and the tags for 30 s, a share of them with a seeded user's token;
               first the stack (cache on), then the `nocache` baseline beside it
               (CACHE_ENABLED=false). Hit ratio from the API's own
               `conduit_cache_requests_total` (/metrics before and after, every worker summed);
               SQL statements per request from PgBouncer's SHOW STATS (every statement that
               reaches PostgreSQL through the stack) over the requests wrk got answers to.
observability  Read throughput of the stack as it runs (metrics, access log, tracing if it
               was started with an OTLP endpoint) and of the `noobs` baseline beside it
               (METRICS_ENABLED=false ACCESS_LOG=false, no OTLP endpoint), cache on in both:
               per endpoint and connection count, on, off, on, off (drift cancels out).

Both empty and seed the stack's database first (bench/lib/seeding.py) unless --no-seed, and write
bench/results/<UTC>-<scenario>/report.md and results.json.
"""

import argparse
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from statistics import fmean
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.lib import markdown, runs, seeding
from bench.lib.database import dataset
from bench.lib.load_report import TIERS_NOTE, errors, ok_rps, one_line, tiers_table
from bench.lib.machine import machine_info, package_versions, raise_nofile, tool_versions
from bench.lib.markdown import figure
from bench.lib.paths import folder
from bench.lib.samplers import measured, pgbouncer_totals
from bench.lib.targets import (
    ARCHITECTURES,
    BEFORE,
    NOCACHE,
    NOOBS,
    STACK,
    Architecture,
    Stack,
    Target,
    api_port,
    reconnect_pgbouncer,
    running,
)
from bench.lib.wrk import ensure_wrk, mixed_script, rotate_script, run_wrk, wrk_version

Step = dict[str, Any]
CACHE_COUNTER = "conduit_cache_requests_total"  # app/observability/metrics.py, labels family/result
# Issue 6's targets for the viral article with the cache on; issue 8's for observability.
TARGET_HIT_RATIO = 0.95
TARGET_SQL_PER_REQUEST = 0.05
MAX_OVERHEAD = 0.05
# What the viral article's readers ask for, by share of requests. Every document but the tags
# carries `favorited`/`following` flags: a logged-in reader's are cached per page too.
VIRAL_MIX = {"article": 0.35, "comments": 0.35, "front page": 0.2, "tags": 0.1}
# Readers, not a flood: each connection pauses between requests, as a person reading does.
READER_THINK_MS = (2000, 6000)
IDLE_S = 5  # PgBouncer's statements/s with no load: the stack's background (jobs, probes)
OBSERVED = ("list", "article")  # GET /api/articles?limit=20, GET /api/articles/{slug}
OBSERVABILITY_ENV = ("METRICS_ENABLED", "ACCESS_LOG", "OTEL_EXPORTER_OTLP_ENDPOINT")

# Replaces the mixed script's request(): a weighted draw over fixed paths; its setup, token
# share, status counting and JSON summary stay as they are.
WEIGHTED_LUA = """
request = function()
  local roll = math.random()
  local path = PATHS[#PATHS]
  for i, edge in ipairs(EDGES) do
    if roll < edge then
      path = PATHS[i]
      break
    end
  end
  local headers = {}
  if #tokens > 0 and math.random() < LOGGED_IN then
    headers["Authorization"] = "Token " .. tokens[math.random(#tokens)]
  end
  return wrk.format("GET", path, headers)
end
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.onoff", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("scenario", choices=("cache", "observability"))
    runs.add_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="small data, short steps")
    parser.add_argument(
        "--connections", type=runs.ints, help="cache: 2000 (quick 500); observability: 64"
    )
    parser.add_argument("--duration", type=int, help="measured s per run: 30 / 15 (quick 8 / 5)")
    parser.add_argument("--warmup", type=int, help="wrk warm-up s per target and endpoint (5)")
    parser.add_argument("--rounds", type=int, help="observability: on/off pairs per step (3)")
    parser.add_argument("--pause", type=float, help="seconds of rest between runs (2)")
    parser.add_argument(
        "--logged-in",
        type=float,
        default=runs.LOGGED_IN,
        help="cache: share of requests with a token",
    )
    parser.add_argument("--logins", type=int, help="seeded users logged in for tokens (50)")
    parser.add_argument(
        "--think",
        type=_think,
        default=READER_THINK_MS,
        help="cache: MIN:MAX ms each reader pauses between requests (2000:6000; 0:0 = flood)",
    )
    parser.add_argument(
        "--size", choices=sorted(seeding.PRESETS), help="data set (default; quick: small)"
    )
    parser.add_argument("--no-seed", action="store_true", help="keep the stack's data as it is")
    parser.add_argument(
        "--baseline",
        choices=(NOCACHE.key, BEFORE.key),
        default=NOCACHE.key,
        help="cache: what the stack is compared with (nocache; before: bench/lib/targets.py)",
    )
    parser.add_argument("--wrk-timeout", type=float, default=30, help="wrk's request timeout (s)")
    args = parser.parse_args(argv)
    quick, cache = args.quick, args.scenario == "cache"
    defaults: dict[str, Any] = {
        # Observability: one closed-loop step below nginx's max_conns (STACK_UPSTREAM_MAX_CONNS):
        # beyond it the stack sheds, and the run would time nginx's 503s, not the API.
        "connections": ([500] if quick else [2000]) if cache else [64],
        "duration": (8 if quick else 30) if cache else (5 if quick else 15),
        "warmup": 2 if quick else 5,
        "rounds": 1 if quick else 3,
        "pause": 1 if quick else 2,
        "logins": 20 if quick else 50,
        "size": "small" if quick else "default",
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# ---- what the stack counted: the API's cache counter, PgBouncer's statements ----


def cache_counts(exposition: str) -> dict[tuple[str, str], float]:
    """`conduit_cache_requests_total` by (family, result) from a /metrics text."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == CACHE_COUNTER:
                key = (sample.labels["family"], sample.labels["result"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def cache_delta(
    before: Mapping[tuple[str, str], float], after: Mapping[tuple[str, str], float]
) -> dict[str, Any]:
    """Lookups between two readings, by family and in all; hit ratio = hits / (hits + misses),
    where a hit is from Redis (`hit`) or from the worker's L1 (`local`). `collapsed` are lookups that shared one already in flight for the same key in the same
    process (hit or miss), or, after counting a miss, got the entry another process's lease
    holder rebuilt; `error` are lookups Redis did not answer. Served = (hits + collapsed) /
    all of them: the share answered without building the document (an upper bound: a collapse
    after a miss counts twice)."""
    families: dict[str, dict[str, int]] = {}
    for family, result in sorted(set(before) | set(after)):
        n = round(after.get((family, result), 0.0) - before.get((family, result), 0.0))
        if n:
            families.setdefault(family, {})[result] = n
    total = {
        result: sum(f.get(result, 0) for f in families.values())
        for result in ("local", "hit", "miss", "collapsed", "error")
    }
    hits = total["hit"] + total["local"]
    return {
        "cache_lookups": total,
        "cache_hit_ratio": _ratio(hits, total["miss"]),
        "cache_served_ratio": _ratio(hits + total["collapsed"], total["miss"]),
        "cache_families": {
            name: counts
            | {
                "hit_ratio": _ratio(
                    counts.get("hit", 0) + counts.get("local", 0), counts.get("miss", 0)
                )
            }
            for name, counts in families.items()
        },
    }


def _ratio(hits: int, misses: int) -> float | None:
    return round(hits / (hits + misses), 4) if hits + misses else None


def read_cache_counts(base_url: str) -> dict[tuple[str, str], float] | None:
    """The cache counter of every worker of the uvicorn at `base_url`; None when /metrics is
    off."""
    try:
        response = httpx.get(f"{base_url}/metrics", timeout=10)
    except httpx.HTTPError:
        return None
    return cache_counts(response.text) if response.status_code == 200 else None


def sql_per_request(
    before: Mapping[str, int], after: Mapping[str, int], requests: int
) -> dict[str, Any]:
    queries = after["queries"] - before["queries"]
    transactions = after["transactions"] - before["transactions"]
    return {
        "sql_statements": queries,
        "sql_transactions": transactions,
        "sql_per_request": round(queries / requests, 4) if requests else None,
        "transactions_per_request": round(transactions / requests, 4) if requests else None,
    }


def background_rate(admin_url: str, seconds: float = IDLE_S) -> float:
    """PgBouncer's statements per second with no load on: what the stack runs by itself."""
    before = pgbouncer_totals(admin_url)["queries"]
    time.sleep(seconds)
    return round((pgbouncer_totals(admin_url)["queries"] - before) / seconds, 2)


def _think(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    return int(low), int(high or low)


# ---- wrk scripts ----


def weighted_script(
    paths: Mapping[str, float],
    *,
    tokens: Sequence[str],
    logged_in: float,
    think_ms: tuple[int, int] = (0, 0),
    seed: int = 1,
) -> str:
    """A wrk script drawing each request's path by weight, a share of them with a token."""
    edges, running_total = [], 0.0
    for share in paths.values():
        running_total += share
        edges.append(running_total / sum(paths.values()))
    base = mixed_script(
        slugs=[], users=[], tags=[], tokens=tokens, mix={}, logged_in=logged_in,
        think_ms=think_ms, seed=seed,
    )  # fmt: skip
    listed = ", ".join(json.dumps(path) for path in paths)  # JSON strings are Lua strings
    head = f"\nPATHS = {{{listed}}}\nEDGES = {{{', '.join(f'{e:.6g}' for e in edges)}}}\n"
    return base + head + WEIGHTED_LUA


def viral_paths(slug: str) -> dict[str, str]:
    return {
        "article": f"/api/articles/{slug}",
        "comments": f"/api/articles/{slug}/comments",
        "front page": "/api/articles?limit=20",
        "tags": "/api/tags",
    }


# ---- the runs ----


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack, out: Path) -> None:
        self.args, self.stack, self.out = args, stack, out
        self.wrk = ensure_wrk()
        self.steps: list[Step] = []
        self.data: dict[str, Any] = {}

    def record(self, step: Step) -> None:
        self.steps.append(step)
        endpoint = f"{step['endpoint']:<8} " if "endpoint" in step else ""
        print(f"  {endpoint}{one_line(step)}", flush=True)
        (self.out / "results.json").write_text(json.dumps({"steps": self.steps}, indent=2))

    def wrk_step(
        self,
        target: Target,
        script: Path,
        connections: int,
        name: str,
        around: Callable[[], Step] | None = None,
    ) -> Step:
        """One measured wrk run on `target`; `around()` is read before and after (counters)."""

        def measure() -> Step:
            before = around() if around else {}
            r = run_wrk(
                self.wrk, target.base_url, script, connections=connections,
                threads=2, duration_s=self.args.duration, timeout_s=self.args.wrk_timeout,
            )  # fmt: skip
            time.sleep(0.5)  # the last answers' counters land
            after = around() if around else {}
            (self.out / f"wrk-{name}.txt").write_text(r.output)
            result: Step = {
                "requests": r.requests, "rps": round(r.rps, 1), "p50_ms": r.p50_ms,
                "p90_ms": r.p90_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms,
                "non_2xx": r.non_2xx, "socket_errors": r.socket_errors, "errors": dict(r.errors),
                "duration_s": r.duration_s,
            }  # fmt: skip
            return result | {"before": before, "after": after}

        step = {"phase": "wrk", "architecture": target.architecture.key, "load": connections}
        return step | measured(self.stack, target, measure)

    def warm(self, target: Target, script: Path) -> None:
        if self.args.warmup:
            run_wrk(
                self.wrk, target.base_url, script, connections=64, threads=2,
                duration_s=self.args.warmup, timeout_s=self.args.wrk_timeout,
            )  # fmt: skip

    def cache(self) -> None:
        args = self.args
        paths = viral_paths(self.data["viral"])
        weighted = {paths[name]: share for name, share in VIRAL_MIX.items()}
        tokens = [token for _, token in self.data["tokens"]]
        script = self.out / "viral.lua"
        script.write_text(
            weighted_script(weighted, tokens=tokens, logged_in=args.logged_in, think_ms=args.think)
        )
        admin = self.stack.env["PGBOUNCER_ADMIN_URL"]
        for architecture in (STACK, ARCHITECTURES[args.baseline]):
            print(f"{architecture.label}: {architecture.description}", flush=True)
            reconnect_pgbouncer(self.stack)
            with running(self.stack, architecture) as target:

                def counters(target: Target = target) -> Step:
                    counts = read_cache_counts(f"http://127.0.0.1:{api_port(target)}")
                    listed = [[*key, n] for key, n in (counts or {}).items()]
                    return {"pgbouncer": pgbouncer_totals(admin), "cache": listed}

                self.warm(target, script)
                for connections in args.connections:
                    time.sleep(args.pause)
                    background = {"background_qps": background_rate(admin)}
                    name = f"cache-{architecture.key}-{connections}"
                    step = self.wrk_step(target, script, connections, name, counters)
                    self.record(step | background | cache_figures(step | background))

    def observability(self) -> None:
        args = self.args
        slugs = self.data["slugs"]
        scripts = {"list": self.out / "list.lua", "article": self.out / "article.lua"}
        scripts["list"].write_text(rotate_script(["/api/articles?limit=20"]))
        scripts["article"].write_text(rotate_script([f"/api/articles/{s}" for s in slugs]))
        for architecture in (OBS_ON, OBS_OFF):
            print(f"{architecture.label}: {architecture.description}", flush=True)
        with running(self.stack, OBS_ON) as on, running(self.stack, OBS_OFF) as off:
            for target in (on, off):
                for script in scripts.values():
                    self.warm(target, script)
            for endpoint, script in scripts.items():
                for connections in args.connections:
                    for round_ in range(1, args.rounds + 1):
                        for target in (on, off):
                            time.sleep(args.pause)
                            name = (
                                f"obs-{endpoint}-{connections}-{round_}-{target.architecture.key}"
                            )
                            step = self.wrk_step(target, script, connections, name)
                            self.record(step | {"endpoint": endpoint, "round": round_})


# Observability on and off, both with nginx's micro-cache off: behind it the anonymous reads
# of this scenario never reach the API, and on/off measured nginx (run s3-observability,
# 2026-12-06: 0.00 ms of API CPU per request on both sides).
OBS_ON = Architecture(
    "obson",
    "stack, observability on, micro-cache off",
    "the stack with STACK_MICROCACHE=0 (every read reaches the API)",
    {"STACK_MICROCACHE": "0"},
)
OBS_OFF = replace(
    NOOBS,
    key="obsoff",
    label="stack, observability off, micro-cache off",
    description=f"{NOOBS.description}, and STACK_MICROCACHE=0",
    variant_env={**(NOOBS.variant_env or {}), "STACK_MICROCACHE": "0"},
)


def _observed(step: Step) -> str:
    # "stack" and "noobs" are the keys of runs from before the micro-cache was turned off here.
    return "on" if step["architecture"] in (OBS_ON.key, STACK.key) else "off"


def cache_figures(step: Step) -> Step:
    """Hit ratio and SQL per request of one cache step from its before/after readings. SQL
    is per 2xx answer: a request shed with 503 at admission never reaches cache or database."""
    before, after = step["before"], step["after"]
    answered = step["requests"] - step["non_2xx"]
    figures = sql_per_request(before["pgbouncer"], after["pgbouncer"], answered)
    if answered and "background_qps" in step and "duration_s" in step:
        background = step["background_qps"] * step["duration_s"]
        net = max(figures["sql_statements"] - background, 0) / answered
        figures["sql_per_request_net"] = round(net, 4)
    counts = [{(f, r): n for f, r, n in reading["cache"]} for reading in (before, after)]
    return figures | cache_delta(*counts)


def _figured(steps: Iterable[Step]) -> list[Step]:
    """Steps with their cache figures as this version counts them (so --render recounts)."""
    return [step | cache_figures(step) for step in steps]


def api_observability(stack: Stack) -> dict[str, str]:
    """What the stack's API was started with (its master's environment)."""
    pid = stack.pid("api/api.pid")
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes() if pid else b""
    except OSError:
        raw = b""
    env = dict(x.split("=", 1) for x in raw.decode(errors="replace").split("\0") if "=" in x)
    return {name: env.get(name, "(unset)") for name in OBSERVABILITY_ENV}


# ---- the report ----


def _cpu_ms(step: Step, group: str = "API") -> float | None:
    """CPU milliseconds of `group` per 2xx answer."""
    cores, rps = step.get("cpu", {}).get(group), ok_rps(step)
    return 1000 * cores / rps if cores is not None and rps else None


def _errors(step: Step) -> str:
    count, what = errors(step)
    return f"{count:,}" + (f" ({what})" if what else "")


def _cache_label(architecture: str) -> str:
    return {STACK.key: "on", NOCACHE.key: "off"}.get(architecture, architecture)


def cache_table(steps: Sequence[Step]) -> str:
    header = ["cache", "connections", "req/s", "2xx req/s", "p50 ms", "p99 ms", "max ms"]
    header += ["hit ratio", "hits (L1 + Redis)", "misses", "collapsed", "served", "SQL / 2xx"]
    header += ["net"]
    header += ["API CPU ms / 2xx", "PG backends peak", "PgBouncer waiting peak", "errors"]
    rows = []
    for s in _figured(steps):
        lookups = s["cache_lookups"]
        rows.append([
            _cache_label(s["architecture"]), f"{s['load']:,}",
            f"{s['rps']:,.0f}", f"{ok_rps(s):,.0f}", f"{s['p50_ms']:,.1f}", f"{s['p99_ms']:,.1f}",
            f"{s['max_ms']:,.1f}", figure(s.get("cache_hit_ratio"), ".1%"),
            f"{lookups.get('hit', 0) + lookups.get('local', 0):,}", f"{lookups.get('miss', 0):,}",
            f"{lookups.get('collapsed', 0):,}", figure(s.get("cache_served_ratio"), ".1%"),
            figure(s.get("sql_per_request"), ".3f"),
            figure(s.get("sql_per_request_net"), ".3f"), figure(_cpu_ms(s), ".2f"),
            str(s.get("pg_backends_peak", "n/a")), str(s.get("pgb_cl_waiting_peak", "n/a")),
            _errors(s),
        ])  # fmt: skip
    return markdown.table(header, rows, text_from=len(header) - 1) if rows else ""


def cache_verdicts(steps: Sequence[Step]) -> list[str]:
    lines = []
    for s in (s for s in _figured(steps) if s["architecture"] == STACK.key):
        ratio, sql = s.get("cache_hit_ratio"), s.get("sql_per_request")
        net = s.get("sql_per_request_net", sql)
        hit_ok = ratio is not None and ratio >= TARGET_HIT_RATIO
        sql_ok = net is not None and net <= TARGET_SQL_PER_REQUEST
        lines += [
            f"- {s['load']:,} readers: hit ratio {figure(ratio, '.1%')} (target ≥ "
            f"{TARGET_HIT_RATIO:.0%}: {'met' if hit_ok else 'missed'}); "
            f"{figure(net, '.3f')} SQL statements per 2xx answer "
            f"(target ≤ {TARGET_SQL_PER_REQUEST}: {'met' if sql_ok else 'missed'}): "
            f"{figure(sql, '.3f')} of all statements PgBouncer "
            f"passed, less the stack's own {figure(s.get('background_qps'), '.1f')} per second "
            "measured idle just before (job worker, probes).",
        ]
    return lines


def family_table(steps: Sequence[Step]) -> str:
    rows = []
    for s in _figured(steps):
        for family, counts in s["cache_families"].items():
            rows.append([
                s["architecture"], f"{s['load']:,}", family,
                *(f"{counts.get(r, 0):,}" for r in ("local", "hit", "miss", "collapsed", "error")),
                figure(counts.get("hit_ratio"), ".1%"),
            ])  # fmt: skip
    header = ["architecture", "connections", "family", "L1 hits", "Redis hits", "misses"]
    header += ["collapsed", "errors"]
    table = markdown.table([*header, "hit ratio"], rows, left=3)
    return table if rows else "No cache lookups counted.\n"


def overhead(steps: Sequence[Step]) -> list[Step]:
    """Observability on vs off per endpoint and connection count: means over the rounds, and
    the best run of each side (other people's load on a shared machine only ever lowers
    throughput, so the best runs are the least disturbed; the verdict uses them). Throughput
    is 2xx requests per second (a fast error is not throughput); CPU is the API's per 2xx."""
    groups: dict[tuple[str, int], dict[str, list[Step]]] = {}
    for s in steps:
        groups.setdefault((s["endpoint"], s["load"]), {"on": [], "off": []})[_observed(s)].append(s)
    rows = []
    for (endpoint, load), sides in groups.items():
        if not sides["on"] or not sides["off"]:
            continue
        on, off = (fmean(ok_rps(s) for s in sides[k]) for k in ("on", "off"))
        best_on, best_off = (max(ok_rps(s) for s in sides[k]) for k in ("on", "off"))
        cpu = {k: [c for s in sides[k] if (c := _cpu_ms(s)) is not None] for k in sides}
        ratio = on / off if off else None
        best = best_on / best_off if best_off else None
        rows.append({
            "endpoint": endpoint, "load": load, "rps_on": round(on, 1), "rps_off": round(off, 1),
            "ratio": None if ratio is None else round(ratio, 4),
            "best_ratio": None if best is None else round(best, 4),
            "p99_on_ms": round(fmean(s["p99_ms"] for s in sides["on"]), 1),
            "p99_off_ms": round(fmean(s["p99_ms"] for s in sides["off"]), 1),
            "cpu_ms_on": round(fmean(cpu["on"]), 3) if cpu["on"] else None,
            "cpu_ms_off": round(fmean(cpu["off"]), 3) if cpu["off"] else None,
            "met": best is not None and best >= 1 - MAX_OVERHEAD,
        })  # fmt: skip
    return rows


def overhead_table(rows: Iterable[Step]) -> str:
    header = ["endpoint", "connections", "req/s on", "req/s off", "on / off (means)"]
    header += ["on / off (best runs)", "met (≥ 95 %)", "p99 ms on", "p99 ms off"]
    header += ["API CPU ms/req on", "API CPU ms/req off"]
    lines = [
        [
            r["endpoint"], f"{r['load']:,}", f"{r['rps_on']:,.0f}", f"{r['rps_off']:,.0f}",
            figure(r["ratio"], ".1%"), figure(r.get("best_ratio"), ".1%"),
            "yes" if r["met"] else "no", f"{r['p99_on_ms']:,.1f}", f"{r['p99_off_ms']:,.1f}",
            figure(r["cpu_ms_on"], ".2f"), figure(r["cpu_ms_off"], ".2f"),
        ]
        for r in rows
    ]  # fmt: skip
    return markdown.table(header, lines) if lines else ""


def runs_table(steps: Sequence[Step]) -> str:
    header = ["endpoint", "connections", "round", "observability", "req/s", "p50 ms", "p99 ms"]
    header += ["errors", "API CPU ms/req", "other cores"]
    rows = [
        [
            s["endpoint"], f"{s['load']:,}", str(s["round"]),
            _observed(s), f"{s['rps']:,.0f}",
            f"{s['p50_ms']:,.1f}", f"{s['p99_ms']:,.1f}", _errors(s), figure(_cpu_ms(s), ".2f"),
            figure(s.get("cpu", {}).get("other"), ".2f"),
        ]
        for s in steps
    ]  # fmt: skip
    return markdown.table(header, rows, left=2)


def summary(meta: Mapping[str, Any], steps: Sequence[Step]) -> str:
    """The headline table, also printed at the end of a run."""
    if meta["scenario"] == "cache":
        return cache_table(steps)
    return overhead_table(overhead(steps))


def render(meta: Mapping[str, Any], steps: Sequence[Step]) -> str:
    args, machine = meta["args"], meta["machine"]
    lines = [
        f"# {meta['scenario'].capitalize()} on and off, {meta['started'][:16].replace('T', ' ')} UTC",
        "",
        f"`{meta['command']}` — {meta['minutes']} min measuring, all on one machine "
        f"({machine.get('cores (nproc)', '?')} cores, shared with the load generator and other "
        "users' work: compare on and off within this run only).",
        "",
    ]
    if meta["scenario"] == "cache":
        mix = ", ".join(f"{share:.0%} {name}" for name, share in VIRAL_MIX.items())
        lines += [
            "Issue 6, the viral article: wrk, closed loop, "
            f"{args['duration']} s per step after a {args['warmup']} s warm-up at 64 "
            f"connections; {mix} (`{meta['viral']}`, the most favorited article); "
            f"{args['logged_in']:.0%} of requests carry one of {len(meta.get('tokens', []))} "
            "seeded users' tokens. Cache on: the stack; off: the `nocache` baseline beside it "
            "(CACHE_ENABLED=false), or `before` (`--baseline before`: Redis the only cache "
            "tier, the count rule), same data.",
            "",
            summary(meta, steps),
            "Hit ratio: hits / (hits + misses) of the API's `conduit_cache_requests_total` "
            "(/metrics before and after the step, all workers); `collapsed`: lookups that "
            "shared one in flight for the same key (or, after a miss, took the entry another "
            "process rebuilt); served: (hits + collapsed) / all lookups. Redis's own keyspace "
            "hit ratio (in results.json) is no proxy here: every lookup also reads version keys "
            "that do not exist until a write bumps them. SQL / 2xx: PgBouncer `SHOW STATS` "
            "statements of the `conduit` database over the step / 2xx answers (a request shed "
            "with 503 at admission reaches neither cache nor database; the job worker's "
            "periodic statements are counted too, a handful per step). API CPU: cores used by "
            "the API workers / 2xx req/s. Latency percentiles include the fast 503s.",
            "",
        ]
        if table := tiers_table(steps, "wrk"):
            lines += [TIERS_NOTE, "", table]
        lines += [
            "## Targets (issue 6, cache on)",
            "",
            *cache_verdicts(steps),
            "",
            "## Lookups by family",
            "",
            family_table(steps),
        ]
    else:
        lines += [
            "Issue 8: observability on (the stack as started: "
            + ", ".join(f"{k}={v}" for k, v in meta["observability_on"].items())
            + "; Prometheus scrapes its /metrics every 5 s) against off (the `noobs` baseline "
            "beside it: METRICS_ENABLED=false ACCESS_LOG=false, no OTLP endpoint), cache on in "
            f"both. wrk, closed loop, {args['duration']} s per run, on and off alternating "
            f"{args['rounds']} times per endpoint and connection count, 2xx req/s compared. "
            "`list`: `GET /api/articles?limit=20`; `article`: `GET /api/articles/{slug}` over "
            "500 slugs.",
            "",
            summary(meta, steps),
            f"Target: at most {MAX_OVERHEAD:.0%} fewer requests per second with it on, judged "
            "on each side's best run (other people's load only ever lowers throughput; the "
            "`other cores` column below shows it); API CPU per request is the steadier "
            "figure on a shared machine. Runs, in the order they ran:",
            "",
            runs_table(steps),
            "Still on in the baseline (not switchable): the request-id middleware (contextvar, "
            "`X-Request-ID` header), `conduit_cache_requests_total` (one multiprocess counter "
            "increment per cache lookup), nginx's buffered access log, JSON logging of "
            "warnings and errors.",
            "",
        ]
    data, facts = meta["dataset"], {**machine, **meta["packages"]}
    lines += [
        "## Data set",
        "",
        markdown.counts(data),
        "## Machine and versions",
        "",
        markdown.facts(facts),
        "Raw figures: `results.json`; wrk output `wrk-*.txt`; the Lua scripts `*.lua`.",
        "",
    ]
    return "\n".join(lines)


def write_report(out: Path) -> str:
    results = json.loads((out / "results.json").read_text())
    steps = results.pop("steps")
    (out / "report.md").write_text(render(results, steps))
    return summary(results, steps)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.render:
        print(write_report(args.render))
        return Path(args.render)
    started = datetime.now(UTC)
    out = folder(args.out, started, f"-{args.scenario}")
    stack = Stack.load(args.stack_dir.resolve())
    nofile = raise_nofile()
    bench = Bench(args, stack, out)
    info = machine_info() | {"RLIMIT_NOFILE (load generator)": str(nofile)}
    size = None if args.no_seed else args.size
    bench.data = runs.prepare(stack, size=size, logins=args.logins)
    counts, pg = dataset(stack.env["DIRECT_DATABASE_URL"])
    info |= pg | tool_versions() | {"wrk": wrk_version(bench.wrk)}
    wall = time.monotonic()
    try:
        if args.scenario == "cache":
            bench.cache()
        else:
            bench.observability()
    finally:
        meta = runs.record("bench.onoff", argv, args, started) | {
            "scenario": args.scenario,
            "minutes": round((time.monotonic() - wall) / 60, 1),
            "machine": info,
            "packages": package_versions(),
            "dataset": counts,
            "viral": bench.data["viral"],
            "tokens": [email for email, _ in bench.data["tokens"]],
            "observability_on": api_observability(stack),
        }
        (out / "results.json").write_text(json.dumps(meta | {"steps": bench.steps}, indent=2))
    print(write_report(out))
    print(f"report: {out / 'report.md'}", flush=True)
    return out


if __name__ == "__main__":
    main()
