"""The chart's dashboard (`modeleval ui` in the cluster), rendered by `helm template`: off by
default; when on, a Deployment reading one results database with credentials from Secrets only,
a ClusterIP Service, its own ServiceAccount with no API access unless the live phase is asked for
(then read-only), and a NetworkPolicy that admits only the listed peers and reaches only DNS,
MongoDB and (live phase) the API server. Bad values are refused, naming them."""

from __future__ import annotations

import json

import pytest
import yaml

from .test_builders import egress_allows
from .test_chart import HELM, objects, operator_env, render

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is not built (make tools)")
NAME = "me-modeleval-dashboard"
ON = ["dashboard.enabled=true", 'dashboard.mongodb.existingSecret="results-reader"',
      'dashboard.auth.tokenSecret="dashboard-token"']
PROXY_PODS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "auth"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "oauth2-proxy"}}}
PROXY = ["dashboard.enabled=true", 'dashboard.mongodb.existingSecret="results-reader"',
         'dashboard.auth.mode="proxy"', f"dashboard.allowedFrom=[{json.dumps(PROXY_PODS)}]"]


def dashboard_objects(rendered: dict[str, dict]) -> dict[str, dict]:
    return {key: o for key, o in rendered.items()
            if "dashboard" in o["metadata"]["name"]
            or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "dashboard"}


def container(rendered: dict[str, dict]) -> dict:
    return rendered[f"Deployment/{NAME}"]["spec"]["template"]["spec"]["containers"][0]


