"""The real node, end to end with no seam: the chart installs the operator as a pod under its own
ServiceAccount; RayClusters start real Ray head and worker containers; the operator submits
through the head Service with the cluster's token; the pods' cgroups hold exactly the spec's
resources; faults on real pods (head deleted, worker killed) end with exact metrics."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dns.resolver
import httpx
import pytest
import yaml
from kubernetes import client
from pyarrow.fs import FileSelector, FileType
from pymongo import MongoClient

from modeleval.demo import EXAMPLES_BUCKET, letor_bytes, make_letor, publish_example_assets
from modeleval.engine.evaluate import Identity
from modeleval.engine.storage import Storage
from modeleval.report import vega_bundle
from modeleval.runner import parse_manifest, run_manifest
from modeleval.settings import EngineSettings
from testbed import Tools
from testbed.node import METADATA_ADDRESS, METADATA_PORT, NAMESPACE_ANNOTATIONS, NODE_NAME

from .kube import api_client, eventually, usable_namespace
from .operator_fixture import EVALUATIONS, EXAMPLES, ROOT, events_of, get_evaluation, kubectl

pytestmark = pytest.mark.e2e
CHART = ROOT / "charts" / "modeleval"
RELEASE, SYSTEM = "modeleval", "modeleval-system"
EXAMPLE = EXAMPLES / "mslr-ranker.yaml"
BIG_DATASET = f"s3://{EXAMPLES_BUCKET}/mslr/big.txt"


def helm(bed, *args: str, timeout: float = 600) -> str:
    result = subprocess.run([str(Tools.locate().helm), f"--kubeconfig={bed.kubeconfig}", *args],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


# Real Ray pods start in well under a minute here; an image that cannot be pulled waits this.
PENDING_TIMEOUT = 120
NO_IMAGE_TIMEOUT = 20  # spec.pendingTimeoutSeconds of the evaluation whose image does not exist
# The tenant namespace enforces the "restricted" Pod Security level: every Ray pod must meet it.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def real_node_namespace(bed, name: str, labels: dict[str, str] | None = None) -> None:
    """A namespace whose pods land on the real node (the bed's admission plugins add its node
    selector and toleration), so unchanged manifests run there."""
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": NAMESPACE_ANNOTATIONS, "labels": labels or {}}}
    kubectl(bed, "apply", "-f", "-", input=json.dumps(body))
    usable_namespace(api_client(bed.kubeconfig), name)


def secret(name: str, data: dict[str, str]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                       "type": "Opaque", "stringData": data})


@dataclass
class Installed:
    namespace: str
    api: client.ApiClient

    def evaluation(self, name: str) -> dict:
        return get_evaluation(self.api, self.namespace, name)

    def pods(self, selector: str = "", namespace: str | None = None) -> list[client.V1Pod]:
        return client.CoreV1Api(self.api).list_namespaced_pod(
            namespace or self.namespace, label_selector=selector).items


@pytest.fixture(scope="module")
def installed(bed):
    api = api_client(bed.kubeconfig)
    namespace = f"real-{uuid.uuid4().hex[:6]}"
    real_node_namespace(bed, SYSTEM)
    real_node_namespace(bed, namespace, RESTRICTED)
    kubectl(bed, "apply", "-n", SYSTEM, "-f", "-",
            input=secret("modeleval-mongodb", {"MONGODB_URI": bed.mongodb_uri}))
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=secret("modeleval-s3", {
        "AWS_ACCESS_KEY_ID": bed.s3_access_key, "AWS_SECRET_ACCESS_KEY": bed.s3_secret_key}))
    kubectl(bed, "apply", "-n", namespace, "-f", "-",
            input=secret("modeleval-mongodb", {"MONGODB_URI": bed.mongodb_uri}))
    storage = Storage()
    publish_example_assets(storage, EXAMPLES_BUCKET)
    storage.write(BIG_DATASET, letor_bytes(make_letor(60_000, 136, mean_group=60, seed=11)))

    helm(bed, "uninstall", RELEASE, "-n", SYSTEM, "--ignore-not-found", "--wait")  # an earlier run
    started = time.monotonic()
    notes = helm(bed, "install", RELEASE, str(CHART), "-n", SYSTEM,
                 "--set", f"watchNamespaces[0]={namespace}", "--set", "rbac.clusterWide=false",
                 "--set", f"s3.endpoint={bed.s3_endpoint}",
                 "--set", "operator.pollIntervalSeconds=1", "--set", "operator.backoffBaseSeconds=2",
                 "--set", f"operator.pendingTimeoutSeconds={PENDING_TIMEOUT}",
                 "--set", "policy.allowedRayImages={modeleval/ray:*}", "--wait", "--timeout=5m")
    print(f"helm install --wait: {time.monotonic() - started:.1f}s")
    assert "kubectl apply -f examples/mslr-ranker.yaml" in notes
    yield Installed(namespace, api)
    subprocess.run([str(Tools.locate().helm), f"--kubeconfig={bed.kubeconfig}", "uninstall", RELEASE,
                    "-n", SYSTEM, "--ignore-not-found", "--wait"], capture_output=True, timeout=300)
    # With no operator left to remove its finalizer, an evaluation would hold the namespace.
    for item in client.CustomObjectsApi(api).list_namespaced_custom_object(
            *EVALUATIONS[:2], namespace, EVALUATIONS[2])["items"]:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            *EVALUATIONS[:2], namespace, EVALUATIONS[2], item["metadata"]["name"],
            {"metadata": {"finalizers": None}})
    client.CoreV1Api(api).delete_namespace(namespace)


def operator_pod(installed: Installed) -> client.V1Pod:
    pods = [p for p in installed.pods(f"app.kubernetes.io/instance={RELEASE}", SYSTEM)
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def container_cgroup(pod: client.V1Pod, controller: str) -> Path:
    """The container's own cgroup directory on the node, found by pod uid and container id."""
    container_id = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    root = Path("/sys/fs/cgroup") / controller / "kubepods"
    found = [p for p in root.rglob(container_id) if f"pod{pod.metadata.uid}" in str(p)]
    assert found, f"no {controller} cgroup for container {container_id} under {root}"
    return found[0]


