"""Time to visible: how long after a write is acknowledged its readers see it.

One writer edits one article every `--interval` seconds and, after each edit, reads it back at
once, logged in (the guarantee: never stale). `--probes` anonymous readers read it every
`--probe-interval` seconds: for every edit and probe, the time from the writer's
acknowledgement to the probe's first answer that shows the edit is one sample. Meanwhile
`--readers` anonymous readers read it in a closed loop in a process of their own (the load);
their first sightings are reported too, but a closed loop saturates its own process, so each
of them reads only every few hundred ms and waits its turn for the answer (200 readers: about
0.4 s apart on 2 cores): their figures say as much about the load generator as about the
stack. The probes, in the writer's process, which the load does not saturate, state the bound.

    python -m bench.visibility --url http://127.0.0.1:8080/api --readers 200 --writes 100

Against `make stack` (nginx, its micro-cache, several workers with L1) or `make run`.
"""

import argparse
import asyncio
import json
import multiprocessing
import secrets
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx

from bench.lib import markdown, paths


@dataclass
class Sightings:
    """What a group of readers saw: the first time each reader saw each edit (time.monotonic,
    one clock for every process on the machine)."""

    seen: dict[tuple[int, int], float] = field(default_factory=dict)  # (reader, edit) -> first
    reads: int = 0
    errors: int = 0


@dataclass
class Writes:
    acknowledged: dict[int, float] = field(default_factory=dict)  # edit -> when acked
    own_stale: int = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/api", help="the API's base URL")
    parser.add_argument("--readers", type=int, default=200, help="closed-loop readers (load)")
    parser.add_argument("--probes", type=int, default=5, help="readers that measure")
    parser.add_argument("--probe-interval", type=float, default=0.02, help="seconds")
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between edits")
    parser.add_argument("--out", type=Path, help="results folder (default: bench/results/<start>)")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    started = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=args.url, timeout=10) as client:
        token, slug = await _setup(client)
        spawn = multiprocessing.get_context("spawn")
        stop, (results, sender) = spawn.Event(), spawn.Pipe(duplex=False)
        load = spawn.Process(target=_load, args=(args.url, slug, args.readers, stop, sender))
        load.start()
        sender.close()  # the child's copy stays: if it dies, recv() raises instead of waiting
        await asyncio.sleep(2)  # readers running, caches warm
        probes, done = Sightings(), asyncio.Event()
        probing = [
            asyncio.create_task(_read(client, slug, n, probes, done, args.probe_interval))
            for n in range(args.probes)
        ]
        writes = await _write(client, token, slug, args)
        await asyncio.sleep(3)  # the last edit reaches everyone
        done.set()
        stop.set()
        await asyncio.gather(*probing)
        readers = Sightings(*await asyncio.to_thread(results.recv))
        load.join()
    result = _summary(args, writes, probes, readers, started)
    out = paths.folder(args.out, started, "-visibility")
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(_report(result))
    print(_report(result))


def _load(url: str, slug: str, readers: int, stop: Event, results: Connection) -> None:
    """The closed-loop readers, in a process of their own (spawned: no state inherited)."""
    sightings = asyncio.run(_read_all(url, slug, readers, stop))
    # Plain values: a class of the main module is named differently in the spawned process.
    results.send((sightings.seen, sightings.reads, sightings.errors))


async def _read_all(url: str, slug: str, readers: int, stop: Event) -> Sightings:
    sightings, done = Sightings(), asyncio.Event()
    limits = httpx.Limits(max_connections=readers + 10, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        tasks = [
            asyncio.create_task(_read(client, slug, reader, sightings, done))
            for reader in range(readers)
        ]
        await asyncio.to_thread(stop.wait)
        done.set()
        await asyncio.gather(*tasks)
    return sightings


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
    client: httpx.AsyncClient,
    slug: str,
    reader: int,
    sightings: Sightings,
    done: asyncio.Event,
    pause: float = 0,
) -> None:
    while not done.is_set():
        await asyncio.sleep(pause)
        try:
            response = await client.get(f"/articles/{slug}")
            now = time.monotonic()
            sightings.reads += 1
            if response.status_code != 200:
                sightings.errors += 1
                continue
            edit = int(response.json()["article"]["body"].removeprefix("v"))
        except (httpx.HTTPError, ValueError, KeyError):
            sightings.errors += 1
            await asyncio.sleep(0.05)
            continue
        for earlier in range(edit, 0, -1):  # an edit seen shows every earlier one too
            if (reader, earlier) in sightings.seen:
                break
            sightings.seen[reader, earlier] = now


async def _write(
    client: httpx.AsyncClient, token: str, slug: str, args: argparse.Namespace
) -> Writes:
    writes = Writes()
    for edit in range(1, args.writes + 1):
        body = {"article": {"body": f"v{edit}"}}
        response = await client.put(f"/articles/{slug}", json=body, headers=_auth(token))
        response.raise_for_status()
        writes.acknowledged[edit] = time.monotonic()
        own = await client.get(f"/articles/{slug}", headers=_auth(token))
        if own.json()["article"]["body"] != f"v{edit}":
            writes.own_stale += 1
        await asyncio.sleep(args.interval)
    return writes


def _summary(
    args: argparse.Namespace,
    writes: Writes,
    probes: Sightings,
    readers: Sightings,
    started: datetime,
) -> dict[str, object]:
    result: dict[str, object] = {
        "started": started.isoformat(timespec="seconds"),
        "url": args.url,
        "writes": args.writes,
        "writer_stale_reads": writes.own_stale,
    }
    for name, group, count in (("probe", probes, args.probes), ("reader", readers, args.readers)):
        ms = sorted(
            (seen - writes.acknowledged[edit]) * 1000
            for (_, edit), seen in group.seen.items()
            if edit in writes.acknowledged
        )
        cuts = (
            statistics.quantiles(ms, n=100, method="inclusive")
            if len(ms) >= 2
            else [float("nan")] * 99
        )
        result |= {
            f"{name}s": count,
            f"{name}_reads": group.reads,
            f"{name}_errors": group.errors,
            f"{name}_samples": len(ms),
            f"{name}_expected_samples": count * args.writes,
            f"{name}_p50_ms": round(cuts[49], 1),
            f"{name}_p99_ms": round(cuts[98], 1),
            f"{name}_max_ms": round(ms[-1], 1) if ms else float("nan"),
        }
    return result


def _report(result: dict[str, object]) -> str:
    return "# Time to visible\n\n" + markdown.facts(result)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


if __name__ == "__main__":
    asyncio.run(main())
