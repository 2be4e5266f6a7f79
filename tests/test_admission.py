"""Admission by waiting time (app/middleware/admission.py through the request edge): a burst
that fits the budget is served completely, one that does not is refused at once with a
Retry-After from the line's drain time, refused requests do no work, the line stays within
its bound, and a client that leaves while waiting leaves the line."""

import asyncio
import time
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

import pytest

from app.middleware.admission import Admission
from app.middleware.request_edge import RequestEdge

SCOPE = {"type": "http", "method": "GET", "path": "/api/articles", "headers": []}


class Work:
    """An app that takes `service_s` per request and counts the requests it worked on."""

    def __init__(self, service_s: float) -> None:
        self.service_s = service_s
        self.calls = 0

    async def __call__(self, _scope: Any, _receive: Any, send: Any) -> None:
        self.calls += 1
        await asyncio.sleep(self.service_s)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def _request(
    lifetime: RequestEdge, *, leave_after_s: float | None = None
) -> tuple[int | None, dict[bytes, bytes], float]:
    """(status or None when nobody answered, headers, seconds until the answer)."""
    sent: list[MutableMapping[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(60 if leave_after_s is None else leave_after_s)
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    started = time.monotonic()
    await lifetime(dict(SCOPE), receive, send)
    if not sent:
        return None, {}, time.monotonic() - started
    return sent[0]["status"], dict(sent[0]["headers"]), time.monotonic() - started


async def _warm(lifetime: RequestEdge, requests: int = 20) -> None:
    """Some requests one after another: the process has measured its service time."""
    for _ in range(requests):
        await _request(lifetime)


async def test_a_burst_that_fits_the_budget_is_served_completely():
    work = Work(service_s=0.02)
    lifetime = RequestEdge(work, deadline_s=5, max_in_flight=2, max_queued=1000)
    await _warm(lifetime)
    deepest = 0

    async def watch() -> None:
        nonlocal deepest
        while True:
            deepest = max(deepest, lifetime.admission.queued)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    answers = await asyncio.gather(*(_request(lifetime) for _ in range(200)))
    watcher.cancel()
    assert Counter(status for status, _, _ in answers) == {200: 200}
    assert deepest > 100  # they did wait in line, not all at once
    assert max(seconds for _, _, seconds in answers) < 5


async def test_a_burst_that_cannot_be_served_in_time_is_refused_at_once_without_work():
    work = Work(service_s=0.1)
    lifetime = RequestEdge(work, deadline_s=1, max_in_flight=1, max_queued=1000)
    await _warm(lifetime, 10)
    work.calls = 0
    answers = await asyncio.gather(*(_request(lifetime) for _ in range(40)))
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) == {200, 503}
    assert 4 <= statuses[200] <= 10  # what one slot serves in one second
    assert work.calls == statuses[200]  # the refused did no work
    refused = [(headers, seconds) for status, headers, seconds in answers if status == 503]
    assert max(seconds for _, seconds in refused) < 0.5  # at once, not at the deadline
    # Retry-After: when the line ahead will have drained at the measured rate (about 1 s).
    assert {int(headers[b"retry-after"]) for headers, _ in refused} <= {1, 2}
    assert statuses.get(504, 0) == 0


async def test_the_line_never_exceeds_its_bound():
    work = Work(service_s=0.05)
    lifetime = RequestEdge(work, deadline_s=30, max_in_flight=1, max_queued=3)
    await _warm(lifetime, 5)
    deepest = 0

    async def watch() -> None:
        nonlocal deepest
        while True:
            deepest = max(deepest, lifetime.admission.queued)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    answers = await asyncio.gather(*(_request(lifetime) for _ in range(30)))
    watcher.cancel()
    statuses = Counter(status for status, _, _ in answers)
    assert deepest <= 3
    assert statuses[200] == 4  # one at work, three waiting; the rest refused
    assert statuses[503] == 26


async def test_a_client_that_leaves_while_waiting_is_never_worked_on():
    work = Work(service_s=0.3)
    lifetime = RequestEdge(work, deadline_s=5, max_in_flight=1, max_queued=10)
    await _warm(lifetime, 3)
    work.calls = 0
    first = asyncio.create_task(_request(lifetime))
    await asyncio.sleep(0.05)
    leaving = await _request(lifetime, leave_after_s=0.1)  # gone while the first is served
    assert leaving[0] is None  # nobody to answer
    assert lifetime.admission.queued == 0
    assert (await first)[0] == 200
    assert work.calls == 1


async def test_a_request_cancelled_in_line_gives_its_place_back():
    """The server cancels a waiting request (shutting down): it leaves the line, and no slot
    is lost to it."""
    work = Work(service_s=0.3)
    lifetime = RequestEdge(work, deadline_s=5, max_in_flight=1, max_queued=10)
    await _warm(lifetime, 3)
    work.calls = 0
    first = asyncio.create_task(_request(lifetime))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(_request(lifetime))
    await asyncio.sleep(0.05)
    assert lifetime.admission.queued == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lifetime.admission.queued == 0
    assert (await first)[0] == 200
    assert (lifetime.admission.busy, work.calls) == (0, 1)
    assert (await _request(lifetime))[0] == 200  # the slot is free


def test_the_prediction_follows_the_measured_service_time():
    admission = Admission(slots=2, max_queued=100)
    for _ in range(200):
        admission.busy += 1
        admission.release(0.5)
    assert abs(admission.service_s - 0.5) < 0.01
    admission.busy = 2  # both slots taken
    assert admission.admits(budget_s=5)
    assert not admission.admits(budget_s=0.6)  # 0.25 s in line + 0.5 s of service


def test_a_spread_of_service_times_asks_for_more_headroom_than_their_mean():
    steady, spread = Admission(slots=1, max_queued=100), Admission(slots=1, max_queued=100)
    for n in range(200):
        for admission, served_s in ((steady, 0.05), (spread, 0.01 if n % 2 else 0.09)):
            admission.busy += 1
            admission.release(served_s)
    assert abs(steady.service_s - spread.service_s) < 0.01  # the same mean
    assert steady.margin_s() == pytest.approx(0.075)  # 1.5 means
    assert spread.margin_s() > 0.05 + 4 * 0.03  # the mean and four deviations
    steady.busy = spread.busy = 1
    assert steady.admits(budget_s=0.2)
    assert not spread.admits(budget_s=0.2)
