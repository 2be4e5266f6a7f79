"""The pure parts of bench.overload: parsing what nginx, wrk and /metrics say, the time to
idle from samples, and the report. The benchmark itself needs a stack and minutes."""

from typing import Any

from bench import overload
from bench.lib.targets import NOSHED
from bench.overload import IdleSample, settle_time, time_to_idle

ACCESS = [
    '127.0.0.1 [2026-11-30T09:41:39+00:00] "GET /api/articles?limit=20 HTTP/1.1" 200 9000 '
    "rid=a rt=0.120 urt=0.119",
    '127.0.0.1 [2026-11-30T09:41:39+00:00] "GET /api/articles/x-1 HTTP/1.1" 200 900 '
    "rid=b rt=2.500 urt=2.499",
    '127.0.0.1 [2026-11-30T09:41:40+00:00] "GET /api/articles HTTP/1.1" 503 50 '
    "rid=c rt=0.002 urt=0.002",
    '127.0.0.1 [2026-11-30T09:41:41+00:00] "GET /api/tags HTTP/1.1" 499 0 rid=d rt=9.000 urt=-',
    "not an access log line",
]
# max_conns reached: nginx refuses (no upstream time), or serves its expired copy.
REFUSED = [
    '127.0.0.1 [2026-12-06T02:12:08+00:00] "GET /api/articles/x-1 HTTP/1.1" 503 52 '
    "rid=e rt=0.000 urt=0.000 cache=BYPASS",
    '127.0.0.1 [2026-12-06T02:12:08+00:00] "GET /api/tags HTTP/1.1" 200 900 '
    "rid=f rt=0.000 urt=0.000 cache=STALE",
    '127.0.0.1 [2026-12-06T02:12:08+00:00] "GET /api/tags HTTP/1.1" 503 52 '
    "rid=g rt=0.014 urt=0.013 cache=EXPIRED",
]


def _samples(*rows: tuple[float, float | None, int | None, float | None]) -> list[IdleSample]:
    return [IdleSample(*row) for row in rows]


def test_served_counts_statuses_and_times_only_2xx() -> None:
    result = overload.served(ACCESS)
    assert result["log_statuses"] == {"200": 2, "499": 1, "503": 1}
    assert result["served_logged"] == 2
    assert result["served_p50_ms"] == 2500.0  # of [120, 2500]: index int(0.5 * 2)
    assert result["served_max_ms"] == 2500.0


def test_served_tells_nginx_refusals_from_the_api_ones() -> None:
    result = overload.served(ACCESS + REFUSED)
    assert result["log_503_nginx"] == 1
    assert result["log_503_api"] == 2
    assert result["log_stale"] == 1
    assert result["log_answers"] == 7


def test_architecture_by_name_and_deeper_lines() -> None:
    assert overload.architecture("count") is overload.TARGETS["count"]
    deep = overload.architecture("queued1024")
    assert deep is not None
    assert deep.key == "queued1024"
    # The API's own line: nginx's count rule admits, not HAProxy.
    assert deep.variant_env == {"STACK_ADMISSION": "nginx", "MAX_QUEUED": "1024"}
    assert overload.architecture("queued0") is None
    assert overload.architecture("deep") is None
    assert overload.parse_args(["--targets", "on,queued512"]).targets == ["on", "queued512"]


def test_served_without_2xx_has_no_percentiles() -> None:
    result = overload.served(ACCESS[2:])
    assert result["served_logged"] == 0
    assert result["served_p99_ms"] is None


def test_in_flight_sums_the_gauge_and_ignores_other_metrics() -> None:
    text = (
        "# HELP conduit_http_requests_in_flight Requests being served right now\n"
        "# TYPE conduit_http_requests_in_flight gauge\n"
        "conduit_http_requests_in_flight 12.0\n"
        "conduit_http_requests_in_flight_other 99.0\n"
        'conduit_http_requests_shed_total{reason="overload"} 5.0\n'
    )
    assert overload.in_flight(text) == 12.0
    assert overload.in_flight('conduit_http_requests_in_flight{pid="1"} 2.0\n') == 2.0
    assert overload.in_flight("up 1\n") is None


def test_nginx_errors_by_kind() -> None:
    lines = [
        "2026/11/30 09:41:39 [alert] 12#12: 16384 worker_connections are not enough",
        "2026/11/30 09:41:39 [crit] 12#12: connect() failed (99: Cannot assign requested address)",
        "2026/11/30 09:41:39 [error] 12#12: upstream timed out (110: Connection timed out)",
        "2026/11/30 09:41:39 [error] 12#12: something else",
        "2026/11/30 09:41:39 [notice] 12#12: signal process started",
    ]
    assert overload.nginx_errors(lines) == {
        "worker_connections": 1,
        "no free local port": 1,
        "upstream timed out": 1,
        "other": 1,
    }


def test_settle_time_is_the_start_of_the_final_idle_run() -> None:
    samples = _samples(
        (0.1, 300, 5, 1.9),
        (0.2, 0, 0, 0.1),  # idle for a moment ...
        (0.3, 4, 1, 0.9),  # ... then busy again
        (0.4, 0, 0, 0.3),
        (0.5, 0, 0, 0.2),
        (0.6, 0, 0, 0.1),
    )
    assert settle_time(samples, "in_flight") == 0.4
    assert settle_time(samples, "pg_active") == 0.4
    assert settle_time(samples, "api_cores") == 0.5  # 0.3 cores is above the idle mark
    assert time_to_idle(samples) == {
        "idle_in_flight_s": 0.4,
        "idle_pg_active_s": 0.4,
        "idle_api_cores_s": 0.5,
        "idle_s": 0.5,
    }


