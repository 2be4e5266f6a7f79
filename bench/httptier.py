"""Issue 19: the ceiling of the HTTP tier, in one run against a running stack (`make stack`).

The viral article, cached, read by wrk at the same connections through:

    static         nginx serving a file: the article's body, the same headers
    anonymous      the micro-cache (a HIT), through the same nginx as `static`
    anonymous, stack's nginx / logged in   the stack as it runs (logged in: past the
                   micro-cache, to the API's L1 and the viewer's cached flags)
    logged in, before / anonymous, before  `BEFORE` (bench/lib/targets.py): Redis the only
                   cache tier and the count rule, started beside the stack

`static` and `anonymous` run on an nginx of the benchmark's own: the stack's rendered
nginx.conf, its paths and ports moved to a folder of its own, plus one server block that
serves the file (the product has no static route). It proxies to the stack's API.
Rounds alternate the order (ABBA). Targets: anonymous ≥ 50 % of static; logged in ≥ 5 times before.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.lib import markdown, runs
from bench.lib.database import dataset
from bench.lib.machine import (
    CpuShare,
    machine_info,
    package_versions,
    raise_nofile,
    tool_versions,
)
from bench.lib.markdown import figure
from bench.lib.paths import folder
from bench.lib.samplers import pgbouncer_totals
from bench.lib.targets import BEFORE, STACK, Stack, Target, api_port, free_ports, running
from bench.lib.tiers import Tiers
from bench.lib.wrk import ensure_wrk, plain_script, run_wrk, tokens_script, wrk_version

Step = dict[str, Any]
GROUPS = ("nginx", "API", "Redis", "Redis queue", "PgBouncer", "PostgreSQL", "wrk", "other")
# The benchmark's own server block: the file whatever the path, with the headers a micro-cache
# hit carries (nginx adds its own ETag, and Last-Modified and Accept-Ranges, to a file).
STATIC_SERVER = """
    server {{
        listen {host}:{port} reuseport backlog=4096;
        location / {{
            root {root};
            try_files /article.json =404;
            types {{ }}
            default_type application/json;
            add_header Cache-Control "{cache_control}";
            add_header Vary Authorization;
            add_header Vary Origin;
            add_header X-Cache HIT always;
            add_header X-Request-ID $conduit_request_id always;
        }}
    }}
"""


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    where: str  # "own" (the benchmark's nginx), "static" (its file), "stack" or "before"
    logged_in: bool


KINDS = (
    Kind("static", "static file (own nginx)", "static", False),
    Kind("anonymous", "anonymous, micro-cache (own nginx)", "own", False),
    Kind("anonymous-stack", "anonymous, micro-cache (stack's nginx)", "stack", False),
    Kind("logged-in", "logged in (stack)", "stack", True),
    Kind("logged-in-before", "logged in (before)", "before", True),
    Kind("anonymous-before", "anonymous (before)", "before", False),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.httptier", description=__doc__)
    runs.add_arguments(parser)
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per step (10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds per kind, first (3)")
    parser.add_argument("--rounds", type=int, default=2, help="every kind once per round (2)")
    parser.add_argument("--logins", type=int, default=50, help="tokens of the logged-in reads")
    parser.add_argument("--wrk-timeout", type=float, default=10.0)
    return parser.parse_args(argv)


def header_bytes(response: httpx.Response) -> int:
    """The header block's size on the wire (name: value CRLF each, status line not counted)."""
    return sum(len(k) + len(v) + 4 for k, v in response.headers.raw)


