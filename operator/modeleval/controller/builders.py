"""Pure builders of what the operator sends: the RayCluster, its auth Secret and the Ray job.

Nothing here talks to a cluster, so every manifest is unit-tested as a plain dict.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import zipfile
from dataclasses import dataclass
from typing import Any

import yaml

from ..api.results import submission_id
from ..api.schedule import SCHEDULE_LABEL
from ..api.spec import API_GROUP, API_VERSION, KIND, ModelEvaluationSpec
from .settings import METADATA_NETWORKS, OperatorSettings

LABEL_EVALUATION = "modeleval.dev/evaluation"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "modeleval"
GPU = "nvidia.com/gpu"
RAY_AUTH_KEY = "auth_token"  # the key KubeRay reads a cluster's auth token from
DASHBOARD_PORT = 8265  # the head's dashboard: the Ray Jobs API
# Kueue admits a workload labelled with its LocalQueue; a RayCluster is admitted whole.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def cluster_name(evaluation: str, attempt: int = 1) -> str:
    """The RayCluster's name: the evaluation's, shortened so KubeRay's derived names fit (40
    characters). An attempt after the first that needs a cluster of its own (its first was lost,
    or it was suspended) gets a fresh name, so it never meets the pods of the one before, which
    may still be terminating under the old name."""
    suffix = "" if attempt <= 1 else f"-{attempt}"
    name = f"{evaluation}-ray{suffix}"
    if len(name) > 40:
        digest = hashlib.sha256(evaluation.encode()).hexdigest()[:6]
        name = f"{evaluation[:33 - len(suffix)].rstrip('-')}-{digest}{suffix}"
    return name


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


def _env(namespace: str, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Credentials reach pods only as secretKeyRef, and the Secrets must exist: a namespace
    without them gets pods that do not start (reported, then failed after pendingTimeout),
    never pods that fall back to whatever identity the node has."""
    env: list[dict[str, Any]] = [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
            "name": settings.s3_secret, "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
            "name": settings.s3_secret, "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "MODELEVAL_MONGODB_URI", "valueFrom": {"secretKeyRef": {
            "name": settings.mongodb_secret, "key": "MONGODB_URI"}}},
        {"name": "MODELEVAL_ALLOW_FILE_URIS", "value": "false"},
    ]
    if not settings.s3_instance_role:
        # No fallback to the node's instance role when the Secret's keys are refused.
        env.append({"name": "AWS_EC2_METADATA_DISABLED", "value": "true"})
    if settings.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": settings.s3_endpoint})
    if settings.cache_uri:
        # One prefix per namespace: no tenant reads parts another one wrote.
        env.append({"name": "MODELEVAL_CACHE_URI", "value": f"{settings.cache_uri.rstrip('/')}/{namespace}"})
    return env


# Ray's dashboard agent answers /api/healthz on every node once its raylet (and, on the head, the
# GCS) is up. KubeRay's own readiness probe asks first after 10 s and then every 5 s, while Ray
# starts in a few seconds: a cluster would wait up to 8 s for nothing, each attempt. This probe
# asks every 2 s from the start and tolerates as long a silence (50 s) as KubeRay's.
AGENT_PORT = 52365
READINESS_PROBE = {"httpGet": {"path": "/api/healthz", "port": AGENT_PORT},
                   "initialDelaySeconds": 2, "periodSeconds": 2, "timeoutSeconds": 2,
                   "successThreshold": 1, "failureThreshold": 25}
TERMINATION_GRACE_SECONDS = 5