def quantity_cpu_quota(cpu: str, period: int) -> int:
    millis = int(cpu[:-1]) if cpu.endswith("m") else int(float(cpu) * 1000)
    return millis * period // 1000


def quantity_bytes(memory: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if memory.endswith(suffix):
            return int(memory[:-2]) * factor
    return int(memory)


def wait_finished(installed: Installed, name: str, timeout: float = 900) -> dict:
    def probe():
        obj = installed.evaluation(name)
        return obj if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    return eventually(probe, timeout, f"{name} to finish on the real node", interval=2)


def running_cluster_pods(installed: Installed, cluster: str, kind: str) -> list[client.V1Pod]:
    pods = installed.pods(f"ray.io/cluster={cluster},ray.io/node-type={kind}")
    return [p for p in pods if p.status.phase == "Running" and p.status.container_statuses
            and p.status.container_statuses[0].container_id and not p.metadata.deletion_timestamp]


_LOCAL_METRICS: dict[str, dict[str, float]] = {}


def local_metrics(manifest_text: str, tmp_path: Path) -> dict[str, float]:
    """`modeleval run` on the same manifest, on this machine's Ray (once per spec: evaluations
    that differ only in their names share the answer)."""
    key = json.dumps(yaml.safe_load(manifest_text)["spec"], sort_keys=True)
    if key not in _LOCAL_METRICS:
        settings = EngineSettings(cache_uri=(tmp_path / "cache").as_uri(),
                                  results_dir=tmp_path / "results", report=False)
        _LOCAL_METRICS[key] = run_manifest(parse_manifest(manifest_text), Identity(uuid.uuid4().hex),
                                           settings).metrics
    return _LOCAL_METRICS[key]


def stored_documents(bed, uid: str) -> list[dict]:
    with MongoClient(bed.mongodb_uri) as mongo:
        return sorted(mongo["modeleval"]["results"].find({"uid": uid}), key=lambda d: d["attempt"])


def show(bed, namespace: str) -> None:
    """What a user would look at: the evaluations and the pods with their nodes and containers."""
    print(kubectl(bed, "get", "evaluations", "-n", namespace))
    print(kubectl(bed, "get", "pods", "-A", "-o", "custom-columns=NAMESPACE:.metadata.namespace,"
                  "NAME:.metadata.name,NODE:.spec.nodeName,STATUS:.status.phase,"
                  "CONTAINER:.status.containerStatuses[0].containerID",
                  "--field-selector", f"spec.nodeName={NODE_NAME}"))


# ----------------------------------------------------------------------------- the operator pod
def test_operator_runs_as_a_pod_under_the_chart_account(bed, installed):
    pod = operator_pod(installed)
    assert pod.spec.node_name == NODE_NAME
    assert pod.status.container_statuses[0].container_id.startswith("containerd://")
    assert pod.spec.service_account_name == RELEASE
    container = pod.spec.containers[0]
    assert container.image == "modeleval/operator:0.1.0"
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.allow_privilege_escalation is False
    assert pod.spec.security_context.run_as_non_root is True
    env = {e.name for e in container.env}
    assert not any("OVERRIDE" in name for name in env), "no test-bed seam in the chart's operator"
    # The process really runs as the chart's user, with a read-only root filesystem.
    probe = "import os\ntry:\n    open('/probe', 'w')\nexcept OSError as e:\n    print(os.getuid(), e.errno)"
    out = kubectl(bed, "exec", "-n", SYSTEM, pod.metadata.name, "--", "python", "-c", probe)
    assert out.split() == ["10001", "30"]  # EROFS
    logs = kubectl(bed, "logs", "-n", SYSTEM, pod.metadata.name)
    assert "forbidden" not in logs.lower()


# ----------------------------------------------------------------------------- the example
def test_example_runs_on_real_ray_pods_with_exact_resources_and_metrics(bed, installed, tmp_path):
    ns = installed.namespace
    manifest = EXAMPLE.read_text()
    spec = yaml.safe_load(manifest)["spec"]
    kubectl(bed, "apply", "-n", ns, "-f", str(EXAMPLE))
    cluster = "mslr-ranker-ray"

    workers = eventually(lambda: (lambda w: w if len(w) == spec["resources"]["workers"] else None)(
        running_cluster_pods(installed, cluster, "worker")), 600, "the Ray worker pods to run")
    # The CPU quota and the memory limit the kernel enforces are exactly the spec's.
    for worker in workers:
        assert worker.spec.node_name == NODE_NAME
        cpu = container_cgroup(worker, "cpu")
        period = int((cpu / "cpu.cfs_period_us").read_text())
        quota = int((cpu / "cpu.cfs_quota_us").read_text())
        assert quota == quantity_cpu_quota(spec["resources"]["cpu"], period), (quota, period)
        memory = int((container_cgroup(worker, "memory") / "memory.limit_in_bytes").read_text())
        assert memory == quantity_bytes(spec["resources"]["memory"])
    head = running_cluster_pods(installed, cluster, "head")[0]
    # The head Service's name resolves in cluster DNS (KubeRay makes it headless: to the head
    # pod), and its Jobs API refuses a caller without the cluster's token.
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [bed.host_ip]
    address = resolver.resolve(f"{cluster}-head-svc.{ns}.svc.cluster.local", "A")[0].to_text()
    assert address == head.status.pod_ip
    jobs_api = f"http://{address}:8265/api/jobs/"
    core = client.CoreV1Api(installed.api)
    # KubeRay made the token Secret, owned by the RayCluster (the operator may only read it).
    token_secret = core.read_namespaced_secret(cluster, ns)
    assert [o.kind for o in token_secret.metadata.owner_references] == ["RayCluster"]
    token = base64.b64decode(token_secret.data["auth_token"]).decode()
    # Its NetworkPolicy: the pods accept each other, and the Jobs API the operator's own pods.
    policy = client.NetworkingV1Api(installed.api).read_namespaced_network_policy(cluster, ns).spec
    assert policy.pod_selector.match_labels == {"ray.io/cluster": cluster}
    operator_labels = {"app.kubernetes.io/name": "modeleval", "app.kubernetes.io/instance": RELEASE}
    assert operator_labels.items() <= operator_pod(installed).metadata.labels.items()
    assert [(r._from[0].namespace_selector.match_labels if r._from[0].namespace_selector else None,
             r._from[0].pod_selector.match_labels, [p.port for p in r.ports or []])
            for r in policy.ingress] == [
        (None, {"ray.io/cluster": cluster}, []),
        ({"kubernetes.io/metadata.name": SYSTEM}, operator_labels, [8265])]
    def answers(headers: dict[str, str]) -> int | None:
        try:
            return httpx.get(jobs_api, timeout=10, headers=headers).status_code
        except httpx.HTTPError:
            return None

    eventually(lambda: answers({"Authorization": f"Bearer {token}"}) == 200, 60,
               "the head's Jobs API to answer through its Service with the token")
    assert answers({}) in (401, 403)
    head_cpu = container_cgroup(head, "cpu")
    assert int((head_cpu / "cpu.cfs_quota_us").read_text()) == quantity_cpu_quota(
        spec["resources"]["headCpu"], int((head_cpu / "cpu.cfs_period_us").read_text()))

    obj = wait_finished(installed, "mslr-ranker")
    status = obj["status"]
    show(bed, ns)
    assert status["phase"] == "Succeeded", f"{status.get('reason')}: {status.get('message')}"
    assert status["attempt"] == 1
    # Submitted through the head Service by its cluster DNS name, not a seam.
    assert status["dashboardURL"] == f"http://{cluster}-head-svc.{ns}.svc.cluster.local:8265"
    assert status["metrics"] == pytest.approx(local_metrics(manifest, tmp_path), abs=1e-6)
    documents = stored_documents(bed, obj["metadata"]["uid"])
    assert len(documents) == 1 and documents[0]["status"] == "Succeeded"
    assert documents[0]["metrics"] == status["metrics"]
    assert "JobSubmitted" in events_of(installed.api, ns, "mslr-ranker")
    # Its report, rendered in the Ray image and written with the namespace's own S3 keys.
    report = status.get("reportURI")
    assert report and report == documents[0]["reportUri"], status["conditions"]
    html = Storage().read(report).decode()
    assert "mslr-ranker" in html and vega_bundle() in html
    # The parsed dataset was cached under this namespace's own prefix of the data's bucket.
    cached = Storage().s3.get_file_info(FileSelector(f"{EXAMPLES_BUCKET}/modeleval-cache/{ns}/",
                                                     recursive=True, allow_not_found=True))
    assert any(entry.type == FileType.File for entry in cached)
    eventually(lambda: not installed.pods(f"ray.io/cluster={cluster}"), 180,
               "the finished evaluation's Ray pods to be deleted")
    gone = (lambda: not client.NetworkingV1Api(installed.api).list_namespaced_network_policy(
        ns, field_selector=f"metadata.name={cluster}").items
        and not core.list_namespaced_secret(ns, field_selector=f"metadata.name={cluster}").items)
    eventually(gone, 120, "the cluster's NetworkPolicy and token Secret to go with it")


# ----------------------------------------------------------------------------- network policies
# Connects to (address, port) from inside a pod; prints what happened. A policy's refusal drops
# the connection's first packet: the attempt times out.
CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4).close()\n"
           "    print('connected')\n"
           "except OSError as error:\n"
           "    print(type(error).__name__)\n")


