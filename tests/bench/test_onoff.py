"""bench.onoff's pure parts: the counters it reads, the figures it derives, the report it writes.
No stack and no timing here; `make bench-cache` / `make bench-observability` run it for real."""

from typing import Any

import pytest

from bench.onoff import (
    VIRAL_MIX,
    cache_counts,
    cache_delta,
    cache_figures,
    overhead,
    render,
    sql_per_request,
    viral_paths,
    weighted_script,
)

# As a multiprocess /metrics answers: the counter of every worker already summed.
EXPOSITION = """\
# HELP conduit_cache_requests_total Cache lookups by family (what is cached) and result.
# TYPE conduit_cache_requests_total counter
conduit_cache_requests_total{family="article",result="hit"} 900.0
conduit_cache_requests_total{family="article",result="miss"} 10.0
conduit_cache_requests_total{family="article",result="collapsed"} 90.0
conduit_cache_requests_total{family="tags",result="hit"} 40.0
# HELP conduit_http_requests_total HTTP requests answered.
# TYPE conduit_http_requests_total counter
conduit_http_requests_total{method="GET",route="/api/tags",status="200"} 50.0
"""


def test_cache_counter_is_read_by_family_and_result() -> None:
    assert cache_counts(EXPOSITION) == {
        ("article", "hit"): 900.0,
        ("article", "miss"): 10.0,
        ("article", "collapsed"): 90.0,
        ("tags", "hit"): 40.0,
    }
    assert cache_counts("") == {}


def test_hit_ratio_is_hits_over_hits_and_misses_between_two_readings() -> None:
    before = {("article", "hit"): 100.0, ("article", "miss"): 5.0}
    after = cache_counts(EXPOSITION)
    delta = cache_delta(before, after)
    assert delta["cache_lookups"] == {
        "local": 0, "hit": 840, "miss": 5, "collapsed": 90, "error": 0
    }  # fmt: skip
    assert delta["cache_hit_ratio"] == pytest.approx(840 / 845, abs=1e-4)
    assert delta["cache_served_ratio"] == pytest.approx(930 / 935, abs=1e-4)
    assert delta["cache_families"]["tags"] == {"hit": 40, "hit_ratio": 1.0}
    assert delta["cache_families"]["article"]["miss"] == 5


def test_an_l1_hit_is_a_hit() -> None:
    after = {("article", "local"): 90.0, ("article", "hit"): 5.0, ("article", "miss"): 5.0}
    delta = cache_delta({}, after)
    assert delta["cache_hit_ratio"] == pytest.approx(0.95)
    assert delta["cache_families"]["article"]["hit_ratio"] == pytest.approx(0.95)


def test_no_lookups_means_no_ratio() -> None:
    delta = cache_delta({}, {})
    assert delta["cache_hit_ratio"] is None
    assert delta["cache_families"] == {}


def test_sql_per_request_from_pgbouncer_totals() -> None:
    before = {"queries": 1000, "transactions": 990}
    after = {"queries": 1500, "transactions": 1400}
    figures = sql_per_request(before, after, requests=10_000)
    assert figures["sql_statements"] == 500
    assert figures["sql_per_request"] == 0.05
    assert figures["transactions_per_request"] == 0.041
    assert sql_per_request(before, after, requests=0)["sql_per_request"] is None


def test_sql_net_of_the_stacks_background_is_judged_against_the_target() -> None:
    step = _cache_step("stack", 9_900, 100, 2_000) | {"background_qps": 50.0, "duration_s": 30}
    figures = cache_figures(step)
    assert figures["sql_per_request"] == 0.2  # 2,000 statements, 10,000 answers
    assert figures["sql_per_request_net"] == pytest.approx((2_000 - 1_500) / 10_000)


def test_weighted_script_overrides_request_with_cumulative_edges() -> None:
    paths = viral_paths("hello-1")
    weighted = {paths[name]: share for name, share in VIRAL_MIX.items()}
    script = weighted_script(weighted, tokens=["t1", "t2"], logged_in=0.25)
    assert 'PATHS = {"/api/articles/hello-1", "/api/articles/hello-1/comments",' in script
    assert "EDGES = {0.35, 0.7, 0.9, 1}" in script
    assert 'tokens = {"t1","t2"}' in script
    assert "LOGGED_IN = 0.25" in script
    # The override comes after the mixed script's own request() and its done().
    assert script.rindex("request = function()") > script.index("done = function")


