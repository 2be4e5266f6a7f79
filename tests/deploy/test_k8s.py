"""deploy/k8s on its own: kustomize lists, selectors, drains, pod hardening, placeholders."""

import yaml

from tests.deploy.manifests import (
    K8S_API,
    K8S_DIR,
    container,
    dockerfile_cmd,
    image_uid,
    k8s,
    k8s_docs,
    matches,
    option,
    pod_labels,
    workloads,
)


def test_every_k8s_document_is_an_object():
    for doc in k8s_docs():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"]["name"], doc
    assert len(k8s_docs()) >= 15


def test_kustomizations_list_every_manifest():
    main = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    top = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(main["resources"]) == top
    assert main["namespace"] == k8s("Namespace", "conduit")["metadata"]["name"]
    jobs = yaml.safe_load((K8S_DIR / "jobs" / "kustomization.yaml").read_text())
    assert jobs["kind"] == "Component"
    assert set(jobs["resources"]) == {p.name for p in (K8S_DIR / "jobs").glob("*.yaml")} - {
        "kustomization.yaml"
    }


def test_k8s_selectors_match_their_pods():
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads()}
    for workload in workloads():
        if workload["kind"] != "Job":
            assert matches(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))
        for spread in workload["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            assert matches(spread["labelSelector"]["matchLabels"], pod_labels(workload))
    for doc in k8s_docs():
        if doc["kind"] == "Service" and doc["spec"].get("type") != "ExternalName":
            selected = [n for n, labels in pods.items() if matches(doc["spec"]["selector"], labels)]
            assert len(selected) == 1, (doc["metadata"]["name"], selected)
    api_selector = k8s("Service", "conduit-api")["spec"]["selector"]
    assert [n for n, labels in pods.items() if matches(api_selector, labels)] == ["conduit-api"]
    pdb = k8s("PodDisruptionBudget", "conduit-api")["spec"]["selector"]["matchLabels"]
    assert [n for n, labels in pods.items() if matches(pdb, labels)] == ["conduit-api"]
    hpa = k8s("HorizontalPodAutoscaler", "conduit-api")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "conduit-api",
    }
    assert hpa["minReplicas"] == k8s(*K8S_API)["spec"]["replicas"] == 3 < hpa["maxReplicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"


def test_k8s_api_drains_within_the_grace_period():
    pod = k8s(*K8S_API)["spec"]["template"]["spec"]
    sleep = container(k8s(*K8S_API), "api")["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = int(option(dockerfile_cmd(), "--timeout-graceful-shutdown"))
    assert sleep + graceful < pod["terminationGracePeriodSeconds"]


def test_k8s_pods_run_non_root_read_only_with_limits():
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for spec in pod["containers"]:
            assert spec["securityContext"]["readOnlyRootFilesystem"] is True
            assert spec["securityContext"]["allowPrivilegeEscalation"] is False
            assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= spec["resources"].keys()
            assert "memory" in spec["resources"]["limits"]
            if spec["image"] == "conduit":  # our image: its non-root user
                assert pod["securityContext"]["runAsUser"] == image_uid()


def test_k8s_secrets_hold_only_placeholders():
    for doc in k8s_docs():
        if doc["kind"] == "Secret":
            for value in doc["stringData"].values():
                assert "CHANGE-ME" in value
            assert "data" not in doc


def test_k8s_rollouts_add_pods_before_removing_any():
    for name in ("conduit-api", "pgbouncer"):
        rolling = k8s("Deployment", name)["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0, name
        assert isinstance(rolling["maxSurge"], int), name
        assert rolling["maxSurge"] >= 1, name
