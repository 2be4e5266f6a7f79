"""deploy/k8s's NetworkPolicies as a whole, read with the model in tests/deploy/manifests.py
(`reachable`): every connection the configuration makes is open, nothing but PgBouncer and the
migration Job reaches PostgreSQL, nothing but the api and the worker reaches PgBouncer or
Redis, and only the ingress controller and Prometheus come in from outside the namespace."""

import ipaddress
import json
from urllib.parse import urlsplit

import pytest

from app.config import Settings
from tests.deploy.manifests import (
    K8S_API,
    Doc,
    Peer,
    container,
    container_env,
    foreign_pod,
    k8s,
    k8s_pgbouncer,
    matches,
    network_policies,
    outside,
    pod,
    pod_labels,
    reachable,
    workloads,
)

PROMETHEUS = foreign_pod("monitoring", **{"app.kubernetes.io/name": "prometheus"})
CONTROLLER = foreign_pod("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
DNS = foreign_pod("kube-system", **{"k8s-app": "kube-dns"})
STRANGERS = (
    foreign_pod("ingress-nginx", **{"app.kubernetes.io/name": "something-else"}),
    foreign_pod("another-team", **{"app.kubernetes.io/name": "conduit"}),
)
WORKER = ("Deployment", "conduit-worker")
# Every connection between two of this namespace's workloads that may be opened.
INSIDE = {
    ("conduit-api", "pgbouncer", 6432),
    ("conduit-api", "redis", 6379),
    ("conduit-api", "redis-cache", 6379),
    ("conduit-worker", "pgbouncer", 6432),
    ("conduit-worker", "redis", 6379),
    ("conduit-worker", "redis-cache", 6379),
}
DATABASES = ("postgres", "postgres-replica")


def _named(name: str) -> Doc:
    (found,) = [w for w in workloads() if w["metadata"]["name"] == name]
    return found


def _ports(workload: Doc) -> set[int]:
    return {
        declared["containerPort"]
        for spec in workload["spec"]["template"]["spec"]["containers"]
        for declared in spec.get("ports", [])
    }


def _database_addresses(service: str) -> list[Peer]:
    """The first and the last address of the range a database Service records."""
    network = ipaddress.ip_network(
        k8s("Service", service)["metadata"]["annotations"]["conduit/address"]
    )
    return [outside(str(network[0])), outside(str(network[-1]))]


def _endpoints(host: str, port: int) -> list[tuple[Peer, int]]:
    """Where a connection to a Service's name and port lands: its pods and target port, or
    for an ExternalName (the databases) the addresses it records."""
    spec = k8s("Service", host)["spec"]
    (entry,) = [p for p in spec["ports"] if p["port"] == port]
    if spec.get("type") == "ExternalName":
        return [(address, port) for address in _database_addresses(host)]
    (workload,) = [w for w in workloads() if matches(spec["selector"], pod_labels(w))]
    target = entry.get("targetPort", port)
    if isinstance(target, str):
        (target,) = [
            declared["containerPort"]
            for spec in workload["spec"]["template"]["spec"]["containers"]
            for declared in spec.get("ports", [])
            if declared.get("name") == target
        ]
    return [(pod(workload), target)]


def _urls(env: dict[str, str], *names: str) -> list[str]:
    found: list[str] = []
    for name in names:
        value = env[name]
        found += json.loads(value) if value.startswith("[") else [value]
    return found


def _configured_connections() -> list[tuple[Doc, str, int]]:
    """(workload, host, port) of every connection the configuration tells a pod to open."""
    api, worker = k8s(*K8S_API), k8s(*WORKER)
    names = ("DATABASE_URL", "DATABASE_REPLICA_URLS", "REDIS_URL", "REDIS_CACHE_URL")
    wanted = [
        (workload, url)
        for workload, env in (
            (api, container_env(api, "api")),
            (worker, container_env(worker, "worker")),
        )
        for url in _urls(env, *names)
    ]
    migrate = k8s("Job", "conduit-migrate")
    wanted.append((migrate, container_env(migrate, "migrate")["DIRECT_DATABASE_URL"]))
    connections = []
    for workload, url in wanted:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        connections.append((workload, parts.hostname, parts.port))
    pgbouncer = k8s("Deployment", "pgbouncer")
    for target in k8s_pgbouncer()["databases"].values():
        fields = dict(item.split("=", 1) for item in target.split())
        connections.append((pgbouncer, fields["host"], int(fields["port"])))
    return connections


def test_every_pod_starts_closed_both_ways():
    assert any(
        doc["spec"]["podSelector"] == {}
        and set(doc["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not doc["spec"].get("ingress")
        and not doc["spec"].get("egress")
        for doc in network_policies()
    )


def test_every_connection_the_configuration_makes_is_open():
    connections = _configured_connections()
    assert {(w["metadata"]["name"], host) for w, host, _ in connections} >= {
        ("conduit-api", "pgbouncer"),
        ("conduit-worker", "pgbouncer"),
        ("conduit-migrate", "postgres"),
        ("pgbouncer", "postgres"),
        ("pgbouncer", "postgres-replica"),
    }
    for workload, host, port in connections:
        for destination, target_port in _endpoints(host, port):
            assert reachable(pod(workload), destination, target_port), (
                workload["metadata"]["name"],
                str(destination),
                target_port,
            )


@pytest.mark.parametrize("protocol", ["UDP", "TCP"])
def test_every_pod_resolves_names(protocol):
    for workload in workloads():
        assert reachable(pod(workload), DNS, 53, protocol), workload["metadata"]["name"]
        assert not reachable(pod(workload), STRANGERS[1], 53, protocol)


@pytest.mark.parametrize("service", DATABASES)
def test_only_pgbouncer_and_the_migration_reach_postgresql(service):
    allowed = {"pgbouncer"} | ({"conduit-migrate"} if service == "postgres" else set())
    for address in _database_addresses(service):
        for workload in workloads():
            expected = workload["metadata"]["name"] in allowed
            assert reachable(pod(workload), address, 5432) == expected, (
                service,
                workload["metadata"]["name"],
            )


def test_the_policies_open_the_addresses_the_database_services_record():
    """The ipBlocks to port 5432 are exactly the `conduit/address` of postgres.yaml: a range
    changed in one place and not the other fails here."""
    recorded = {
        k8s("Service", name)["metadata"]["annotations"]["conduit/address"] for name in DATABASES
    }
    opened = {
        peer["ipBlock"]["cidr"]
        for doc in network_policies()
        for rule in doc["spec"].get("egress", [])
        if any(p.get("port") == 5432 for p in rule.get("ports", []))
        for peer in rule.get("to", [])
    }
    assert opened == recorded


def test_between_workloads_only_the_listed_connections_are_open():
    opened = {
        (source["metadata"]["name"], target["metadata"]["name"], port)
        for source in workloads()
        for target in workloads()
        for port in _ports(target)
        if reachable(pod(source), pod(target), port)
    }
    assert opened == INSIDE


def test_from_outside_the_namespace_only_the_ingress_controller_and_prometheus_come_in():
    api, worker = k8s(*K8S_API), k8s(*WORKER)
    api_port = int(api["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
    assert reachable(CONTROLLER, pod(api), api_port)
    assert reachable(PROMETHEUS, pod(api), api_port)
    assert not reachable(CONTROLLER, pod(worker), 9100)
    for stranger in STRANGERS:
        assert not reachable(stranger, pod(api), api_port)
    welcome = {(str(CONTROLLER), "conduit-api"), (str(PROMETHEUS), "conduit-api")}
    welcome.add((str(PROMETHEUS), "conduit-worker"))
    for workload in workloads():
        name = workload["metadata"]["name"]
        for port in _ports(workload):
            for peer in (CONTROLLER, PROMETHEUS, *STRANGERS):
                expected = (str(peer), name) in welcome
                assert reachable(peer, pod(workload), port) == expected, (str(peer), name, port)


def test_prometheus_scrapes_every_pod_that_asks_for_it():
    scraped = [
        w
        for w in workloads()
        if w["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape")
        == "true"
    ]
    assert {w["metadata"]["name"] for w in scraped} == {"conduit-api", "conduit-worker"}
    for workload in scraped:
        port = int(workload["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
        assert port in _ports(workload)
        assert reachable(PROMETHEUS, pod(workload), port), workload["metadata"]["name"]
    env = container_env(k8s(*WORKER), "worker")
    assert int(env["WORKER_METRICS_PORT"]) == 9100
    assert env["WORKER_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - reachable by Prometheus only
    assert container(k8s(*WORKER), "worker")["ports"] == [
        {"name": "metrics", "containerPort": 9100}
    ]


@pytest.mark.parametrize(
    ("address", "port", "expected"),
    [
        ("203.0.113.7", 443, True),
        ("203.0.113.7", 80, True),
        ("2606:4700::1111", 443, True),
        ("203.0.113.7", 5432, False),  # only WEBHOOK_ALLOWED_PORTS
        ("203.0.113.7", 6379, False),
        ("10.1.2.3", 443, False),  # private: pods, nodes, a database in the VPC
        ("172.20.0.1", 443, False),
        ("192.168.1.1", 443, False),
        ("169.254.169.254", 80, False),  # the cloud's metadata service
        ("127.0.0.1", 8080, False),
        ("fd00::1", 443, False),
    ],
)
def test_the_worker_reaches_public_webhook_receivers_only(address, port, expected):
    assert reachable(pod(k8s(*WORKER)), outside(address), port) == expected
    for other in ("conduit-api", "pgbouncer", "redis", "redis-cache", "conduit-migrate"):
        assert not reachable(pod(_named(other)), outside(address), port), other


def test_the_worker_opens_the_ports_webhooks_may_use():
    worker = k8s(*WORKER)
    allowed = set(Settings.model_fields["webhook_allowed_ports"].default)
    assert "WEBHOOK_ALLOWED_PORTS" not in container_env(worker, "worker")
    public = outside("203.0.113.7")
    candidates = {*range(1, 1025), 3306, 5432, 6379, 6432, 8000, 8080, 8443, 9100, 27017}
    opened = {port for port in candidates if reachable(pod(worker), public, port)}
    assert opened == allowed
    for service in DATABASES:  # a public database address is excepted too
        for address in _database_addresses(service):
            assert not any(reachable(pod(worker), address, port) for port in allowed)
