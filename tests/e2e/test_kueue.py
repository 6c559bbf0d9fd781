"""Evaluations queued by a real Kueue (built from its Go module, a host process of the bed): a
ClusterQueue of 2 CPUs and three evaluations whose RayClusters each need all of it. The queue is
held at first, so all three wait longer than the operator's pending timeout (and none fails);
then Kueue admits one whole cluster at a time while the other two are Queued (not
Unschedulable), and all three succeed one after another."""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client

from modeleval.demo import EXAMPLES_BUCKET, publish_example_assets
from modeleval.engine.storage import Storage
from testbed import kueue as kueue_bed

from .kube import eventually
from .operator_fixture import (CRD, OperatorProcess, apply_manifest, events_of, get_evaluation,
                               kubectl, spec_text)

pytestmark = pytest.mark.e2e
KUEUE = ("kueue.x-k8s.io", "v1beta2")
RAY = ("ray.io", "v1")
# The operator's pending timeout here: each queued evaluation waits longer than this.
PENDING_TIMEOUT = 10
# Head and one worker of 1 CPU each: every RayCluster takes the ClusterQueue's 2 CPUs.
RESOURCES = {"workers": 1, "cpu": "1", "memory": "512Mi", "headCpu": "1", "headMemory": "512Mi"}


@pytest.fixture(scope="module")
def kueue(bed):
    """Kueue, started (not yet waited for): it comes up while the operator starts."""
    started = kueue_bed.start(bed)
    print(f"kueue: CRDs installed and process started in {time.monotonic() - started.began:.1f}s")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def operator(bed, kueue, tmp_path_factory):
    """This module's operator: a pending timeout shorter than the queued evaluations' wait."""
    kubectl(bed, "apply", "--server-side", "-f", str(CRD))
    kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev")
    publish_example_assets(Storage(), EXAMPLES_BUCKET)
    process = OperatorProcess(bed, tmp_path_factory.mktemp("operator") / "operator.log",
                              MODELEVAL_PENDING_TIMEOUT=str(PENDING_TIMEOUT)).start()
    yield process
    process.stop()


def queue_objects(namespace: str, suffix: str) -> list[tuple[str, dict]]:
    """A ResourceFlavor, a ClusterQueue of 2 CPUs (for this namespace only) and its LocalQueue."""
    flavor, cluster_queue = f"e2e-flavor-{suffix}", f"e2e-cq-{suffix}"
    quota = [{"name": "cpu", "nominalQuota": "2"}, {"name": "memory", "nominalQuota": "8Gi"}]
    return [
        ("resourceflavors", {"metadata": {"name": flavor}, "spec": {}}),
        ("clusterqueues", {"metadata": {"name": cluster_queue}, "spec": {
            "stopPolicy": "Hold",  # admits nothing until the test lets it
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "resourceGroups": [{"coveredResources": ["cpu", "memory"],
                                "flavors": [{"name": flavor, "resources": quota}]}]}}),
        ("localqueues", {"metadata": {"name": "evaluations", "namespace": namespace},
                         "spec": {"clusterQueue": cluster_queue}}),
    ]


def create_queues(api, namespace: str, suffix: str) -> list[tuple[str, str]]:
    objects = client.CustomObjectsApi(api)
    made = []
    for plural, body in queue_objects(namespace, suffix):
        body = {"apiVersion": "/".join(KUEUE), "kind": KINDS[plural], **body}
        if "namespace" in body["metadata"]:
            objects.create_namespaced_custom_object(*KUEUE, namespace, plural, body)
        else:
            objects.create_cluster_custom_object(*KUEUE, plural, body)
            made.append((plural, body["metadata"]["name"]))
    return made


KINDS = {"resourceflavors": "ResourceFlavor", "clusterqueues": "ClusterQueue",
         "localqueues": "LocalQueue"}


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), None)


def queued(obj: dict) -> bool:
    found = condition(obj, "Queued")
    return bool(found and found["status"] == "True")


def running_clusters(api, namespace: str) -> list[str]:
    """The RayClusters Kueue let run (unsuspended, not being deleted)."""
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        *RAY, namespace, "rayclusters")["items"]
    return [c["metadata"]["name"] for c in items if not (c.get("spec") or {}).get("suspend")
            and not c["metadata"].get("deletionTimestamp")]


