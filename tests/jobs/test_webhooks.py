"""Webhooks through the transactional outbox: signed deliveries, backoff, dead letters,
rolled-back changes, a Redis outage at commit time."""

import asyncio
import ipaddress
from itertools import pairwise
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from app.events import service as events
from app.observability import context
from app.webhooks import signing, targets
from app.workers import jobs
from tests.concurrency.conftest import make_users
from tests.conftest import auth, token_for
from tests.factories import make_user
from tests.jobs.conftest import eventually

BOTH = ["article.published", "comment.created"]
ARTICLE = {"article": {"title": "Hello hooks", "description": "d", "body": "b", "tagList": ["x"]}}


async def register(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, kinds: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/webhooks", json={"webhook": {"url": url, "events": kinds or BOTH}}, headers=headers
    )
    assert response.status_code == 201, response.text
    webhook: dict[str, Any] = response.json()["webhook"]
    return webhook


async def publish(client: httpx.AsyncClient, headers: dict[str, str], **extra: str) -> str:
    response = await client.post("/articles", json=ARTICLE, headers=headers | extra)
    assert response.status_code == 201, response.text
    slug: str = response.json()["article"]["slug"]
    return slug


@pytest.mark.usefixtures("worker")
async def test_events_are_delivered_once_and_signed(jobs_client, engine, job_settings, receiver):
    author, reader = await make_users(engine, job_settings, 2)
    webhook = await register(jobs_client, author, receiver.url)
    assert webhook["secret"].startswith("whsec_")

    with context.bound("req-publish-1"):
        slug = await publish(jobs_client, author, **{"X-Request-ID": "req-publish-1"})
    comment = await jobs_client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": "Nice"}}, headers=reader
    )
    assert comment.status_code == 200
    await jobs_client.post("/articles", json=ARTICLE, headers=reader)  # reader has no webhook

    hits = await receiver.wait_for(2)
    await asyncio.sleep(1.5)  # the relay runs every second: nothing is sent twice
    assert len(receiver.hits) == 2
    by_type = {}
    for hit in hits:
        timestamp = int(hit.headers["x-conduit-timestamp"])
        signature = hit.headers["x-conduit-signature"]
        assert signing.verify(webhook["secret"], timestamp, hit.body, signature)
        assert not signing.verify(webhook["secret"], timestamp + 1, hit.body, signature)
        assert hit.headers["content-type"] == "application/json"
        event = orjson.loads(hit.body)
        assert hit.headers["x-conduit-event"] == event["type"]
        by_type[event["type"]] = (event, hit.headers)
    published, headers = by_type["article.published"]
    assert headers["x-request-id"] == "req-publish-1"
    assert published["data"]["article"]["slug"] == slug
    assert published["data"]["article"]["tagList"] == ["x"]
    created, _ = by_type["comment.created"]
    assert created["data"]["article"]["slug"] == slug
    assert created["data"]["comment"]["body"] == "Nice"

    listed = (await jobs_client.get("/webhooks/deliveries", headers=author)).json()
    assert listed["deliveriesCount"] == 2
    assert {d["state"] for d in listed["deliveries"]} == {"delivered"}
    assert {d["lastStatus"] for d in listed["deliveries"]} == {200}


