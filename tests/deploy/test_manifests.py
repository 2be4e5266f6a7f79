"""The deployment files against the app and against each other: image, probes, environment,
ports, load balancer, PgBouncer and the connection budget. Static: no Docker, no cluster."""

import importlib
import re
import secrets
import tomllib
from fnmatch import fnmatch
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from fastapi import FastAPI
from pydantic import ValidationError

from app.config import Settings
from app.db import make_engine
from app.dependencies import get_engine, get_redis
from app.jwt_secret import MissingSecret
from app.main import create_app
from tests.deploy.manifests import (
    COMPOSE_DIR,
    K8S_API,
    ROOT,
    compose_pgbouncer,
    container,
    container_env,
    dockerfile_args,
    dockerfile_cmd,
    final_stage,
    healthcheck_argv,
    http_check_url,
    image_uid,
    interpolate,
    k8s,
    k8s_pgbouncer,
    nginx_conf,
    nginx_directive,
    nginx_outside_locations,
    nginx_seconds,
    nginx_size,
    nginx_upstreams,
    option,
    per_process_pool,
    pg_setting,
    server_connections_left,
    service_env,
    services,
    uvicorn_port,
)

REQUIRED_API_ENV = {
    "DATABASE_URL",
    "DIRECT_DATABASE_URL",
    "REDIS_URL",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "JWT_SECRET",
}
# Read by uvicorn (or app/dev/run.py), not by Settings.
SERVER_ENV = {"HOST", "PORT", "WORKERS", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"}
# Backends PostgreSQL keeps for connections that bypass PgBouncer: migrations, psql, exporters.
DIRECT_RESERVE = 10


def app_from_cmd(settings: Settings) -> FastAPI:
    """The app exactly as the image's CMD builds it: `uvicorn module:factory --factory`."""
    module, _, factory = dockerfile_cmd()[1].partition(":")
    app = getattr(importlib.import_module(module), factory)(settings)
    assert isinstance(app, FastAPI)
    return app


# ---- Dockerfile ----


def test_dockerfile_serves_the_app_factory_with_uvloop_and_httptools():
    cmd = dockerfile_cmd()
    assert cmd[:3] == ["uvicorn", "app.main:create_app", "--factory"]
    assert option(cmd, "--loop") == "uvloop"
    assert option(cmd, "--http") == "httptools"
    assert option(cmd, "--host") == "0.0.0.0"  # noqa: S104 - inside its container
    assert [str(uvicorn_port())] == dockerfile_args("EXPOSE")


def test_dockerfile_installs_the_lockfile_and_runs_non_root():
    (sync,) = [run for run in dockerfile_args("RUN") if "uv sync" in run]
    assert {"--frozen", "--no-dev", "--no-install-project"} <= set(sync.split())
    # The same uv as the Makefile, and the Python that pyproject.toml requires.
    uv = re.search(r"^UV_VERSION\s*[:?]?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert uv, "UV_VERSION not in Makefile"
    assert f"UV_VERSION={uv.group(1)}" in dockerfile_args("ARG")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    python = re.search(r"3\.\d+", requires)
    assert python, requires
    assert f"PYTHON_IMAGE=python:{python.group(0)}-slim" in dockerfile_args("ARG")
    assert image_uid() != 0
    copied = " ".join(arguments for name, arguments in final_stage() if name == "COPY")
    for needed in ("/opt/venv", "alembic.ini", "migrations/", "app/"):
        assert needed in copied
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("pyproject.toml", "uv.lock", "alembic.ini", "app", "migrations"):
        assert not [pattern for pattern in ignored if fnmatch(needed, pattern)], needed


def test_healthchecks_and_probes_target_the_uvicorn_port():
    (healthcheck,) = dockerfile_args("HEALTHCHECK")
    assert http_check_url([healthcheck.split(" CMD ", 1)[1]]) == (uvicorn_port(), "/livez")
    assert http_check_url(healthcheck_argv(services()["api"])) == (uvicorn_port(), "/livez")
    api = container(k8s(*K8S_API), "api")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert api[probe]["httpGet"]["port"] in {uvicorn_port(), api["ports"][0]["name"]}


# ---- the app's contract: probes, environment ----


async def test_probes_hit_app_routes_and_only_readiness_needs_the_database():
    api = container(k8s(*K8S_API), "api")
    (healthcheck,) = dockerfile_args("HEALTHCHECK")
    liveness = {
        api["startupProbe"]["httpGet"]["path"],
        api["livenessProbe"]["httpGet"]["path"],
        http_check_url([healthcheck.split(" CMD ", 1)[1]])[1],
        http_check_url(healthcheck_argv(services()["api"]))[1],
    }
    readiness = api["readinessProbe"]["httpGet"]["path"]
    assert (liveness, readiness) == ({"/livez"}, "/readyz")
    # PostgreSQL down (nothing listens on port 1): liveness must still pass, or every pod
    # restarts during a database outage; readiness must fail, so the Service stops routing.
    settings = Settings(database_url="postgresql://probe@127.0.0.1:1/none", redis_url=None)
    app, engine = app_from_cmd(settings), make_engine(settings)
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_redis] = lambda: None
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            statuses = {
                path: (await client.get(path)).status_code for path in (*liveness, readiness)
            }
    finally:
        await engine.dispose()
    assert statuses == {"/livez": 200, "/readyz": 503}


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(lambda: service_env("api"), id="compose-api"),
        pytest.param(lambda: service_env("migrate"), id="compose-migrate"),
        pytest.param(lambda: service_env("worker"), id="compose-worker"),
        pytest.param(lambda: container_env(k8s(*K8S_API), "api"), id="k8s-api"),
        pytest.param(lambda: container_env(k8s("Job", "conduit-migrate"), "migrate"), id="k8s-job"),
        pytest.param(
            lambda: container_env(k8s("Deployment", "conduit-worker"), "worker"), id="k8s-worker"
        ),
    ],
)
def test_app_env_vars_are_settings_fields(env, monkeypatch):
    variables = env()
    assert variables.keys() >= REQUIRED_API_ENV
    fields = {name.upper() for name in Settings.model_fields}
    unknown = {
        name
        for name in variables
        if name not in fields and name not in SERVER_ENV and not name.startswith("UVICORN_")
    }
    assert unknown == set()
    # The values validate, too (URLs, integers, bounds, JSON lists), read from the environment
    # exactly as the container reads them.
    for name in fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert variables.get("APP_ENV", "production") == "production"  # never development mode
    # No shipped value signs a token: compose has none (`${JWT_SECRET:?}`), k8s a placeholder
    # that is refused; the app runs once a real one is provided.
    if variables["JWT_SECRET"]:
        with pytest.raises(ValidationError, match="JWT_SECRET"):
            Settings()
    else:
        with pytest.raises(MissingSecret):
            create_app(Settings())
    monkeypatch.setenv("JWT_SECRET", secrets.token_urlsafe(48))
    settings = Settings()
    assert settings.db_pool_size == int(variables["DB_POOL_SIZE"])


