"""RayCluster, Secret and job manifests are pure functions of the spec and settings."""

from __future__ import annotations

import io
import ipaddress
import json
import zipfile

import pytest
import yaml

from modeleval.api.spec import ModelEvaluationSpec
from modeleval.controller.builders import (build_job_submission, build_network_policy, job_package,
                                           build_raycluster, cluster_name, head_url, queue_of)
from modeleval.api.results import submission_id
from modeleval.controller.settings import OperatorSettings

SETTINGS = OperatorSettings(ray_image="modeleval/ray:test", s3_endpoint="http://minio:9000",
                            cache_uri="s3://cache/x", _env_file=None)


def spec(**extra) -> ModelEvaluationSpec:
    return ModelEvaluationSpec.model_validate({
        "task": "ranking", "model": {"uri": "s3://models/r.json"}, "dataset": {"uri": "s3://data/t.txt"},
        "metrics": ["ndcg@10"], **extra})


def containers(cluster: dict, group: str) -> dict:
    if group == "head":
        return cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]


def test_pods_request_exactly_the_spec_resources():
    s = spec(resources={"workers": 3, "cpu": "2500m", "memory": "6Gi", "gpu": 2,
                        "headCpu": "1", "headMemory": "3Gi"})
    rc = build_raycluster("ev", "ns", "uid-1", s, SETTINGS)
    worker = containers(rc, "worker")["resources"]
    assert worker["requests"] == {"cpu": "2500m", "memory": "6Gi", "nvidia.com/gpu": "2"}
    assert worker["limits"] == {"cpu": "2500m", "memory": "6Gi", "nvidia.com/gpu": "2"}
    head = containers(rc, "head")["resources"]
    assert head["requests"] == {"cpu": "1", "memory": "3Gi"} and "nvidia.com/gpu" not in head["limits"]
    group = rc["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3


def test_ray_pods_get_shared_memory_and_no_api_token():
    rc = build_raycluster("ev", "ns", "u", spec(resources={"memory": "3Gi"}), SETTINGS)
    for template in (rc["spec"]["headGroupSpec"]["template"], rc["spec"]["workerGroupSpecs"][0]["template"]):
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["terminationGracePeriodSeconds"] <= 10  # deleted pods free their CPUs soon
        assert {"name": "shared-memory", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
        volume = {v["name"]: v for v in pod["volumes"]}["shared-memory"]
        assert volume["emptyDir"]["medium"] == "Memory"
    worker = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert {v["name"]: v for v in worker["volumes"]}["shared-memory"]["emptyDir"]["sizeLimit"] == "3Gi"


def test_ray_pods_are_probed_for_readiness_from_their_start():
    """KubeRay's default probe first asks after 10 s, then every 5 s; ours asks the same endpoint
    every 2 s from the start, with KubeRay's tolerance (50 s) for a silent node."""
    rc = build_raycluster("ev", "ns", "u", spec(), SETTINGS)
    for group in ("head", "worker"):
        probe = containers(rc, group)["readinessProbe"]
        assert probe["httpGet"] == {"path": "/api/healthz", "port": 52365}
        assert probe["initialDelaySeconds"] <= 2 and probe["periodSeconds"] <= 2
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 50
        assert "livenessProbe" not in containers(rc, group)  # KubeRay's own stays in place


def test_owned_by_the_evaluation_and_labelled():
    rc = build_raycluster("ev", "ns", "uid-1", spec(), SETTINGS)
    owner = rc["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ModelEvaluation" and owner["uid"] == "uid-1" and owner["controller"]
    assert rc["metadata"]["name"] == cluster_name("ev") and rc["metadata"]["namespace"] == "ns"
    assert rc["metadata"]["labels"]["modeleval.dev/evaluation"] == "ev"
    # KubeRay makes the token Secret, owned by the RayCluster: nothing of it outlives the cluster.
    assert rc["spec"]["authOptions"] == {"mode": "token"}


def test_a_queued_evaluation_asks_kueue_for_its_whole_cluster_suspended():
    queued = build_raycluster("ev", "ns", "uid-1", spec(queueName="team-a"), SETTINGS)
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # Created suspended: no pod exists before Kueue admits it (by unsuspending it).
    assert queued["spec"]["suspend"] is True
    plain = build_raycluster("ev", "ns", "uid-1", spec(), SETTINGS)
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    assert "suspend" not in plain["spec"]


def test_the_charts_default_queue_applies_unless_the_spec_names_one():
    settings = SETTINGS.model_copy(update={"kueue_default_queue": "platform"})
    labels = build_raycluster("ev", "ns", "u", spec(), settings)["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "platform"
    labels = build_raycluster("ev", "ns", "u", spec(queueName="team-a"), settings)["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"


def test_a_shared_cluster_is_never_queued():
    with pytest.raises(ValueError, match="a queue admits the RayCluster an evaluation creates"):
        spec(queueName="team-a", rayClusterName="shared")
    with pytest.raises(ValueError, match="queueName"):
        spec(queueName="Team_A")
    settings = SETTINGS.model_copy(update={"kueue_default_queue": "platform"})
    assert queue_of(spec(rayClusterName="shared"), settings) is None
    with pytest.raises(ValueError, match="kueue_default_queue"):
        OperatorSettings(kueue_default_queue="Not A Name", _env_file=None)


def test_node_selector_and_tolerations_pass_through():
    s = spec(nodeSelector={"pool": "gpu"},
             tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    rc = build_raycluster("ev", "ns", "u", s, SETTINGS)
    for template in (rc["spec"]["headGroupSpec"]["template"], rc["spec"]["workerGroupSpecs"][0]["template"]):
        assert template["spec"]["nodeSelector"] == {"pool": "gpu"}
        assert template["spec"]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_credentials_only_as_secret_refs_and_pods_non_root():
    rc = build_raycluster("ev", "ns", "u", spec(), SETTINGS)
    for group in ("head", "worker"):
        c = containers(rc, group)
        assert c["image"] == "modeleval/ray:test"
        assert c["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e for e in c["env"]}
        for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MODELEVAL_MONGODB_URI"):
            assert "value" not in env[secret] and "secretKeyRef" in env[secret]["valueFrom"]
            # Not optional: a namespace without the Secret gets pods that do not start, never
            # pods that fall back to another identity.
            assert "optional" not in env[secret]["valueFrom"]["secretKeyRef"]
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio:9000"
        assert env["MODELEVAL_ALLOW_FILE_URIS"]["value"] == "false"
        assert env["AWS_EC2_METADATA_DISABLED"]["value"] == "true"
        assert env["MODELEVAL_CACHE_URI"]["value"] == "s3://cache/x/ns"  # one prefix per namespace


def test_ray_pods_meet_the_restricted_pod_security_level():
    rc = build_raycluster("ev", "ns", "u", spec(), SETTINGS)
    for template in (rc["spec"]["headGroupSpec"]["template"], rc["spec"]["workerGroupSpecs"][0]["template"]):
        pod = template["spec"]
        assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        container = pod["containers"][0]["securityContext"]
        assert container["allowPrivilegeEscalation"] is False and container["capabilities"] == {"drop": ["ALL"]}
        assert all(set(v) <= {"name", "emptyDir"} for v in pod["volumes"])


def test_instance_roles_keep_the_metadata_endpoint():
    settings = OperatorSettings(s3_instance_role=True, _env_file=None)
    env = {e["name"] for e in containers(build_raycluster("ev", "ns", "u", spec(), settings), "head")["env"]}
    assert "AWS_EC2_METADATA_DISABLED" not in env and "MODELEVAL_CACHE_URI" not in env


def test_long_names_fit_kubernetes_limits():
    name = "a" * 63
    assert len(cluster_name(name)) <= 40 and cluster_name(name) != cluster_name("a" * 62)
    assert len(cluster_name(name, 12)) <= 40 and cluster_name(name, 12).endswith("-12")


def test_a_later_attempt_gets_a_cluster_of_its_own_name():
    assert cluster_name("ev") == cluster_name("ev", 1) == "ev-ray"
    assert cluster_name("ev", 2) == "ev-ray-2"
    rc = build_raycluster("ev", "ns", "u", spec(), SETTINGS, cluster=cluster_name("ev", 3))
    assert rc["metadata"]["name"] == "ev-ray-3" and rc["metadata"]["labels"]["modeleval.dev/evaluation"] == "ev"


def test_job_submission_is_deterministic_and_carries_no_secret():
    s = spec(baseline={"model": {"uri": "s3://models/base.json"}})
    package = job_package("ev", "ns", "uid-9", s)
    assert package == job_package("ev", "ns", "uid-9", s)  # the same manifest, the same package
    first = build_job_submission("ev", "ns", "uid-9", 2, package)
    assert first["submission_id"] == submission_id("uid-9", 2) == "modeleval-uid-9-2"
    assert first["runtime_env"] == {"working_dir": package.uri}
    assert package.uri.startswith("gcs://_ray_pkg_") and package.uri.endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        assert archive.namelist() == ["manifest.yaml"]
        manifest = yaml.safe_load(archive.read("manifest.yaml"))
    assert manifest["metadata"] == {"name": "ev", "namespace": "ns", "uid": "uid-9"}
    assert ModelEvaluationSpec.model_validate(manifest["spec"]) == s
    assert first["entrypoint"] == "python -m modeleval.runner --manifest manifest.yaml --uid uid-9 --attempt 2"
    assert "AWS" not in json.dumps(first) and b"mongodb://" not in package.data


def test_a_schedules_child_tells_the_runner_its_schedule():
    package = job_package("nightly-1", "ns", "u", spec(), schedule="nightly")
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        manifest = yaml.safe_load(archive.read("manifest.yaml"))
    assert manifest["metadata"]["labels"] == {"modeleval.dev/schedule": "nightly"}
    assert package != job_package("nightly-1", "ns", "u", spec())


def test_a_manifest_of_any_size_stays_off_the_command_line():
    columns = [f"feature_with_a_long_name_{i:05d}" for i in range(5000)]
    big = spec(dataset={"uri": "s3://data/t.parquet", "format": "parquet", "groupColumn": "qid",
                        "featureColumns": columns})
    package = job_package("ev", "ns", "u", big)
    request = build_job_submission("ev", "ns", "u", 1, package)
    assert len(json.dumps(request)) < 1024 < 128 * 1024 < len(json.dumps(big.model_dump()))
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        assert yaml.safe_load(archive.read("manifest.yaml"))["spec"]["dataset"]["featureColumns"] == columns


def test_head_url():
    assert head_url("ev-ray", "ns", SETTINGS) == "http://ev-ray-head-svc.ns.svc.cluster.local:8265"
    override = OperatorSettings(ray_head_override_url="http://127.0.0.1:8265/", _env_file=None)
    assert head_url("ev-ray", "ns", override) == "http://127.0.0.1:8265"


OPERATOR_LABELS = {"app.kubernetes.io/name": "modeleval", "app.kubernetes.io/instance": "me"}


def policy_settings(**extra) -> OperatorSettings:
    return OperatorSettings(operator_namespace="modeleval-system", operator_pod_labels=OPERATOR_LABELS,
                            _env_file=None, **extra)


def egress_allows(policy: dict, address: str, port: int, protocol: str = "TCP") -> bool:
    """Whether the policy lets its pods open a connection to an address outside the cluster, read
    as the NetworkPolicy API defines it (a rule matches when a peer and a port match; no peers or
    no ports: all)."""
    spec = policy["spec"]
    if "Egress" not in spec["policyTypes"]:
        return True
    target = ipaddress.ip_address(address)

    def peer_matches(peer: dict) -> bool:
        block = peer.get("ipBlock")
        if block is None:
            return False  # pod and namespace selectors name pods, not outside addresses
        network = ipaddress.ip_network(block["cidr"])
        return (target.version == network.version and target in network
                and not any(target in ipaddress.ip_network(e) for e in block.get("except", [])))

    def port_matches(rule: dict) -> bool:
        ports = rule.get("ports")
        return not ports or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)

    return any(port_matches(rule) and ("to" not in rule or any(map(peer_matches, rule["to"])))
               for rule in spec.get("egress", []))


def test_network_policy_admits_the_jobs_api_from_the_operator_pods_only():
    policy = build_network_policy("ev-ray", "ev", "ns", "u", policy_settings())
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"ray.io/cluster": "ev-ray"}}
    own, operator = policy["spec"]["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": "ev-ray"}}}]}
    # One peer with both selectors: the operator's pods in its namespace, not every pod there.
    assert operator["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "modeleval-system"}},
        "podSelector": {"matchLabels": OPERATOR_LABELS}}]
    assert operator["ports"] == [{"protocol": "TCP", "port": 8265}]
    # An operator outside the cluster (no namespace), or policies turned off: none.
    assert build_network_policy("ev-ray", "ev", "ns", "u", OperatorSettings(_env_file=None)) is None
    off = OperatorSettings(operator_namespace="x", network_policy=False, _env_file=None)
    assert build_network_policy("ev-ray", "ev", "ns", "u", off) is None