def _pod_template(container: str, image: str, resources: dict[str, Any], env: list[dict[str, Any]],
                  spec: ModelEvaluationSpec, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "containers": [{
            "name": container,
            "image": image,
            "resources": resources,
            "env": env,
            "readinessProbe": READINESS_PROBE,
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
        # Nothing in a Ray pod needs a graceful stop once the operator deletes its cluster (the
        # result is written first), and a raylet whose head is gone can ignore SIGTERM: the
        # default 30 s would hold the pods' CPUs from the next attempt or evaluation.
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        # The "restricted" Pod Security level: non-root, no privilege escalation, no
        # capabilities, the runtime's default seccomp profile.
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if spec.node_selector:
        body["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        body["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    return {"metadata": {"labels": {}}, "spec": body}


def queue_of(spec: ModelEvaluationSpec, settings: OperatorSettings) -> str | None:
    """The Kueue LocalQueue the evaluation's own RayCluster waits in, if any (a shared cluster
    named in spec.rayClusterName is never queued by us)."""
    if spec.ray_cluster_name:
        return None
    return spec.queue_name or settings.kueue_default_queue or None


def build_raycluster(name: str, namespace: str, uid: str, spec: ModelEvaluationSpec,
                     settings: OperatorSettings, cluster: str | None = None) -> dict[str, Any]:
    """A RayCluster owned by the evaluation, whose pods request exactly the spec's resources.
    A queued one is labelled with its LocalQueue and created suspended: Kueue admits it by
    unsuspending it, and no pod exists before (its webhook, which would suspend it, may not
    run in every cluster)."""
    resources = spec.resources
    image = spec.ray_image or settings.ray_image
    env = _env(namespace, settings)
    cluster = cluster or cluster_name(name)
    labels = {LABEL_EVALUATION: name, LABEL_MANAGED_BY: MANAGER}
    queue = queue_of(spec, settings)
    head = _pod_template("ray-head", image,
                         _resources(resources.head_cpu, resources.head_memory, 0), env, spec,
                         ports=[{"containerPort": DASHBOARD_PORT, "name": "dashboard"},
                                {"containerPort": 6379, "name": "gcs"}])
    worker = _pod_template("ray-worker", image,
                           _resources(resources.cpu, resources.memory, resources.gpu), env, spec)
    head["metadata"]["labels"] = dict(labels)
    worker["metadata"]["labels"] = dict(labels)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": cluster, "namespace": namespace,
                     "labels": {**labels, **({KUEUE_QUEUE_LABEL: queue} if queue else {})},
                     "ownerReferences": [owner_reference(name, uid)]},
        "spec": {
            **({"suspend": True} if queue else {}),
            "rayVersion": settings.ray_version,
            # KubeRay makes the token Secret (named as the cluster, owned by it, so it goes with
            # it); the operator only reads it.
            "authOptions": {"mode": "token"},
            "headGroupSpec": {
                # The head schedules no tasks: the evaluation's CPUs are the workers'.
                "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                "template": head,
            },
            "workerGroupSpecs": [{
                "groupName": "workers",
                "replicas": resources.workers,
                "minReplicas": resources.workers,
                "maxReplicas": resources.workers,
                "rayStartParams": {},
                "template": worker,
            }],
        },
    }


# Everything, per address family, for the default egress rule (less the metadata addresses).
ANYWHERE = ("0.0.0.0/0", "::/0")


def build_network_policy(cluster: str, name: str, namespace: str, uid: str,
                         settings: OperatorSettings) -> dict[str, Any] | None:
    """Ingress to the RayCluster's pods: from each other (GCS, object transfers, workers), and
    to the head's Jobs API (the dashboard port) from the operator's own pods only. Egress: to
    each other and to ``ray_egress`` only. None when turned off or the operator's namespace is
    not known (an operator outside the cluster)."""
    if not settings.network_policy or not settings.operator_namespace:
        return None
    pods = {"matchLabels": {"ray.io/cluster": cluster}}
    operator_pods = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.operator_namespace}},
        "podSelector": {"matchLabels": dict(settings.operator_pod_labels)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": cluster, "namespace": namespace,
                     "labels": {LABEL_EVALUATION: name, LABEL_MANAGED_BY: MANAGER},
                     "ownerReferences": [owner_reference(name, uid)]},
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"podSelector": pods}]},
                {"from": [operator_pods], "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]},
            ],
            "egress": [{"to": [{"podSelector": pods}]}, *ray_egress(settings)],
        },
    }


