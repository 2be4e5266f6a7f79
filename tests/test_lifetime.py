"""Deadlines, client disconnects and admission control, with real PostgreSQL statements:
the work really stops, and a full process answers 503 at once."""

import asyncio
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.middleware.request_edge import RequestEdge, queued_s
from app.state import AppState, app_state
from tests.conftest import ROOT, serve_with_state

SLEEP = "SELECT pg_sleep(5) /* lifetime-test */"


def _app_with_slow_route(settings: Settings, **overrides: Any) -> FastAPI:
    app = create_app(settings.model_copy(update=overrides))

    async def slow(request: Request) -> dict[str, str]:
        async with app_state(request.scope).engine.connect() as conn:
            await conn.execute(text(SLEEP))
        return {"status": "done"}

    app.add_api_route("/api/test/slow", slow)
    return app


async def _running_sleeps(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE '%lifetime-test%' AND query NOT LIKE '%pg_stat_activity%'"
            )
        )
    return int(count or 0)


async def _until_idle(engine: AsyncEngine, within_s: float) -> float:
    started = time.monotonic()
    while await _running_sleeps(engine):
        assert time.monotonic() - started < within_s, "the statement kept running"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
async def client_for(settings: Settings, committing_state: AppState) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(**overrides: Any) -> httpx.AsyncClient:
        app = _app_with_slow_route(settings, **overrides)
        transport = httpx.ASGITransport(app=serve_with_state(app, committing_state))
        client = httpx.AsyncClient(transport=transport, base_url=ROOT, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_deadline_answers_504_and_stops_the_statement(client_for, engine):
    client = client_for(request_deadline_s=0.5)
    started = time.monotonic()
    response = await client.get("/api/test/slow")
    assert response.status_code == 504
    assert response.json()["errors"]["body"]
    assert time.monotonic() - started < 2
    await _until_idle(engine, within_s=2)


async def test_client_gone_cancels_the_work(settings, committing_state, engine):
    app = serve_with_state(_app_with_slow_route(settings, request_deadline_s=30), committing_state)
    scope = {
        "type": "http", "method": "GET", "path": "/api/test/slow", "raw_path": b"/api/test/slow",
        "query_string": b"", "headers": [], "client": ("127.0.0.1", 1), "server": ("test", 80),
        "scheme": "http", "http_version": "1.1", "root_path": "",
    }  # fmt: skip
    sent: list[MutableMapping[str, Any]] = []
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0.5)  # the client hangs up half a second in
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    started = time.monotonic()
    await app(scope, receive, send)
    # half a second to hang up, then the cancellation (slack for a loaded 2-core CI machine)
    assert time.monotonic() - started < 4
    assert sent == []  # nobody to answer
    await _until_idle(engine, within_s=3)


async def test_admission_sheds_load_but_never_probes(client_for, engine):
    """The count rule (MAX_QUEUED=0); the waiting line: tests/test_admission.py."""
    client = client_for(max_in_flight=2, max_queued=0, request_deadline_s=3)
    busy = [asyncio.create_task(client.get("/api/test/slow")) for _ in range(2)]
    await asyncio.sleep(0.3)
    started = time.monotonic()
    refused = await client.get("/api/articles")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    # At once, not after a slot frees (the busy ones hold theirs ~2.7 s more, to the deadline);
    # a busy 2-core CI machine took 0.67 s for it once.
    assert time.monotonic() - started < 1.5
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/livez")).status_code == 200
    assert {r.status_code for r in await asyncio.gather(*busy)} == {504}
    assert (await client.get("/api/tags")).status_code == 200  # capacity is back
    await _until_idle(engine, within_s=2)


