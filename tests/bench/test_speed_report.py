"""api_speed's one table (bench/lib/speed_report.py): each endpoint on each server against
its floor, and issue 17's verdicts."""

from dataclasses import replace

from bench.lib.speed_report import Endpoint, Measurement, summary
from bench.lib.wrk import WrkResult

LIST = Endpoint("list", "/api/articles?limit=20")
LIVEZ = Endpoint("livez", "/livez")
CACHED = Endpoint("cached-list-auth", "/api/articles?limit=20", auth=True, cached=True)


def run(
    endpoint: Endpoint, server: str, rps: int, workers: float, floor: bool = False
) -> Measurement:
    result = WrkResult(
        requests=rps * 10,
        duration_s=10,
        p50_ms=1,
        p90_ms=2,
        p99_ms=3,
        max_ms=4,
        non_2xx=0,
        socket_errors=0,
        output="",
    )
    cpu = {"API workers": workers, "PostgreSQL": 0.5, "other": 0.1}
    return Measurement(endpoint, server, floor, result, cpu)


def test_each_endpoint_on_each_server_against_its_floor():
    table = summary(
        [
            run(LIST, "uvicorn", 800, 1.0),
            run(LIST, "granian", 600, 1.2),
            run(LIVEZ, "uvicorn", 5000, 1.0),
            run(CACHED, "uvicorn", 4000, 0.8),
            run(LIST, "uvicorn", 1000, 0.5, floor=True),
            run(LIVEZ, "uvicorn", 10000, 1.0, floor=True),
            run(CACHED, "uvicorn", 20000, 1.0, floor=True),
        ]
    ).splitlines()
    assert table[0] == (
        "| server | endpoint | API req/s | floor req/s | API / floor | target | met "
        "| API workers ms/req | PostgreSQL ms/req |"
    )
    assert table[2:] == [
        "| uvicorn | `GET /api/articles?limit=20` | 800 | 1,000 | 80% | ≥ 75% of floor | yes "
        "| 1.25 / 0.50 | 0.62 / 0.50 |",
        "| granian | `GET /api/articles?limit=20` | 600 | - | - | ≥ 75% of floor | - "
        "| 2.00 | 0.83 |",
        "| uvicorn | `GET /livez` | 5,000 | 10,000 | 50% | ≥ 60% of floor | no "
        "| 0.20 / 0.10 | 0.10 / 0.05 |",
        "| uvicorn | `GET /api/articles?limit=20 (logged in, cached)` | 4,000 | 20,000 | 20% "
        "| ≤ 0.25 ms | yes | 0.20 / 0.05 | 0.12 / 0.03 |",
    ]


def test_errors_fail_the_target():
    floor = run(LIST, "uvicorn", 1000, 0.5, floor=True)
    broken = replace(floor, result=replace(floor.result, non_2xx=5))
    assert "| no (errors) |" in summary([run(LIST, "uvicorn", 900, 1.0), broken])


def test_the_two_runs_of_a_side_are_added_up() -> None:
    """ABBA: each side runs twice; the table reads their requests and CPU seconds together."""
    first, second = run(LIST, "uvicorn", 1000, 0.5), run(LIST, "uvicorn", 500, 0.5)
    table = summary([first, run(LIST, "uvicorn", 1000, 0.25, floor=True), second])
    # 15,000 requests in 2 x 10 s; 0.5 cores x 20 s = 10 s of CPU over 15,000 requests
    assert "| 750 | 1,000 | 75% |" in table
    assert "| 0.67 / 0.25 |" in table