@pytest.mark.usefixtures("worker")
async def test_failing_receiver_gets_backoff_then_dead_letter(
    jobs_client, engine, job_settings, receiver
):
    [author] = await make_users(engine, job_settings, 1)
    await register(jobs_client, author, receiver.url, ["article.published"])
    receiver.status = 500

    await publish(jobs_client, author)
    hits = await receiver.wait_for(job_settings.webhook_max_attempts, within=30)

    async def dead() -> bool:
        listed = await jobs_client.get("/webhooks/deliveries?state=dead", headers=author)
        return bool(listed.json()["deliveriesCount"] == 1)

    await eventually(dead)
    await asyncio.sleep(1.5)
    assert len(receiver.hits) == job_settings.webhook_max_attempts  # no attempt after the last
    assert len({hit.headers["x-conduit-delivery"] for hit in hits}) == 1
    base = job_settings.webhook_backoff_base_s
    for n, (before, after) in enumerate(pairwise(hits), start=1):
        ceiling = base * 2 ** (n - 1)  # equal jitter: between half and all of it
        assert ceiling / 2 - 0.05 <= after.at - before.at <= ceiling + 2.5, (
            n,
            after.at - before.at,
        )
    [letter] = (await jobs_client.get("/webhooks/deliveries?state=dead", headers=author)).json()[
        "deliveries"
    ]
    assert letter["attempts"] == job_settings.webhook_max_attempts
    assert letter["lastStatus"] == 500
    assert letter["eventType"] == "article.published"
    assert letter["nextAttemptAt"] is None

    receiver.status = 204
    again = await jobs_client.post(f"/webhooks/deliveries/{letter['id']}/retry", headers=author)
    assert again.status_code == 202
    assert again.json()["delivery"]["state"] == "pending"
    await receiver.wait_for(job_settings.webhook_max_attempts + 1)

    async def delivered() -> bool:
        listed = await jobs_client.get("/webhooks/deliveries?state=delivered", headers=author)
        return bool(listed.json()["deliveriesCount"] == 1)

    await eventually(delivered)


@pytest.mark.usefixtures("worker")
async def test_rolled_back_change_sends_nothing(
    jobs_client, engine, job_settings, receiver, monkeypatch
):
    [author] = await make_users(engine, job_settings, 1)
    await register(jobs_client, author, receiver.url)
    record = events.record

    async def record_then_fail(*args, **kwargs):
        await record(*args, **kwargs)  # the event row is written, then the request fails
        raise RuntimeError("boom after the event")

    monkeypatch.setattr(events, "record", record_then_fail)
    with pytest.raises(RuntimeError, match="boom"):  # a 500 to the client; re-raised in tests
        await jobs_client.post("/articles", json=ARTICLE, headers=author)
    monkeypatch.setattr(events, "record", record)
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM articles")) == 0
        assert await conn.scalar(text("SELECT count(*) FROM outbox_events")) == 0

    slug = await publish(jobs_client, author)
    [hit] = await receiver.wait_for(1)
    await asyncio.sleep(jobs.EVENT_GRACE_S + 1.5)  # past the periodic relay's grace
    assert len(receiver.hits) == 1
    assert orjson.loads(hit.body)["data"]["article"]["slug"] == slug


@pytest.mark.usefixtures("worker")
async def test_redis_outage_at_commit_delays_delivery(
    jobs_client, engine, job_settings, receiver, redis_server
):
    [author] = await make_users(engine, job_settings, 1)
    await register(jobs_client, author, receiver.url, ["article.published"])
    redis_server.stop()
    try:
        slug = await publish(jobs_client, author)  # committed; the enqueue fails, logged
        async with engine.connect() as conn:
            waiting = await conn.scalar(
                text("SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL")
            )
        assert waiting == 1
        await asyncio.sleep(1)
        assert receiver.hits == []
    finally:
        redis_server.start()  # empty: whatever was queued before is gone too

    [hit] = await receiver.wait_for(1, within=30)  # the periodic relay found the event
    assert orjson.loads(hit.body)["data"]["article"]["slug"] == slug
    await asyncio.sleep(1.5)
    assert len(receiver.hits) == 1


async def post_webhook(
    client: httpx.AsyncClient, headers: dict[str, str], url: str
) -> httpx.Response:
    return await client.post(
        "/webhooks", json={"webhook": {"url": url, "events": BOTH}}, headers=headers
    )