@contextmanager
def own_nginx(stack: Stack, body: bytes, cache_control: str, out: Path) -> Iterator[dict[str, Any]]:
    """The stack's nginx.conf in a folder of its own plus the static server block, running;
    yields its two base URLs, its pid and its access log."""
    source = stack.dir / "nginx"
    prefix = Path(tempfile.mkdtemp(prefix="conduit-httptier-"))
    prefix.chmod(0o755)  # nginx's workers (nobody) read the file and write the cache
    try:
        conf = (source / "nginx.conf").read_text().replace(str(source), str(prefix))
        listens = re.findall(r"listen [^\s:]+:(\d+)( ssl)?", conf)
        ports = sorted({port for port, _ in listens})
        *moved, static_port = free_ports(len(ports) + 1)
        mapping = dict(zip(ports, map(str, moved), strict=True))
        http = next(mapping[port] for port, tls in listens if not tls)
        conf = re.sub(r"(listen [^\s:]+:)(\d+)", lambda m: m.group(1) + mapping[m.group(2)], conf)
        host = re.search(r"listen ([^\s:]+):", conf)
        server = STATIC_SERVER.format(
            host=host.group(1) if host else "127.0.0.1",
            port=static_port,
            root=prefix / "static",
            cache_control=cache_control,
        )
        conf = conf.rstrip().removesuffix("}") + server + "}\n"
        for sub in ("tmp", "static", "cache"):
            (prefix / sub).mkdir()
        shutil.copytree(source / "tls", prefix / "tls")
        (prefix / "static" / "article.json").write_bytes(body)
        (prefix / "nginx.conf").write_text(conf)
        (out / "nginx-own.conf").write_text(conf)
        command = ["nginx", "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf")]
        command += ["-e", str(prefix / "error.log")]
        subprocess.run([*command, "-t", "-q"], check=True, timeout=30)  # noqa: S603
        subprocess.run(command, check=True, timeout=30)  # noqa: S603
        pid = int((prefix / "nginx.pid").read_text())
        try:
            yield {
                "base": f"http://127.0.0.1:{http}",
                "static": f"http://127.0.0.1:{static_port}",
                "pid": pid,
                "access_log": prefix / "access.log",
            }
        finally:
            subprocess.run([*command, "-s", "quit"], check=False, timeout=30)  # noqa: S603
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack, out: Path) -> None:
        self.args, self.stack, self.out = args, stack, out
        self.wrk = ensure_wrk()
        self.steps: list[Step] = []
        self.data: dict[str, Any] = {}
        self.shape: dict[str, Any] = {}

    def record(self, step: Step) -> None:
        self.steps.append(step)
        print(f"  {step['kind']:<17} {one_line(step)}", flush=True)
        (self.out / "results.json").write_text(json.dumps({"steps": self.steps}, indent=2))

    def run(self) -> None:
        args = self.args
        slug = self.data["viral"]
        path = f"/api/articles/{slug}"
        anonymous = httpx.get(self.stack.api_url.removesuffix("/api") + path, timeout=10)
        anonymous.raise_for_status()
        body = anonymous.content
        tokens = [token for _, token in self.data["tokens"]]
        scripts = {False: self.out / "anonymous.lua", True: self.out / "logged-in.lua"}
        scripts[False].write_text(plain_script())
        scripts[True].write_text(tokens_script(tokens))
        print(f"{BEFORE.label}: {BEFORE.description}", flush=True)
        with (
            own_nginx(self.stack, body, anonymous.headers["cache-control"], self.out) as own,
            running(self.stack, STACK) as stack,
            running(self.stack, BEFORE) as before,
        ):
            data_roots = {k: v for k, v in stack.roots.items() if k not in ("nginx", "API")}
            own_target = Target(
                STACK,
                own["base"],
                {"nginx": lambda: own["pid"], "API": stack.roots["API"]} | data_roots,
                own["access_log"],
            )
            static_target = Target(STACK, own["static"], own_target.roots, own["access_log"])
            targets = {"own": own_target, "static": static_target, "stack": stack}
            targets["before"] = before
            self.shape = self.headers_shape(targets, path, tokens[0])
            for kind in KINDS:  # fill every tier and nginx's copy
                self.wrk_run(targets[kind.where], path, scripts[kind.logged_in], args.warmup)
            for round_ in range(1, args.rounds + 1):
                order = KINDS if round_ % 2 else tuple(reversed(KINDS))
                for kind in order:
                    step = self.step(targets[kind.where], kind, path, scripts[kind.logged_in])
                    self.record(step | {"round": round_})

    def headers_shape(self, targets: Mapping[str, Target], path: str, token: str) -> dict[str, Any]:
        """What each kind's answer looks like on the wire (second request: a warm copy)."""
        shape = {}
        for kind in KINDS:
            headers = {"Accept-Encoding": "identity"}  # as wrk asks: no gzip
            if kind.logged_in:
                headers["Authorization"] = f"Token {token}"
            url = targets[kind.where].base_url + path
            for _ in range(2):
                response = httpx.get(url, headers=headers, timeout=10)
            shape[kind.key] = {
                "status": response.status_code,
                "body_bytes": len(response.content),
                "header_bytes": header_bytes(response),
                "headers": sorted({k.lower() for k in response.headers}),
            }
        return shape

    def wrk_run(self, target: Target, path: str, script: Path, seconds: int) -> Any:
        if seconds <= 0:
            return None
        return run_wrk(
            self.wrk, target.base_url + path, script, connections=self.args.connections,
            threads=self.args.threads, duration_s=seconds, timeout_s=self.args.wrk_timeout,
        )  # fmt: skip

    def step(self, target: Target, kind: Kind, path: str, script: Path) -> Step:
        try:
            metrics_url: str | None = f"http://127.0.0.1:{api_port(target)}/metrics"
        except ValueError:
            metrics_url = None
        tiers = Tiers(target.access_log, metrics_url)
        cpu = CpuShare(target.roots, own="wrk")
        admin = self.stack.env["PGBOUNCER_ADMIN_URL"]
        tiers.start()
        statements = pgbouncer_totals(admin)
        cpu.start()
        r = self.wrk_run(target, path, script, self.args.duration)
        shares = cpu.stop()
        statements_after = pgbouncer_totals(admin)
        counted = tiers.stop()  # waits for nginx's log
        (self.out / f"wrk-{kind.key}-{len(self.steps)}.txt").write_text(r.output)
        cores = {k: round(v, 3) for k, v in shares.items()}
        return {
            "kind": kind.key, "architecture": target.architecture.key,
            "requests": r.requests, "duration_s": r.duration_s, "rps": round(r.rps, 1),
            "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms,
            "non_2xx": r.non_2xx, "socket_errors": r.socket_errors, "errors": dict(r.errors),
            "cpu": cores,
            "sql": statements_after["queries"] - statements["queries"],
        } | counted  # fmt: skip


