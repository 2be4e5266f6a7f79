"""STACK_ADMISSION=haproxy: nginx passes every miss on to HAProxy, which lets K x MAX_IN_FLIGHT
work at the API at once and bounds its line by the request budget. Static: nothing starts."""

import re
from pathlib import Path

import pytest

from scripts.cluster.config import ClusterConfig
from scripts.stack.config import StackConfig, StackError
from scripts.stack.haproxy import HAProxy, frontend_maxconn, prior_rate
from scripts.stack.web import Nginx


def _config(state: Path, **env: str) -> StackConfig:
    return StackConfig.from_env({"STACK_DIR": str(state), "STACK_WORKERS": "2", **env})


def _rendered(config: StackConfig) -> str:
    haproxy = HAProxy(config)
    haproxy.dir.mkdir(parents=True)
    haproxy._write_config()
    return (haproxy.dir / "haproxy.cfg").read_text()


def test_haproxy_holds_the_line_and_nginx_passes_everything_to_it(tmp_path):
    config = _config(
        tmp_path, STACK_ADMISSION="haproxy", MAX_IN_FLIGHT="16", STACK_HAPROXY_PORT="9002"
    )
    assert config.sizing.haproxy_maxconn == 2 * 16
    # nginx refuses at once only what HAProxy could not hold open.
    held = frontend_maxconn()
    assert Nginx(config).api_servers() == [f"server 127.0.0.1:9002 max_conns={held};"]
    assert f"maxconn {held}\n" in _rendered(config)
    text = (HAProxy(config).dir / "haproxy.cfg").read_text()
    assert re.search(r"server api 127\.0\.0\.1:8001 maxconn 32$", text, re.MULTILINE)
    assert "option abortonclose" in text


def test_reads_and_writes_wait_in_lines_of_their_own(tmp_path):
    config = _config(tmp_path, STACK_ADMISSION="haproxy", STACK_PGBOUNCER_POOL_SIZE="12")
    text = _rendered(config)
    # Writes: no more at work than there are connections for them: the workers' ORM pools
    # (2 x a quarter of DB_POOL_SIZE 12), fewer than PostgreSQL's 12 server connections.
    assert config.sizing.haproxy_write_maxconn == 6
    assert re.search(r"^backend reads\n(?:.*\n)*?    server api \S+ maxconn 64$", text, re.M)
    assert re.search(r"^backend writes\n(?:.*\n)*?    server api \S+ maxconn 6$", text, re.M)
    assert "use_backend reads if read\n    default_backend writes" in text
    assert "srv_sess_rate(reads/api)" in text
    assert "srv_sess_rate(writes/api)" in text


def test_an_unmeasured_line_holds_what_nginxs_count_rule_holds(tmp_path):
    config = _config(tmp_path, STACK_ADMISSION="haproxy", MAX_QUEUED="100")
    assert config.sizing.haproxy_prior == 2 * (32 + 100)
    text = _rendered(config)
    # At the prior rate, half the 5 s budget fits the count rule less the class's own at work.
    assert prior_rate(264, 64, 2500) * 2500 // 1000 == 264 - 64
    assert f"int({prior_rate(264, 64, 2500)}) if read {{ var(proc.read_capacity)" in text
    # Writes at work: the two workers' ORM pools, 5 each (a quarter of DB_POOL_SIZE 20).
    assert config.sizing.haproxy_write_maxconn == 2 * 5
    assert f"int({prior_rate(264, 10, 2500)}) if !read {{ var(proc.write_capacity)" in text


def test_haproxy_bounds_its_line_by_the_request_budget(tmp_path):
    text = _rendered(_config(tmp_path, STACK_ADMISSION="haproxy", REQUEST_DEADLINE_S="2"))
    # A newcomer waits at most half the budget at the measured rate, anyone at most 0.8 of it.
    assert "mul(1000),div(1000)" in text
    assert "timeout queue 1600ms" in text
    assert 'hdr Retry-After "%[var(txn.retry)]"' in text


def test_the_default_admission_is_haproxys_line(tmp_path):
    config = _config(tmp_path)
    assert config.admission == "haproxy"
    assert Nginx(config).api_servers() == [f"server 127.0.0.1:8002 max_conns={frontend_maxconn()};"]


def test_nginxs_count_rule_stays_an_option_and_the_clusters_rule(tmp_path):
    config = _config(tmp_path, STACK_ADMISSION="nginx")
    assert config.sizing.upstream_max_conns == 2 * (32 + 256)
    assert Nginx(config).api_servers() == ["server 127.0.0.1:8001 max_conns=576;"]
    cluster = ClusterConfig.from_env({"CLUSTER_DIR": str(tmp_path / "c"), "CLUSTER_WORKERS": "2"})
    assert cluster.edge.admission == "nginx"
    assert cluster.edge.sizing.upstream_max_conns == 2 * (32 + 256)


def test_an_unknown_admission_is_refused(tmp_path):
    with pytest.raises(StackError, match="STACK_ADMISSION"):
        _config(tmp_path, STACK_ADMISSION="envoy")
