"""The test bed is real: a Kubernetes control plane with RBAC and garbage collection, kwok nodes,
the KubeRay operator reconciling RayClusters, and the scheduler placing GPU pods."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from kubernetes import client

from testbed import Tools

from .kube import api_client, eventually, usable_namespace

pytestmark = pytest.mark.e2e

RAY_IMAGE = "rayproject/ray:2.60.0"


@pytest.fixture(scope="module")
def api(bed):
    return api_client(bed.kubeconfig)


@pytest.fixture()
def namespace(api):
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    usable_namespace(api, name)
    yield name
    core.delete_namespace(name)


def kubectl(bed, *args: str) -> str:
    result = subprocess.run([str(Tools.locate().kubectl), f"--kubeconfig={bed.kubeconfig}", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def raycluster(name: str, worker_resources: dict | None = None, replicas: int = 1) -> dict:
    head_resources = {"cpu": "1", "memory": "2Gi"}
    worker_resources = worker_resources or {"cpu": "1", "memory": "1Gi"}
    container = lambda n, r: {"name": n, "image": RAY_IMAGE,  # noqa: E731
                              "resources": {"requests": r, "limits": r}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "rayVersion": "2.60.0",
            "headGroupSpec": {"rayStartParams": {},
                              "template": {"spec": {"containers": [container("ray-head", head_resources)]}}},
            "workerGroupSpecs": [{
                "groupName": "workers", "replicas": replicas, "minReplicas": 0, "maxReplicas": 4,
                "rayStartParams": {},
                "template": {"spec": {"containers": [container("ray-worker", worker_resources)]}},
            }],
        },
    }


def cluster_pods(api, namespace: str, cluster: str) -> list[client.V1Pod]:
    return client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"ray.io/cluster={cluster}").items


def test_versions_are_real(bed):
    version = json.loads(kubectl(bed, "version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == bed.kubernetes_version
    assert version["clientVersion"]["gitVersion"] == bed.kubernetes_version


def test_nodes_cpu_gpu_and_real(bed, api):
    nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    assert set(nodes) == {"cpu-node-1", "cpu-node-2", "gpu-node-1", "real-node-1"}
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"
    assert nodes["gpu-node-1"].status.allocatable["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in nodes["cpu-node-1"].status.allocatable
    # The real node: a kubelet of the bed's version on containerd, no GPU, tainted so that only
    # namespaces marked for it place pods there.
    real = nodes["real-node-1"]
    assert real.status.node_info.kubelet_version == bed.kubernetes_version
    assert real.status.node_info.container_runtime_version.startswith("containerd://")
    assert "nvidia.com/gpu" not in real.status.allocatable
    assert [t.key for t in real.spec.taints or []] == ["modeleval.dev/real-node"]


def test_rbac_is_enforced(api, namespace):
    """A service account with no role bindings is refused: the API server authorizes with RBAC."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="nobody")))
    review = client.AuthorizationV1Api(api).create_subject_access_review(client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:nobody",
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb="list", resource="pods"))))
    assert review.status.allowed is False


def test_raycluster_becomes_ready_then_is_garbage_collected(api, namespace):
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", raycluster("rc"))

    def all_running():
        pods = cluster_pods(api, namespace, "rc")
        kinds = sorted(p.metadata.labels.get("ray.io/node-type") for p in pods)
        running = all(p.status.phase == "Running" for p in pods)
        return pods if kinds == ["head", "worker"] and running else None

    pods = eventually(all_running, 90, "KubeRay to create head and worker pods and kwok to run them")
    for pod in pods:
        assert pod.spec.node_name, "pods are bound by the scheduler"
        assert pod.metadata.owner_references[0].kind == "RayCluster"

    def ready():
        rc = custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", "rc")
        return rc if rc.get("status", {}).get("state") == "ready" else None

    rc = eventually(ready, 90, "RayCluster status.state == ready")
    assert rc["status"]["head"]["serviceName"] == "rc-head-svc"
    client.CoreV1Api(api).read_namespaced_service("rc-head-svc", namespace)

    custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", "rc",
                                           propagation_policy="Background")
    eventually(lambda: not cluster_pods(api, namespace, "rc"), 90,
               "the garbage collector to delete the RayCluster's pods")


def test_gpu_worker_lands_on_gpu_node(api, namespace):
    custom = client.CustomObjectsApi(api)
    gpu = {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters",
                                           raycluster("gpu", worker_resources=gpu))

    def worker_bound():
        workers = [p for p in cluster_pods(api, namespace, "gpu")
                   if p.metadata.labels.get("ray.io/node-type") == "worker" and p.spec.node_name]
        return workers[0] if workers else None

    worker = eventually(worker_bound, 90, "the GPU worker pod to be scheduled")
    assert worker.spec.node_name == "gpu-node-1"
    head = [p for p in cluster_pods(api, namespace, "gpu") if p.metadata.labels["ray.io/node-type"] == "head"]
    assert head and head[0].spec.node_name != "gpu-node-1", "the tainted GPU node takes only GPU pods"


def test_too_many_gpus_stay_pending_with_failed_scheduling(api, namespace):
    core = client.CoreV1Api(api)
    limits = {"cpu": "1", "nvidia.com/gpu": "3"}
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="greedy"),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="c", image=RAY_IMAGE, resources=client.V1ResourceRequirements(
                requests=limits, limits=limits))])))

    def failed_scheduling():
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=greedy,reason=FailedScheduling").items
        return events[0] if events else None

    event = eventually(failed_scheduling, 60, "a FailedScheduling event")
    assert "nvidia.com/gpu" in event.message
    pod = core.read_namespaced_pod("greedy", namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_anonymous_requests_are_refused(bed):
    """Anonymous requests get no access to resources."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{bed.apiserver}/api/v1/namespaces/default/pods", context=context)
    assert error.value.code in (401, 403)