def env_sources(rendered: dict[str, dict]) -> dict[str, dict]:
    return {e["name"]: e.get("valueFrom") or {"value": e["value"]} for e in container(rendered)["env"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_off_by_default_renders_nothing_of_the_dashboard():
    assert dashboard_objects(objects()) == {}


def test_on_it_runs_modeleval_ui_on_one_database_with_credentials_from_secrets():
    rendered = objects(*ON, 'dashboard.database="team-results"')
    c = container(rendered)
    assert c["command"] + c["args"] == ["python", "-m", "modeleval.ui", "--host", "0.0.0.0", "--port", "8765",
                                        "--database", "team-results"]
    assert c["image"] == rendered["Deployment/me-modeleval"]["spec"]["template"]["spec"][
        "containers"][0]["image"]
    env = env_sources(rendered)
    assert env["MODELEVAL_MONGODB_URI"] == {"secretKeyRef": {"name": "results-reader", "key": "MONGODB_URI"}}
    assert env["MODELEVAL_UI_TOKEN"] == {"secretKeyRef": {"name": "dashboard-token", "key": "token"}}
    assert not any("mongodb://" in json.dumps(o) for o in dashboard_objects(rendered).values())
    assert c["ports"] == [{"name": "http", "containerPort": 8765, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]


def test_its_service_is_cluster_ip_and_selects_only_dashboard_pods():
    rendered = objects(*ON)
    service = rendered[f"Service/{NAME}"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8765, "targetPort": "http", "protocol": "TCP"}]
    pod_labels = rendered[f"Deployment/{NAME}"]["spec"]["template"]["metadata"]["labels"]
    operator_labels = rendered["Deployment/me-modeleval"]["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pod_labels)
    assert not selects(service["spec"]["selector"], operator_labels)
    # No selector of the operator's picks a dashboard pod: its Deployment, its metrics Service,
    # its NetworkPolicy, nor the Ray heads' policies that admit the operator to their Jobs API.
    for selector in (rendered["Deployment/me-modeleval"]["spec"]["selector"]["matchLabels"],
                     rendered["Service/me-modeleval-metrics"]["spec"]["selector"],
                     rendered["NetworkPolicy/me-modeleval"]["spec"]["podSelector"]["matchLabels"],
                     json.loads(operator_env(rendered)["MODELEVAL_OPERATOR_POD_LABELS"])):
        assert not selects(selector, pod_labels), selector


def test_its_pod_is_locked_down_like_the_operators_and_has_no_api_access_by_default():
    rendered = objects(*ON)
    pod = rendered[f"Deployment/{NAME}"]["spec"]["template"]["spec"]
    operator_pod = rendered["Deployment/me-modeleval"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == operator_pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["serviceAccountName"] == NAME and pod["automountServiceAccountToken"] is False
    assert rendered[f"ServiceAccount/{NAME}"]["automountServiceAccountToken"] is False
    kinds = {key.split("/")[0] for key in dashboard_objects(rendered)}
    assert kinds == {"Deployment", "Service", "ServiceAccount", "NetworkPolicy"}


def rbac_of(*values: str) -> dict[str, dict]:
    """The dashboard's roles and bindings, keyed by kind/namespace."""
    result = render(*values)
    assert result.returncode == 0, result.stderr
    return {f"{o['kind']}/{o['metadata'].get('namespace', '')}": o
            for o in yaml.safe_load_all(result.stdout)
            if o and o["metadata"]["name"] == NAME and "Role" in o["kind"]}


def test_the_live_phase_grants_read_only_access_where_the_operator_watches():
    found = rbac_of(*ON, "dashboard.livePhase=true", 'watchNamespaces=["team-a", "team-b"]')
    assert sorted(found) == ["Role/team-a", "Role/team-b", "RoleBinding/team-a", "RoleBinding/team-b"]
    assert found["Role/team-a"]["rules"] == [{"apiGroups": ["modeleval.dev"], "resources": [
        "modelevaluations", "evaluationschedules"], "verbs": ["get", "list", "watch"]}]
    assert found["RoleBinding/team-b"]["subjects"] == [
        {"kind": "ServiceAccount", "name": NAME, "namespace": "modeleval-system"}]
    wide = rbac_of(*ON, "dashboard.livePhase=true", "rbac.clusterWide=true")
    assert sorted(wide) == ["ClusterRole/", "ClusterRoleBinding/"]
    assert wide["ClusterRole/"]["rules"][0]["verbs"] == ["get", "list", "watch"]
    rendered = objects(*ON, "dashboard.livePhase=true")
    pod = rendered[f"Deployment/{NAME}"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True  # in-cluster config, no kubeconfig
    assert "--kubeconfig" not in pod["containers"][0]["args"]
    policy = rendered[f"NetworkPolicy/{NAME}"]
    assert egress_allows(policy, "10.0.0.15", 6443) and egress_allows(policy, "10.96.0.1", 443)


def test_its_network_policy_admits_no_one_by_default_and_reaches_only_dns_and_mongodb():
    policy = objects(*ON)[f"NetworkPolicy/{NAME}"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert not policy["spec"].get("ingress")
    assert egress_allows(policy, "10.96.0.10", 53, "UDP") and egress_allows(policy, "10.96.0.10", 53)
    assert egress_allows(policy, "10.0.20.5", 27017)
    for address, port in (("10.0.0.15", 6443), ("52.95.110.1", 443), ("169.254.169.254", 80),
                          ("10.0.20.5", 8265)):
        assert not egress_allows(policy, address, port), (address, port)


def test_listed_endpoints_narrow_the_dashboard_to_them():
    listed = ['networkPolicy.egress.mongodb=[{"cidr": "10.0.20.0/24", "ports": [27018]}]',
              'networkPolicy.egress.dns=[{"cidr": "10.96.0.10/32", "ports": [53]}]',
              'networkPolicy.egress.apiServer=[{"cidr": "10.0.0.15/32", "ports": [6443]}]']
    policy = objects(*ON, *listed)[f"NetworkPolicy/{NAME}"]
    assert egress_allows(policy, "10.0.20.5", 27018) and egress_allows(policy, "10.96.0.10", 53, "UDP")
    assert not egress_allows(policy, "10.0.21.5", 27018) and not egress_allows(policy, "10.0.20.5", 27017)
    assert not egress_allows(policy, "10.0.0.15", 6443)  # the API server only with livePhase
    live = objects(*ON, *listed, "dashboard.livePhase=true")[f"NetworkPolicy/{NAME}"]
    assert egress_allows(live, "10.0.0.15", 6443) and not egress_allows(live, "10.0.0.16", 443)
    wide = objects(*ON, 'networkPolicy.egress.mongodb=[{"cidr": "169.254.0.0/16"}]',
                   'networkPolicy.egress.apiServer=[{"cidr": "10.0.0.15/32"}]')[f"NetworkPolicy/{NAME}"]
    assert egress_allows(wide, "169.254.3.4", 27017) and not egress_allows(wide, "169.254.169.254", 80)


def test_proxy_mode_serves_without_a_token_to_the_proxys_pods_only():
    rendered = objects(*PROXY)
    assert "MODELEVAL_UI_TOKEN" not in env_sources(rendered)
    policy = rendered[f"NetworkPolicy/{NAME}"]
    assert policy["spec"]["ingress"] == [{"from": [PROXY_PODS], "ports": [{"protocol": "TCP", "port": 8765}]}]
    token = objects(*ON, f"dashboard.allowedFrom=[{json.dumps(PROXY_PODS)}]")[f"NetworkPolicy/{NAME}"]
    assert token["spec"]["ingress"] == policy["spec"]["ingress"]


def test_no_network_policy_for_the_dashboard_when_policies_are_off():
    assert f"NetworkPolicy/{NAME}" not in objects(*ON, "networkPolicy.enabled=false")


@pytest.mark.parametrize("values, message", [
    (["dashboard.enabled=true", 'dashboard.auth.tokenSecret="t"'], "dashboard.mongodb.existingSecret"),
    (["dashboard.enabled=true", 'dashboard.mongodb.existingSecret="r"'], "dashboard.auth.tokenSecret"),
    ([*ON, 'dashboard.service.type="NodePort"'], "/dashboard/service/type"),
    ([*ON, 'dashboard.service.type="LoadBalancer"'], "/dashboard/service/type"),
    ([*ON, 'dashboard.mongodb.uri="mongodb://reader:hunter2@mongo:27017"'], "'uri' not allowed"),
    ([*ON, 'dashboard.mongodb.password="hunter2"'], "'password' not allowed"),
    ([*ON, 'dashboard.mongodb.existingSecret="mongodb://reader:hunter2@mongo"'], "/dashboard/mongodb/existingSecret"),
    ([*ON, 'dashboard.auth.token="s3cret"'], "'token' not allowed"),
    ([*ON, 'dashboard.auth.mode="none"'], "/dashboard/auth/mode"),
    ([*ON, 'dashboard.database="a/b"'], "/dashboard/database"),
    ([*ON, "dashboard.port=80"], "/dashboard/port"),
    ([*ON, 'dashboard.nodePort=30080'], "'nodePort' not allowed"),
    ([*PROXY[:3]], "dashboard.allowedFrom"),
    ([*PROXY, "networkPolicy.enabled=false"], "networkPolicy.enabled"),
    ([*PROXY, 'dashboard.auth.tokenSecret="t"'], "proxy"),
])
def test_bad_dashboard_values_are_refused_naming_them(values, message):
    result = render(*values)
    assert result.returncode != 0 and message in result.stderr, result.stderr

