"""`python -m app.observability.exporter`: the stack's own Prometheus exporter.

Serves, on its own port, what the API processes cannot report themselves: PgBouncer's pools
and stats (PGBOUNCER_ADMIN_URL, app/observability/pgbouncer.py), nginx's connection counts
(its stub_status page, NGINX_STATUS_URL: the "concurrent clients" of the dashboard) and
whether the API's /readyz answers 200 (API_READY_URL, `conduit_ready`, for the readiness
alert; a blackbox exporter's job, in three lines). Each source is read at scrape time; one
that does not answer reports `*_up 0` and nothing else.

    python -m app.observability.exporter --port 9127
"""

import argparse
import os
import re
import signal
import threading
import urllib.request
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.observability.pgbouncer import PgBouncerCollector

_STUB_STATUS = re.compile(
    r"Active connections:\s*(\d+).*?(\d+)\s+(\d+)\s+(\d+)\s*"
    r"Reading:\s*(\d+)\s*Writing:\s*(\d+)\s*Waiting:\s*(\d+)",
    re.S,
)


class NginxStatusCollector(Collector):
    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("nginx_up", "1 if nginx's stub_status answered")
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:  # noqa: S310 - our own URL
                match = _STUB_STATUS.search(response.read().decode())
        except OSError:
            match = None
        up.add_metric([], 1 if match else 0)
        yield up
        if match is None:
            return
        active, accepted, handled, requests, reading, writing, waiting = map(int, match.groups())
        yield GaugeMetricFamily("nginx_connections_active", "Open client connections", value=active)
        for state, value in (("reading", reading), ("writing", writing), ("waiting", waiting)):
            yield GaugeMetricFamily(
                f"nginx_connections_{state}", f"Client connections {state}", value=value
            )
        yield CounterMetricFamily(
            "nginx_connections_accepted", "Client connections accepted", value=accepted
        )
        yield CounterMetricFamily(
            "nginx_connections_handled", "Client connections handled", value=handled
        )
        yield CounterMetricFamily("nginx_http_requests", "Client requests", value=requests)


class ReadinessCollector(Collector):
    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:  # noqa: S310 - our own URL
                ready = response.status == 200
        except OSError:  # HTTPError (503) included
            ready = False
        yield GaugeMetricFamily(
            "conduit_ready", "1 if the API's /readyz answered 200", value=1.0 if ready else 0.0
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app.observability.exporter")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9127)
    parser.add_argument("--pgbouncer-admin-url", default=os.environ.get("PGBOUNCER_ADMIN_URL"))
    parser.add_argument("--nginx-status-url", default=os.environ.get("NGINX_STATUS_URL"))
    parser.add_argument("--ready-url", default=os.environ.get("API_READY_URL"))
    args = parser.parse_args()
    registry = CollectorRegistry(auto_describe=False)
    if args.pgbouncer_admin_url:
        registry.register(PgBouncerCollector(args.pgbouncer_admin_url))
    if args.nginx_status_url:
        registry.register(NginxStatusCollector(args.nginx_status_url))
    if args.ready_url:
        registry.register(ReadinessCollector(args.ready_url))
    server, thread = start_http_server(args.port, args.host, registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join()


if __name__ == "__main__":
    main()