def test_database_urls_go_through_pgbouncer_and_direct_for_migrations():
    ini = compose_pgbouncer()
    for env in (service_env("api"), container_env(k8s(*K8S_API), "api")):
        pooled, direct = urlsplit(env["DATABASE_URL"]), urlsplit(env["DIRECT_DATABASE_URL"])
        assert (pooled.hostname, pooled.port) == (
            "pgbouncer",
            ini.getint("pgbouncer", "listen_port"),
        )
        assert (direct.hostname, direct.port) == ("postgres", 5432)
        assert pooled.path.lstrip("/") in ini["databases"]
        redis = urlsplit(env["REDIS_URL"])
        assert (redis.hostname, redis.port) == ("redis", 6379)
    assert {"pgbouncer", "postgres", "redis"} <= services().keys()
    assert k8s("Service", "pgbouncer")["spec"]["ports"][0]["port"] == ini.getint(
        "pgbouncer", "listen_port"
    )
    assert k8s("Service", "postgres")["spec"]["ports"][0]["port"] == 5432
    assert k8s("Service", "redis")["spec"]["ports"][0]["port"] == 6379


# ---- ports and the load balancer ----


def test_container_service_and_scrape_ports_match_uvicorn():
    port = uvicorn_port()
    (http,) = container(k8s(*K8S_API), "api")["ports"]
    assert http == {"name": "http", "containerPort": port}
    service = k8s("Service", "conduit-api")["spec"]["ports"][0]
    assert service["targetPort"] in {port, http["name"]}
    backend = k8s("Ingress", "conduit-api")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"] == {"name": "conduit-api", "port": {"name": service["name"]}}
    annotations = k8s(*K8S_API)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert services()["api"]["expose"] == [str(port)]
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    (api_job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "conduit-api"]
    (discovery,) = api_job["dns_sd_configs"]
    assert (discovery["names"], discovery["port"]) == (["api"], port)