def connection(bed, namespace: str, pod: str, address: str, port: int) -> str:
    return kubectl(bed, "exec", "-n", namespace, pod, "--", "python", "-c", CONNECT, address,
                   str(port)).strip()


def refused(bed, namespace: str, pod: str, address: str, port: int) -> bool:
    """Eventually refused (the enforcer learns a new pod's address from the API within seconds),
    and refused again on a second try."""
    eventually(lambda: connection(bed, namespace, pod, address, port) != "connected", 60,
               f"{namespace}/{pod} to be refused at {address}:{port}", interval=2)
    return connection(bed, namespace, pod, address, port) != "connected"


def bystander(bed, installed: Installed, namespace: str) -> str:
    """A pod that no policy selects, in a namespace of its own on the real node."""
    real_node_namespace(bed, namespace)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bystander", "namespace": namespace},
           "spec": {"containers": [{"name": "python", "image": "modeleval/operator:0.1.0",
                                    "imagePullPolicy": "Never",
                                    "command": ["python", "-c", "import time; time.sleep(3600)"]}],
                    "terminationGracePeriodSeconds": 0}}
    kubectl(bed, "apply", "-f", "-", input=json.dumps(pod))
    eventually(lambda: [p for p in installed.pods(namespace=namespace) if p.status.phase == "Running"],
               180, "the bystander pod to run")
    return "bystander"


