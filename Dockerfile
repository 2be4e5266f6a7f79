# syntax=docker/dockerfile:1
# The Conduit API image: one uvicorn process per container; scale with replicas, not workers.
#
#   docker build -t conduit .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=postgresql://… -e JWT_SECRET=… conduit
#   docker run --rm -e DIRECT_DATABASE_URL=postgresql://… conduit alembic upgrade head   # migrations
#
# The same image runs the API (default CMD), the migration one-off (`alembic upgrade head`,
# straight to PostgreSQL through DIRECT_DATABASE_URL, never PgBouncer) and the job worker
# (`python -m app.workers.main`).
#
# No secret is baked in: the API refuses to start without JWT_SECRET (or with a published one)
# unless APP_ENV=development is set explicitly (docs/SECURITY.md). The base images are named by
# tag: their digests could not be verified offline; pin them for production builds with
# --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:… (see `docker buildx imagetools inspect`).

ARG PYTHON_IMAGE=python:3.11-slim
# Same uv as the Makefile (UV_VERSION), so the lockfile is read the same way everywhere.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- builder: resolve nothing, install exactly uv.lock into /opt/venv ----
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /src
# Dependencies only (no dev group, no `embedded` extra): this layer changes only with the lockfile.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project

# ---- runtime: the venv, the code, a non-root user; no compiler, no uv ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 conduit \
    && useradd --system --uid 10001 --gid conduit --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin conduit
WORKDIR /srv/conduit
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations/ ./migrations/
COPY app/ ./app/
# Bytecode compiled at build time: the containers run with a read-only root filesystem.
RUN python -m compileall -q app migrations

USER 10001:10001
EXPOSE 8000
# Liveness only (event loop turning): readiness (/readyz) is the orchestrator's business.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status != 200)"]
# --timeout-keep-alive 75 outlives nginx's upstream keepalive_timeout (60s), so the proxy never
# reuses a connection uvicorn has just closed (a 502 under load). --timeout-graceful-shutdown 25
# fits, with the preStop sleep, inside terminationGracePeriodSeconds (45) in deploy/k8s.
# --proxy-headers trusts X-Forwarded-* from FORWARDED_ALLOW_IPS (set per deployment).
CMD ["uvicorn", "app.main:create_app", "--factory", \
     "--host", "0.0.0.0", "--port", "8000", \
     "--loop", "uvloop", "--http", "httptools", \
     "--timeout-keep-alive", "75", "--timeout-graceful-shutdown", "25", \
     "--no-access-log", "--proxy-headers"]
