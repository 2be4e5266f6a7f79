"""nginx's micro-cache in front of the API: anonymous GETs are served from it for less than a
second (the API's `X-Accel-Expires: @<epoch second>`), one request per key reaches the API, and
nothing sent with a token is ever stored or served from it."""

import asyncio
import time
import uuid

import httpx

from tests.stack.conftest import Stack
from tests.stack.test_write_path import _users

# A copy lives to the end of the second it was built in (under 1 s), then one refresh: the
# steps below take 1.0 s; the rest is room for the 50 ms poll step on a busy 2-core machine.
# With `max-age=1` alone they took 2.0 s: nginx counted it in whole seconds.
VISIBLE_WITHIN_S = 1.3


async def _fresh_copy_at_a_second_start(client: httpx.AsyncClient, path: str) -> None:
    """Have nginx store a new copy just after a wall-clock second began: the copy that would
    live longest, whole seconds being what nginx counts."""
    for _ in range(5):
        await asyncio.sleep(1.02 - time.time() % 1)
        if (await client.get(path)).headers["x-cache"] != "HIT":
            return
    raise AssertionError("nginx served the same copy for five seconds")


async def test_anonymous_reads_are_micro_cached_and_a_write_shows_within_the_bound(
    stack: Stack,
) -> None:
    prefix = f"mc{uuid.uuid4().hex[:6]}"
    [author] = _users(stack, prefix, 1)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        article = {"article": {"title": f"{prefix} cached", "description": "d", "body": "v0"}}
        created = await client.post("/articles", json=article, headers=author)
        slug = created.json()["article"]["slug"]
        path = f"/articles/{slug}"

        first = await client.get(path)
        burst = await asyncio.gather(*(client.get(path) for _ in range(50)))
        assert first.headers["x-cache"] in ("MISS", "EXPIRED")
        assert {r.status_code for r in burst} == {200}
        assert "HIT" in {r.headers["x-cache"] for r in burst}
        assert len({r.headers["x-request-id"] for r in burst}) == 50  # still one per request
        # nginx's own instruction, never passed on
        assert not any("x-accel-expires" in r.headers for r in (first, *burst))

        await _fresh_copy_at_a_second_start(client, path)
        edited = await client.put(path, json={"article": {"body": "v1"}}, headers=author)
        assert edited.status_code == 200
        acknowledged = time.monotonic()
        while (await client.get(path)).json()["article"]["body"] != "v1":
            waited = time.monotonic() - acknowledged
            assert waited < VISIBLE_WITHIN_S, "an anonymous reader stayed stale"
            await asyncio.sleep(0.05)


async def test_nothing_sent_with_a_token_is_stored_or_served_by_the_micro_cache(
    stack: Stack,
) -> None:
    prefix = f"mt{uuid.uuid4().hex[:6]}"
    author, reader = _users(stack, prefix, 2)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        article = {"article": {"title": f"{prefix} private", "description": "d", "body": "b"}}
        slug = (await client.post("/articles", json=article, headers=author)).json()["article"][
            "slug"
        ]
        path = f"/articles/{slug}"
        await client.post(f"{path}/favorite", headers=reader)
        await client.get(path)  # the anonymous view is cached now
        for _ in range(5):
            mine = await client.get(path, headers=reader)
            assert mine.headers["x-cache"] == "BYPASS"
            assert mine.headers["cache-control"] == "private, no-cache"
            assert mine.json()["article"]["favorited"] is True  # never the cached anonymous view
        for _ in range(5):
            anonymous = await client.get(path)
            assert anonymous.json()["article"]["favorited"] is False  # never the reader's view
        cookie = await client.get(path, headers={"Cookie": "session=x"})
        assert cookie.headers["x-cache"] == "BYPASS"