def test_network_policies_hold_on_the_real_node(bed, installed):
    """kube-network-policies enforces on the real node: Ray pods and the operator cannot reach
    the cloud metadata address (a listener answers there: a pod no policy selects connects), a
    pod of another namespace reaches neither a Ray head's Jobs API nor the operator's metrics,
    and the operator's pod reaches the Jobs API."""
    ns, other = installed.namespace, f"{installed.namespace}-other"
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["name"] = "netpol"
    body["spec"]["keepCluster"] = True  # the cluster stays for the checks however soon the job ends
    kubectl(bed, "apply", "-n", ns, "-f", "-", input=json.dumps(body))
    try:
        head = eventually(lambda: (running_cluster_pods(installed, "netpol-ray", "head") or [None])[0],
                          600, "the Ray head pod to run")
        peer = bystander(bed, installed, other)
        operator = operator_pod(installed)
        metadata = (METADATA_ADDRESS, METADATA_PORT)
        assert connection(bed, other, peer, *metadata) == "connected"
        assert refused(bed, ns, head.metadata.name, *metadata)
        assert refused(bed, SYSTEM, operator.metadata.name, *metadata)
        assert refused(bed, other, peer, head.status.pod_ip, 8265)
        assert connection(bed, SYSTEM, operator.metadata.name, head.status.pod_ip, 8265) == "connected"
        assert refused(bed, other, peer, operator.status.pod_ip, 9090)  # metrics.allowedFrom: []
        # Egress stays open where the platform's services are: MinIO on the host's address.
        minio = int(bed.s3_endpoint.rsplit(":", 1)[1])
        assert connection(bed, ns, head.metadata.name, bed.host_ip, minio) == "connected"
        # The enforcer itself dropped them: its log names the head pod's packet to the address.
        log = Path(bed.dir, "logs", "kube-network-policies.log").read_text()
        assert f'srcPod="{ns}/{head.metadata.name}"' in log and f"{METADATA_ADDRESS}:80" in log
        assert 'verdict="drop"' in log
    finally:
        kubectl(bed, "delete", "-n", ns, "modelevaluation", "netpol", "--ignore-not-found", "--wait=false")
        kubectl(bed, "delete", "namespace", other, "--ignore-not-found", "--wait=false")


