"""Two Redis in every deployment (docs/OPERATIONS.md "Two Redis"): REDIS_URL, the job queue and
the rate-limit counters, on one that never evicts; REDIS_CACHE_URL, the read cache, on one
that evicts only keys with a TTL (volatile-lru: the cache's version keys and its invalidation
sequence have none) and keeps nothing on disk. Static: compose, k8s and the stack's files."""

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scripts.stack.__main__ import components
from scripts.stack.config import StackConfig, render
from scripts.stack.data import Redis, RedisCache
from tests.deploy.manifests import (
    K8S_API,
    ROOT,
    Doc,
    container,
    container_env,
    healthcheck_argv,
    k8s,
    k8s_docs,
    matches,
    memory_bytes,
    pod,
    pod_labels,
    reachable,
    redis_argv_settings,
    redis_conf_settings,
    service_env,
    services,
    workloads,
)
from tests.stack.conftest import PORT_VARIABLES

K8S_WORKER = ("Deployment", "conduit-worker")
CACHE_MAXMEMORY = 256 * 1024**2
NO_PERSISTENCE = {"save": "", "appendonly": "no"}


def _cache_settings_are_right(settings: dict[str, str]) -> None:
    assert settings["maxmemory-policy"] == "volatile-lru"  # never allkeys-lru
    assert memory_bytes(settings["maxmemory"]) == CACHE_MAXMEMORY
    assert {key: settings.get(key) for key in NO_PERSISTENCE} == NO_PERSISTENCE


# ---- docker compose ----


def _compose_redis(url: str) -> tuple[str, dict[str, str]]:
    """The compose service a redis:// URL reaches, and its redis-server settings."""
    parts = urlsplit(url)
    assert parts.scheme == "redis"
    assert parts.port == 6379
    name = parts.hostname
    assert name in services(), url
    return name, redis_argv_settings(services()[name]["command"])


@pytest.mark.parametrize("service", ["api", "worker"])
def test_compose_api_and_worker_reach_both_redis(service):
    env = service_env(service)
    queue, queue_settings = _compose_redis(env["REDIS_URL"])
    cache, cache_settings = _compose_redis(env["REDIS_CACHE_URL"])
    assert (queue, cache) == ("redis", "redis-cache")
    assert queue_settings["maxmemory-policy"] == "noeviction"
    _cache_settings_are_right(cache_settings)
    for name in (queue, cache):
        assert services()[service]["depends_on"][name] == {"condition": "service_healthy"}


def test_compose_migrations_need_no_cache():
    assert "REDIS_CACHE_URL" not in service_env("migrate")


def test_compose_queue_redis_keeps_jobs_and_leaves_headroom():
    redis = services()["redis"]
    settings = redis_argv_settings(redis["command"])
    assert settings["maxmemory-policy"] == "noeviction"
    assert settings["appendonly"] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    limit = memory_bytes(redis["deploy"]["resources"]["limits"]["memory"])
    assert memory_bytes(settings["maxmemory"]) <= 0.8 * limit


def test_compose_cache_redis_is_memory_only_with_headroom():
    redis, cache = services()["redis"], services()["redis-cache"]
    assert cache["image"] == redis["image"]
    assert "volumes" not in cache
    assert healthcheck_argv(cache) == ["redis-cli", "ping"]
    settings = redis_argv_settings(cache["command"])
    _cache_settings_are_right(settings)
    limit = memory_bytes(cache["deploy"]["resources"]["limits"]["memory"])
    assert CACHE_MAXMEMORY < limit <= 1.5 * CACHE_MAXMEMORY
    assert cache["restart"] == "unless-stopped"


# ---- Kubernetes ----


def _k8s_redis(url: str) -> tuple[Doc, dict[str, str]]:
    """The workload behind the Service a redis:// URL names, and its redis-server settings."""
    parts = urlsplit(url)
    assert parts.scheme == "redis"
    assert parts.hostname
    service = k8s("Service", parts.hostname)["spec"]
    assert [port["port"] for port in service["ports"]] == [parts.port]
    (workload,) = [w for w in workloads() if matches(service["selector"], pod_labels(w))]
    return workload, redis_argv_settings(container(workload, "redis")["args"])


@pytest.mark.parametrize("workload", [K8S_API, K8S_WORKER], ids=["api", "worker"])
def test_k8s_api_and_worker_reach_both_redis(workload):
    spec = k8s(*workload)
    env = container_env(spec, spec["spec"]["template"]["spec"]["containers"][0]["name"])
    queue, queue_settings = _k8s_redis(env["REDIS_URL"])
    cache, cache_settings = _k8s_redis(env["REDIS_CACHE_URL"])
    assert (queue["metadata"]["name"], cache["metadata"]["name"]) == ("redis", "redis-cache")
    assert queue_settings["maxmemory-policy"] == "noeviction"
    _cache_settings_are_right(cache_settings)


