"""OpenTelemetry traces: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

Off, nothing is instrumented and FastAPI's own telemetry is switched off, so the cost is one
dictionary lookup per request. On, one trace per request holds:

- the server span and its operation spans (dependencies, endpoint, serialisation) from
  FastAPI's native OpenTelemetry support (FastAPI >= 0.160; no ASGI instrumentation needed);
- a span per SQL statement (the engine's events, `instrument_engine`; public reads on the
  driver make their own, named and attributed alike: app/db_reads.py);
- a span per Redis command and per outbound httpx request (client classes patched once per
  process), with the trace context injected into outbound headers.

Spans go over OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. http://collector:4318) in
batches; `OTEL_SERVICE_NAME` names the service and the SDK's own OTEL_* variables (sampler,
headers, timeouts) apply. Jobs use `opentelemetry.trace.get_tracer(__name__)`.
"""

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from fastapi.telemetry import TelemetryConfig
from fastapi.telemetry._api import _route_selected
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.observability import logs

if TYPE_CHECKING:  # the SDK, exporter and instrumentations load only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider

_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def configure_tracing(settings: Settings) -> "TracerProvider | None":
    """The process's tracer provider when an OTLP endpoint is configured, else None."""
    if not settings.otel_exporter_otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # a second app in this process: share it
        return current
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    logs.include_trace_ids()
    RedisInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    return provider


def fastapi_telemetry(provider: "TracerProvider | None") -> TelemetryConfig:
    """FastAPI's native telemetry: spans with `provider`, nothing at all without one.
    Metrics stay with Prometheus (app/observability/metrics.py), logs with app.observability.logs."""
    if provider is None:
        return _OFF
    return {"tracer_provider": provider, "metrics": False, "logs": False}


def instrument_engine(engine: AsyncEngine, provider: "TracerProvider") -> None:
    """A span per statement on this engine. EngineTracer directly, not SQLAlchemyInstrumentor,
    which would also patch create_engine process-wide and instrument only once per process."""
    from opentelemetry import metrics
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", tracer_provider=provider)
    usage: Any = (
        metrics.NoOpMeterProvider()
        .get_meter("conduit")
        .create_up_down_counter("db.client.connections.usage")
    )
    EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]


def route_selected(scope: MutableMapping[str, Any], template: str) -> None:
    """Names the request's server span and metrics by `template`, as FastAPI's router does when
    it selects a route. The hot reads (app/hot_reads.py) are selected outside that router, so
    they tell FastAPI's telemetry through the same function, which is not public: a FastAPI
    upgrade that moves it fails tests/observability/test_tracing.py, not a request."""
    if "fastapi.telemetry" in scope:  # tracing on
        _route_selected(scope=scope, path=template)
