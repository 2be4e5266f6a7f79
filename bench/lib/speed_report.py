"""The Markdown report of one `python -m bench.api_speed` run (api-speed.md)."""

import argparse
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from bench.lib import markdown
from bench.lib.wrk import WrkResult

# Issue 17's targets: every uncached read at >= 75 % of its floor's req/s, /livez at >= 60 %
# of the bare callable's, a cached read at <= 0.25 ms of API CPU per request.
RATIO_TARGET = 0.75
LIVEZ_RATIO_TARGET = 0.60
CACHED_CPU_TARGET_MS = 0.25
WORKERS = "API workers"  # the CPU group of the server under test (the API, or the floor)
GROUPS = (WORKERS, "PostgreSQL", "Redis", "wrk + this script")  # as the table shows them


@dataclass(frozen=True)
class Endpoint:
    key: str  # names its Lua script and its profile
    path: str  # `{slug}`, `{username}`: each request takes the next of the sampled ones
    auth: bool = False  # as user1, `Authorization: Token ...`
    cached: bool = False  # the read cache on (Redis); its floor answers from memory

    @property
    def name(self) -> str:
        how = ["logged in"] * self.auth + ["cached"] * self.cached
        return f"GET {self.path}" + (f" ({', '.join(how)})" if how else "")


@dataclass(frozen=True)
class Measurement:
    endpoint: Endpoint
    server: str  # uvicorn, granian
    floor: bool  # bench.bare_app, not the API
    result: WrkResult
    cpu: Mapping[str, float]  # cores busy, by process group
    profile: str | None = None  # py-spy summary, Markdown


def pooled(runs: Sequence[Measurement]) -> Measurement:
    """Several runs of one endpoint on one side (the ABBA order measures each twice) as one:
    requests, errors and CPU seconds added up, latency as the worst run's."""
    if len(runs) == 1:
        return runs[0]
    results = [m.result for m in runs]
    seconds = sum(r.duration_s for r in results)
    worst = max(results, key=lambda r: r.p99_ms)
    result = replace(
        worst,
        requests=sum(r.requests for r in results),
        duration_s=seconds,
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
    )
    groups = {g for m in runs for g in m.cpu}
    cpu = {g: sum(m.cpu.get(g, 0.0) * m.result.duration_s for m in runs) / seconds for g in groups}
    return replace(runs[0], result=result, cpu=cpu)


def cpu_ms(m: Measurement, group: str) -> float | None:
    """CPU milliseconds per request of one process group; None when it was not watched."""
    if group not in m.cpu or not m.result.rps:
        return None
    return 1000 * m.cpu[group] / m.result.rps


def target(endpoint: Endpoint) -> str:
    if endpoint.cached:
        return f"≤ {CACHED_CPU_TARGET_MS} ms"
    ratio = LIVEZ_RATIO_TARGET if endpoint.path == "/livez" else RATIO_TARGET
    return f"≥ {ratio:.0%} of floor"


def met(api: Measurement, floor: Measurement | None) -> str:
    """Whether the API meets its issue 17 target; `-` when a ratio has no floor to go by."""
    if any(m.result.non_2xx or m.result.socket_errors for m in (api, floor) if m):
        return "no (errors)"
    if api.endpoint.cached:
        ms = cpu_ms(api, WORKERS)
        return "-" if ms is None else ("yes" if ms <= CACHED_CPU_TARGET_MS else "no")
    if floor is None or not floor.result.rps:
        return "-"
    ratio = LIVEZ_RATIO_TARGET if api.endpoint.path == "/livez" else RATIO_TARGET
    return "yes" if api.result.rps / floor.result.rps >= ratio else "no"


def one_line(m: Measurement) -> str:
    r = m.result
    side = "floor" if m.floor else "API"
    ms = cpu_ms(m, WORKERS)
    return (
        f"{m.server:<8} {side:<5} {m.endpoint.name:<48} {r.rps:8,.0f} req/s  "
        f"{WORKERS} {'n/a' if ms is None else f'{ms:.2f}'} ms/req  "
        f"p50 {r.p50_ms:.1f} ms  p99 {r.p99_ms:.1f} ms  "
        f"non-2xx {r.non_2xx}  errors {r.socket_errors}"
    )


