"""Admission by waiting time through the real stack (nginx → uvicorn → PgBouncer →
PostgreSQL): a burst that fits the budget is served completely; one that does not is refused
at once with a Retry-After, and what was refused did no work.

The stack under test (tests/stack/conftest.py) admits everything on purpose, so a second API
and nginx with small limits run beside it on its data (bench/lib/targets.py `running`)."""

import asyncio
import json
import re
import time
import urllib.request
from collections import Counter

import httpx
import pytest

from app.security import make_token
from bench.lib import targets
from tests.stack.conftest import STATE, Stack


def _limited(key: str, deadline_s: float) -> targets.Architecture:
    return targets.Architecture(
        key,
        "small admission",
        "one worker, two requests at work, a line of 2,000, no cache",
        {
            # The API's own line: nginx's count rule in front of it, not HAProxy's line
            # (tests/stack/test_haproxy.py).
            "STACK_ADMISSION": "nginx",
            "STACK_WORKERS": "1",
            "MAX_IN_FLIGHT": "2",
            "MAX_QUEUED": "2000",  # nginx passes 2,002 at once: every refusal is the API's
            "REQUEST_DEADLINE_S": str(deadline_s),
            "CACHE_ENABLED": "false",
        },
    )


def _shed(target: targets.Target, reasons: str = "overload|queued") -> int:
    """Requests the API refused at admission: `overload` at once, `queued` after waiting in
    line for what was left of their budget."""
    url = f"http://127.0.0.1:{targets.api_port(target)}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return int(
        sum(
            float(value)
            for value in re.findall(
                rf'^conduit_http_requests_shed_total\{{reason="(?:{reasons})"\}} (\S+)$',
                text,
                re.MULTILINE,
            )
        )
    )


async def _burst(base_url: str, token: str, requests: int) -> list[tuple[int, float, str]]:
    """`requests` logged-in list reads at once (a token: nginx's micro-cache stays out)."""
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=0)
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one(n: int) -> tuple[int, float, str]:
            started = time.monotonic()
            response = await client.get(f"/api/articles?limit=10&tag=t{n % 7}", headers=headers)
            return (
                response.status_code,
                time.monotonic() - started,
                response.headers.get("retry-after", ""),
            )

        return await asyncio.gather(*(one(n) for n in range(requests)))


@pytest.fixture
def token(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: ARG001 - started
    """Signed with the stack's own secret, which the API beside it then uses too (not the one
    tests/conftest.py puts in this process's environment for in-process apps)."""
    monkeypatch.delenv("JWT_SECRET", raising=False)
    secret = json.loads((STATE / "secrets.json").read_text())["jwt"]
    return make_token(1, secret=secret, ttl_seconds=600)


async def test_a_burst_that_fits_the_budget_is_served_completely(token: str) -> None:
    with targets.running(targets.Stack.load(STATE), _limited("admfits", 5)) as target:
        await _burst(target.base_url, token, 20)  # the service time is measured
        answers = await _burst(target.base_url, token, 150)
    assert Counter(status for status, _, _ in answers) == {200: 150}


async def test_a_burst_beyond_the_budget_is_refused_at_once_and_does_no_work(token: str) -> None:
    with targets.running(targets.Stack.load(STATE), _limited("admshed", 0.3)) as target:
        # (Its first requests, measured while the process is cold, may be refused too.)
        warm = Counter(status for status, _, _ in await _burst(target.base_url, token, 20))
        shed_before, at_once_before = _shed(target), _shed(target, "overload")
        answers = await _burst(target.base_url, token, 1000)
        shed = _shed(target) - shed_before
        at_once = _shed(target, "overload") - at_once_before
    statuses = Counter(status for status, _, _ in answers)
    refused = [(seconds, retry) for status, seconds, retry in answers if status == 503]
    assert statuses[200] > 0
    assert statuses[503] > 500, statuses
    assert set(statuses) <= {200, 503, 504}, statuses
    # A request admitted is one that could be answered in time: hardly any miss it (only
    # those whose service ran longer than the measured mean on a busy machine).
    assert statuses[504] <= 0.02 * len(answers), statuses
    assert shed == statuses[503]  # every refusal was the API's admission, before any work
    assert all(retry.isdigit() and int(retry) >= 1 for _, retry in refused)
    # By the API's own clock (the client, a thousand connections on the same cores, sees its
    # own queueing too): the refusals at the door took under 5 ms, nine in ten of them, i.e.
    # no work; those dropped from the line waited at most what was left of their budget.
    log = STATE / "variants" / "admshed" / "api" / "api.log"
    took = sorted(
        line["duration_ms"]
        for line in map(json.loads, log.read_text().splitlines())
        if line.get("status") == 503
    )
    assert len(took) == warm[503] + statuses[503]
    assert at_once > 0
    assert took[int(0.9 * at_once)] < 5, took[int(0.9 * at_once) : at_once]
    # At most the budget (REQUEST_DEADLINE_S 0.3), and the event loop's delay under a burst.
    assert took[-1] < 600, took[-10:]