async def test_private_and_loopback_targets_are_refused_alike(client, session, settings):
    headers = auth(token_for((await make_user(session)).id, settings))
    for url in (
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://no-such-host.invalid/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        # IPv6 forms that carry an IPv4 address: mapped, NAT64 (well-known and local-use),
        # IPv4-compatible, 6to4, Teredo; the last two refused even around a public address
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://[64:ff9b::10.1.2.3]/hook",
        "http://[64:ff9b:1::5db8:d822]/hook",
        "http://[::7f00:1]/hook",
        "http://[::93.184.216.34]/hook",
        "http://[2002:7f00:1::1]/hook",
        "http://[2002:5db8:d822::1]/hook",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
        # public, but not a web port
        "http://93.184.216.34:22/hook",
        "https://93.184.216.34:6379/hook",
    ):
        response = await post_webhook(client, headers, url)
        assert response.status_code == 422, (url, response.text)
        # one message whatever the reason: nothing about what a name resolves to
        assert response.json() == {"errors": {"body": [targets.REFUSED]}}, url
    for url in (
        "ftp://example.com/hook",
        "http://user:pw@93.184.216.34/hook",
        "http://2130706433/hook",  # 127.0.0.1 to inet_aton
        "http://0x7f.1/hook",
        "http://[fe80::1%25eth0]/hook",
        "http://93.184.216.34:0/hook",
    ):
        response = await post_webhook(client, headers, url)
        assert response.status_code == 422, (url, response.text)
    for url in (
        "https://93.184.216.34/hook",
        "http://93.184.216.34:8080/hook",
        "http://[64:ff9b::5db8:d822]/hook",  # NAT64 of a public address
    ):
        response = await post_webhook(client, headers, url)
        assert response.status_code == 201, (url, response.text)


def test_allowed_networks_take_any_port_and_others_only_web_ports():
    rules = targets.Policy(
        networks=(ipaddress.ip_network("127.0.0.1/32"),), ports=frozenset({80, 443})
    )
    assert targets.permitted(ipaddress.ip_address("127.0.0.1"), 49152, rules)
    assert targets.permitted(ipaddress.ip_address("::ffff:127.0.0.1"), 49152, rules)
    assert not targets.permitted(ipaddress.ip_address("127.0.0.2"), 80, rules)
    assert not targets.permitted(ipaddress.ip_address("192.168.1.1"), 80, rules)
    assert targets.permitted(ipaddress.ip_address("93.184.216.34"), 443, rules)
    assert not targets.permitted(ipaddress.ip_address("93.184.216.34"), 8443, rules)


async def test_webhooks_list_and_delete_are_per_user(client, session, settings):
    owner = auth(token_for((await make_user(session)).id, settings))
    other = auth(token_for((await make_user(session)).id, settings))
    webhook = await register(client, owner, "https://93.184.216.34/hook")
    listed = (await client.get("/webhooks", headers=owner)).json()["webhooks"]
    assert [w["id"] for w in listed] == [webhook["id"]]
    assert "secret" not in listed[0]
    assert (await client.get("/webhooks", headers=other)).json() == {"webhooks": []}
    assert (await client.delete(f"/webhooks/{webhook['id']}", headers=other)).status_code == 404
    assert (await client.delete(f"/webhooks/{webhook['id']}", headers=owner)).status_code == 204
    assert (await client.get("/webhooks", headers=owner)).json() == {"webhooks": []}
    assert (await client.get("/webhooks")).status_code == 401


async def test_purge_deletes_expired_idempotency_keys_only(ctx, engine):
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO idempotency_keys (owner, key, request_hash, status, body, expires_at) "
                "SELECT 'user:1', 'k' || n, 'h', 201, '', now() + (n - 5) * interval '1 hour' "
                "FROM generate_series(1, 9) AS n"
            )
        )
    try:
        result = await jobs.purge(ctx)
        async with engine.connect() as conn:
            left = await conn.scalar(text("SELECT count(*) FROM idempotency_keys"))
        assert result["idempotency_keys"] == 5
        assert left == 4
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM idempotency_keys"))
