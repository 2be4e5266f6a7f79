"""Issue 20's size benchmark: the same reads on 2,000 and on 1,000,000 articles, in one run,
against one PostgreSQL server, with wrk at 64 connections on 2 uvicorn workers (no cache
unless said, straight to PostgreSQL, as bench.api_speed does).

    .venv/bin/python -m bench.sizes              # seeds both databases on its first run
    .venv/bin/python -m bench.sizes --no-seed    # reuses them (seeding 1M takes a while)

Starts (or reuses) the embedded PostgreSQL under .data/bench-postgres with two databases,
`conduit_sizes_small` (preset `small`) and `conduit_sizes_large` (preset `large`), migrates
and seeds them, then for each size in turn (`--rounds 2`: small, large, small, large)
serves the API on it and measures:

- the uncached list: anonymous, logged in, by the most used tag, by author (100 authors in
  turn), the feed of the user who follows most: target large/small >= 90 % of req/s;
- on the large set, page 5,000 of the global list by cursor against page 1: >= 90 %;
- on the large set, search (`q=`, 48 queries in turn) with the cache on (Redis): p99 <= 50
  ms at 64 connections; and, for the record, the same uncached on both sizes.

Writes bench/results/<UTC>/sizes.md and results.json.
"""

import argparse
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from app.articles import cursors, queries
from app.migrate import upgrade
from bench.lib import markdown, seeding
from bench.lib.database import dataset
from bench.lib.machine import CpuShare, machine_info, package_versions
from bench.lib.paths import ROOT, folder
from bench.lib.server import Api, RedisServer, get_json, login
from bench.lib.wrk import (
    WrkResult,
    auth_script,
    ensure_wrk,
    plain_script,
    rotate_script,
    run_wrk,
    wrk_version,
)

PG_DATA = ROOT / ".data" / "bench-postgres"
REDIS_DATA = ROOT / ".data" / "bench-redis"
DATABASES = {"small": "conduit_sizes_small", "large": "conduit_sizes_large"}
CURSOR_PAGE = 5_000
PAGE = 20
RATIO_TARGET = 0.90
SEARCH_P99_TARGET_MS = 50.0
# Two-word queries too: `a b` is `a & b` in websearch syntax.
SEARCH_TERMS = (
    *seeding.WORDS[:32],
    *(f"{a} {b}" for a, b in zip(seeding.WORDS[32:48], seeding.WORDS[48:64], strict=True)),
)


@dataclass(frozen=True)
class Variant:
    name: str
    script: str  # its Lua file in the results folder
    path: str  # what wrk is pointed at (a rotating script picks its own paths)
    compared: str  # "sizes": large vs small; "cursor": against page 1; "search": p99


VARIANTS = (
    Variant("list, anonymous", "list.lua", "/api/articles?limit=20", "sizes"),
    Variant("list, logged in", "list-auth.lua", "/api/articles?limit=20", "sizes"),
    Variant("list by tag", "tag.lua", "/api/articles?limit=20", "sizes"),
    Variant("list by author", "author.lua", "/api/articles?limit=20", "sizes"),
    Variant("feed", "feed.lua", "/api/articles/feed?limit=20", "sizes"),
    Variant("search, uncached", "search.lua", "/api/articles?limit=20", "search"),
)
PAGE_ONE = Variant("page 1 (cursor paging)", "list.lua", "/api/articles?limit=20", "cursor")
DEEP = Variant(f"page {CURSOR_PAGE:,} by cursor", "deep.lua", "/api/articles?limit=20", "cursor")
CACHED_SEARCH = Variant("search, cached", "search.lua", "/api/articles?limit=20", "search")


