"""STACK_ADMISSION=haproxy: nginx passes every miss on to HAProxy, which lets K x MAX_IN_FLIGHT
work at the API at once and bounds its line by the request budget. Static: nothing starts."""

import re
from pathlib import Path

import pytest

from scripts.stack.config import StackConfig, StackError
from scripts.stack.haproxy import HAProxy, frontend_maxconn
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


def test_haproxy_bounds_its_line_by_the_request_budget(tmp_path):
    text = _rendered(_config(tmp_path, STACK_ADMISSION="haproxy", REQUEST_DEADLINE_S="2"))
    # A newcomer waits at most half the budget at the measured rate, anyone at most 0.8 of it.
    assert "mul(1000),div(1000)" in text
    assert "timeout queue 1600ms" in text
    assert 'hdr Retry-After "%[var(txn.retry)]"' in text


def test_the_default_admission_stays_at_nginx(tmp_path):
    config = _config(tmp_path)
    assert config.admission == "nginx"
    assert config.sizing.upstream_max_conns == 2 * (32 + 256)
    assert Nginx(config).api_servers() == ["server 127.0.0.1:8001 max_conns=576;"]


def test_an_unknown_admission_is_refused(tmp_path):
    with pytest.raises(StackError, match="STACK_ADMISSION"):
        _config(tmp_path, STACK_ADMISSION="envoy")