def test_unknown_or_busy_at_the_end_never_settles() -> None:
    unanswered = _samples((0.1, 0, 0, 0.1), (0.2, None, 0, 0.1))  # /metrics timed out
    assert settle_time(unanswered, "in_flight") is None
    assert time_to_idle(unanswered)["idle_s"] is None
    assert time_to_idle([])["idle_s"] is None


def test_held_idle_needs_every_signal_idle_for_the_hold() -> None:
    rows = [(t / 10, 0, 0, 0.1) for t in range(1, 12)]
    assert overload.held_idle(_samples(*rows[:10]), hold_s=1.0) is False  # 0.1 .. 1.0
    assert overload.held_idle(_samples(*rows), hold_s=1.0) is True  # 0.1 .. 1.1
    assert overload.held_idle(_samples(*rows[:-1], (1.1, 1, 0, 0.1)), hold_s=1.0) is False


def test_summarise_goodput_and_shares_from_wrk() -> None:
    wrk = {
        "requests": 1000,
        "non_2xx": 400,
        "socket_errors": 7,
        "errors": {"HTTP 503 shed": 300, "HTTP 504 deadline": 50, "HTTP 503": 50},
    }
    assert overload.summarise(wrk, 20.0) == {
        "goodput": 30.0,
        "shed_share": 0.3,
        "deadline_share": 0.05,
        "other_non_2xx": 50,
        "socket_errors": 7,
    }


WRK = {"requests": 1000, "non_2xx": 300, "socket_errors": 0, "errors": {"HTTP 503 shed": 300}}


def _step(shedding: str, connections: int, p99: float | None, idle: float | None) -> dict[str, Any]:
    samples = _samples((0.1, 0, 0, 0.1))
    return {
        "shedding": shedding,
        "connections": connections,
        "requests": 1000,
        "p99_ms": 10.0,
        "non_2xx": WRK["non_2xx"],
        "errors": {"HTTP 503 shed": 300},
        "nginx_errors": {},
        "cpu": {"API": 1.5},
        "pg_backends_peak": 20,
        "pg_active_peak": 18,
        "idle_samples": [s.__dict__ for s in samples],
        "served_logged": 700,
        "served_p50_ms": 100.0,
        "served_p90_ms": 900.0,
        "served_p99_ms": p99,
        "served_max_ms": 6000.0,
        **overload.summarise(WRK, 20.0),
        **{f"idle_{k}_s": idle for k in overload.IDLE},
        "idle_s": idle,
    }


def test_verdicts_judge_the_waiting_lines_against_the_budget() -> None:
    steps = [
        _step("on", 500, 1200.0, 0.8),
        _step("on", 10000, 7000.0, None),
        _step("off", 10000, 9000.0, 30.0),
    ]
    lines = overload.verdicts(steps)
    assert len(lines) == 2
    assert "on, 500 connections" in lines[0]
    assert lines[0].count(": yes") == 2
    assert "10,000 connections" in lines[1]
    assert "idle after never s" in lines[1]
    assert lines[1].count(": no") == 2
    assert "goodput 100% of the best step before (≥ 90 %: yes)" in lines[1]


def test_verdicts_want_no_error_at_2000_and_judge_deeper_lines_too() -> None:
    steps = [_step("queued1024", 2000, 900.0, 0.5), _step("count", 2000, 100.0, 0.1)]
    lines = overload.verdicts(steps)
    assert len(lines) == 1
    assert lines[0].startswith("- queued1024, 2,000 connections: errors 300 (0: no)")


def test_report_renders_every_step_and_the_machine() -> None:
    meta = {
        "started": "2026-11-30T09:41:39+00:00",
        "command": "python -m bench.overload",
        "args": {"duration": 20, "threads": 2, "wrk_timeout": 10},
        "machine": {"CPU": "AMD EPYC", "cores (nproc)": "2"},
    }
    steps = [_step("on", 10000, 1200.0, 0.8), _step("off", 10000, 9000.0, None)]
    text = overload.render(meta, steps)
    assert text.startswith("# Overload, 2026-11-30T09:41:39+00:00")
    assert NOSHED.description in text
    assert "| on | 10,000 | 35.0 | 100 | 1,200 | 10 | 30.0% | n/a |" in text
    assert "| off | 10,000 |" in text
    assert "| AMD EPYC |" in text
    assert "never" in text
    assert "`python -m bench.overload`" in text


def test_accept_queue_reads_the_listening_sockets_of_the_port() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
        "   0: 0100007F:1F41 00000000:0000 0A 00000000:0000012C 00:00000000 00000000\n"
        "   1: 0100007F:1F41 0100007F:9C40 01 00000000:00000000 00:00000000 00000000\n"
        "   2: 0100007F:1F90 00000000:0000 0A 00000000:00000007 00:00000000 00000000\n"
    )
    assert overload.accept_queue(8001, table) == 300  # the established one is not counted
    assert overload.accept_queue(8080, table) == 7
    assert overload.accept_queue(9999, table) is None


def test_shed_reasons_and_what_was_shed_between_two_readings() -> None:
    text = (
        "# TYPE conduit_http_requests_shed_total counter\n"
        'conduit_http_requests_shed_total{reason="overload"} 30.0\n'
        'conduit_http_requests_shed_total{reason="queued"} 5.0\n'
        "conduit_http_requests_in_flight 3.0\n"
    )
    after = overload.shed_reasons(text)
    assert after == {"overload": 30.0, "queued": 5.0}
    before = {"overload": 10.0, "queued": 5.0}
    assert overload.shed_between(before, after) == {"overload": 20}
    assert overload.shed_between(None, after) is None
