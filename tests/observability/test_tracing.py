"""One request, one connected trace: FastAPI's server span down to each SQL statement."""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.main import create_app
from app.observability import tracing
from tests.conftest import ROOT


async def test_one_request_is_one_connected_trace_with_database_spans(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, tracer_provider=provider)

    # The app as uvicorn runs it: its own lifespan (engine instrumented there), its state
    # handed to every request.
    async with app.router.lifespan_context(app) as state:

        async def served(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, "state": dict(state or {})}, receive, send)

        transport = httpx.ASGITransport(app=served)
        async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
            response = await client.get("/api/articles", params={"tag": "dragons"})
    assert response.status_code == 200
    provider.force_flush()
    spans = exporter.get_finished_spans()

    (server,) = [span for span in spans if span.kind is SpanKind.SERVER]
    assert server.name == "GET /api/articles"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/api/articles"
    assert server.attributes["http.response.status_code"] == 200
    assert server.parent is None
    assert {span.context.trace_id for span in spans} == {server.context.trace_id}
    database = [span for span in spans if (span.attributes or {}).get("db.system") == "postgresql"]
    assert database, [span.name for span in spans]
    by_id = {span.context.span_id: span for span in spans}
    for span in database:
        assert _root(span, by_id) is server


def _root(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan:
    while span.parent is not None:
        span = by_id[span.parent.span_id]  # a missing parent fails: the trace is broken
    return span


def test_tracing_is_off_without_an_endpoint(settings: Settings) -> None:
    assert tracing.configure_tracing(settings) is None
    app = create_app(settings)
    assert app._telemetry["tracing"] is False  # FastAPI's native telemetry never starts


SERVE_ONE_REQUEST = """
import asyncio
import httpx
from opentelemetry import trace
from app.main import create_app

async def main():
    app = create_app()
    async with app.router.lifespan_context(app) as state:
        async def served(scope, receive, send):
            await app({**scope, "state": dict(state or {})}, receive, send)
        transport = httpx.ASGITransport(app=served)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/api/tags")).status_code == 200
    trace.get_tracer_provider().force_flush()

asyncio.run(main())
"""


def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(database_url: str) -> None:
    """In a process of its own: tracing on is process-wide (global provider, patched clients)."""
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "OTEL_SERVICE_NAME": "conduit-test",
    }
    try:
        result = subprocess.run(  # noqa: S603 - our own script
            [sys.executable, "-c", SERVE_ONE_REQUEST],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert received, result.stderr
    assert {path for path, _ in received} == {"/v1/traces"}
    body = b"".join(body for _, body in received)
    for expected in (b"conduit-test", b"GET /api/tags", b"postgresql"):
        assert expected in body, expected