def test_a_policy_naming_only_the_operator_namespace_is_refused_at_startup():
    with pytest.raises(ValueError, match="MODELEVAL_OPERATOR_POD_LABELS"):
        OperatorSettings(operator_namespace="modeleval-system", _env_file=None)


def test_ray_pods_reach_each_other_and_anything_but_the_metadata_address_by_default():
    policy = build_network_policy("ev-ray", "ev", "ns", "u", policy_settings())
    assert policy["spec"]["egress"][0] == {"to": [{"podSelector": {"matchLabels": {"ray.io/cluster": "ev-ray"}}}]}
    for address, port in (("10.77.0.1", 9000), ("52.95.110.1", 443), ("10.96.0.10", 53), ("2600:1f18::1", 443)):
        assert egress_allows(policy, address, port), address
        assert egress_allows(policy, address, port, "UDP"), address
    for metadata in ("169.254.169.254", "fd00:ec2::254"):
        assert not egress_allows(policy, metadata, 80), metadata
    assert egress_allows(policy, "169.254.169.253", 80)  # only the one address is kept out


def test_an_instance_role_setup_keeps_the_metadata_address_open():
    policy = build_network_policy("ev-ray", "ev", "ns", "u", policy_settings(s3_instance_role=True))
    assert egress_allows(policy, "169.254.169.254", 80)


