"""A Prometheus collector for PgBouncer, read from its admin console at each scrape.

SHOW POOLS gives the queue in front of PostgreSQL (clients active and waiting, the longest
wait) and the server connections; SHOW STATS the cumulative transactions, queries and
client wait time. Metric names follow prometheus-community/pgbouncer_exporter, so its
dashboards and alerts read them too. Columns are looked up by name, so newer PgBouncer
versions with extra columns are fine.

The console speaks the simple query protocol only: psycopg's ClientCursor sends that.
"""

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# SHOW POOLS column -> (metric name, help)
POOL_GAUGES = {
    "cl_active": ("client_active_connections", "Client connections linked to a server or idle"),
    "cl_waiting": ("client_waiting_connections", "Client connections waiting for a server"),
    "sv_active": ("server_active_connections", "Server connections linked to a client"),
    "sv_idle": ("server_idle_connections", "Server connections idle and ready"),
    "sv_used": ("server_used_connections", "Server connections idle, to be checked"),
    "sv_tested": ("server_testing_connections", "Server connections being tested or reset"),
    "sv_login": ("server_login_connections", "Server connections logging in"),
}
# SHOW STATS column -> (metric name, help, divisor to seconds or 1)
STATS_COUNTERS = {
    "total_xact_count": ("sql_transactions_pooled", "Transactions pooled", 1),
    "total_query_count": ("queries_pooled", "Queries pooled", 1),
    "total_wait_time": ("client_wait_seconds", "Time clients waited for a server", 1e6),
    "total_xact_time": ("sql_transactions_duration_seconds", "Time spent in transactions", 1e6),
    "total_query_time": ("queries_duration_seconds", "Time spent in queries", 1e6),
}


class PgBouncerCollector(Collector):
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # the HTTP server may scrape from two threads

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("pgbouncer_up", "1 if PgBouncer's admin console answered")
        try:
            with self._lock:
                pools, stats = self._query("SHOW POOLS"), self._query("SHOW STATS")
        except psycopg.Error:
            self._close()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from pool_metrics(pools)
        yield from stats_metrics(stats)

    def _query(self, statement: str) -> list[dict[str, Any]]:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(
                self.admin_url,
                autocommit=True,
                connect_timeout=2,
                cursor_factory=psycopg.ClientCursor,
            )
        cursor = self._connection.execute(statement)
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def pool_metrics(rows: Iterable[Mapping[str, Any]]) -> Iterator[GaugeMetricFamily]:
    rows = list(rows)
    labels = ["database", "user"]
    for column, (name, help_text) in POOL_GAUGES.items():
        family = GaugeMetricFamily(f"pgbouncer_pools_{name}", help_text, labels=labels)
        for row in rows:
            if column in row:
                family.add_metric([row["database"], row["user"]], float(row[column]))
        yield family
    maxwait = GaugeMetricFamily(
        "pgbouncer_pools_client_maxwait_seconds",
        "How long the oldest waiting client has waited",
        labels=labels,
    )
    for row in rows:
        seconds = float(row.get("maxwait", 0)) + float(row.get("maxwait_us", 0)) / 1e6
        maxwait.add_metric([row["database"], row["user"]], seconds)
    yield maxwait


def stats_metrics(rows: Iterable[Mapping[str, Any]]) -> Iterator[CounterMetricFamily]:
    rows = list(rows)
    for column, (name, help_text, divisor) in STATS_COUNTERS.items():
        family = CounterMetricFamily(f"pgbouncer_stats_{name}", help_text, labels=["database"])
        for row in rows:
            if column in row:
                family.add_metric([row["database"]], float(row[column]) / divisor)
        yield family
