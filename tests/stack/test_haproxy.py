"""The line held by HAProxy in front of the API (STACK_ADMISSION=haproxy), through the real
stack: a burst that fits the budget is served completely; one that does not is refused at
once with a Retry-After, and what was refused never reached the API; before any rate is
measured, a burst beyond what nginx's count rule would hold is refused at once too.

As in test_admission.py, a second API (here with HAProxy and nginx) runs beside the stack
under test on its data, with small limits: one worker, two requests at work at once."""

import asyncio
import json
import re
from collections import Counter

from bench.lib import targets
from bench.overload import haproxy_command, haproxy_counts, haproxy_socket
from tests.stack import test_admission
from tests.stack.conftest import STATE
from tests.stack.test_admission import _burst

token = test_admission.token  # the fixture: a token signed with the stack's secret
# The API writes a request's log line after its answer: what a burst's last answers leave.
LOG_SETTLE_S = 1.0


def _queued(key: str, deadline_s: float, **env: str) -> targets.Architecture:
    return targets.Architecture(
        key,
        "HAProxy's line",
        "one worker, two requests at work (HAProxy's maxconn), the rest in HAProxy's line",
        {
            "STACK_ADMISSION": "haproxy",
            "STACK_WORKERS": "1",
            "MAX_IN_FLIGHT": "2",
            "REQUEST_DEADLINE_S": str(deadline_s),
            "CACHE_ENABLED": "false",
            **env,
        },
    )


def _counts(target: targets.Target) -> dict[str, int]:
    stat = haproxy_command(haproxy_socket(target), "show stat")
    assert stat is not None
    return haproxy_counts(stat)


def _api_answers(key: str) -> Counter[int]:
    """The API's access log: every request it worked on, by status."""
    log = STATE / "variants" / key / "api" / "api.log"
    lines = map(json.loads, log.read_text().splitlines())
    return Counter(line["status"] for line in lines if "status" in line)


async def test_a_burst_that_fits_the_budget_is_served_completely_from_haproxys_line(
    token: str,
) -> None:
    with targets.running(targets.Stack.load(STATE), _queued("hafits", 5)) as target:
        await _burst(target.base_url, token, 20)  # the service rate is measured
        answers = await _burst(target.base_url, token, 150)
        counts = _counts(target)
    assert Counter(status for status, _, _ in answers) == {200: 150}
    assert counts["queue_max"] > 2  # they waited in HAProxy's line, not in the API's
    assert counts["refused_at_once"] == counts["queue_timeouts"] == 0


async def test_a_burst_beyond_the_budget_is_refused_by_haproxy_at_once(token: str) -> None:
    # Whether the line's bound is the measured rate's or, as a fresh line's, the prior's
    # (what nginx's count rule would hold, whatever the budget), it stays below what the
    # API serves within `timeout queue` here: a line of 40 per worker.
    hashed = _queued("hashed", 0.3, MAX_QUEUED="40")
    with targets.running(targets.Stack.load(STATE), hashed) as target:
        await _burst(target.base_url, token, 20)
        await asyncio.sleep(LOG_SETTLE_S)
        haproxy_command(haproxy_socket(target), "clear counters all")
        api_before = _api_answers("hashed").total()
        answers = await _burst(target.base_url, token, 1000)
        await asyncio.sleep(LOG_SETTLE_S)
        counts = _counts(target)
        api_worked = _api_answers("hashed").total() - api_before
    statuses = Counter(status for status, _, _ in answers)
    refused = [(seconds, retry) for status, seconds, retry in answers if status == 503]
    assert statuses[200] > 0
    assert statuses[503] > 500, (statuses, counts)
    assert set(statuses) <= {200, 503, 504}, statuses
    assert statuses[504] <= 0.02 * len(answers), statuses
    assert all(re.fullmatch(r"[1-9]\d*", retry) and int(retry) <= 30 for _, retry in refused)
    # Most refusals were HAProxy's at the door; the rest waited out its `timeout queue`. What
    # it refused never reached the API: the API worked on exactly what HAProxy handed on.
    assert counts["refused_at_once"] > statuses[503] / 2, counts
    assert api_worked == counts["to_api"], counts
    assert counts["refused_at_once"] + counts["queue_timeouts"] + counts["to_api"] == 1000
    # The line stayed far below the burst: bounded by the prior or the measured rate.
    assert counts["queue_max"] < 500, counts


async def test_a_cold_burst_beyond_the_count_rule_is_refused_at_once_and_the_rest_served(
    token: str,
) -> None:
    # Nothing measured yet: the line holds what nginx's count rule would (1 x (2 + 40)), less
    # the two at work, however long the budget.
    with targets.running(
        targets.Stack.load(STATE), _queued("hacold", 5, MAX_QUEUED="40")
    ) as target:
        haproxy_command(haproxy_socket(target), "clear counters all")  # the readiness probes
        answers = await _burst(target.base_url, token, 300)
        counts = _counts(target)
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) == {200, 503}, statuses
    # What was let in was served; every refusal was HAProxy's at the door, none waited out
    # `timeout queue`, and each says when to come back.
    assert statuses[200] == counts["to_api"] >= 42, (statuses, counts)
    assert statuses[503] == counts["refused_at_once"], (statuses, counts)
    assert counts["queue_timeouts"] == 0, counts
    assert all(re.fullmatch(r"[1-9]\d*", retry) for status, _, retry in answers if status == 503)
    # The line stopped at the prior (a request or two may enter as others leave it).
    assert 40 <= counts["queue_max"] <= 42, counts
