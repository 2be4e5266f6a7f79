"""Which metric names exist, and which ones a PromQL expression reads."""

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from app.observability import metrics
from app.observability.exporter import NginxStatusCollector, ReadinessCollector
from app.observability.pgbouncer import pool_metrics, stats_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"

STUB_STATUS = (
    "Active connections: 291 \n"
    "server accepts handled requests\n"
    " 16630948 16630948 31070465 \n"
    "Reading: 6 Writing: 179 Waiting: 106 \n"
)
POOL_ROW = {
    "database": "conduit",
    "user": "conduit",
    **dict.fromkeys(("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used"), 1),
    **dict.fromkeys(("sv_tested", "sv_login", "maxwait", "maxwait_us"), 0),
}
STATS_ROW = {
    "database": "conduit",
    **dict.fromkeys(
        ("total_xact_count", "total_query_count", "total_wait_time", "total_xact_time"), 7
    ),
    "total_query_time": 7,
}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


def app_names() -> set[str]:
    """Sample names the API's metrics produce."""
    names = set()
    for collector in vars(metrics).values():
        if isinstance(collector, Counter):
            names.add(collector._name + "_total")
        elif isinstance(collector, Histogram):
            names |= {collector._name + suffix for suffix in ("_bucket", "_sum", "_count")}
        elif isinstance(collector, Gauge):
            names.add(collector._name)
    return names


@contextmanager
def fake_nginx_and_api() -> Iterator[str]:
    """A local server answering /nginx_status like nginx and /readyz like a ready API."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = STUB_STATUS.encode() if self.path == "/nginx_status" else b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def exporter_names() -> set[str]:
    """Sample names the stack exporter produces (PgBouncer, nginx, readiness)."""
    families = [*pool_metrics([POOL_ROW]), *stats_metrics([STATS_ROW])]
    with fake_nginx_and_api() as base:
        collectors: list[Collector] = [
            NginxStatusCollector(base + "/nginx_status"),
            ReadinessCollector(base + "/readyz"),
        ]
        for collector in collectors:
            families.extend(collector.collect())
    return {sample.name for family in families for sample in family.samples} | {"pgbouncer_up"}


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def known_names() -> set[str]:
    return app_names() | exporter_names() | recorded_names() | {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group()
        following = expr[match.end() :].lstrip()[:1]
        if word.lower() in _KEYWORDS or following == "(":
            continue  # a keyword or a function
        if re.fullmatch(r"\d+[smhdwy]", word) or word.startswith("$"):
            continue
        names.add(word)
    return names
