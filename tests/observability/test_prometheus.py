"""Alert rules and Prometheus configs through promtool (tests/observability/conftest.py)."""

from pathlib import Path

import yaml

from scripts.stack.config import StackConfig
from scripts.stack.monitoring import prometheus_config
from tests.observability.conftest import run
from tests.observability.names import ROOT, RULES, known_names, metric_names

RULE_TESTS = RULES.parent / "alerts.test.yml"
COMPOSE_CONFIG = ROOT / "deploy" / "compose" / "prometheus" / "prometheus.yml"
REQUIRED_ALERTS = {
    "ConduitP99OverBudget",
    "ConduitErrorRatioHigh",
    "PgBouncerClientsWaiting",
    "ConduitNotReady",
}


def test_alert_rules_pass_promtool(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "check", "rules", str(RULES))


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert len(tested & REQUIRED_ALERTS) >= 2, tested


def test_stack_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    config = StackConfig.from_env({"STACK_DIR": str(tmp_path)})
    path = tmp_path / "prometheus.yml"
    path.write_text(prometheus_config(config))
    run(promtool, "check", "config", str(path))
    jobs = {job["job_name"] for job in yaml.safe_load(path.read_text())["scrape_configs"]}
    assert jobs == {"conduit-api", "conduit-exporter", "prometheus"}


def test_compose_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    """With the rule file where the compose file mounts it replaced by the repository's."""
    config = yaml.safe_load(COMPOSE_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    run(promtool, "check", "config", str(path))


def test_required_alerts_exist_and_read_real_metrics() -> None:
    rules = [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]
    assert {rule["alert"] for rule in rules if "alert" in rule} >= REQUIRED_ALERTS
    known = known_names()
    for rule in rules:
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, (rule.get("alert") or rule.get("record"), unknown)
