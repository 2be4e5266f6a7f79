"""What a client controls at the edge of a real server (the Docker image's command line, with
compose's FORWARDED_ALLOW_IPS): header size, the Host echoed in redirects, and the address
the rate limits count by."""

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from app.config import Settings
from app.middleware.ratelimit import WINDOW_S
from tests.deploy.manifests import service_env
from tests.image_process import environment, free_port, image_command, serving
from tests.redis_server import RedisServer

AUTH_LIMIT = 2


@pytest.fixture(scope="module")
def server(
    database_url: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = environment(
        DATABASE_URL=database_url,
        JWT_SECRET="edge-test-" + "k" * 40,
        # A Redis database of its own: no other test's counters in the buckets.
        REDIS_URL=redis_server.url.rsplit("/", 1)[0] + "/7",
        RATE_LIMIT_AUTH_PER_MINUTE=str(AUTH_LIMIT),
        FORWARDED_ALLOW_IPS=service_env("api")["FORWARDED_ALLOW_IPS"],
    )
    log = tmp_path_factory.mktemp("edge") / "api.log"
    with serving(image_command(port), env, url, log):
        yield url


def _raw_request(url: str, head: bytes) -> bytes:
    """One request as bytes on the wire (httpx would refuse to send some of these)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = conn.recv(65536)
            if not chunk:
                break
            response += chunk
    return response


def test_a_300_kb_header_is_refused(server):
    big = b"GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 300_000 + b"\r\n\r\n"
    assert _raw_request(server, big).startswith(b"HTTP/1.1 431 ")
    limit = Settings.model_fields["max_header_bytes"].default
    near = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * (limit // 2) + b"\r\n\r\n"
    assert _raw_request(server, near).startswith(b"HTTP/1.1 200 ")


def test_the_host_header_is_never_echoed_in_a_redirect(server):
    for path in ("/api/articles/", "/api/tags/", "/api/users/login/"):
        head = f"GET {path} HTTP/1.1\r\nHost: evil.example\r\n\r\n".encode()
        response = _raw_request(server, head)
        assert b"evil.example" not in response
        assert b"\r\nlocation:" not in response.lower()
        assert response.startswith(b"HTTP/1.1 404 ")
    assert httpx.get(server + "/api/articles").status_code == 200


def test_a_client_cannot_pick_its_address_with_x_forwarded_for(server):
    """Loopback is outside the range compose trusts: the header is the client's own word."""
    if WINDOW_S - time.time() % WINDOW_S < 5:
        time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.1)
    login = {"user": {"email": "nobody@x.io", "password": "wrong-password"}}
    statuses = [
        httpx.post(
            server + "/api/users/login", json=login, headers={"X-Forwarded-For": f"203.0.113.{n}"}
        ).status_code
        for n in range(AUTH_LIMIT + 2)
    ]
    assert statuses == [401] * AUTH_LIMIT + [429, 429]
