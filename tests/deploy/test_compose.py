"""docker-compose.yml on its own: the files it mounts, start order, health checks, one-offs."""

import yaml

from tests.deploy.manifests import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    K8S_DIR,
    ROOT,
    container,
    healthcheck_argv,
    k8s,
    services,
)

MIGRATE = ["alembic", "upgrade", "head"]
WORKER = ["python", "-m", "app.workers.main"]


def test_every_yaml_file_parses_into_objects():
    for path in [COMPOSE_FILE, *COMPOSE_DIR.rglob("*.yml"), *K8S_DIR.rglob("*.yaml")]:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, path
        assert all(isinstance(doc, dict) for doc in docs), path


def test_compose_bind_mounts_exist():
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), f"{name}: {source}"


def test_compose_depends_on_existing_healthy_services():
    everything = services()
    for name, service in everything.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in everything, f"{name} -> {dependency}"
            target = everything[dependency]
            if rule["condition"] == "service_healthy":
                assert not target["healthcheck"].get("disable"), f"{name} -> {dependency}"
            else:
                assert rule["condition"] == "service_completed_successfully"
                assert target["restart"] == "no"
            # A plain `docker compose up` must not need a profile-gated service.
            assert set(target.get("profiles", [])) <= set(service.get("profiles", []))
    assert everything["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_healthchecks_everywhere_but_the_one_offs():
    disabled = {name for name, s in services().items() if s["healthcheck"].get("disable")}
    assert disabled == {"migrate", "worker"}
    for name, service in services().items():
        if name not in disabled:
            assert healthcheck_argv(service), name


def test_migrations_and_worker_run_the_same_commands_everywhere():
    assert services()["migrate"]["command"] == MIGRATE
    assert container(k8s("Job", "conduit-migrate"), "migrate")["command"] == MIGRATE
    assert (ROOT / "alembic.ini").is_file()
    assert services()["worker"]["command"] == WORKER
    assert services()["worker"]["profiles"] == ["jobs"]
    assert container(k8s("Deployment", "conduit-worker"), "worker")["command"] == WORKER
