"""Observability: metrics, request context, logs and traces (docs/ARCHITECTURE.md "Observability").

context.py     request id and user id of the request being served (contextvars); helpers
               that carry the id into job payloads and outbound HTTP headers
metrics.py     every Prometheus metric object, in one place; multi-process exposition
routes.py      request -> route template (a bounded label, never the raw path)
               (the request edge, app/middleware/request_edge.py, uses these per request:
               request ids, one log line and metrics, and it serves /metrics)
pool.py        SQLAlchemy pool metrics (size, checked out, overflow, wait for a connection)
logs.py        JSON log lines (stdlib logging + orjson), level from LOG_LEVEL
tracing.py     OpenTelemetry: FastAPI, SQLAlchemy, Redis and httpx spans, OTLP when configured
pgbouncer.py   a Prometheus collector reading PgBouncer's admin console (SHOW POOLS/STATS)
exporter.py    `python -m app.observability.exporter`: serves that collector for Prometheus
"""
