"""The deployment files' security: no secret or password with a default or baked in, client
addresses believed only from the proxy, rate limits on, internal endpoints not routed,
bounded headers, no CORS wildcard in production, third-party images pinned by digest."""

import ipaddress
import json
import re
from urllib.parse import urlsplit

import pytest

from app.config import Settings
from scripts.stack.config import StackConfig
from scripts.stack.web import Api
from tests.deploy.manifests import (
    COMPOSE_FILE,
    K8S_API,
    ROOT,
    Doc,
    compose,
    container_env,
    dockerfile_args,
    interpolate,
    interpolations,
    k8s,
    k8s_docs,
    matches,
    nginx_conf,
    nginx_location,
    nginx_size,
    pod_labels,
    service_env,
    services,
    stack_nginx_conf,
    workloads,
)

NGINX_CONFS = [
    pytest.param(nginx_conf, id="compose"),
    pytest.param(stack_nginx_conf, id="stack"),
]
API_ENVS = [
    pytest.param(lambda: service_env("api"), id="compose"),
    pytest.param(lambda: container_env(k8s(*K8S_API), "api"), id="k8s"),
]
SENSITIVE = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$")
INTERNAL_PATHS = ("/metrics", "/docs", "/docs/static/swagger-ui.css", "/openapi.json", "/")
PUBLIC_PATHS = ("/api/articles", "/api/users/login", "/api/tags")
# Images whose digest could not be verified offline (docs/SECURITY.md "Images"); pin them
# and drop them from here: the test fails on any other image that has no digest.
UNPINNED = {"python:3.11-slim", "ghcr.io/astral-sh/uv:0.13.9", "postgres:15", "redis:7-alpine"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


# ---- secrets ----


def test_compose_secrets_and_passwords_have_no_default():
    sensitive = [(name, kind) for name, kind in interpolations(COMPOSE_FILE.read_text())]
    sensitive = [(name, kind) for name, kind in sensitive if SENSITIVE.search(name)]
    assert {name for name, _ in sensitive} >= {
        "JWT_SECRET",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    }
    assert {kind for _, kind in sensitive} == {"?"}  # `${VAR:?}`: no value, no start
    for name in services():
        for key, value in service_env(name).items():
            if SENSITIVE.search(key):
                assert value == "", (name, key)
            if key.endswith("_URL"):
                assert not urlsplit(value).password, (name, key)


def test_the_image_bakes_in_no_secret_and_never_sees_local_ones():
    for keyword in ("ENV", "ARG"):
        for arguments in dockerfile_args(keyword):
            assert not re.search(r"(?i)secret|password|token", arguments), arguments
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".data", ".stack", ".env"} <= set(ignored)  # generated secrets stay out of builds


def test_no_manifest_asks_for_development_mode():
    for name in services():
        assert service_env(name).get("APP_ENV", "production") == "production", name
    for workload in workloads():
        for spec in workload["spec"]["template"]["spec"]["containers"]:
            env = container_env(workload, spec["name"])
            assert env.get("APP_ENV", "production") == "production", spec["name"]


# ---- client addresses and rate limits ----


def test_compose_trusts_forwarded_headers_from_the_edge_network_only():
    (pool,) = compose()["networks"]["edge"]["ipam"]["config"]
    edge = ipaddress.ip_network(interpolate(pool["subnet"]))
    assert ipaddress.ip_network(service_env("api")["FORWARDED_ALLOW_IPS"]) == edge
    on_edge = {name for name, s in services().items() if "edge" in s.get("networks", [])}
    assert on_edge == {"api", "nginx"}
    assert services()["nginx"]["networks"] == ["edge"]  # nginx's only address is in the range


def test_k8s_trusts_forwarded_headers_from_the_ingress_controller_only():
    allowed = container_env(k8s(*K8S_API), "api")["FORWARDED_ALLOW_IPS"]
    for network in allowed.split(","):
        ipaddress.ip_network(network.strip())  # a range, never "*"
    policy = k8s("NetworkPolicy", "conduit-api")["spec"]
    assert matches(policy["podSelector"]["matchLabels"], pod_labels(k8s(*K8S_API)))
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"]
    for rule in policy["ingress"]:
        assert rule["from"], "a rule without `from` admits every pod"
        assert all("ipBlock" not in source for source in rule["from"])


