"""Logging the seeded users in once, and the favorite storm: N users favorite one article at
the same moment, then some favorite it again or take it back; favoritesCount must equal the
favorite rows afterwards."""

import asyncio
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from bench.lib.seeding import PASSWORD
from bench.lib.wrk import error_kind

SHARED_SSL = ssl.create_default_context()  # one context for every client: building one is slow


async def login_many(
    api_url: str, emails: list[str], concurrency: int = 4, attempts: int = 5
) -> list[tuple[str, str]]:
    """(email, token) for each seeded user: argon2 makes a login cost ~0.1-0.2 s of CPU, so
    they run a few at a time, before any measurement; one shed by the API (503/504 under a
    busy machine, 429) is tried again after a pause."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=api_url, timeout=120) as client:

        async def one(email: str) -> tuple[str, str]:
            body = {"user": {"email": email, "password": PASSWORD}}
            for attempt in range(attempts):
                async with gate:
                    response = await client.post("/users/login", json=body)
                if response.status_code not in (429, 503, 504) or attempt == attempts - 1:
                    break
                await asyncio.sleep(1 + attempt)
            response.raise_for_status()
            return email, str(response.json()["user"]["token"])

        return list(await asyncio.gather(*(one(e) for e in emails)))


@dataclass
class StormResult:
    users: int
    requests: int = 0
    duration_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    api_count: int | None = None
    row_count: int | None = None
    # Users all of whose requests were answered 2xx, so the state they were told is known:
    confirmed_on: int = 0  # ... told they favorite the article
    confirmed_off: int = 0  # ... told they do not (favorited, then unfavorited)
    lost: int = 0  # told "on", no row: an acknowledged write lost
    phantom: int = 0  # told "off", a row remains
    unsure: int = 0  # some answer was an error, so either state is right
    unsure_on: int = 0  # ... of whom a favorite row exists

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms) or [0.0]
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def exact(self) -> bool:
        """favoritesCount equals the rows, and no confirmed answer was contradicted."""
        return self.api_count == self.row_count and self.lost == self.phantom == 0

    def summary(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "favorite_requests": len(self.latencies_ms),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(0.5), 1),
            "p99_ms": round(self.percentile(0.99), 1),
            "max_ms": round(self.percentile(1.0), 1),
            "statuses": dict(self.statuses),
            "favoritesCount_api": self.api_count,
            "favorite_rows": self.row_count,
            "confirmed_on": self.confirmed_on,
            "confirmed_off": self.confirmed_off,
            "lost": self.lost,
            "phantom": self.phantom,
            "unsure": self.unsure,
            "unsure_on": self.unsure_on,
            "exact": self.exact,
        }


async def _publish(api_url: str, token: str, run: str) -> str:
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as client:
        article = {"title": f"Storm {run}", "description": "favorite storm", "body": "b"}
        response = await client.post(
            "/articles", json={"article": article}, headers={"Authorization": f"Token {token}"}
        )
        response.raise_for_status()
        return str(response.json()["article"]["slug"])


async def favorite_storm(
    api_url: str,
    direct_url: str,
    users: list[tuple[str, str]],
    run: str,
    timeout_s: float = 120,
) -> StormResult:
    """Every token favorites one fresh article at once (a barrier releases them together, each
    on its own open keep-alive connection); then 20 % favorite it again (a no-op) and 10 %
    unfavorite it. Counts are checked through the API and in PostgreSQL, and each user's
    row against what the answers told them."""
    tokens = [token for _, token in users]
    slug = await _publish(api_url, tokens[0], run)
    result = StormResult(users=len(tokens))
    rng = random.Random(run)
    again = set(rng.sample(range(len(tokens)), len(tokens) // 5))
    undo = set(rng.sample(range(len(tokens)), len(tokens) // 10))
    answers: dict[int, list[tuple[str, bool]]] = {}  # user -> (method, answered 2xx)
    barrier = asyncio.Barrier(len(tokens) + 1)
    path = f"/articles/{slug}/favorite"

    async def call(client: httpx.AsyncClient, i: int, method: str, headers: dict[str, str]) -> None:
        started = time.monotonic()
        try:
            response = await client.request(method, path, headers=headers)
        except httpx.HTTPError as exc:
            result.statuses[type(exc).__name__] += 1
            answers.setdefault(i, []).append((method, False))
            return
        answer = str(response.status_code)
        if not response.is_success:
            answer = error_kind(response.status_code, response.text).removeprefix("HTTP ")
        result.statuses[f"{method} {answer}"] += 1
        if method == "POST":
            result.latencies_ms.append(1000 * (time.monotonic() - started))
        answers.setdefault(i, []).append((method, response.is_success))

    async def user(i: int, token: str) -> None:
        headers = {"Authorization": f"Token {token}"}
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=api_url, timeout=timeout_s, limits=limits, verify=SHARED_SSL, trust_env=False
        ) as client:
            try:  # the connection is open before the storm
                await client.get(f"/articles/{slug}")
            except httpx.HTTPError as exc:  # still busy with an earlier step: it reconnects
                result.statuses[f"open {type(exc).__name__}"] += 1
            await barrier.wait()
            await call(client, i, "POST", headers)
            if i in again:
                await call(client, i, "POST", headers)
            if i in undo:
                await call(client, i, "DELETE", headers)

    tasks = [asyncio.create_task(user(i, t)) for i, t in enumerate(tokens)]
    async with asyncio.timeout(timeout_s + 60):
        await barrier.wait()
        started = time.monotonic()
        await asyncio.gather(*tasks)
    result.duration_s = time.monotonic() - started
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        # As one of the writers sees it: an anonymous copy may come from nginx's micro-cache,
        # up to a second old (docs/ARCHITECTURE.md "Cache").
        writer = {"Authorization": f"Token {tokens[0]}"}
        article = (await client.get(f"/articles/{slug}", headers=writer)).json()["article"]
        result.api_count = int(article["favoritesCount"])
    with psycopg.connect(direct_url) as conn:
        rows = conn.execute(
            "SELECT u.email FROM favorites f JOIN articles a ON a.id = f.article_id"
            " JOIN users u ON u.id = f.user_id WHERE a.slug = %s",
            [slug],
        ).fetchall()
    with_row = {email for (email,) in rows}
    result.row_count = len(with_row)
    for i, (email, _) in enumerate(users):
        told = answers.get(i, [])
        if not all(ok for _, ok in told):
            result.unsure += 1
            result.unsure_on += email in with_row
        elif told[-1][0] == "POST":
            result.confirmed_on += 1
            result.lost += email not in with_row
        else:
            result.confirmed_off += 1
            result.phantom += email in with_row
    return result
