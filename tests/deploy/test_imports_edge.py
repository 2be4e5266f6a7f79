"""The edge in front of bulk imports (POST /api/imports): bodies up to IMPORT_MAX_BYTES, paced
by IMPORT_CHUNK_IDLE_S between two reads rather than timed as a whole, and up to 300 s for
the answer; every other route keeps the small body limit and the short timeouts."""

import math

import pytest

from app.config import Settings
from scripts.stack.worker import import_chunk_idle_s, import_max_bytes
from tests.deploy.manifests import (
    K8S_DIR,
    k8s,
    k8s_docs,
    nginx_conf,
    nginx_directive,
    nginx_location,
    nginx_outside_locations,
    nginx_seconds,
    nginx_size,
    stack_nginx_conf,
)

IMPORTS = "/api/imports"
MAX_BYTES = Settings.model_fields["import_max_bytes"].default
IDLE_S = math.ceil(Settings.model_fields["import_chunk_idle_s"].default)
READ_TIMEOUT_S = 300
INGRESS = "nginx.ingress.kubernetes.io/"


def _only(text: str, name: str) -> str:
    (value,) = nginx_directive(text, name)
    return value


def _imports(conf: str) -> str:
    body = nginx_location(conf, IMPORTS)
    assert body is not None
    assert body != nginx_location(conf, "/api/articles"), "no location of its own"
    assert "proxy_pass http://conduit_api;" in body
    return body


def test_compose_nginx_imports_location():
    conf = nginx_conf()
    body = _imports(conf)
    assert nginx_size(_only(body, "client_max_body_size")) == MAX_BYTES
    assert nginx_seconds(_only(body, "client_body_timeout")) == IDLE_S
    assert nginx_seconds(_only(body, "proxy_read_timeout")) == READ_TIMEOUT_S
    assert "502 503 =503 @unavailable" in nginx_directive(body, "error_page")


def test_stack_nginx_imports_location():
    body = _imports(stack_nginx_conf())
    assert _only(body, "client_max_body_size") == "{{ IMPORT_MAX_BYTES }}"
    assert _only(body, "client_body_timeout") == "{{ IMPORT_CHUNK_IDLE_S }}s"
    assert nginx_seconds(_only(body, "proxy_read_timeout")) == READ_TIMEOUT_S
    # A location's own error_page drops the server's: the 502/503/504 mapping is repeated.
    pages = nginx_directive(body, "error_page")
    assert "413 @import_too_large" in pages
    assert {"502 503 =503 @unavailable", "504 @unavailable"} <= set(pages)


def test_stack_renders_the_apps_import_limits(monkeypatch):
    monkeypatch.delenv("IMPORT_MAX_BYTES", raising=False)
    monkeypatch.delenv("IMPORT_CHUNK_IDLE_S", raising=False)
    assert (import_max_bytes(), import_chunk_idle_s()) == (MAX_BYTES, IDLE_S)
    monkeypatch.setenv("IMPORT_CHUNK_IDLE_S", "12.5")
    assert import_chunk_idle_s() == 13  # nginx takes whole seconds; never shorter than the API


@pytest.mark.parametrize("conf", [nginx_conf, stack_nginx_conf], ids=["compose", "stack"])
def test_nginx_long_timeouts_are_for_imports_only(conf):
    text = conf()
    outside = nginx_outside_locations(text)
    for name in ("client_body_timeout", "proxy_read_timeout"):
        for value in nginx_directive(outside, name):
            if "{{" not in value:
                assert nginx_seconds(value) < READ_TIMEOUT_S, name
    for path in ("/api/articles", "/api/users/login"):
        body = nginx_location(text, path)
        assert body is not None
        assert not nginx_directive(body, "proxy_read_timeout"), path
        assert not nginx_directive(body, "client_max_body_size"), path


def test_k8s_ingress_imports_path():
    ingresses = [doc for doc in k8s_docs() if doc["kind"] == "Ingress"]
    routes = [
        (ingress, route)
        for ingress in ingresses
        for rule in ingress["spec"]["rules"]
        for route in rule["http"]["paths"]
        if route["path"] == IMPORTS
    ]
    ((ingress, route),) = routes
    assert route["pathType"] == "Exact"  # wins over the /api Prefix of the main Ingress
    (main_route,) = k8s("Ingress", "conduit-api")["spec"]["rules"][0]["http"]["paths"]
    assert route["backend"] == main_route["backend"]
    annotations = ingress["metadata"]["annotations"]
    assert nginx_size(annotations[INGRESS + "proxy-body-size"]) == MAX_BYTES
    assert int(annotations[INGRESS + "proxy-read-timeout"]) == READ_TIMEOUT_S
    main = k8s("Ingress", "conduit-api")["metadata"]["annotations"]
    assert INGRESS + "proxy-read-timeout" not in main
    assert nginx_size(main[INGRESS + "proxy-body-size"]) == (
        Settings.model_fields["max_body_bytes"].default
    )
    # client_body_timeout has no per-Ingress annotation: the controller's ConfigMap sets it.
    assert f'client-body-timeout: "{IDLE_S}"' in (K8S_DIR / "ingress.yaml").read_text()


def test_k8s_every_ingress_routes_under_api_only():
    for doc in k8s_docs():
        if doc["kind"] == "Ingress":
            assert doc["spec"]["ingressClassName"] == "nginx"
            for rule in doc["spec"]["rules"]:
                for route in rule["http"]["paths"]:
                    assert route["path"] == "/api" or route["path"].startswith("/api/"), route