def test_k8s_queue_redis_keeps_jobs_and_leaves_headroom():
    redis = k8s("StatefulSet", "redis")
    spec = container(redis, "redis")
    settings = redis_argv_settings(spec["args"])
    assert settings["maxmemory-policy"] == "noeviction"
    assert settings["appendonly"] == "yes"
    limit = memory_bytes(spec["resources"]["limits"]["memory"])
    assert memory_bytes(settings["maxmemory"]) <= 0.8 * limit


def test_k8s_cache_redis_is_one_memory_only_pod_with_headroom():
    cache = k8s("Deployment", "redis-cache")
    spec = container(cache, "redis")
    _cache_settings_are_right(redis_argv_settings(spec["args"]))
    assert spec["image"] == container(k8s("StatefulSet", "redis"), "redis")["image"]
    limit = memory_bytes(spec["resources"]["limits"]["memory"])
    assert CACHE_MAXMEMORY < limit <= 1.5 * CACHE_MAXMEMORY
    assert memory_bytes(spec["resources"]["requests"]["memory"]) <= limit
    assert spec["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
    # One instance at any time: two behind the Service would split the invalidation channel.
    assert cache["spec"]["replicas"] == 1
    assert cache["spec"]["strategy"] == {"type": "Recreate"}
    assert "volumes" not in cache["spec"]["template"]["spec"]
    assert "volumeMounts" not in spec


def test_k8s_network_policy_lets_only_api_and_worker_reach_the_cache():
    cache = k8s("Deployment", "redis-cache")
    service = k8s("Service", "redis-cache")["spec"]["ports"][0]
    assert service["targetPort"] == "redis"
    assert container(cache, "redis")["ports"] == [{"name": "redis", "containerPort": 6379}]
    for workload in workloads():
        allowed = reachable(pod(workload), pod(cache), 6379)
        expected = workload["metadata"]["name"] in {"conduit-api", "conduit-worker"}
        assert allowed == expected, workload["metadata"]["name"]
    # A policy is what closes it: without one, every pod could reach it.
    assert any(
        "Ingress" in doc["spec"]["policyTypes"]
        and matches(doc["spec"]["podSelector"].get("matchLabels", {}), pod_labels(cache))
        for doc in k8s_docs()
        if doc["kind"] == "NetworkPolicy"
    )


# ---- make stack ----


def _config(tmp_path: Path, **env: str) -> StackConfig:
    return StackConfig.from_env({"STACK_DIR": str(tmp_path)} | env)


def test_stack_runs_the_cache_redis_after_the_queue_and_before_its_clients(tmp_path):
    names = [component.name for component in components(_config(tmp_path))]
    assert names.index("redis") < names.index("redis-cache") < names.index("api")
    assert names.index("redis-cache") < names.index("worker")


def test_stack_cache_redis_has_its_own_port_directory_and_log(tmp_path):
    config = _config(tmp_path, STACK_REDIS_PORT="16380", STACK_REDIS_CACHE_PORT="16381")
    queue, cache = Redis(config), RedisCache(config)
    assert (queue.port, cache.port) == (16380, 16381)
    assert _config(tmp_path).ports.redis_cache == 6381  # the default
    assert cache.port_variable == "STACK_REDIS_CACHE_PORT"
    assert queue.dir != cache.dir == tmp_path / "redis-cache"
    rendered = render(cache.template, {"HOST": config.host, "PORT": cache.port, "DIR": cache.dir})
    settings = redis_conf_settings(rendered)
    assert settings["port"] == "16381"
    assert settings["dir"] == str(cache.dir)
    assert settings["logfile"] == str(cache.log_file)  # where `up` points at when it fails
    assert settings["pidfile"] == str(cache.dir / "redis.pid")  # where pid() looks


def test_stack_redis_configs_differ_only_in_what_the_cache_may_evict(tmp_path):
    config = _config(tmp_path)
    values = {"HOST": config.host, "PORT": 1, "DIR": tmp_path}
    queue = redis_conf_settings(render("redis.conf", values))
    cache = redis_conf_settings(render("redis-cache.conf", values))
    assert queue["maxmemory-policy"] == "noeviction"
    _cache_settings_are_right(cache)
    different = {key for key in queue.keys() | cache.keys() if queue.get(key) != cache.get(key)}
    assert different == {"maxmemory-policy", "logfile"}


def test_stack_gives_api_worker_and_stack_env_both_urls(tmp_path):
    config = _config(tmp_path, STACK_REDIS_PORT="16380", STACK_REDIS_CACHE_PORT="16381")
    # The job worker runs with the API's environment (scripts/stack/worker.py).
    for env in (config.api_env(), config.stack_env()):
        assert env["REDIS_URL"] == "redis://127.0.0.1:16380/0"
        assert env["REDIS_CACHE_URL"] == "redis://127.0.0.1:16381/0"


def test_stack_tests_pick_a_free_port_for_every_stack_port():
    source = (ROOT / "scripts" / "stack" / "config.py").read_text()
    read = set(re.findall(r'number\("(STACK_\w+_PORT)"', source))
    assert "STACK_REDIS_CACHE_PORT" in read
    assert read == set(PORT_VARIABLES)