def _wrk_step(architecture: str, rps: float, **extra: Any) -> dict[str, Any]:
    return {
        "phase": "wrk", "architecture": architecture, "load": 64, "requests": int(rps * 10),
        "rps": rps, "p50_ms": 5.0, "p90_ms": 9.0, "p99_ms": 20.0, "max_ms": 40.0,
        "non_2xx": 0, "socket_errors": 0, "errors": {}, "cpu": {"API": rps / 1000, "other": 0.1},
    } | extra  # fmt: skip


def test_overhead_compares_the_means_of_on_and_off_runs() -> None:
    steps = [
        _wrk_step("stack", 900, endpoint="list", round=1),
        _wrk_step("noobs", 1000, endpoint="list", round=1),
        _wrk_step("stack", 1000, endpoint="list", round=2),
        _wrk_step("noobs", 1000, endpoint="list", round=2),
        _wrk_step("stack", 800, endpoint="article", round=1),
        _wrk_step("noobs", 1000, endpoint="article", round=1),
    ]
    rows = {r["endpoint"]: r for r in overhead(steps)}
    assert rows["list"]["ratio"] == 0.95
    assert rows["list"]["met"] is True
    assert rows["article"]["ratio"] == 0.8
    assert rows["article"]["met"] is False
    assert rows["list"]["best_ratio"] == 1.0  # noise only lowers throughput: best vs best
    assert rows["list"]["cpu_ms_on"] == pytest.approx(1.0)


def test_overhead_counts_only_answered_requests() -> None:
    shed = _wrk_step("stack", 1000, endpoint="list", round=1, non_2xx=5000)  # half were 503s
    rows = overhead([shed, _wrk_step("noobs", 1000, endpoint="list", round=1)])
    assert rows[0]["ratio"] == 0.5


META = {
    "command": "python -m bench.onoff cache",
    "started": "2026-11-30T10:00:00+00:00",
    "minutes": 1.5,
    "args": {"duration": 30, "warmup": 5, "logged_in": 0.2, "rounds": 2},
    "machine": {"cores (nproc)": "2", "CPU": "test"},
    "packages": {"fastapi": "0"},
    "dataset": {"users": 200, "articles": 2000},
    "viral": "hello-1",
    "tokens": ["user1@example.com"],
    "observability_on": {"METRICS_ENABLED": "(unset)", "ACCESS_LOG": "(unset)"},
}


def _cache_step(architecture: str, hits: int, misses: int, queries: int) -> dict[str, Any]:
    step = _wrk_step(architecture, 1000, load=2000)
    before = {"pgbouncer": {"queries": 0, "transactions": 0}, "cache": []}
    after_cache = [["article", "hit", hits], ["article", "miss", misses]] if hits else []
    after = {"pgbouncer": {"queries": queries, "transactions": queries}, "cache": after_cache}
    step |= {"before": before, "after": after}
    return step | cache_figures(step)


def test_cache_report_states_figures_and_targets() -> None:
    steps = [_cache_step("stack", 9_900, 100, 2_000), _cache_step("nocache", 0, 0, 14_000)]
    assert steps[0]["sql_per_request"] == 0.2
    report = render(META | {"scenario": "cache"}, steps)
    assert "| on | 2,000 | 1,000 |" in report
    assert "99.0%" in report
    assert "target ≥ 95%: met" in report
    assert "target ≤ 0.05: missed" in report
    assert "0.200 of all statements PgBouncer passed" in report
    assert "| off | 2,000 |" in report


def test_observability_report_has_the_ratio_and_every_run() -> None:
    steps = [
        _wrk_step("stack", 960, endpoint="list", round=1),
        _wrk_step("noobs", 1000, endpoint="list", round=1),
    ]
    report = render(META | {"scenario": "observability"}, steps)
    assert "| list | 64 | 960 | 1,000 | 96.0% | 96.0% | yes |" in report
    assert "METRICS_ENABLED=(unset)" in report
    assert report.count("| list | 64 | 1 |") == 2


def test_sql_is_counted_per_2xx_answer_not_per_shed_request() -> None:
    step = _cache_step("stack", 9_900, 100, 2_000) | {"non_2xx": 5_000}  # half shed with 503
    assert cache_figures(step)["sql_per_request"] == 0.4
