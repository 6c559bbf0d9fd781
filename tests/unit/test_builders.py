"""RayCluster, Secret and job manifests are pure functions of the spec and settings."""

from __future__ import annotations

import base64
import json

import yaml

from modeleval.api.spec import ModelEvaluationSpec
from modeleval.controller.builders import (build_auth_secret, build_job_submission,
                                           build_raycluster, cluster_name, head_url)
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
        assert {"name": "shared-memory", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
        volume = {v["name"]: v for v in pod["volumes"]}["shared-memory"]
        assert volume["emptyDir"]["medium"] == "Memory"
    worker = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert {v["name"]: v for v in worker["volumes"]}["shared-memory"]["emptyDir"]["sizeLimit"] == "3Gi"


def test_owned_by_the_evaluation_and_labelled():
    rc = build_raycluster("ev", "ns", "uid-1", spec(), SETTINGS)
    owner = rc["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ModelEvaluation" and owner["uid"] == "uid-1" and owner["controller"]
    assert rc["metadata"]["name"] == cluster_name("ev") and rc["metadata"]["namespace"] == "ns"
    assert rc["metadata"]["labels"]["modeleval.dev/evaluation"] == "ev"
    assert rc["spec"]["authOptions"] == {"mode": "token", "secretName": "ev-ray-auth"}


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
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio:9000"
        assert env["MODELEVAL_ALLOW_FILE_URIS"]["value"] == "false"


def test_long_names_fit_kubernetes_limits():
    name = "a" * 63
    assert len(cluster_name(name)) <= 40 and cluster_name(name) != cluster_name("a" * 62)


def test_job_submission_is_deterministic_and_carries_no_secret():
    s = spec(baseline={"model": {"uri": "s3://models/base.json"}})
    first = build_job_submission("ev", "ns", "uid-9", 2, s)
    assert first == build_job_submission("ev", "ns", "uid-9", 2, s)
    assert first["submission_id"] == submission_id("uid-9", 2) == "modeleval-uid-9-2"
    encoded = first["entrypoint"].split("--manifest-b64 ")[1].split()[0]
    manifest = yaml.safe_load(base64.b64decode(encoded))
    assert manifest["metadata"] == {"name": "ev", "namespace": "ns", "uid": "uid-9"}
    assert ModelEvaluationSpec.model_validate(manifest["spec"]) == s
    assert "AWS" not in json.dumps(first) and "mongodb://" not in json.dumps(first)


def test_auth_secret_and_head_url():
    secret = build_auth_secret("ev-ray", "ns", "ev", "u")
    assert secret["metadata"]["name"] == "ev-ray-auth" and len(secret["stringData"]["auth_token"]) >= 32
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u"
    assert head_url("ev-ray", "ns", SETTINGS) == "http://ev-ray-head-svc.ns.svc.cluster.local:8265"
    override = OperatorSettings(ray_head_override_url="http://127.0.0.1:8265/", _env_file=None)
    assert head_url("ev-ray", "ns", override) == "http://127.0.0.1:8265"
