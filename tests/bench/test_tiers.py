"""bench/lib/tiers.py: nginx's access log and the API's tier counter, read as shares."""

from pathlib import Path

import pytest

from bench.lib.tiers import cache_statuses, shares

LINES = [
    '127.0.0.1 [t] "GET /api/tags HTTP/1.1" 200 4476 rid=a rt=0.000 urt=- cache=HIT',
    '127.0.0.1 [t] "GET /api/tags HTTP/1.1" 200 4476 rid=b rt=0.000 urt=- cache=UPDATING',
    '127.0.0.1 [t] "GET /api/tags HTTP/1.1" 200 4476 rid=c rt=0.004 urt=0.004 cache=EXPIRED',
    '127.0.0.1 [t] "GET /api/articles/a HTTP/1.1" 200 900 rid=d rt=0.002 urt=0.002 cache=BYPASS',
    '127.0.0.1 [t] "GET /api/articles/a HTTP/1.1" 503 60 rid=e rt=0.000 urt=0.000 cache=BYPASS',
    '127.0.0.1 [t] "POST /api/users/login HTTP/1.1" 200 300 rid=f rt=0.040 urt=0.040 cache=-',
]


def test_log_lines_after_the_offset_are_counted_by_cache_status(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("an earlier step's line\n" + "\n".join(LINES) + "\n")
    counted = cache_statuses(log, len("an earlier step's line\n"))
    assert counted == {
        "HIT": 1, "UPDATING": 1, "EXPIRED": 1, "BYPASS": 1, "refused": 1, "-": 1
    }  # fmt: skip


def test_shares_split_what_reached_the_api_by_its_tiers() -> None:
    step = {
        "nginx_cache": {"HIT": 6, "refused": 2, "EXPIRED": 2},
        "api_tiers": {"local": 1, "redis": 0, "database": 1, "none": 0},
    }
    assert shares(step) == pytest.approx(
        {
            "nginx": 0.6,
            "refused by nginx": 0.2,
            "local": 0.1,
            "redis": 0,
            "database": 0.1,
            "none": 0,
        }
    )
    assert shares({"nginx_cache": {"HIT": 1}}) is None