# ----------------------------------------------------------------------------- faults
def evaluation_text(name: str, dataset: str, workers: int = 2) -> str:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec["dataset"]["uri"] = dataset
    spec["resources"]["workers"] = workers
    spec.pop("output", None)
    spec["backoffLimit"] = 2
    return yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
                           "metadata": {"name": name}, "spec": spec})


def apply_big(bed, installed: Installed, name: str) -> tuple[str, str]:
    """Applies an evaluation of the larger dataset (long enough to be hit mid-job); returns its
    manifest and its RayCluster's name."""
    text = evaluation_text(name, BIG_DATASET)
    kubectl(bed, "apply", "-n", installed.namespace, "-f", "-", input=text)
    return text, f"{name}-ray"


def test_an_image_that_cannot_be_pulled_fails_after_pending_timeout(bed, installed):
    """The policy allows modeleval/ray:*, but this tag was never built (no registry is
    reachable): the pods never start. The evaluation says why while it waits, fails with
    PodsNotReady once its pendingTimeout passed (the spec's, shorter than the operator's), and
    its RayCluster (and slot) are released. (It runs alone: KubeRay's init container alone asks
    200m, and the real node has 2 CPUs.)"""
    ns, name = installed.namespace, "no-image"
    spec = yaml.safe_load(evaluation_text(name, f"s3://{EXAMPLES_BUCKET}/mslr/test.txt", workers=1))
    spec["spec"]["rayImage"] = "modeleval/ray:never-built"
    spec["spec"]["pendingTimeoutSeconds"] = NO_IMAGE_TIMEOUT
    kubectl(bed, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(spec))

    def reported():
        s = installed.evaluation(name).get("status") or {}
        c = next((c for c in s.get("conditions") or [] if c["type"] == "Provisioned"), {})
        return c if c.get("reason") == "PodsNotReady" else None

    condition = eventually(reported, NO_IMAGE_TIMEOUT, "the pull failure to be reported", interval=1)
    assert "ErrImagePull" in condition["message"] or "ImagePullBackOff" in condition["message"]
    assert "modeleval/ray:never-built" in condition["message"]
    status = wait_finished(installed, name, timeout=NO_IMAGE_TIMEOUT + 120)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PodsNotReady"), status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    waited = (datetime.fromisoformat(failed["lastTransitionTime"])
              - datetime.fromisoformat(status["startTime"])).total_seconds()
    assert NO_IMAGE_TIMEOUT <= waited < PENDING_TIMEOUT, waited  # the spec's wait, not the chart's
    eventually(lambda: not [c for c in client.CustomObjectsApi(installed.api).list_namespaced_custom_object(
        "ray.io", "v1", ns, "rayclusters")["items"] if c["metadata"]["name"].startswith(name)], 120,
        "its RayCluster to be deleted")