def test_the_stack_trusts_forwarded_headers_from_loopback_only(tmp_path):
    command = Api(StackConfig.from_env({"STACK_DIR": str(tmp_path)})).command()
    assert command[command.index("--forwarded-allow-ips") + 1] == "127.0.0.1"
    assert "--proxy-headers" in command


@pytest.mark.parametrize("conf", NGINX_CONFS)
def test_nginx_sets_x_forwarded_for_to_the_peer(conf):
    text = conf()
    values = re.findall(r"proxy_set_header\s+X-Forwarded-For\s+(\S+);", text, re.IGNORECASE)
    assert values
    assert set(values) == {"$remote_addr"}  # never the client's own header, appended to
    assert "$proxy_add_x_forwarded_for" not in text


@pytest.mark.parametrize("env", API_ENVS)
def test_rate_limits_are_on(env):
    variables = env()
    for name in (
        "RATE_LIMIT_AUTH_PER_MINUTE",
        "RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MINUTE",
        "RATE_LIMIT_WRITES_PER_MINUTE",
    ):
        assert int(variables[name]) > 0, name
        assert name.lower() in Settings.model_fields


# ---- what is exposed ----


def test_compose_nginx_routes_only_the_api():
    conf = nginx_conf()
    for path in INTERNAL_PATHS:
        body = nginx_location(conf, path)
        assert body is not None, path
        assert "proxy_pass" not in body, path
        assert "return 404" in body, path
    for path in PUBLIC_PATHS:
        body = nginx_location(conf, path)
        assert body is not None, path
        assert "proxy_pass http://conduit_api;" in body, path


def test_stack_nginx_keeps_metrics_inside():
    body = nginx_location(stack_nginx_conf(), "/metrics")
    assert body is not None
    assert "proxy_pass" not in body


def _k8s_routes(ingress: Doc, path: str) -> bool:
    """Kubernetes Ingress matching: Exact, or Prefix element-wise by `/`."""
    for rule in ingress["spec"]["rules"]:
        for route in rule["http"]["paths"]:
            if route["pathType"] == "Exact" and route["path"] == path:
                return True
            if route["pathType"] == "Prefix":
                prefix = [part for part in route["path"].split("/") if part]
                if [part for part in path.split("/") if part][: len(prefix)] == prefix:
                    return True
    return False


def test_k8s_ingress_routes_only_the_api():
    ingress = k8s("Ingress", "conduit-api")
    for path in INTERNAL_PATHS:
        assert not _k8s_routes(ingress, path), path
    for path in PUBLIC_PATHS:
        assert _k8s_routes(ingress, path), path


def test_production_cors_names_its_origins():
    origins = json.loads(k8s("ConfigMap", "conduit-config")["data"]["CORS_ORIGINS"])
    assert origins
    assert "*" not in origins
    assert all(origin.startswith("https://") for origin in origins)


@pytest.mark.parametrize("conf", NGINX_CONFS)
def test_nginx_bounds_request_headers(conf):
    (count, size) = re.findall(r"large_client_header_buffers\s+(\d+)\s+(\w+);", conf())[0]
    # A 300 KB header never fits; one line at most what the API itself accepts in all.
    assert nginx_size(size) <= Settings.model_fields["max_header_bytes"].default
    assert int(count) * nginx_size(size) <= 64 * 1024


def test_compose_publishes_nginx_on_loopback_unless_told_otherwise():
    for name, service in services().items():
        for port in service.get("ports", []):
            assert interpolate(port).startswith("127.0.0.1:"), (name, port)


# ---- images ----


def _images() -> set[str]:
    found = {
        service["image"]
        for service in services().values()
        if "image" in service and "build" not in service  # ours: built from ./Dockerfile
    }
    for doc in k8s_docs():
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            for spec in doc["spec"]["template"]["spec"]["containers"]:
                if spec["image"] != "conduit":
                    found.add(spec["image"])
    args = dict(arg.split("=", 1) for arg in dockerfile_args("ARG") if "=" in arg)
    found.add(args["PYTHON_IMAGE"])
    found.add(f"ghcr.io/astral-sh/uv:{args['UV_VERSION']}")
    return found


def test_third_party_images_are_pinned_by_digest():
    images = _images()
    unpinned = {image for image in images if not DIGEST.search(image)}
    assert unpinned == UNPINNED  # an image pinned since: drop it from UNPINNED
