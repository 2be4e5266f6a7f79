"""The Grafana dashboard: parseable, provisioned by compose, and every query reads metrics that
exist and is valid PromQL (promtool checks each one as a recording rule)."""

import json
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import services
from tests.observability.conftest import run
from tests.observability.names import ROOT, known_names, metric_names

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "conduit.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "conduit.yml"
# The story at a glance (issue 8): each of these is a panel title, in so many words.
STORY = (
    "Concurrent clients vs PostgreSQL connections",
    "Requests / s",
    "Latency p50 / p95 / p99",
    "Error ratio",
    "Cache hit ratio",
    "Job queue depth",
)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_dashboard_tells_the_story() -> None:
    titles = [panel["title"] for panel in dashboard()["panels"]]
    for wanted in STORY:
        assert any(title.startswith(wanted) for title in titles), wanted
    assert dashboard()["uid"]
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_read_metrics_that_exist() -> None:
    known = known_names()
    for expr in exprs():
        names = metric_names(expr)
        assert names, expr
        assert names <= known, (expr, names - known)


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr.replace("$__rate_interval", "1m")}
        for n, expr in enumerate(exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(promtool, "check", "rules", str(path))


def test_compose_provisions_the_dashboard_and_its_datasource() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    used = {
        json.dumps(item["datasource"], sort_keys=True)
        for panel in dashboard()["panels"]
        for item in (panel, *panel["targets"])
    }
    assert used == {json.dumps({"type": "prometheus", "uid": datasource["uid"]}, sort_keys=True)}
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in services()
    mounts = dict(
        volume.split(":")[:2] for volume in services()["grafana"]["volumes"] if volume[0] == "."
    )
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert mounts["./" + str(DASHBOARD.relative_to(ROOT))].startswith(
        provider["options"]["path"] + "/"
    )
    assert mounts["./" + str(DATASOURCES.relative_to(ROOT))].startswith(
        "/etc/grafana/provisioning/datasources/"
    )
    assert mounts["./" + str(PROVIDERS.relative_to(ROOT))].startswith(
        "/etc/grafana/provisioning/dashboards/"
    )