def ray_egress(settings: OperatorSettings) -> list[dict[str, Any]]:
    """Where a Ray pod may connect besides its own cluster: the listed endpoints (S3, MongoDB,
    DNS) when the platform lists them; otherwise anywhere but the cloud metadata address, which
    only an instance-role setup needs (its pods get S3 access from the node's identity)."""
    keep_out = [] if settings.s3_instance_role else list(METADATA_NETWORKS)
    if settings.egress_endpoints:
        return [_endpoint_rule(e.cidr, e.ports, keep_out) for e in settings.egress_endpoints]
    if not keep_out:
        return [{}]  # an empty rule: any destination
    return [{"to": [_ip_block(cidr, keep_out) for cidr in ANYWHERE]}]


def _ip_block(cidr: str, keep_out: list[str]) -> dict[str, Any]:
    """``cidr`` less those of ``keep_out`` inside it (the metadata address in a listed range)."""
    network = ipaddress.ip_network(cidr)
    inside = [str(k) for k in map(ipaddress.ip_network, keep_out)
              if k.version == network.version and k != network and k.subnet_of(network)]
    return {"ipBlock": {"cidr": cidr, **({"except": inside} if inside else {})}}


def _endpoint_rule(cidr: str, ports: list[int], keep_out: list[str]) -> dict[str, Any]:
    rule: dict[str, Any] = {"to": [_ip_block(cidr, keep_out)]}
    if ports:
        # DNS answers on UDP and on TCP; a store on TCP: both protocols for each listed port.
        rule["ports"] = [{"protocol": protocol, "port": port}
                         for port in ports for protocol in ("TCP", "UDP")]
    return rule


MANIFEST_FILE = "manifest.yaml"


@dataclass(frozen=True)
class JobPackage:
    """The manifest the runner evaluates, as a Ray working_dir package (a zip in the head's GCS,
    uploaded through the Jobs API): a manifest of any size reaches the runner as a file, never on
    a command line (the kernel refuses an argument over 128 KiB). It holds the spec only: no
    credentials exist in a spec."""

    uri: str  # gcs://_ray_pkg_<sha1 of the zip>.zip: the same manifest, the same package
    data: bytes


def job_package(name: str, namespace: str, uid: str, spec: ModelEvaluationSpec,
                schedule: str | None = None) -> JobPackage:
    """``schedule``: the EvaluationSchedule that created the evaluation, passed on as its label
    so the runner records it in the result."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid}
    if schedule:
        metadata["labels"] = {SCHEDULE_LABEL: schedule}
    document = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": metadata,
                "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json")}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entry = zipfile.ZipInfo(MANIFEST_FILE, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible
        entry.external_attr = 0o644 << 16
        archive.writestr(entry, yaml.safe_dump(document, sort_keys=True))
    data = buffer.getvalue()
    return JobPackage(f"gcs://_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip", data)


def build_job_submission(name: str, namespace: str, uid: str, attempt: int,
                         package: JobPackage, allow_pickle: bool = False,
                         report: bool = True) -> dict[str, Any]:
    """The Jobs API request body for one attempt: the runner reads the manifest from the job's
    working directory (the package). ``--allow-pickle`` is the platform's permission, passed
    only when the operator's policy allows pickle: without it the runner loads no pickle,
    whatever the manifest says (a spec that slipped past the operator's check included).
    ``--no-report`` when the platform turned reports off."""
    flags = (" --allow-pickle" if allow_pickle else "") + ("" if report else " --no-report")
    return {
        "entrypoint": f"python -m modeleval.runner --manifest {MANIFEST_FILE} --uid {uid} "
                      f"--attempt {attempt}" + flags,
        "runtime_env": {"working_dir": package.uri},
        "submission_id": submission_id(uid, attempt),
        "metadata": {LABEL_EVALUATION: name, "modeleval.dev/namespace": namespace,
                     "modeleval.dev/attempt": str(attempt)},
        "entrypoint_num_cpus": 0,
    }


def head_url(cluster: str, namespace: str, settings: OperatorSettings) -> str:
    if settings.ray_head_override_url:
        return settings.ray_head_override_url.rstrip("/")
    return f"http://{cluster}-head-svc.{namespace}.svc.{settings.cluster_domain}:{DASHBOARD_PORT}"
