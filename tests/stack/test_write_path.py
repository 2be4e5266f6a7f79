"""The write-path invariants through nginx → workers → PgBouncer (transaction mode) →
PostgreSQL: exact counts, one effect per idempotency key (its advisory lock is
transaction-scoped, so it holds through PgBouncer), distinct slugs, no 5xx."""

import asyncio
import json
import uuid
from collections import Counter

import httpx
import psycopg

from app.security import make_token
from tests.stack.conftest import STATE, Stack

FANS = 300


def _users(stack: Stack, prefix: str, count: int) -> list[dict[str, str]]:
    """Committed users straight into PostgreSQL (argon2 sign-ups would dominate the test),
    with tokens signed by the stack's own secret."""
    with psycopg.connect(stack.env["DIRECT_DATABASE_URL"], autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO users (username, email, password_hash) "
            "SELECT %(p)s || n, %(p)s || n || '@x.io', 'x' FROM generate_series(1, %(c)s) n "
            "RETURNING id",
            {"p": prefix, "c": count},
        ).fetchall()
    secret = json.loads((STATE / "secrets.json").read_text())["jwt"]
    return [
        {"Authorization": f"Token {make_token(row[0], secret=secret, ttl_seconds=600)}"}
        for row in rows
    ]


def _favorite_rows(stack: Stack, slug: str) -> int:
    with psycopg.connect(stack.env["DIRECT_DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM favorites f JOIN articles a ON a.id = f.article_id WHERE a.slug = %s",
            (slug,),
        ).fetchone()
    return int(row[0]) if row else -1


async def test_write_path_invariants_through_pgbouncer(stack: Stack) -> None:
    prefix = f"w{uuid.uuid4().hex[:8]}"
    fans = _users(stack, prefix, FANS)
    limits = httpx.Limits(max_connections=FANS * 2)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120, limits=limits) as client:
        article = {"article": {"title": f"{prefix} hot", "description": "d", "body": "b"}}
        slug = (await client.post("/articles", json=article, headers=fans[0])).json()["article"][
            "slug"
        ]

        # every fan favorites twice at once, a third of them unfavorite at the same time
        storm = [
            client.post(f"/articles/{slug}/favorite", headers=fan) for fan in fans for _ in range(2)
        ]
        storm += [client.delete(f"/articles/{slug}/favorite", headers=fan) for fan in fans[::3]]
        statuses = Counter(r.status_code for r in await asyncio.gather(*storm))
        assert statuses == {200: len(storm)}
        shown = (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"]
        assert shown == _favorite_rows(stack, slug)

        # one key, thirty requests at once: one effect
        keyed = fans[1] | {"Idempotency-Key": f"{prefix}-burst"}
        once = {"article": {"title": f"{prefix} once", "description": "d", "body": "b"}}
        burst = await asyncio.gather(
            *(client.post("/articles", json=once, headers=keyed) for _ in range(30))
        )
        assert {r.status_code for r in burst} <= {201, 409}
        assert (
            sum(1 for r in burst if r.status_code == 201 and "Idempotent-Replayed" not in r.headers)
            == 1
        )
        mine = (await client.get("/articles", params={"author": f"{prefix}2"})).json()
        assert mine["articlesCount"] == 1

        # the same title, fifty authors at once: fifty distinct slugs
        same = {"article": {"title": f"{prefix} same", "description": "d", "body": "b"}}
        created = await asyncio.gather(
            *(client.post("/articles", json=same, headers=fan) for fan in fans[:50])
        )
        assert [r.status_code for r in created] == [201] * 50
        assert len({r.json()["article"]["slug"] for r in created}) == 50