@dataclass(frozen=True)
class Measured:
    size: str
    round: int
    variant: str
    result: WrkResult
    cpu: dict[str, float]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Issue 20: reads at 2,000 and 1,000,000 articles")
    parser.add_argument("--no-seed", action="store_true", help="use the databases as they are")
    parser.add_argument("--small", choices=sorted(seeding.PRESETS), default="small")
    parser.add_argument("--large", choices=sorted(seeding.PRESETS), default="large")
    parser.add_argument("--rounds", type=int, default=1, help="small then large, this often")
    parser.add_argument("--duration", type=int, default=15, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--out", type=Path, help="results folder (default: timestamped)")
    return parser.parse_args()


def prepare(args: argparse.Namespace) -> dict[str, str]:
    """The two databases, migrated and (unless --no-seed) seeded; their libpq URLs."""
    from app.dev.embedded import start_postgres  # the `embedded` extra

    urls = {}
    for size, name in DATABASES.items():
        url = start_postgres(PG_DATA, name)
        upgrade(url)
        if not args.no_seed:
            preset = args.small if size == "small" else args.large
            seeding.fill(url, seeding.PRESETS[preset], truncate=True)
        urls[size] = url
    return urls


def picks(url: str, key: bytes) -> dict[str, Any]:
    """What the scripts ask for on this data set: the most used tag, 100 authors, the user
    who follows most, and the cursor that starts page CURSOR_PAGE."""
    with psycopg.connect(url) as conn:
        tag = conn.execute(
            "SELECT tag FROM tag_count_shards GROUP BY tag ORDER BY sum(articles) DESC LIMIT 1"
        ).fetchone()
        authors = conn.execute(
            "SELECT username FROM users WHERE EXISTS (SELECT FROM articles WHERE author_id = users.id)"
            " ORDER BY md5(username) LIMIT 100"
        ).fetchall()
        follower = conn.execute(
            "SELECT u.email FROM follows f JOIN users u ON u.id = f.follower_id"
            " GROUP BY u.email ORDER BY count(*) DESC, u.email LIMIT 1"
        ).fetchone()
        deep = conn.execute(
            "SELECT created_at, id FROM articles ORDER BY created_at DESC, id DESC"
            " OFFSET %s LIMIT 1",
            ((CURSOR_PAGE - 1) * PAGE - 1,),
        ).fetchone()
    cursor = None
    if deep is not None:
        position = cursors.Position(deep[0], deep[1])
        cursor = cursors.encode(position, key=key, query=queries.Filters().signature())
    return {
        "tag": tag[0] if tag else "",
        "authors": [row[0] for row in authors],
        "follower": follower[0] if follower else "user1@example.com",
        "cursor": cursor,
    }


def write_scripts(out: Path, base: str, chosen: dict[str, Any]) -> None:
    token = login(base, "user1@example.com", seeding.PASSWORD)
    feed_token = login(base, chosen["follower"], seeding.PASSWORD)
    (out / "list.lua").write_text(plain_script())
    (out / "list-auth.lua").write_text(auth_script(token))
    (out / "tag.lua").write_text(rotate_script([f"/api/articles?limit=20&tag={chosen['tag']}"]))
    author_paths = [f"/api/articles?limit=20&author={name}" for name in chosen["authors"]]
    (out / "author.lua").write_text(rotate_script(author_paths))
    (out / "feed.lua").write_text(auth_script(feed_token))
    search_paths = [f"/api/articles?limit=20&q={term.replace(' ', '+')}" for term in SEARCH_TERMS]
    (out / "search.lua").write_text(rotate_script(search_paths))
    if chosen["cursor"]:
        deep = f"/api/articles?limit=20&cursor={chosen['cursor']}"
        (out / "deep.lua").write_text(rotate_script([deep]))
        if len(get_json(base + deep)["articles"]) != PAGE:
            raise SystemExit(f"page {CURSOR_PAGE:,} by cursor is not full")
    for path in (*author_paths[:1], *search_paths[:1], f"/api/articles?tag={chosen['tag']}"):
        get_json(base + path)  # each answers 200 before it is measured


def measure(
    args: argparse.Namespace, wrk: str, api: Api, out: Path, variant: Variant
) -> tuple[WrkResult, dict[str, float]]:
    options = {"connections": args.connections, "threads": args.threads}
    url, script = api.base + variant.path, out / variant.script
    if args.warmup:
        run_wrk(wrk, url, script, duration_s=args.warmup, **options)
    roots: dict[str, Callable[[], int | None]] = {"API workers": lambda: api.pid}
    cpu = CpuShare(roots | {"PostgreSQL": postmaster_pid}, own="wrk + this script")
    cpu.start()
    result = run_wrk(wrk, url, script, duration_s=args.duration, **options)
    return result, cpu.stop()


def postmaster_pid() -> int | None:
    try:
        return int((PG_DATA / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run(args: argparse.Namespace, urls: dict[str, str], key: bytes, out: Path) -> list[Measured]:
    wrk = ensure_wrk()
    chosen = {size: picks(url, key) for size, url in urls.items()}
    measured: list[Measured] = []

    def record(size: str, round_: int, variant: Variant, api: Api) -> None:
        result, cpu = measure(args, wrk, api, out, variant)
        measured.append(Measured(size, round_, variant.name, result, cpu))
        print(
            f"  {size:<5} {variant.name:<28} {result.rps:8,.0f} req/s  p99 "
            f"{result.p99_ms:6.1f} ms  non-2xx {result.non_2xx}  errors {result.socket_errors}",
            flush=True,
        )

    for round_ in range(1, args.rounds + 1):
        for size, url in urls.items():
            print(f"round {round_}: {size} ({DATABASES[size]})", flush=True)
            with Api(url, port=args.port, workers=args.workers, logs=out) as api:
                write_scripts(out, api.base, chosen[size])
                for variant in VARIANTS:
                    record(size, round_, variant, api)
                if size == "large" and chosen[size]["cursor"]:  # a set that deep
                    for variant in (PAGE_ONE, DEEP):
                        record(size, round_, variant, api)
    with RedisServer(REDIS_DATA) as redis:
        cache = {"REDIS_URL": redis.url}
        with Api(urls["large"], port=args.port, workers=args.workers, logs=out, env=cache) as api:
            write_scripts(out, api.base, chosen["large"])
            record("large", 1, CACHED_SEARCH, api)
    return measured


def _median_rps(measured: list[Measured], size: str, variant: str) -> float | None:
    values = sorted(m.result.rps for m in measured if (m.size, m.variant) == (size, variant))
    return values[len(values) // 2] if values else None


def _worst_p99(measured: list[Measured], size: str, variant: str) -> float | None:
    values = [m.result.p99_ms for m in measured if (m.size, m.variant) == (size, variant)]
    return max(values) if values else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def render(
    args: argparse.Namespace,
    started: datetime,
    info: dict[str, str],
    counts: dict[str, dict[str, int]],
    measured: list[Measured],
) -> str:
    fig = markdown.figure
    rows = []
    for variant in (v for v in VARIANTS if v.compared == "sizes"):
        small = _median_rps(measured, "small", variant.name)
        large = _median_rps(measured, "large", variant.name)
        ratio = large / small if small and large is not None else None
        rows.append([
            variant.name, fig(small), fig(large), fig(ratio, ".0%"),
            fig(_worst_p99(measured, "small", variant.name), ".1f"),
            fig(_worst_p99(measured, "large", variant.name), ".1f"),
            _verdict(None if ratio is None else ratio >= RATIO_TARGET),
        ])  # fmt: skip
    one, deep = (_median_rps(measured, "large", v.name) for v in (PAGE_ONE, DEEP))
    depth = deep / one if one and deep is not None else None
    search_rows = []
    for size, variant in (
        ("small", VARIANTS[-1]),
        ("large", VARIANTS[-1]),
        ("large", CACHED_SEARCH),
    ):
        p99 = _worst_p99(measured, size, variant.name)
        target = variant is CACHED_SEARCH
        search_rows.append([
            f"{variant.name} ({size})", fig(_median_rps(measured, size, variant.name)),
            fig(p99, ".1f"),
            _verdict(None if p99 is None or not target else p99 <= SEARCH_P99_TARGET_MS),
        ])  # fmt: skip
    errors = sum(m.result.non_2xx + m.result.socket_errors for m in measured)
    command = "python -m bench.sizes " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
        for k, v in vars(args).items()
        if v not in (None, False)
    )
    return "\n".join([
        f"# Reads at any size (issue 20), {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"`{command}`: {args.connections} connections, {args.workers} uvicorn workers, "
        f"{args.duration} s per run after {args.warmup} s of warm-up, {args.rounds} round(s); "
        f"non-2xx and socket errors in all runs: {errors}.",
        "",
        markdown.facts(info),
        "## Data sets",
        "",
        markdown.table(
            ["size", *next(iter(counts.values()))],
            [[size, *(f"{n:,}" for n in c.values())] for size, c in counts.items()],
        ),
        "## Uncached lists: large against small (target >= 90 % of req/s)",
        "",
        markdown.table(
            ["variant", "small req/s", "large req/s", "large/small", "p99 small ms",
             "p99 large ms", "met"],
            rows, text_from=6,
        ),
        f"## Page {CURSOR_PAGE:,} by cursor against page 1, large set (target >= 90 %)",
        "",
        markdown.table(
            ["page 1 req/s", f"page {CURSOR_PAGE:,} req/s", "ratio", "met"],
            [[fig(one), fig(deep), fig(depth, ".0%"),
              _verdict(None if depth is None else depth >= RATIO_TARGET)]],
            left=0, text_from=3,
        ),
        f"## Search at {args.connections} connections (target: p99 <= 50 ms on the large set, cached)",
        "",
        markdown.table(["run", "req/s", "p99 ms", "met"], search_rows, text_from=3),
    ])  # fmt: skip


def main() -> None:
    args = parse_args()
    started = datetime.now(UTC)
    out = folder(args.out, started, "-sizes")
    # The API under test and the deep cursor must share one key: it comes from this secret.
    os.environ["JWT_SECRET"] = secret = secrets.token_urlsafe(48)
    key = cursors.signing_key(secret)
    urls = prepare(args)
    counts = {size: dataset(url)[0] for size, url in urls.items()}
    info = machine_info() | package_versions() | {"wrk": wrk_version(ensure_wrk())}
    measured = run(args, urls, key, out)
    (out / "sizes.md").write_text(render(args, started, info, counts, measured))
    records = [
        {"size": m.size, "round": m.round, "variant": m.variant, "rps": m.result.rps,
         **asdict(m.result), "cpu_cores": m.cpu}
        for m in measured
    ]  # fmt: skip
    (out / "results.json").write_text(json.dumps({"machine": info, "results": records}, indent=2))
    print(f"report: {out / 'sizes.md'}")


if __name__ == "__main__":
    main()