def test_head_pod_deleted_mid_job_retries_on_a_fresh_cluster(bed, installed, tmp_path):
    ns, name = installed.namespace, "head-lost"
    text, cluster = apply_big(bed, installed, name)

    def job_on_head():
        """Attempt 1's job, as soon as the operator found it on the head (PENDING or RUNNING):
        the earliest moment it is mid-job. (Waiting for RUNNING alone lost the race on a loaded
        machine: the job could end between the operator's look and the deletion.)"""
        s = installed.evaluation(name).get("status") or {}
        found = any(c["type"] == "JobSubmitted" and c["reason"] in ("JobPending", "JobRunning")
                    for c in s.get("conditions") or [])
        return s if found and s.get("attempt") == 1 else None

    eventually(job_on_head, 600, "attempt 1's Ray job to be on its head", interval=0.2)
    first_uid = client.CustomObjectsApi(installed.api).get_namespaced_custom_object(
        "ray.io", "v1", ns, "rayclusters", cluster)["metadata"]["uid"]
    head = running_cluster_pods(installed, cluster, "head")[0]
    client.CoreV1Api(installed.api).delete_namespaced_pod(head.metadata.name, ns, grace_period_seconds=0)

    seen: list[tuple[int, str]] = []
    fresh: set[str] = set()

    def finished():
        obj = installed.evaluation(name)
        s = obj.get("status") or {}
        seen.append((s.get("attempt"), s.get("phase")))
        current = client.CustomObjectsApi(installed.api).list_namespaced_custom_object(
            "ray.io", "v1", ns, "rayclusters")["items"]
        fresh.update(c["metadata"]["uid"] for c in current
                     if c["metadata"]["uid"] != first_uid and c["metadata"]["name"].startswith(name))
        return obj if s.get("phase") in ("Succeeded", "Failed") else None

    obj = eventually(finished, 900, f"{name} to finish after its head pod was deleted", interval=1)
    status = obj["status"]
    assert status["phase"] == "Succeeded", f"{status.get('reason')}: {status.get('message')}"
    assert status["attempt"] == 2
    assert ("Succeeded" not in {phase for attempt, phase in seen if attempt == 1}), \
        "attempt 1 never claimed success"
    assert fresh, "attempt 2 ran on a new RayCluster, not the one whose head was replaced"
    documents = stored_documents(bed, obj["metadata"]["uid"])
    assert [(d["attempt"], d["status"]) for d in documents] == [(1, "Failed"), (2, "Succeeded")]
    assert documents[0]["reason"] == "RayHeadLost"
    assert status["metrics"] == pytest.approx(local_metrics(text, tmp_path), abs=1e-6)
    assert "Retrying" in events_of(installed.api, ns, name)


def test_worker_container_killed_mid_job_tasks_are_retried(bed, installed, tmp_path):
    ns, name = installed.namespace, "worker-killed"
    text, cluster = apply_big(bed, installed, name)

    def busy_worker():
        """A worker container whose Ray worker process is executing one of the job's tasks."""
        for pod in running_cluster_pods(installed, cluster, "worker"):
            with _suppress_missing():
                procs = container_cgroup(pod, "pids") / "cgroup.procs"
                pids = [int(p) for p in procs.read_text().split()]
                titles = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in pids]
                if any(t.startswith(b"ray::") and t != b"ray::IDLE" for t in titles):
                    return pod, pids
        return None

    pod, pids = eventually(busy_worker, 600, "a worker pod to run a task", interval=0.2)
    restarts = pod.status.container_statuses[0].restart_count
    for pid in pids:  # the container's every process dies at once, as in a crash
        with _suppress_missing():
            os.kill(pid, signal.SIGKILL)
    # The kubelet restarts the container in place (seen while the job still runs).
    eventually(lambda: client.CoreV1Api(installed.api).read_namespaced_pod(
        pod.metadata.name, ns).status.container_statuses[0].restart_count > restarts, 120,
        "the killed worker container to be restarted", interval=0.5)

    obj = wait_finished(installed, name)
    status = obj["status"]
    assert status["phase"] == "Succeeded", f"{status.get('reason')}: {status.get('message')}"
    assert status["attempt"] == 1, "Ray retried the lost tasks within the attempt"
    assert status["metrics"] == pytest.approx(local_metrics(text, tmp_path), abs=1e-6)
    assert len(stored_documents(bed, obj["metadata"]["uid"])) == 1


