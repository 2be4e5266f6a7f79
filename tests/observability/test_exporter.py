"""The stack exporter's collectors: PgBouncer's console rows, nginx's stub_status, /readyz."""

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from app.observability.exporter import NginxStatusCollector, ReadinessCollector
from app.observability.pgbouncer import PgBouncerCollector, pool_metrics, stats_metrics
from tests.observability.names import POOL_ROW, STATS_ROW, fake_nginx_and_api


def samples(families: Iterable[Metric]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in families
        for sample in family.samples
    }


def test_pool_rows_become_gauges_per_database_and_user() -> None:
    row = POOL_ROW | {"cl_waiting": 12, "maxwait": 2, "maxwait_us": 500_000}
    found = samples(pool_metrics([row]))
    key = ("conduit", "conduit")
    assert found["pgbouncer_pools_client_waiting_connections", key] == 12
    assert found["pgbouncer_pools_client_active_connections", key] == 1
    assert found["pgbouncer_pools_server_active_connections", key] == 1
    assert found["pgbouncer_pools_client_maxwait_seconds", key] == 2.5


def test_stats_rows_become_counters_in_seconds() -> None:
    row = STATS_ROW | {"total_wait_time": 3_000_000, "total_xact_count": 40}
    found = samples(stats_metrics([row]))
    assert found["pgbouncer_stats_client_wait_seconds_total", ("conduit",)] == 3.0
    assert found["pgbouncer_stats_sql_transactions_pooled_total", ("conduit",)] == 40


def test_an_unreachable_pgbouncer_is_reported_down() -> None:
    collector = PgBouncerCollector("postgresql://nobody:x@127.0.0.1:1/pgbouncer")
    assert samples(collector.collect()) == {("pgbouncer_up", ()): 0}


def test_nginx_status_and_readiness() -> None:
    with fake_nginx_and_api() as base:
        nginx = samples(NginxStatusCollector(base + "/nginx_status").collect())
        ready = samples(ReadinessCollector(base + "/readyz").collect())
    assert nginx["nginx_up", ()] == 1
    assert nginx["nginx_connections_active", ()] == 291
    assert nginx["nginx_connections_waiting", ()] == 106
    assert nginx["nginx_http_requests_total", ()] == 31070465
    assert ready == {("conduit_ready", ()): 1}
    down = "http://127.0.0.1:1"
    assert samples(NginxStatusCollector(down).collect()) == {("nginx_up", ()): 0}
    assert samples(ReadinessCollector(down).collect()) == {("conduit_ready", ()): 0}
