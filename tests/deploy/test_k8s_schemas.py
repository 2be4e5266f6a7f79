"""deploy/k8s against the real Kubernetes API schemas (kubernetes-validate, its schemas bundled
in the wheel: no cluster, no network), and its wiring for the read replica."""

import copy
import json
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.manifests import (
    K8S_API,
    K8S_DIR,
    container_env,
    k8s,
    k8s_pgbouncer,
    server_connections_left,
)

# The oldest Kubernetes the manifests promise to run on, and the newest the validator knows.
VERSIONS = ("1.30.0", "1.37.0")


def _documents() -> list[tuple[str, dict[str, object]]]:
    found = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] not in {"Kustomization", "Component"}:  # kustomize's own
                found.append(
                    (f"{path.relative_to(K8S_DIR)}:{doc['kind']}/{doc['metadata']['name']}", doc)
                )
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_matches_the_api_schema(version: str) -> None:
    documents = _documents()
    assert len(documents) >= 15
    for where, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_the_validator_refuses_what_the_api_server_would() -> None:
    api = copy.deepcopy(k8s(*K8S_API))
    api["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, VERSIONS[-1], strict=True)
    api = copy.deepcopy(k8s(*K8S_API))
    api["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, VERSIONS[-1], strict=True)


def test_reads_reach_the_replica_through_the_central_pgbouncer() -> None:
    secret = k8s("Secret", "conduit-secrets")["stringData"]
    (url,) = json.loads(secret["DATABASE_REPLICA_URLS"])
    parts = urlsplit(url)
    pgbouncer = k8s("Service", "pgbouncer")["spec"]["ports"][0]["port"]
    assert (parts.hostname, parts.port) == ("pgbouncer", pgbouncer)
    ini = k8s_pgbouncer()
    target = dict(item.split("=", 1) for item in ini["databases"][parts.path.strip("/")].split())
    assert target["host"] == k8s("Service", "postgres-replica")["metadata"]["name"]
    assert target["dbname"] == urlsplit(secret["DATABASE_URL"]).path.strip("/")


def test_the_replica_gets_a_bounded_funnel_too() -> None:
    """Each PgBouncer pod lends at most max_db_connections to each database: the replica's
    backends stay within its limits however far the api scales, and every api process's
    second pool (its reads) still fits one PgBouncer pod."""
    ini = k8s_pgbouncer()["pgbouncer"]
    deployment = k8s("Deployment", "pgbouncer")["spec"]
    peak = deployment["replicas"] + deployment["strategy"]["rollingUpdate"]["maxSurge"]
    available = server_connections_left("postgres-replica")
    assert peak * int(ini["max_db_connections"]) <= available
    env = container_env(k8s(*K8S_API), "api")
    per_process = int(env["DB_POOL_SIZE"]) + int(env["DB_MAX_OVERFLOW"])
    hpa = k8s("HorizontalPodAutoscaler", "conduit-api")["spec"]
    surge = k8s(*K8S_API)["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert (hpa["maxReplicas"] + surge) * per_process * 2 <= int(ini["max_client_conn"])
