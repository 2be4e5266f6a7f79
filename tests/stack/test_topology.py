"""What `make stack` promises: the stack.env contract, the sizing, nginx's HTTP features."""

import socket
import ssl
import time
from urllib.parse import urlsplit

import httpx
import psycopg

from tests.stack.conftest import Stack


def test_stack_env_holds_the_contract(stack: Stack) -> None:
    env = stack.env
    assert env["API_URL"].startswith("http://127.0.0.1:")
    assert env["API_URL"].endswith("/api")
    for key in ("DATABASE_URL", "DIRECT_DATABASE_URL", "PGBOUNCER_ADMIN_URL"):
        assert env[key].startswith("postgresql://"), key
    assert urlsplit(env["DATABASE_URL"]).port == urlsplit(env["PGBOUNCER_ADMIN_URL"]).port
    assert urlsplit(env["DATABASE_URL"]).port != urlsplit(env["DIRECT_DATABASE_URL"]).port
    assert urlsplit(env["PGBOUNCER_ADMIN_URL"]).path == "/pgbouncer"
    assert env["REDIS_URL"].startswith("redis://127.0.0.1:")


def test_pgbouncer_pools_transactions_within_postgres_limits(stack: Stack) -> None:
    with psycopg.connect(
        stack.env["PGBOUNCER_ADMIN_URL"], autocommit=True, cursor_factory=psycopg.ClientCursor
    ) as admin:
        cursor = admin.execute("SHOW CONFIG")
        config = {row[0]: row[1] for row in cursor.fetchall()}
    assert config["pool_mode"] == "transaction"
    assert int(config["default_pool_size"]) == stack.pool_size
    assert int(config["max_db_connections"]) == stack.pool_size
    assert int(config["max_client_conn"]) >= 10_000
    workers, per_worker = int(stack.env["API_WORKERS"]), int(stack.env["DB_POOL_SIZE"])
    assert workers * (per_worker + int(stack.env["DB_MAX_OVERFLOW"])) <= int(
        config["max_client_conn"]
    )
    with psycopg.connect(stack.env["DIRECT_DATABASE_URL"]) as direct:
        max_connections = direct.execute("SHOW max_connections").fetchone()
        monitor = direct.execute("SELECT pg_has_role('pg_monitor', 'member')").fetchone()
    assert max_connections is not None
    assert int(max_connections[0]) > stack.pool_size
    assert monitor == (True,)


async def test_nginx_gzips_json_and_passes_request_ids(http: httpx.AsyncClient) -> None:
    raw = await http.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.headers["content-type"].startswith("application/json")
    assert "openapi" in raw.json()  # httpx decoded the gzip body

    echoed = await http.get("/livez", headers={"X-Request-ID": "client-id-42"})
    assert echoed.headers["x-request-id"] == "client-id-42"
    minted = await http.get("/livez")
    assert len(minted.headers["x-request-id"]) == 32  # nginx's $request_id


async def test_nginx_refuses_oversized_bodies_in_realworld_shape(http: httpx.AsyncClient) -> None:
    body = b"x" * (1_048_576 + 1)  # MAX_BODY_BYTES default + 1
    response = await http.post(
        "/api/users", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"errors": {"body": ["request body exceeds 1048576 bytes"]}}


async def test_nginx_keeps_the_api_metrics_to_prometheus(http: httpx.AsyncClient) -> None:
    response = await http.get("/metrics")
    assert response.status_code == 404
    assert "conduit_http_requests_total" not in response.text


def test_tls_port_negotiates_http2(stack: Stack) -> None:
    url = urlsplit(stack.env["API_URL_HTTPS"])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the stack's self-signed certificate
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((url.hostname, url.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"


def test_stack_up_again_is_harmless(stack: Stack) -> None:
    before = (stack.api_master_pid(), stack.api_worker_pids())
    started = time.monotonic()
    stack.cli("up")
    assert time.monotonic() - started < 30
    assert (stack.api_master_pid(), stack.api_worker_pids()) == before