def ok_rps(step: Mapping[str, Any]) -> float:
    good = step["requests"] - step["non_2xx"]
    return good / step["duration_s"] if step["duration_s"] else 0.0


def cpu_ms(step: Mapping[str, Any], group: str) -> float | None:
    """Milliseconds of CPU of `group` per request of the step."""
    cores: float | None = step["cpu"].get(group)
    if cores is None or not step["requests"]:
        return None
    return 1000 * cores * float(step["duration_s"]) / int(step["requests"])


def one_line(step: Mapping[str, Any]) -> str:
    cpu = " ".join(f"{g} {figure(cpu_ms(step, g), '.3f')}" for g in GROUPS if g in step["cpu"])
    return (
        f"{ok_rps(step):,.0f} 2xx/s, p99 {step['p99_ms']:.1f} ms, non-2xx {step['non_2xx']}, "
        f"socket errors {step['socket_errors']}; CPU ms/req: {cpu}"
    )


def means(steps: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per kind: 2xx/s and CPU ms per request of each group, averaged over its rounds."""
    result: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        mine = [s for s in steps if s["kind"] == kind.key]
        if not mine:
            continue
        row = {"rps": sum(ok_rps(s) for s in mine) / len(mine)}
        for group in GROUPS:
            values = [v for s in mine if (v := cpu_ms(s, group)) is not None]
            if values:
                row[group] = sum(values) / len(values)
        result[kind.key] = row
    return result


def verdicts(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    averaged = means(steps)
    lines = []
    pairs = (
        ("anonymous", "static", 0.5, "anonymous cached article ≥ 50 % of nginx's static file"),
        ("logged-in", "logged-in-before", 5.0, "logged-in cached article ≥ 5 times before"),
    )
    for a, b, target, text in pairs:
        if a in averaged and b in averaged and averaged[b]["rps"]:
            ratio = averaged[a]["rps"] / averaged[b]["rps"]
            met = "met" if ratio >= target else "missed"
            per_round = []
            for round_ in sorted({s["round"] for s in steps}):
                x = [ok_rps(s) for s in steps if s["kind"] == a and s["round"] == round_]
                y = [ok_rps(s) for s in steps if s["kind"] == b and s["round"] == round_]
                if x and y and y[0]:
                    per_round.append(f"{x[0] / y[0]:.2f}")
            lines.append(f"- {text}: {ratio:.2f} (rounds: {', '.join(per_round)}): **{met}**")
    return lines


def label(key: str) -> str:
    return next(k.label for k in KINDS if k.key == key)


def render(meta: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> str:
    args = meta["args"]
    header = ["kind", "round", "2xx/s", "p50 ms", "p99 ms", "non-2xx", "socket errors"]
    header += [f"{g} ms/req" for g in GROUPS] + ["SQL"]
    rows = [
        [label(s["kind"]), str(s["round"]), f"{ok_rps(s):,.0f}", f"{s['p50_ms']:.2f}",
         f"{s['p99_ms']:.2f}", f"{s['non_2xx']:,}", f"{s['socket_errors']:,}"]
        + [figure(cpu_ms(s, g), ".3f", "-") for g in GROUPS]
        + [f"{s['sql']:,}"]
        for s in steps
    ]  # fmt: skip
    averaged = means(steps)
    mean_rows = [
        [label(k), f"{row['rps']:,.0f}"] + [figure(row.get(g), ".3f", "-") for g in GROUPS]
        for k, row in averaged.items()
    ]
    shape_rows = [
        [label(k), str(v["status"]), f"{v['body_bytes']:,}", f"{v['header_bytes']:,}",
         ", ".join(v["headers"])]
        for k, v in meta.get("shape", {}).items()
    ]  # fmt: skip
    cache_rows = [
        [label(s["kind"]), str(s["round"]), ", ".join(f"{k} {n:,}" for k, n in sorted(s.get("nginx_cache", {}).items())),
         ", ".join(f"{k} {n:,}" for k, n in s.get("api_tiers", {}).items() if n)]
        for s in steps
    ]  # fmt: skip
    lines = [
        "# The HTTP tier's ceiling (issue 19)",
        "",
        f"`{meta['command']}`, started {meta['started']}, {meta['minutes']} min. wrk at "
        f"{args['connections']} connections, {args['threads']} threads, {args['duration']} s per "
        f"step after a {args['warmup']} s warm-up per kind; {args['rounds']} rounds, the order "
        "reversed every other round. The viral article: "
        f"`{meta['viral']}`. Logged in: {len(meta['tokens'])} seeded users' tokens, one drawn "
        "per request.",
        "",
        *verdicts(steps),
        "",
        "Means over the rounds (CPU in milliseconds per request, by process group; `other`: "
        "everything else on the machine, other people's work included):",
        "",
        markdown.table(["kind", "2xx/s", *(f"{g}" for g in GROUPS)], mean_rows),
        "Every step:",
        "",
        markdown.table(header, rows, text_from=len(header) + 1),
        "What each kind answered (second request, warm):",
        "",
        markdown.table(["kind", "status", "body bytes", "header bytes", "headers"], shape_rows, text_from=4),
        "nginx's `cache=` in its access log, and the API's tier counter, per step:",
        "",
        markdown.table(["kind", "round", "nginx cache", "API tiers"], cache_rows, text_from=2),
        "## Machine and versions",
        "",
        markdown.facts(meta["machine"] | meta["packages"]),
        "Raw figures: `results.json`; wrk output `wrk-*.txt`; the benchmark's nginx.conf "
        "`nginx-own.conf`.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def write_report(out: Path) -> str:
    results = json.loads((out / "results.json").read_text())
    steps = results.pop("steps")
    (out / "report.md").write_text(render(results, steps))
    return "\n".join(verdicts(steps))


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.render:
        print(write_report(args.render))
        return Path(args.render)
    started = datetime.now(UTC)
    out = folder(args.out, started, "-httptier")
    stack = Stack.load(args.stack_dir.resolve())
    nofile = raise_nofile()
    bench = Bench(args, stack, out)
    info = machine_info() | {"RLIMIT_NOFILE (load generator)": str(nofile)}
    bench.data = runs.prepare(stack, size=None, logins=args.logins)
    _, pg = dataset(stack.env["DIRECT_DATABASE_URL"])
    info |= pg | tool_versions() | {"wrk": wrk_version(bench.wrk)}
    wall = time.monotonic()
    try:
        bench.run()
    finally:
        meta = runs.record("bench.httptier", argv, args, started) | {
            "minutes": round((time.monotonic() - wall) / 60, 1),
            "machine": info,
            "packages": package_versions(),
            "viral": bench.data["viral"],
            "tokens": [email for email, _ in bench.data["tokens"]],
            "shape": bench.shape,
        }
        (out / "results.json").write_text(json.dumps(meta | {"steps": bench.steps}, indent=2))
    print(write_report(out))
    print(f"report: {out / 'report.md'}", flush=True)
    return out


if __name__ == "__main__":
    main()
