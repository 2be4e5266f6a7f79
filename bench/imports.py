"""Issue 7: a bulk import under read load. `python -m bench.imports [--api-url URL]`

Against a running stack (API_URL from .stack/stack.env by default): R readers page through
`GET /api/articles` for --duration seconds (the baseline), then again for as long as one user's
import of --lines articles through `POST /api/imports` runs. Prints and writes (bench/results/<UTC>/) the read
p50/p99 of both phases, their ratio (target: at most 2x) and the import's lines per second
(server side: finishedAt - createdAt of the import). Bounded: it stops by itself.
"""

import argparse
import asyncio
import json
import secrets
import statistics
import time
from datetime import UTC, datetime

import httpx
import orjson

from bench.lib.paths import folder
from bench.lib.targets import DEFAULT_STACK_DIR, Stack


def _ndjson(lines: int, tag: str) -> bytes:
    return b"\n".join(
        orjson.dumps(
            {
                "title": f"Imported {tag} {n}",
                "description": f"line {n}",
                "body": "lorem ipsum " * 40,
                "tagList": [f"bench{n % 20}", "import"],
            }
        )
        for n in range(lines)
    )


async def _read(client: httpx.AsyncClient, stop: asyncio.Event, latencies: list[float]) -> int:
    errors = 0
    offset = 0
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get("/articles", params={"limit": 20, "offset": offset})
        latencies.append(time.perf_counter() - started)
        errors += response.status_code != 200
        offset = (offset + 20) % 400
    return errors


async def _phase(
    client: httpx.AsyncClient, readers: int, stop: asyncio.Event
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = await asyncio.gather(*(_read(client, stop, latencies) for _ in range(readers)))
    return latencies, sum(errors)


async def _after(seconds: float, stop: asyncio.Event) -> None:
    await asyncio.sleep(seconds)
    stop.set()


async def _until_imported(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], stop: asyncio.Event
) -> dict[str, object]:
    """Poll the import until it is done (at most 600s), then stop the readers."""
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            status: dict[str, object] = (await client.get(url, headers=headers)).json()["import"]
            if status["state"] in ("done", "failed"):
                return status
            await asyncio.sleep(0.25)
        raise SystemExit("import not finished after 600s")
    finally:
        stop.set()


def _summary(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
    }


async def run(api_url: str, lines: int, readers: int, duration: float) -> dict[str, object]:
    limits = httpx.Limits(max_connections=readers + 4)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=120) as client:
        name = f"bench{secrets.token_hex(4)}"
        user = {"username": name, "email": f"{name}@bench.io", "password": "password123"}
        registered = await client.post("/users", json={"user": user})
        registered.raise_for_status()
        headers = {"Authorization": f"Token {registered.json()['user']['token']}"}
        body = _ndjson(lines, name)

        stop = asyncio.Event()
        timer = asyncio.create_task(_after(duration, stop))
        baseline, baseline_errors = await _phase(client, readers, stop)
        await timer

        posted = await client.post("/imports", content=body, headers=headers)
        posted.raise_for_status()
        url = f"/imports/{posted.json()['import']['id']}"
        stop = asyncio.Event()
        poller = asyncio.create_task(_until_imported(client, url, headers, stop))
        loaded, loaded_errors = await _phase(client, readers, stop)
        status = await poller
    took = (
        datetime.fromisoformat(str(status["finishedAt"]))
        - datetime.fromisoformat(str(status["createdAt"]))
    ).total_seconds()
    before, during = _summary(baseline), _summary(loaded)
    return {
        "api_url": api_url,
        "readers": readers,
        "duration_s": duration,
        "import": {
            "lines": lines,
            "bytes": len(body),
            "state": status["state"],
            "imported": status["importedCount"],
            "seconds": round(took, 2),
            "lines_per_s": round(lines / took) if took else None,
        },
        "reads_baseline": before | {"errors": baseline_errors},
        "reads_during_import": during | {"errors": loaded_errors},
        "p99_ratio": round(during["p99_ms"] / before["p99_ms"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__)
    parser.add_argument("--api-url", default=None, help="default: API_URL of .stack/stack.env")
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0, help="baseline seconds")
    args = parser.parse_args()
    started = datetime.now(UTC)
    api_url = args.api_url or Stack.load(DEFAULT_STACK_DIR).api_url
    result = asyncio.run(run(api_url, args.lines, args.readers, args.duration))
    out = folder(None, started) / "imports.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