def test_listed_endpoints_narrow_the_egress_to_them_on_their_ports():
    endpoints = [{"cidr": "10.0.5.0/24", "ports": [443]}, {"cidr": "10.0.6.7/32", "ports": [27017]},
                 {"cidr": "10.96.0.10/32", "ports": [53]}]
    policy = build_network_policy("ev-ray", "ev", "ns", "u", policy_settings(egress_endpoints=endpoints))
    assert egress_allows(policy, "10.0.5.20", 443)
    assert egress_allows(policy, "10.0.6.7", 27017)
    assert egress_allows(policy, "10.96.0.10", 53, "UDP") and egress_allows(policy, "10.96.0.10", 53)
    assert not egress_allows(policy, "10.0.5.20", 80)  # a listed network, another port
    assert not egress_allows(policy, "10.0.6.8", 27017)  # another address
    assert not egress_allows(policy, "52.95.110.1", 443)
    assert not egress_allows(policy, "169.254.169.254", 80)


def test_a_listed_range_holding_the_metadata_address_still_keeps_it_out():
    wide = policy_settings(egress_endpoints=[{"cidr": "169.254.0.0/16"}, {"cidr": "0.0.0.0/0", "ports": [443]}])
    policy = build_network_policy("ev-ray", "ev", "ns", "u", wide)
    assert egress_allows(policy, "169.254.1.1", 80) and egress_allows(policy, "8.8.8.8", 443)
    assert not egress_allows(policy, "169.254.169.254", 80)
    assert not egress_allows(policy, "169.254.169.254", 443)
    with pytest.raises(ValueError, match="metadata address 169.254.169.254/32"):
        policy_settings(egress_endpoints=[{"cidr": "169.254.169.254/32"}])


@pytest.mark.parametrize("endpoint, message", [
    ({"cidr": "10.0.0.1/8"}, "not a CIDR"), ({"cidr": "s3.example.com"}, "not a CIDR"),
    ({"cidr": "10.0.0.0/8", "ports": [0]}, "outside 1-65535"),
    ({"cidr": "10.0.0.0/8", "port": 443}, "port"),
])
def test_a_bad_egress_endpoint_is_refused_naming_it(endpoint, message):
    with pytest.raises(ValueError, match=message):
        policy_settings(egress_endpoints=[endpoint])
