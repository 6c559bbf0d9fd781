"""Tenants share the operator fairly: with policy.maxActivePerNamespace=1, a namespace that
applies several evaluations holds one RayCluster at a time, and another namespace's evaluation
gets a cluster of its own meanwhile instead of waiting behind them."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client

from modeleval.demo import EXAMPLES_BUCKET, publish_example_assets
from modeleval.engine.storage import Storage

from .operator_fixture import (CRD, OperatorProcess, apply_manifest, kubectl, new_namespace,
                               spec_text, wait_phase)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def operator(bed, tmp_path_factory):
    kubectl(bed, "apply", "--server-side", "-f", str(CRD))
    kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev")
    publish_example_assets(Storage(), EXAMPLES_BUCKET)
    process = OperatorProcess(bed, tmp_path_factory.mktemp("operator") / "operator.log",
                              MODELEVAL_MAX_ACTIVE_PER_NAMESPACE="1",
                              MODELEVAL_MAX_ACTIVE_EVALUATIONS="4").start()
    yield process
    process.stop()


def test_one_namespace_holds_one_cluster_and_another_is_not_kept_waiting(bed, api, namespace):
    other = new_namespace(bed, api)
    core = client.CoreV1Api(api)
    try:
        clusters = {namespace: 0, other: 0}
        waited_while_other_ran = []
        done = threading.Event()

        def sample() -> None:
            custom = client.CustomObjectsApi(api)
            while not done.is_set():
                for ns in (namespace, other):
                    live = [c for c in custom.list_namespaced_custom_object(
                        "ray.io", "v1", ns, "rayclusters")["items"]
                        if not c["metadata"].get("deletionTimestamp")]
                    clusters[ns] = max(clusters[ns], len(live))
                queued = [e for e in custom.list_namespaced_custom_object(
                    "modeleval.dev", "v1alpha1", namespace, "modelevaluations")["items"]
                    if "namespace" in ((e.get("status") or {}).get("message") or "")]
                if queued and custom.list_namespaced_custom_object("ray.io", "v1", other, "rayclusters")["items"]:
                    waited_while_other_ran.append(True)
                done.wait(0.3)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        names = [f"busy-{i}" for i in range(3)]
        for name in names:
            apply_manifest(bed, namespace, spec_text(name))
        apply_manifest(bed, other, spec_text("newcomer"))
        try:
            assert wait_phase(api, other, "newcomer", ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"
            for name in names:
                status = wait_phase(api, namespace, name, ("Succeeded", "Failed"), timeout=300)["status"]
                assert status["phase"] == "Succeeded", status
        finally:
            done.set()
            sampler.join()
        assert clusters[namespace] == 1, clusters  # never two at once in one namespace
        assert waited_while_other_ran, "the other namespace's evaluation did not run while this one's queued"
    finally:
        core.delete_namespace(other)
