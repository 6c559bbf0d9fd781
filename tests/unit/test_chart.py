"""The chart's NetworkPolicy for the operator's own pods and the env that tells the operator how
to build the RayClusters' policies, rendered by `helm template` (the bed's pinned helm, built by
`make tools`)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from modeleval.controller.builders import build_network_policy
from modeleval.controller.settings import OperatorSettings
from tests.testbed.tools import REPO_ROOT, read_versions, tools_dir

from .test_builders import egress_allows

CHART = REPO_ROOT / "charts" / "modeleval"
HELM = tools_dir() / f"helm-{read_versions()['HELM_VERSION']}" / "helm"
pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is not built (make tools)")
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}


def render(*values: str) -> subprocess.CompletedProcess:
    argv = [str(HELM), "template", "me", str(CHART), "-n", "modeleval-system"]
    for value in values:
        argv += ["--set-json", value]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def objects(*values: str) -> dict[str, dict]:
    result = render(*values)
    assert result.returncode == 0, result.stderr
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in yaml.safe_load_all(result.stdout) if o}


def operator_env(rendered: dict[str, dict]) -> dict[str, str]:
    container = rendered["Deployment/me-modeleval"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def ingress_ports(policy: dict) -> list[tuple[list[dict], list[int]]]:
    return [(rule.get("from", []), [p["port"] for p in rule.get("ports", [])])
            for rule in policy["spec"].get("ingress") or []]


def test_the_operator_pods_policy_admits_no_one_to_the_metrics_port_unless_listed():
    closed = objects()["NetworkPolicy/me-modeleval"]
    assert closed["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert ingress_ports(closed) == []
    listed = objects(f"metrics.allowedFrom=[{json.dumps(PROMETHEUS)}]")["NetworkPolicy/me-modeleval"]
    assert ingress_ports(listed) == [([PROMETHEUS], [9090])]
    deployment = objects()["Deployment/me-modeleval"]
    assert closed["spec"]["podSelector"]["matchLabels"] == \
        deployment["spec"]["template"]["metadata"]["labels"]


def settings_of(rendered: dict[str, dict], monkeypatch) -> OperatorSettings:
    """The settings the rendered Deployment gives the operator."""
    for name, value in operator_env(rendered).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODELEVAL_OPERATOR_NAMESPACE", "modeleval-system")  # from the pod's fieldRef
    return OperatorSettings(_env_file=None)


def test_the_operator_reaches_anything_but_the_metadata_address_and_has_it_off(monkeypatch):
    rendered = objects()
    policy = rendered["NetworkPolicy/me-modeleval"]
    assert not egress_allows(policy, "169.254.169.254", 80)
    assert egress_allows(policy, "10.0.0.1", 443) and egress_allows(policy, "52.95.110.1", 443)
    assert operator_env(rendered)["AWS_EC2_METADATA_DISABLED"] == "true"
    ray = build_network_policy("ev-ray", "ev", "tenant", "u", settings_of(rendered, monkeypatch))
    assert not egress_allows(ray, "169.254.169.254", 80) and egress_allows(ray, "52.95.110.1", 443)
    # The Ray heads' Jobs API in any namespace.
    assert {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"ray.io/node-type": "head"}}}],
            "ports": [{"protocol": "TCP", "port": 8265}]} in policy["spec"]["egress"]


def test_an_instance_role_opens_the_metadata_address_to_the_operator():
    rendered = objects("s3.useInstanceRole=true")
    assert egress_allows(rendered["NetworkPolicy/me-modeleval"], "169.254.169.254", 80)
    assert "AWS_EC2_METADATA_DISABLED" not in operator_env(rendered)


def test_listed_endpoints_narrow_the_operator_and_reach_the_ray_pods_policies(monkeypatch):
    endpoints = ['networkPolicy.egress.s3=[{"cidr": "10.0.5.0/24", "ports": [443]}]',
                 'networkPolicy.egress.mongodb=[{"cidr": "169.254.0.0/16", "ports": [27017]}]',
                 'networkPolicy.egress.dns=[{"cidr": "10.96.0.10/32", "ports": [53]}]',
                 'networkPolicy.egress.apiServer=[{"cidr": "10.0.0.15/32", "ports": [6443]}]']
    rendered = objects(*endpoints)
    policy = rendered["NetworkPolicy/me-modeleval"]
    assert egress_allows(policy, "10.0.5.9", 443) and egress_allows(policy, "10.0.0.15", 6443)
    assert egress_allows(policy, "10.96.0.10", 53, "UDP") and egress_allows(policy, "169.254.3.4", 27017)
    assert not egress_allows(policy, "10.0.5.9", 80) and not egress_allows(policy, "52.95.110.1", 443)
    assert not egress_allows(policy, "169.254.169.254", 27017)  # inside a listed range, kept out
    # Where MLflow, Kafka and the webhooks are: closed until listed, for the operator only.
    assert not egress_allows(policy, "10.0.30.7", 9092)
    opened = objects(*endpoints, 'networkPolicy.egress.integrations=[{"cidr": "10.0.30.0/24", '
                     '"ports": [5000, 9092]}]')["NetworkPolicy/me-modeleval"]
    assert egress_allows(opened, "10.0.30.7", 9092) and egress_allows(opened, "10.0.30.7", 5000)
    assert not egress_allows(opened, "10.0.30.7", 443)
    # The operator reads the same endpoints (not the API server's) for the Ray pods' policies,
    # and admits to their Jobs API exactly the pods the Deployment makes.
    ray = build_network_policy("ev-ray", "ev", "tenant", "u", settings_of(rendered, monkeypatch))
    assert egress_allows(ray, "10.0.5.9", 443) and not egress_allows(ray, "10.0.0.15", 6443)
    assert not egress_allows(ray, "169.254.169.254", 27017)
    pod_labels = rendered["Deployment/me-modeleval"]["spec"]["template"]["metadata"]["labels"]
    assert ray["spec"]["ingress"][1]["from"][0]["podSelector"]["matchLabels"] == pod_labels


@pytest.mark.parametrize("values, message", [
    (['networkPolicy.egress.s3=[{"cidr": "10.0.5.0/24"}]'], "networkPolicy.egress.apiServer"),
    (['networkPolicy.egress.dns=[{"cidr": "169.254.169.254/32"}]',
      'networkPolicy.egress.apiServer=[{"cidr": "10.0.0.15/32"}]'], "cloud metadata address"),
    (['networkPolicy.egress.s3=[{"cidr": "s3.amazonaws.com"}]'], "cidr"),
    (['networkPolicy.egress.s3=[{"cidr": "10.0.5.0/24", "ports": [70000]}]'], "ports"),
])
def test_bad_egress_values_are_refused_naming_them(values, message):
    result = render(*values)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_no_policy_when_turned_off():
    assert not [k for k in objects("networkPolicy.enabled=false") if k.startswith("NetworkPolicy/")]


def test_the_operator_may_read_a_same_named_policy_to_check_its_owner():
    roles = [o for k, o in objects().items() if k.startswith("Role/")]
    assert roles
    for role in roles:
        policy_rule = next(r for r in role["rules"] if "networkpolicies" in r["resources"])
        assert "get" in policy_rule["verbs"]


@pytest.mark.parametrize("reports", [True, False])
def test_the_operator_reports_setting_reaches_the_operator(reports, monkeypatch):
    rendered = objects() if reports else objects("operator.reports=false")
    assert settings_of(rendered, monkeypatch).reports is reports
    refused = render('operator.reports="no"')
    assert refused.returncode != 0 and "reports" in refused.stderr


def test_kueue_is_off_by_default_and_the_chart_s_queue_reaches_the_operator(monkeypatch):
    assert settings_of(objects(), monkeypatch).kueue_default_queue == ""
    queued = settings_of(objects('kueue.defaultQueueName="team-a"'), monkeypatch)
    assert queued.kueue_default_queue == "team-a"
    refused = render('kueue.defaultQueueName="Team_A"')
    assert refused.returncode != 0 and "defaultQueueName" in refused.stderr


def test_events_are_off_by_default_and_the_chart_s_sinks_reach_the_operator(monkeypatch):
    default = settings_of(objects(), monkeypatch)
    assert default.event_sinks == [] and default.allow_object_event_sinks is False
    bus = {"name": "bus", "kafka": {"bootstrapServers": "kafka-0:9092", "topic": "ml"}}
    ops = {"name": "ops", "types": ["Failed"], "webhook": {
        "url": "https://hooks.example.com/x", "format": "slack",
        "secretRef": {"name": "ops-hook", "key": "key"}}}
    configured = settings_of(objects(f"events.sinks={json.dumps([bus, ops])}",
                                     "events.allowObjectSinks=true",
                                     "events.backoffBaseSeconds=2"), monkeypatch)
    assert [s.model_dump(by_alias=True, exclude_defaults=True) for s in configured.event_sinks] \
        == [bus, ops]
    assert configured.allow_object_event_sinks is True and configured.events_backoff_base == 2
    both = render(f'events.sinks=[{json.dumps({**bus, "webhook": ops["webhook"]})}]')
    assert both.returncode != 0 and "/events/sinks/0" in both.stderr
    typo = render('events.sinks=[{"name": "b", "kafka": {"brokers": "k:9092", "topic": "t"}}]')
    assert typo.returncode != 0 and "brokers" in typo.stderr
    secure = {"name": "bus", "kafka": {"bootstrapServers": "b-1:9096", "topic": "ml",
                                       "securityProtocol": "SASL_SSL",
                                       "sasl": {"mechanism": "SCRAM-SHA-512",
                                                "secretName": "kafka-user"},
                                       "caRef": {"name": "kafka-ca", "key": "ca.crt"}}}
    configured = settings_of(objects(f"events.sinks={json.dumps([secure])}"), monkeypatch)
    assert [s.model_dump(by_alias=True, exclude_defaults=True) for s in configured.event_sinks] \
        == [secure]