def summary(results: Sequence[Measurement]) -> str:
    """The one table: each endpoint on each server, the API against its floor, and CPU
    milliseconds per request by process group (API / floor)."""
    servers = list(dict.fromkeys(m.server for m in results))
    groups = [g for g in GROUPS if any(g in m.cpu for m in results)]
    runs: dict[tuple[Endpoint, str, bool], list[Measurement]] = {}
    for m in results:
        runs.setdefault((m.endpoint, m.server, m.floor), []).append(m)
    found = {key: pooled(measured) for key, measured in runs.items()}
    header = ["server"] * (len(servers) > 1) + ["endpoint", "API req/s", "floor req/s"]
    header += ["API / floor", "target", "met", *(f"{g} ms/req" for g in groups)]
    rows = []
    for endpoint in dict.fromkeys(m.endpoint for m in results):
        for server in servers:
            api, floor = found.get((endpoint, server, False)), found.get((endpoint, server, True))
            if api is None:
                continue
            ratio = (
                f"{api.result.rps / floor.result.rps:.0%}" if floor and floor.result.rps else "-"
            )
            row = [server] * (len(servers) > 1) + [f"`{endpoint.name}`", f"{api.result.rps:,.0f}"]
            row += [f"{floor.result.rps:,.0f}" if floor else "-", ratio, target(endpoint)]
            row += [met(api, floor), *(_cpu_cell(api, floor, g) for g in groups)]
            rows.append(row)
    return markdown.table(header, rows, left=1 + (len(servers) > 1))


def _cpu_cell(api: Measurement, floor: Measurement | None, group: str) -> str:
    cells = [cpu_ms(m, group) for m in (api, floor) if m is not None]
    if all(ms is None for ms in cells):
        return "-"
    return " / ".join("-" if ms is None else f"{ms:.2f}" for ms in cells)


def runs(results: Sequence[Measurement]) -> str:
    """Every wrk run: latency, errors and the machine's other load (noise)."""
    header = ["server", "side", "endpoint", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    header += ["requests", "non-2xx", "socket errors", "other cores"]
    rows = [
        [
            m.server,
            "floor" if m.floor else "API",
            f"`{m.endpoint.name}`",
            f"{m.result.rps:,.0f}",
            *(f"{ms:.1f}" for ms in (m.result.p50_ms, m.result.p90_ms, m.result.p99_ms)),
            f"{m.result.max_ms:.1f}",
            f"{m.result.requests:,}",
            str(m.result.non_2xx),
            str(m.result.socket_errors),
            f"{m.cpu.get('other', 0.0):.2f}",
        ]
        for m in results
    ]
    return markdown.table(header, rows, left=3)


def render(
    args: argparse.Namespace,
    started: datetime,
    machine: Mapping[str, str],
    packages: Mapping[str, str],
    counts: Mapping[str, int],
    results: Sequence[Measurement],
    layers: str | None = None,
) -> str:
    servers = " and ".join(dict.fromkeys(m.server for m in results))
    lines = [
        f"# API speed, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.workers} workers ({servers}; uvloop, HTTP/1.1, uvicorn with httptools) straight "
        f"to PostgreSQL, wrk with {args.connections} connections and {args.threads} threads, "
        f"{args.duration} s per endpoint after {args.warmup} s of warm-up"
        + (f", in each of {args.rounds} rounds" if getattr(args, "rounds", 1) > 1 else "")
        + ", all on one machine. "
        "No cache, except where marked `cached`: then the API's read cache is on, in a Redis of "
        "the run's own. The floor is bench/bare_app.py on the same server: the API's own "
        "statements on psycopg and nothing else (for a cached read: the same bytes from "
        "memory). CPU cells: API / floor. Issue 17's targets: uncached reads at "
        f"{RATIO_TARGET:.0%} of their floor or more, `/livez` at {LIVEZ_RATIO_TARGET:.0%}, "
        f"cached reads at {CACHED_CPU_TARGET_MS} ms of API CPU per request or less.",
        "",
        summary(results),
        f"Each run (`other cores`: CPU of everything else on the machine, i.e. other users' "
        f"noise, of {machine.get('cores (nproc)', '?')} cores):",
        "",
        runs(results),
        "## Data set",
        "",
        markdown.counts(counts),
        "## Machine and versions",
        "",
        markdown.facts({**machine, **packages}),
        "Command: `"
        + shlex.join([sys.executable.rsplit("/", 1)[-1], "-m", "bench.api_speed"])
        + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
        + "`",
        "",
        "## wrk output",
        "",
    ]
    for m in results:
        side = "floor" if m.floor else "API"
        lines += [f"### {m.server}, {side}: `{m.endpoint.name}`", "", "```", m.result.output]
        lines += ["```", ""]
    if layers:
        lines += ["## CPU per layer, one request at a time (bench.anatomy)", "", layers, ""]
    profiled = [m for m in results if m.profile]
    if profiled:
        lines += ["## Where the workers' time goes (py-spy, one extra run each)", ""]
        lines += [PROFILE_NOTE, ""]
    for m in profiled:
        side = "floor" if m.floor else "API"
        lines += [f"### {m.server}, {side}: `{m.endpoint.name}`", "", m.profile or "", ""]
    return "\n".join(lines)


PROFILE_NOTE = (
    "py-spy samples a worker whenever it is not waiting in epoll, so on a saturated machine a "
    "worker that is runnable but preempted (typically right after a send() woke PostgreSQL or "
    "wrk) counts as busy in the frame it stopped in: psycopg's send lines and uvicorn's "
    "transport writes look costlier than their CPU. The ms column spreads the workers' "
    "measured CPU per request over the samples, which assumes that waiting is spread evenly."
)
