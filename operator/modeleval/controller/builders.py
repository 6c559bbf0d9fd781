"""Pure builders of what the operator sends: the RayCluster, its auth Secret and the Ray job.

Nothing here talks to a cluster, so every manifest is unit-tested as a plain dict.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import yaml

from ..api.results import submission_id
from ..api.spec import API_GROUP, API_VERSION, KIND, ModelEvaluationSpec
from .settings import OperatorSettings

LABEL_EVALUATION = "modeleval.dev/evaluation"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "modeleval"
GPU = "nvidia.com/gpu"
RAY_AUTH_KEY = "auth_token"  # the key KubeRay reads a cluster's auth token from


def cluster_name(evaluation: str) -> str:
    """The RayCluster's name: the evaluation's, shortened so KubeRay's derived names fit."""
    name = f"{evaluation}-ray"
    if len(name) > 40:
        digest = hashlib.sha256(evaluation.encode()).hexdigest()[:6]
        name = f"{evaluation[:33].rstrip('-')}-{digest}"
    return name


def auth_secret_name(cluster: str) -> str:
    return f"{cluster}-auth"


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def _resources(cpu: str, memory: str, gpu: int) -> dict[str, Any]:
    """Limits equal requests: the container's cgroup enforces exactly what the spec asked (CPU
    quota and memory limit), the pod is Guaranteed, and Ray sizes itself from the same figures."""
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpu:
        requests[GPU] = str(gpu)
        limits[GPU] = str(gpu)  # extended resources must be set in limits, equal to requests
    return {"requests": requests, "limits": limits}


def _env(settings: OperatorSettings) -> list[dict[str, Any]]:
    """Credentials reach pods only as secretKeyRef; plain settings as values."""
    env: list[dict[str, Any]] = [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
            "name": settings.s3_secret, "key": "AWS_ACCESS_KEY_ID", "optional": True}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
            "name": settings.s3_secret, "key": "AWS_SECRET_ACCESS_KEY", "optional": True}}},
        {"name": "MODELEVAL_MONGODB_URI", "valueFrom": {"secretKeyRef": {
            "name": settings.mongodb_secret, "key": "MONGODB_URI", "optional": True}}},
        {"name": "MODELEVAL_ALLOW_FILE_URIS", "value": "false"},
    ]
    if settings.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": settings.s3_endpoint})
    if settings.cache_uri:
        env.append({"name": "MODELEVAL_CACHE_URI", "value": settings.cache_uri})
    return env


def _pod_template(container: str, image: str, resources: dict[str, Any], env: list[dict[str, Any]],
                  spec: ModelEvaluationSpec, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "containers": [{
            "name": container,
            "image": image,
            "resources": resources,
            "env": env,
            # Ray's object store lives in /dev/shm, which a container runtime makes 64 MiB;
            # a memory-backed volume (counted in the pod's memory limit) gives it room.
            "volumeMounts": [{"name": "shared-memory", "mountPath": "/dev/shm"}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
            **({"ports": ports} if ports else {}),
        }],
        "volumes": [{"name": "shared-memory",
                     "emptyDir": {"medium": "Memory", "sizeLimit": resources["limits"]["memory"]}}],
        # Ray pods never call the Kubernetes API: no service-account token in them.
        "automountServiceAccountToken": False,
    }
    if spec.node_selector:
        body["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        body["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    return {"metadata": {"labels": {}}, "spec": body}


def build_raycluster(name: str, namespace: str, uid: str, spec: ModelEvaluationSpec,
                     settings: OperatorSettings) -> dict[str, Any]:
    """A RayCluster owned by the evaluation, whose pods request exactly the spec's resources."""
    r = spec.resources
    image = spec.ray_image or settings.ray_image
    env = _env(settings)
    cluster = cluster_name(name)
    labels = {LABEL_EVALUATION: name, LABEL_MANAGED_BY: MANAGER}
    head = _pod_template("ray-head", image, _resources(r.head_cpu, r.head_memory, 0), env, spec,
                         ports=[{"containerPort": 8265, "name": "dashboard"},
                                {"containerPort": 6379, "name": "gcs"}])
    worker = _pod_template("ray-worker", image, _resources(r.cpu, r.memory, r.gpu), env, spec)
    head["metadata"]["labels"] = dict(labels)
    worker["metadata"]["labels"] = dict(labels)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": cluster, "namespace": namespace, "labels": labels,
                     "ownerReferences": [owner_reference(name, uid)]},
        "spec": {
            "rayVersion": settings.ray_version,
            "authOptions": {"mode": "token", "secretName": auth_secret_name(cluster)},
            "headGroupSpec": {
                # The head schedules no tasks: the evaluation's CPUs are the workers'.
                "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                "template": head,
            },
            "workerGroupSpecs": [{
                "groupName": "workers",
                "replicas": r.workers,
                "minReplicas": r.workers,
                "maxReplicas": r.workers,
                "rayStartParams": {},
                "template": worker,
            }],
        },
    }


def build_auth_secret(cluster: str, namespace: str, name: str, uid: str,
                      token: str | None = None) -> dict[str, Any]:
    """The token KubeRay hands to the Ray pods and the operator uses for the Jobs API."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": auth_secret_name(cluster), "namespace": namespace,
                     "labels": {LABEL_EVALUATION: name, LABEL_MANAGED_BY: MANAGER},
                     "ownerReferences": [owner_reference(name, uid)]},
        "stringData": {RAY_AUTH_KEY: token or secrets.token_urlsafe(32)},
    }


def manifest_for_job(name: str, namespace: str, uid: str, spec: ModelEvaluationSpec) -> str:
    """The manifest the runner evaluates, base64 so it passes through a shell unchanged. It holds
    the spec only: no credentials exist in a spec."""
    document = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
                "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json")}
    return base64.b64encode(yaml.safe_dump(document).encode()).decode()


def build_job_submission(name: str, namespace: str, uid: str, attempt: int,
                         spec: ModelEvaluationSpec) -> dict[str, Any]:
    """The Jobs API request body for one attempt."""
    entrypoint = (f"python -m modeleval.runner --manifest-b64 {manifest_for_job(name, namespace, uid, spec)}"
                  f" --uid {uid} --attempt {attempt}")
    return {
        "entrypoint": entrypoint,
        "submission_id": submission_id(uid, attempt),
        "metadata": {LABEL_EVALUATION: name, "modeleval.dev/namespace": namespace,
                     "modeleval.dev/attempt": str(attempt)},
        "entrypoint_num_cpus": 0,
    }


def head_url(cluster: str, namespace: str, settings: OperatorSettings) -> str:
    if settings.ray_head_override_url:
        return settings.ray_head_override_url.rstrip("/")
    return f"http://{cluster}-head-svc.{namespace}.svc.{settings.cluster_domain}:8265"
