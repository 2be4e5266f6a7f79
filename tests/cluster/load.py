"""A small closed-loop load through nginx: CLIENTS loops of public reads (lists, one article,
logged-in feeds) and, where asked, favorites and unfavorites; every request's start, end and
outcome is kept, so a test can say which failures were in flight when a fault struck."""

import asyncio
import itertools
import random
import time
from dataclasses import dataclass

import httpx

from tests.observability.scrape import parse, value


@dataclass(frozen=True)
class Outcome:
    started: float  # monotonic
    ended: float
    what: str
    status: int | None  # None: a transport error or a timeout

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500


async def load(
    base_url: str,
    users: list[dict[str, str]],
    slugs: list[str],
    *,
    duration_s: float,
    clients: int = 8,
    writes: bool = True,
    think_s: float = 0.01,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + duration_s
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:

        async def one(n: int) -> None:
            rng = random.Random(n)
            headers = users[n % len(users)]
            for step in itertools.count():
                if time.monotonic() >= deadline:
                    return
                slug = rng.choice(slugs)
                if writes and step % 5 == 4:
                    what, method, path = "favorite", ("POST", "DELETE")[step // 5 % 2], slug
                    request = http.build_request(
                        method, f"/api/articles/{path}/favorite", headers=headers
                    )
                else:
                    what, path = rng.choice(
                        [("list", "/api/articles?limit=5"), ("article", f"/api/articles/{slug}"),
                         ("feed", "/api/articles/feed?limit=5")]
                    )  # fmt: skip
                    request = http.build_request("GET", path, headers=headers)
                started = time.monotonic()
                try:
                    status: int | None = (await http.send(request)).status_code
                except httpx.HTTPError:
                    status = None
                outcomes.append(Outcome(started, time.monotonic(), what, status))
                await asyncio.sleep(think_s)

        await asyncio.gather(*(one(n) for n in range(clients)))
    return outcomes


async def metrics(host: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One API host's /metrics (all its workers), parsed."""
    async with httpx.AsyncClient(timeout=5) as http:
        return parse((await http.get(f"{host}/metrics")).text)


async def total(hosts: list[str], name: str, **labels: str) -> float:
    return sum([value(await metrics(host), name, **labels) for host in hosts])


def per_second(outcomes: list[Outcome], since: float) -> list[int]:
    """Successful answers per second, from `since` on."""
    buckets: dict[int, int] = {}
    for outcome in outcomes:
        if not outcome.failed and outcome.ended >= since:
            second = int(outcome.ended - since)
            buckets[second] = buckets.get(second, 0) + 1
    return [buckets.get(second, 0) for second in range(max(buckets, default=-1) + 1)]
