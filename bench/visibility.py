"""Time to visible: how long after a write is acknowledged its readers see it.

One writer edits one article every `--interval` seconds; `--readers` anonymous readers read it
in a closed loop meanwhile (the load), and after each edit the writer reads it back at once,
logged in. For every edit and every reader, the time from the writer's acknowledgement to the
reader's first answer that shows the edit is one sample; the report gives its percentiles and
how many of the writer's own reads were stale (the guarantee: none).

    python -m bench.visibility --url http://127.0.0.1:8080/api --readers 200 --writes 60

Against `make stack` (nginx, its micro-cache, several workers with L1) or `make run`.
"""

import argparse
import asyncio
import json
import secrets
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.lib import markdown, paths


@dataclass
class Run:
    acknowledged: dict[int, float] = field(default_factory=dict)  # edit -> when acked
    seen: dict[tuple[int, int], float] = field(default_factory=dict)  # (reader, edit) -> first
    reads: int = 0
    errors: int = 0
    own_stale: int = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/api", help="the API's base URL")
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between edits")
    parser.add_argument("--out", type=Path, help="results folder (default: bench/results/<start>)")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    started = datetime.now(UTC)
    limits = httpx.Limits(max_connections=args.readers + 10, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=10) as client:
        token, slug = await _setup(client)
        run = Run()
        done = asyncio.Event()
        readers = [
            asyncio.create_task(_read(client, slug, reader, run, done))
            for reader in range(args.readers)
        ]
        await asyncio.sleep(2)  # readers running, caches warm
        await _write(client, token, slug, args, run)
        await asyncio.sleep(3)  # the last edit reaches everyone
        done.set()
        await asyncio.gather(*readers)
    delays = [
        seen - run.acknowledged[edit]
        for (_, edit), seen in run.seen.items()
        if edit in run.acknowledged
    ]
    result = _summary(args, run, delays, started)
    out = paths.folder(args.out, started, "-visibility")
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(_report(result))
    print(_report(result))


async def _setup(client: httpx.AsyncClient) -> tuple[str, str]:
    name = f"vis{secrets.token_hex(4)}"
    user = {"user": {"username": name, "email": f"{name}@x.io", "password": "visible-pass-1"}}
    response = await client.post("/users", json=user)
    response.raise_for_status()
    token: str = response.json()["user"]["token"]
    article = {"article": {"title": f"Visible {name}", "description": "d", "body": "v0"}}
    response = await client.post("/articles", json=article, headers=_auth(token))
    response.raise_for_status()
    slug: str = response.json()["article"]["slug"]
    return token, slug


async def _read(
    client: httpx.AsyncClient, slug: str, reader: int, run: Run, done: asyncio.Event
) -> None:
    while not done.is_set():
        try:
            response = await client.get(f"/articles/{slug}")
            now = time.monotonic()
            run.reads += 1
            if response.status_code != 200:
                run.errors += 1
                continue
            edit = int(response.json()["article"]["body"].removeprefix("v"))
        except (httpx.HTTPError, ValueError, KeyError):
            run.errors += 1
            await asyncio.sleep(0.05)
            continue
        for earlier in range(edit, 0, -1):  # an edit seen shows every earlier one too
            if (reader, earlier) in run.seen:
                break
            run.seen[reader, earlier] = now


async def _write(
    client: httpx.AsyncClient, token: str, slug: str, args: argparse.Namespace, run: Run
) -> None:
    for edit in range(1, args.writes + 1):
        body = {"article": {"body": f"v{edit}"}}
        response = await client.put(f"/articles/{slug}", json=body, headers=_auth(token))
        response.raise_for_status()
        run.acknowledged[edit] = time.monotonic()
        own = await client.get(f"/articles/{slug}", headers=_auth(token))
        if own.json()["article"]["body"] != f"v{edit}":
            run.own_stale += 1
        await asyncio.sleep(args.interval)


def _summary(
    args: argparse.Namespace, run: Run, delays: list[float], started: datetime
) -> dict[str, object]:
    ms = sorted(delay * 1000 for delay in delays)
    cuts = statistics.quantiles(ms, n=100) if len(ms) >= 2 else [float("nan")] * 99
    return {
        "started": started.isoformat(timespec="seconds"),
        "url": args.url,
        "readers": args.readers,
        "writes": args.writes,
        "reads": run.reads,
        "errors": run.errors,
        "samples": len(ms),
        "expected_samples": args.readers * args.writes,
        "p50_ms": round(cuts[49], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(ms[-1], 1) if ms else float("nan"),
        "writer_stale_reads": run.own_stale,
    }


def _report(result: dict[str, object]) -> str:
    return "# Time to visible\n\n" + markdown.facts(result)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


if __name__ == "__main__":
    asyncio.run(main())