class _suppress_missing:
    """Processes and cgroups of a container may vanish between two reads."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, (OSError, ProcessLookupError, AssertionError))


# ----------------------------------------------------------------------------- upgrade, uninstall
def token_kubeconfig(bed, path: Path, service_account: str) -> Path:
    token = kubectl(bed, "create", "token", service_account, "-n", SYSTEM, "--duration=1h").strip()
    admin = json.loads(Path(bed.kubeconfig).read_text())
    config = {**admin, "users": [{"name": service_account, "user": {"token": token}}],
              "contexts": [{"name": "sa", "context": {"cluster": "modeleval-bed", "user": service_account}}],
              "current-context": "sa"}
    path.write_text(json.dumps(config))
    return path


def test_chart_rbac_upgrade_and_uninstall(bed, installed, tmp_path):
    ns = installed.namespace
    as_operator = ["--kubeconfig", str(token_kubeconfig(bed, tmp_path / "sa.kubeconfig", RELEASE))]

    def can_i(*args: str) -> str:
        result = subprocess.run([str(Tools.locate().kubectl), *as_operator, "auth", "can-i", *args],
                                capture_output=True, text=True, timeout=60)
        return result.stdout.strip()

    assert can_i("create", "rayclusters.ray.io", "-n", ns) == "yes"
    assert can_i("patch", "modelevaluations.modeleval.dev/status", "-n", ns) == "yes"
    assert can_i("get", "secrets", "-n", ns) == "yes"  # a RayCluster's token, nothing more
    assert can_i("create", "networkpolicies.networking.k8s.io", "-n", ns) == "yes"
    for forbidden in (("create", "rayclusters.ray.io", "-n", "default"), ("list", "nodes"),
                      ("delete", "deployments", "-n", SYSTEM), ("list", "secrets", "-n", ns),
                      ("get", "secrets", "-n", "default"), ("get", "secrets", "-n", SYSTEM),
                      ("create", "secrets", "-n", ns), ("delete", "secrets", "-n", ns),
                      ("delete", "namespaces"), ("create", "customresourcedefinitions"),
                      ("create", "pods", "-n", ns)):
        assert can_i(*forbidden) == "no", forbidden

    before = operator_pod(installed).metadata.uid
    helm(bed, "upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--reuse-values",
         "--set", "operator.pollIntervalSeconds=3", "--wait", "--timeout=5m")

    def upgraded():
        pods = [p for p in installed.pods(f"app.kubernetes.io/instance={RELEASE}", SYSTEM)
                if p.status.phase == "Running" and p.metadata.uid != before
                and not p.metadata.deletion_timestamp]
        return pods[0] if pods else None

    pod = eventually(upgraded, 300, "the upgraded operator pod to run")
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["MODELEVAL_POLL_INTERVAL"] == "3"
    # The upgraded operator still evaluates.
    kubectl(bed, "apply", "-n", ns, "-f", "-", input=evaluation_text("after-upgrade",
            f"s3://{EXAMPLES_BUCKET}/mslr/test.txt", workers=1))
    status = wait_finished(installed, "after-upgrade")["status"]
    assert status["phase"] == "Succeeded", status

    helm(bed, "uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout=5m")
    eventually(lambda: not installed.pods(f"app.kubernetes.io/instance={RELEASE}", SYSTEM), 180,
               "the operator pod to be gone")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    assert not client.AppsV1Api(installed.api).list_namespaced_deployment(SYSTEM, label_selector=selector).items
    core = client.CoreV1Api(installed.api)
    assert not core.list_namespaced_service_account(SYSTEM, label_selector=selector).items
    rbac = client.RbacAuthorizationV1Api(installed.api)
    assert not rbac.list_namespaced_role(ns, label_selector=selector).items
    assert not rbac.list_namespaced_role_binding(ns, label_selector=selector).items
    # Evaluations stay (the CRD is kept by Helm), with their recorded results.
    assert client.CustomObjectsApi(installed.api).get_namespaced_custom_object(
        *EVALUATIONS[:2], ns, EVALUATIONS[2], "mslr-ranker")["status"]["phase"] == "Succeeded"