def test_kueue_admits_one_whole_cluster_at_a_time(bed, api, kueue, operator, namespace):
    suffix = uuid.uuid4().hex[:6]
    cluster_wide = create_queues(api, namespace, suffix)
    waited = time.monotonic()
    kueue.wait_ready()
    print(f"kueue: ready {time.monotonic() - kueue.began:.1f}s after its start; waited "
          f"{time.monotonic() - waited:.1f}s for it after the operator and namespace")
    names = [f"queued-{i}" for i in range(3)]
    try:
        for name in names:
            apply_manifest(bed, namespace, spec_text(name, queueName="evaluations",
                                                     resources=RESOURCES))
        held_past_the_pending_timeout(api, namespace, names)
        client.CustomObjectsApi(api).patch_cluster_custom_object(
            *KUEUE, "clusterqueues", f"e2e-cq-{suffix}", {"spec": {"stopPolicy": "None"}})
        watched = watch_until_done(api, namespace, names)
        print("kueue: seen Queued after the queue was let go for",
              {name: f"{last - first:.0f}s" for name, (first, last) in watched["queued"].items()})
        check_one_at_a_time(api, namespace, names, watched)
    finally:
        for plural, name in reversed(cluster_wide):
            client.CustomObjectsApi(api).delete_cluster_custom_object(*KUEUE, plural, name)


def held_past_the_pending_timeout(api, namespace: str, names: list[str]) -> None:
    """All three wait in the held queue; they stay Queued (Pending, never failed by the pending
    timeout) for longer than it."""
    def all_queued():
        evaluations = [get_evaluation(api, namespace, name) for name in names]
        return all(queued(obj) for obj in evaluations) and evaluations

    eventually(all_queued, 60, "all three evaluations Queued in the held queue")
    since = time.monotonic()
    while time.monotonic() - since < PENDING_TIMEOUT + 2:
        for name in names:
            obj = get_evaluation(api, namespace, name)
            assert queued(obj) and obj["status"]["phase"] == "Pending", obj["status"]
        time.sleep(1)
    assert not running_clusters(api, namespace)


def watch_until_done(api, namespace: str, names: list[str], timeout: float = 150) -> dict:
    """Polls the evaluations and their clusters until all three ended: when each was first and
    last seen Queued, the most clusters seen running at once, and one moment seen with one
    admitted and two Queued (with their Workloads' view of it)."""
    seen: dict = {"queued": {}, "most_running": 0, "two_waiting": None}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        evaluations = {name: get_evaluation(api, namespace, name) for name in names}
        now = time.monotonic()
        for name, obj in evaluations.items():
            if queued(obj):
                first, _ = seen["queued"].get(name, (now, now))
                seen["queued"][name] = (first, now)
        running = running_clusters(api, namespace)
        seen["most_running"] = max(seen["most_running"], len(running))
        waiting = [name for name, obj in evaluations.items() if queued(obj)]
        if len(waiting) == 2 and len(running) == 1 and seen["two_waiting"] is None:
            seen["two_waiting"] = (waiting, evaluations, workloads(api, namespace))
        phases = [(obj.get("status") or {}).get("phase") for obj in evaluations.values()]
        if all(phase in ("Succeeded", "Failed") for phase in phases):
            seen["final"] = evaluations
            return seen
        time.sleep(0.5)
    raise AssertionError(f"the queued evaluations did not all end in {timeout:.0f}s: {seen}")


def workloads(api, namespace: str) -> list[dict]:
    return client.CustomObjectsApi(api).list_namespaced_custom_object(
        *KUEUE, namespace, "workloads")["items"]


def check_one_at_a_time(api, namespace: str, names: list[str], seen: dict) -> None:
    final = seen["final"]
    for name, obj in final.items():
        status = obj["status"]
        assert status["phase"] == "Succeeded", f"{name}: {status.get('reason')}: {status.get('message')}"
    assert seen["most_running"] == 1, "Kueue let two RayClusters of 2 CPUs run at once"
    assert seen["two_waiting"] is not None, "never saw one admitted and two Queued"
    waiting, evaluations, held = seen["two_waiting"]
    for name in waiting:
        found = condition(evaluations[name], "Queued")
        assert found["reason"] == "QueuedInKueue" and "LocalQueue evaluations" in found["message"]
        provisioned = condition(evaluations[name], "Provisioned")
        assert provisioned["reason"] == "QueuedInKueue"  # not Unschedulable
        assert evaluations[name]["status"]["phase"] == "Pending"
    admitted = [w for w in held if (condition(w, "Admitted") or {}).get("status") == "True"]
    assert len(admitted) == 1 and len(held) == 3, [w["metadata"]["name"] for w in held]
    # Every evaluation that waited was admitted afterwards (Queued=False, AdmittedByKueue),
    # each step an Event on it.
    for name in waiting:
        assert condition(final[name], "Queued")["reason"] == "AdmittedByKueue"
        told = events_of(api, namespace, name)
        assert told.index("QueuedInKueue") < told.index("AdmittedByKueue"), told
    # One after another: each admitted (Queued turned False) when the one before had finished.
    order = sorted(final.values(), key=lambda obj: obj["status"]["completionTime"])
    for before, after in zip(order, order[1:]):
        admitted_at = condition(after, "Queued")
        assert admitted_at is not None, after["metadata"]["name"]
        assert admitted_at["lastTransitionTime"] >= before["status"]["completionTime"]
