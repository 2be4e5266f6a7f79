"""Deliveries always move: an attempt that raises is a failed attempt with its error, an
attempt whose worker died is counted by the relay, rows that do not move cannot starve the
relay's batch, and the per-user limit holds under concurrent registrations."""

import asyncio
import ipaddress
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.webhooks import attempts, sender, targets
from app.workers import jobs
from tests.concurrency.conftest import make_users
from tests.jobs.conftest import eventually
from tests.jobs.test_webhooks import publish, register

WEB = targets.Policy(networks=(), ports=frozenset({80, 443}))


def claimed(url: str = "http://93.184.216.34/hook") -> attempts.Claimed:
    return attempts.Claimed(
        delivery_id=1,
        attempt=0,
        url=url,
        secret="whsec_test",
        event_id=1,
        event_type="article.published",
        payload={"n": 1},
        request_id=None,
        created_at=datetime.now(UTC),
    )


async def send_with(
    handler: Callable[[httpx.Request], Any], delivery: attempts.Claimed, deadline_s: float = 5.0
) -> attempts.Outcome:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await sender.send(client, delivery, WEB, deadline_s=deadline_s)


async def test_any_exception_while_sending_is_a_failed_attempt():
    def raising(_: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in the transport")

    outcome = await send_with(raising, claimed())
    assert outcome == attempts.Outcome(ok=False, error="RuntimeError: a bug in the transport")

    async def silent(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    outcome = await send_with(silent, claimed(), deadline_s=0.2)
    assert outcome == attempts.Outcome(ok=False, error="no answer within 0.2 s")

    async def page() -> AsyncIterator[bytes]:
        yield b"bad\x00page\xff"

    def nul_page(_: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=page())

    outcome = await send_with(nul_page, claimed())
    # PostgreSQL stores no NUL: an error it refused would leave the attempt unrecorded
    assert outcome == attempts.Outcome(ok=False, status=500, error="HTTP 500: bad\ufffdpage\ufffd")

    stored_before_checks = claimed("http://93.184.216.34/hook\r\nX-Injected: 1")
    outcome = await send_with(nul_page, stored_before_checks)
    assert outcome.error == "url: must not contain whitespace or control characters"


async def test_the_request_goes_to_the_checked_address_with_an_ascii_host(monkeypatch):
    async def lookup(host: str, port: int) -> list[targets.Address]:
        assert (host, port) == ("xn--bcher-kva.de", 443)
        return [ipaddress.ip_address("93.184.216.34")]

    monkeypatch.setattr(targets, "_lookup", lookup)
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    outcome = await send_with(record, claimed("https://Bücher.de:443/hook?x=1#frag"))
    assert outcome == attempts.Outcome(ok=True, status=204)
    [request] = seen
    assert request.url == "https://93.184.216.34/hook?x=1"
    assert request.headers["host"] == "xn--bcher-kva.de"
    assert request.extensions["sni_hostname"] == "xn--bcher-kva.de"


@pytest.mark.usefixtures("worker")
async def test_a_url_stored_before_the_checks_ends_dead_with_its_error(
    jobs_client, engine, job_settings, receiver
):
    [author] = await make_users(engine, job_settings, 1)
    await register(jobs_client, author, receiver.url, ["article.published"])
    async with engine.begin() as conn:  # as a row registered before URLs were checked
        await conn.execute(text("UPDATE webhooks SET url = url || E'\\r\\nX-Injected: 1'"))
    await publish(jobs_client, author)

    async def dead() -> bool:
        listed = await jobs_client.get("/webhooks/deliveries?state=dead", headers=author)
        return bool(listed.json()["deliveriesCount"] == 1)

    await eventually(dead, within=30)
    [letter] = (await jobs_client.get("/webhooks/deliveries", headers=author)).json()["deliveries"]
    assert letter["attempts"] == job_settings.webhook_max_attempts
    assert letter["lastError"] == "url: must not contain whitespace or control characters"
    assert receiver.hits == []


@pytest.mark.usefixtures("committing_state")  # empties the tables afterwards
async def test_relay_counts_lost_attempts_and_reaches_every_overdue_row(ctx, engine, job_settings):
    last = job_settings.webhook_max_attempts - 1
    async with engine.begin() as conn:
        user = await conn.scalar(
            text(
                "INSERT INTO users (username, email, password_hash) VALUES ('r', 'r@x.io', 'x') RETURNING id"
            )
        )
        webhook = await conn.scalar(
            text(
                "INSERT INTO webhooks (user_id, url, events, secret) "
                "VALUES (:user, 'http://127.0.0.1:9/', ARRAY['article.published'], 's') RETURNING id"
            ),
            {"user": user},
        )
        await conn.execute(
            text(
                "INSERT INTO outbox_events (type, owner_id, payload, relayed_at) "
                "SELECT 'article.published', :user, jsonb_build_object('n', n), now() "
                "FROM generate_series(1, 902) AS n"
            ),
            {"user": user},
        )
        # 600 whose jobs were lost long ago, 300 leased by workers that died, the last of
        # them on its last attempt, and one due a moment ago, behind them all
        await conn.execute(
            text(
                "INSERT INTO webhook_deliveries "
                "(webhook_id, event_id, attempts, next_attempt_at, lease_until) "
                "SELECT :webhook, e.id, "
                "CASE WHEN e.n = 901 THEN :last WHEN e.n > 600 THEN 1 ELSE 0 END, "
                "CASE WHEN e.n = 902 THEN now() - interval '10 s' "
                "ELSE now() - interval '1 hour' END, "
                "CASE WHEN e.n BETWEEN 601 AND 901 THEN now() - interval '1 min' END "
                "FROM (SELECT id, (payload->>'n')::int AS n FROM outbox_events) e"
            ),
            {"webhook": webhook, "last": last},
        )
    started = await _now(engine)

    first = await jobs.relay(ctx)
    second = await jobs.relay(ctx)
    third = await jobs.relay(ctx)

    assert (first["lost_attempts"], first["deliveries"]) == (301, jobs.RELAY_BATCH)
    assert (second["lost_attempts"], second["deliveries"]) == (0, 601 - jobs.RELAY_BATCH)
    assert (third["lost_attempts"], third["deliveries"]) == (0, 0)  # each was just relayed
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT (e.payload->>'n')::int AS n, d.state, d.attempts, d.lease_until, "
                    "d.next_attempt_at, d.last_error FROM webhook_deliveries d "
                    "JOIN outbox_events e ON e.id = d.event_id"
                )
            )
        ).all()
    by_event = {row.n: row for row in rows}
    assert by_event[902].next_attempt_at >= started  # relayed despite 600 older rows
    assert all(by_event[n].next_attempt_at >= started for n in range(1, 601))
    lost = [by_event[n] for n in range(601, 901)]
    assert {(row.state, row.attempts, row.lease_until, row.last_error) for row in lost} == {
        ("pending", 2, None, attempts.LOST)
    }
    assert (by_event[901].state, by_event[901].attempts) == ("dead", last + 1)


async def _now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        now: datetime = await conn.scalar(text("SELECT now()"))
    return now


async def test_concurrent_registrations_stop_at_the_limit(committing_client, engine, settings):
    [headers] = await make_users(engine, settings, 1)

    async def one(n: int) -> int:
        body = {
            "webhook": {"url": f"https://93.184.216.34/hook/{n}", "events": ["comment.created"]}
        }
        response = await committing_client.post("/webhooks", json=body, headers=headers)
        return int(response.status_code)

    statuses = Counter(await asyncio.gather(*(one(n) for n in range(32))))
    assert statuses == {201: 20, 422: 12}, statuses
    listed = await committing_client.get("/webhooks", headers=headers)
    assert len(listed.json()["webhooks"]) == 20
