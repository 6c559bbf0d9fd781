"""The Grafana dashboard the chart ships: a ConfigMap Grafana's sidecar finds by its label, holding
the dashboard JSON (charts/modeleval/dashboards/modeleval.json) whose every query reads a metric
the operator exports and parses as PromQL; the optional ServiceMonitor scrapes the operator's
metrics Service only. (That every query returns data from a real Prometheus scraping the operator
is tests/e2e/test_schedules.py's last test.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import grafana_dashboard as gd
from modeleval.controller import telemetry

from .test_chart import objects, render

CONFIGMAP = "ConfigMap/me-modeleval-grafana-dashboard"
PANELS = {"Evaluations by phase", "Evaluation duration p50 / p95", "Reconcile duration p95",
          "Queue wait p95", "RayClusters by state", "Rows scored", "Schedule primary metric",
          "Schedules degraded", "Data drift share", "Data drifted"}


def test_the_dashboard_configmap_is_off_by_default():
    assert CONFIGMAP not in objects()


def test_the_dashboard_configmap_carries_the_sidecars_label_and_the_dashboard():
    configmap = objects("grafana.dashboard.enabled=true")[CONFIGMAP]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "modeleval-system"
    assert json.loads(configmap["data"]["modeleval.json"]) == gd.load()


def test_the_label_namespace_and_folder_are_the_platforms_choice():
    configmap = objects("grafana.dashboard.enabled=true",
                        'grafana.dashboard.label="example.com/dashboard"',
                        'grafana.dashboard.labelValue="modeleval"',
                        'grafana.dashboard.namespace="monitoring"',
                        'grafana.dashboard.annotations={"grafana_folder": "MLOps"}')[CONFIGMAP]
    assert configmap["metadata"]["labels"]["example.com/dashboard"] == "modeleval"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "MLOps"}


@pytest.mark.parametrize("value, field", [
    ('grafana.dashboard.label="not a label"', "/grafana/dashboard/label"),
    ('grafana.dashboard.labelValue="a b"', "/grafana/dashboard/labelValue"),
    ('grafana.dashboard.namespace="Monitoring"', "/grafana/dashboard/namespace"),
    ('grafana.dashboard.colour="red"', "colour"),
])
def test_bad_dashboard_values_are_refused_naming_them(value, field):
    result = render(value)
    assert result.returncode != 0 and field in result.stderr, result.stderr


def test_the_service_monitor_scrapes_the_operators_metrics_service_only():
    rendered = objects("metrics.serviceMonitor.enabled=true")
    monitor = rendered["ServiceMonitor/me-modeleval"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [o for key, o in rendered.items() if key.startswith("Service/")]
    chosen = [s["metadata"]["name"] for s in services
              if selector.items() <= s["metadata"]["labels"].items()]
    assert chosen == ["me-modeleval-metrics"]
    (endpoint,) = monitor["spec"]["endpoints"]
    (service,) = [s for s in services if s["metadata"]["name"] == "me-modeleval-metrics"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["modeleval-system"]}
    assert "ServiceMonitor/me-modeleval" not in objects()


def exported_names() -> set[str]:
    """Every series name the operator's metrics export (a labelled metric exports none until
    observed, so the names come from each metric's type)."""
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}
    metrics = [m for m in vars(telemetry).values() if isinstance(m, MetricWrapperBase)]
    assert len(metrics) >= 8
    return {family.name + suffix for metric in metrics for family in metric.describe()
            for suffix in suffixes[family.type]}


def family(name: str) -> str:
    return re.sub(r"_(bucket|count|sum|total)$", "", name)


def test_the_dashboard_has_every_panel_on_the_chosen_data_source():
    dashboard = gd.load()
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == "modeleval-operator"
    (source,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    assert {p["title"] for p in dashboard["panels"]} == PANELS
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["datasource"] == panel["datasource"]
                                        for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)


def test_every_query_reads_metrics_the_operator_exports_and_every_metric_is_charted():
    exported = exported_names()
    read = set()
    for title, expr in gd.panel_queries(gd.load()):
        names = gd.metric_names(expr)
        assert names and names <= exported, f"{title}: {sorted(names - exported)} not exported"
        read |= names
    assert {family(n) for n in read} == {family(n) for n in exported}


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian's prometheus) is not installed")
def test_every_query_parses_as_promql(tmp_path):
    dashboard = gd.load()
    rules = [{"record": f"modeleval:panel_{i}", "expr": gd.substitute(expr, dashboard)}
             for i, (_, expr) in enumerate(gd.panel_queries(dashboard))]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_query_with_an_unknown_variable_is_refused():
    with pytest.raises(ValueError, match=r"\$cluster"):
        gd.substitute('modeleval_evaluations{cluster="$cluster"}', gd.load())
    assert gd.substitute('x{namespace=~"$namespace"}[$__rate_interval]', gd.load()) == \
        'x{namespace=~".*"}[30s]'