def test_nginx_balances_the_api_replicas_over_keepalive():
    conf = nginx_conf()
    upstreams = nginx_upstreams(conf)
    assert "proxy_pass http://conduit_api;" in conf
    body = upstreams["conduit_api"]
    (server,) = [line.split()[1] for line in body.splitlines() if line.split()[:1] == ["server"]]
    host, port = server.split(":")
    assert (host, int(port)) == ("api", uvicorn_port())
    assert services()[host]["deploy"]["replicas"] == 3
    assert "keepalive 128;" in body
    assert 'proxy_set_header Connection "";' in conf
    assert "proxy_http_version 1.1;" in conf
    # nginx must drop an idle upstream connection before uvicorn does, or it reuses a dead one.
    (keepalive_timeout,) = [
        line.split()[1] for line in body.splitlines() if "keepalive_timeout" in line
    ]
    assert nginx_seconds(keepalive_timeout.rstrip(";")) < int(
        option(dockerfile_cmd(), "--timeout-keep-alive")
    )
    assert "gzip on;" in conf
    assert "application/json" in conf
    assert "listen 8080 " in conf
    assert [interpolate(port) for port in services()["nginx"]["ports"]] == ["127.0.0.1:8080:8080"]
    # Everywhere but the bulk imports (tests/deploy/test_imports_edge.py).
    (body_size,) = nginx_directive(nginx_outside_locations(conf), "client_max_body_size")
    assert nginx_size(body_size) == Settings.model_fields["max_body_bytes"].default


# ---- PgBouncer and the connection budget ----


@pytest.mark.parametrize("ini", [compose_pgbouncer, k8s_pgbouncer], ids=["compose", "k8s"])
def test_pgbouncer_pools_transactions_within_a_hard_cap(ini):
    config = ini()["pgbouncer"]
    assert config["pool_mode"] == "transaction"
    assert int(config["max_client_conn"]) >= 10_000
    server_side = int(config["default_pool_size"]) + int(config["reserve_pool_size"])
    assert server_side <= int(config["max_db_connections"])
    assert config["auth_type"] == "scram-sha-256"
    assert int(config["listen_port"]) == 6432


def test_compose_connection_budget():
    ini = compose_pgbouncer()["pgbouncer"]
    assert int(ini["default_pool_size"]) == 20
    replicas = {name: s.get("deploy", {}).get("replicas", 1) for name, s in services().items()}
    clients = sum(
        replicas[name] * per_process_pool(service_env(name)) for name in ("api", "worker")
    )
    assert clients <= int(ini["max_client_conn"])
    command = services()["postgres"]["command"]
    available = (
        pg_setting(command, "max_connections")
        - pg_setting(command, "superuser_reserved_connections")
        - DIRECT_RESERVE
    )
    assert int(ini["max_db_connections"]) <= available
    assert service_env("pgbouncer")["AUTH_TYPE"] == ini["auth_type"]


def test_k8s_connection_budget():
    api, hpa = k8s(*K8S_API), k8s("HorizontalPodAutoscaler", "conduit-api")
    worker = k8s("Deployment", "conduit-worker")
    api_peak = hpa["spec"]["maxReplicas"] + api["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    clients = api_peak * per_process_pool(container_env(api, "api"))
    clients += worker["spec"]["replicas"] * per_process_pool(container_env(worker, "worker"))
    ini = k8s_pgbouncer()["pgbouncer"]
    # kube-proxy may hand every client to the same PgBouncer pod.
    assert clients <= int(ini["max_client_conn"])
    pgbouncer = k8s("Deployment", "pgbouncer")["spec"]
    pgbouncer_peak = pgbouncer["replicas"] + pgbouncer["strategy"]["rollingUpdate"]["maxSurge"]
    available = server_connections_left("postgres")
    assert pgbouncer_peak * int(ini["max_db_connections"]) <= available
    assert (
        k8s("Deployment", "pgbouncer")["spec"]["template"]["spec"]["containers"][0]["image"]
        == services()["pgbouncer"]["image"]
    )