async def test_deadline_answers_before_the_work_has_unwound():
    """Cancelling a statement can take seconds (psycopg waits for the server to confirm, and
    PgBouncer ignores the cancel of a query still queued): the 504 goes out at the deadline,
    and whatever the app sends while unwinding is dropped."""

    async def stubborn(_scope: Any, _receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(1)  # like psycopg waiting for the cancellation's answer
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise

    lifetime = RequestEdge(stubborn, deadline_s=0.2, max_in_flight=10)
    scope = {"type": "http", "method": "GET", "path": "/api/articles", "headers": []}
    sent: list[tuple[float, MutableMapping[str, Any]]] = []
    requested, complete = False, asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await complete.wait()
        return {"type": "http.disconnect"}  # as uvicorn says once the response is complete

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append((time.monotonic() - started, message))
        if message["type"] == "http.response.body":
            complete.set()

    started = time.monotonic()
    await lifetime(scope, receive, send)
    assert [message["type"] for _, message in sent] == ["http.response.start", "http.response.body"]
    assert sent[0][1]["status"] == 504
    assert sent[-1][0] < 0.8  # at the deadline, not after the second of unwinding
    assert time.monotonic() - started >= 1  # the work did unwind before the call returned


def _scope_with(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/api/articles", "headers": list(headers)}


async def _serve(lifetime: RequestEdge, scope: dict[str, Any]) -> list[MutableMapping[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(60)  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await lifetime(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"t=999.250", 1.0),
        (b"999.5", 0.75),  # without the "t=" nginx writes
        (b"t=1000.25", 0.0),  # now: no wait
        (b"t=1005", 0.0),  # in the future (another clock): ignored
        (b"t=", 0.0),
        (b"t=abc", 0.0),
        (b"t=nan", 0.0),
        (b"t=-inf", 0.0),
        (b"t=-5000", 0.0),  # longer ago than any queue: a wrong clock or a made-up value
    ],
)
def test_queued_time_from_nginx_header(value, expected):
    now = 1000.25
    assert queued_s([(b"x-request-start", value)], now) == pytest.approx(expected)
    assert queued_s([(b"x-other", b"t=1")], now) == 0.0


async def test_a_request_that_waited_out_its_budget_is_refused_at_once():
    called = False

    async def app(_scope: Any, _receive: Any, _send: Any) -> None:
        nonlocal called
        called = True

    lifetime = RequestEdge(app, deadline_s=5, max_in_flight=10)
    queued = f"t={time.time() - 6:.3f}".encode()
    sent = await _serve(lifetime, _scope_with((b"x-request-start", queued)))
    assert not called
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    assert orjson.loads(sent[1]["body"]) == {"errors": {"body": ["server busy, retry shortly"]}}
    assert (lifetime.admission.busy, lifetime.admission.queued) == (0, 0)


async def test_a_request_left_with_less_than_its_service_is_refused_even_when_idle():
    served = 0

    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        nonlocal served
        served += 1
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    lifetime = RequestEdge(app, deadline_s=1.0, max_in_flight=10)
    for _ in range(5):  # the process measures its service time
        assert (await _serve(lifetime, _scope_with()))[0]["status"] == 200
    assert lifetime.admission.margin_s() > 0.05
    # Every slot is free, but only 30 ms of its second are left: it could only end in 504.
    queued = f"t={time.time() - 0.97:.3f}".encode()
    sent = await _serve(lifetime, _scope_with((b"x-request-start", queued)))
    assert sent[0]["status"] == 503
    assert served == 5
    assert (lifetime.admission.busy, lifetime.admission.queued) == (0, 0)


async def test_time_spent_queued_comes_off_the_deadline():
    async def slow(_scope: Any, _receive: Any, _send: Any) -> None:
        await asyncio.sleep(30)

    lifetime = RequestEdge(slow, deadline_s=1.0, max_in_flight=10)
    queued = f"t={time.time() - 0.7:.3f}".encode()
    started = time.monotonic()
    sent = await _serve(lifetime, _scope_with((b"x-request-start", queued)))
    assert sent[0]["status"] == 504
    assert time.monotonic() - started < 0.7  # what was left of the second, not all of it

    started = time.monotonic()
    garbage = await _serve(lifetime, _scope_with((b"x-request-start", b"t=soon")))
    assert garbage[0]["status"] == 504
    assert time.monotonic() - started >= 0.95  # an unusable header: the whole budget
