"""The Markdown report of one `python -m bench.api_speed` run (api-speed.md)."""

import argparse
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bench.lib import markdown
from bench.lib.wrk import WrkResult


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str  # the one wrk is pointed at; a rotating script overrides it
    script: str  # file name of its Lua script in the results folder
    target_rps: int


@dataclass(frozen=True)
class Measurement:
    endpoint: Endpoint
    result: WrkResult
    cpu: Mapping[str, float]  # cores busy, by process group
    profile: str | None = None  # py-spy summary, Markdown


def verdict(result: WrkResult, target: int) -> str:
    if not target:
        return "-"
    if result.non_2xx or result.socket_errors:
        return "no (errors)"
    return "yes" if result.rps >= target else f"no ({result.rps / target:.0%})"


def one_line(name: str, result: WrkResult, target: int) -> str:
    return (
        f"{name:<40} {result.rps:8,.0f} req/s (target {target or '-'}: {verdict(result, target)})  "
        f"p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  "
        f"non-2xx {result.non_2xx}  errors {result.socket_errors}"
    )


def _ms(m: Measurement, group: str) -> str:
    """CPU milliseconds per request of one process group; n/a when it was not watched."""
    if group not in m.cpu or not m.result.rps:
        return "n/a"
    return f"{1000 * m.cpu[group] / m.result.rps:.2f}"


def render(
    args: argparse.Namespace,
    started: datetime,
    machine: Mapping[str, str],
    packages: Mapping[str, str],
    counts: Mapping[str, int],
    results: Sequence[Measurement],
    layers: str | None = None,
) -> str:
    speed = [
        [
            f"`{e.name}`",
            f"{r.rps:,.0f}",
            f"{e.target_rps:,}" if e.target_rps else "-",
            verdict(r, e.target_rps),
            f"{r.p50_ms:.1f}",
            f"{r.p90_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.max_ms:.1f}",
            f"{r.requests:,}",
            str(r.non_2xx),
            str(r.socket_errors),
        ]
        for e, r in ((m.endpoint, m.result) for m in results)
    ]
    groups = list(results[0].cpu) if results else []
    cpu = [[f"`{m.endpoint.name}`", *(f"{m.cpu[g]:.2f}" for g in groups)] for m in results]
    per_request = [
        [f"`{m.endpoint.name}`", *(_ms(m, group) for group in ("API workers", "PostgreSQL"))]
        for m in results
    ]
    header = ["endpoint", "req/s", "target", "met", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    header += ["requests", "non-2xx", "socket errors"]
    lines = [
        f"# API speed, {started:%Y-%m-%d %H:%M} UTC",
        "",
        "Issue 2: no cache, "
        f"{args.workers} uvicorn workers (uvloop, httptools) straight to PostgreSQL, "
        f"wrk with {args.connections} connections and {args.threads} threads, "
        f"{args.duration} s per endpoint after {args.warmup} s of warm-up, all on one machine.",
        "",
        markdown.table(header, speed),
        f"CPU while measuring, in cores busy (of {machine.get('cores (nproc)', '?')}; "
        "`other` is everything else on the machine, i.e. noise from other users):",
        "",
        markdown.table(["endpoint", *groups], cpu),
        "CPU milliseconds per request:",
        "",
        markdown.table(["endpoint", "API workers", "PostgreSQL"], per_request),
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
        lines += [f"### `{m.endpoint.name}`", "", "```", m.result.output, "```", ""]
    if layers:
        lines += ["## CPU per layer, one request at a time (bench.anatomy)", "", layers, ""]
    profiled = [m for m in results if m.profile]
    if profiled:
        lines += ["## Where the API workers' time goes (py-spy, one extra run each)", ""]
        lines += [PROFILE_NOTE, ""]
    for m in profiled:
        lines += [f"### `{m.endpoint.name}`", "", m.profile or "", ""]
    return "\n".join(lines)


PROFILE_NOTE = (
    "py-spy samples a worker whenever it is not waiting in epoll, so on a saturated machine a "
    "worker that is runnable but preempted (typically right after a send() woke PostgreSQL or "
    "wrk) counts as busy in the frame it stopped in: psycopg's send lines and uvicorn's "
    "transport writes look costlier than their CPU. The ms column spreads the workers' "
    "measured CPU per request over the samples, which assumes that waiting is spread evenly."
)
