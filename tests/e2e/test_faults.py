"""Faults injected in the middle of an evaluation, with the real processes of the test bed: the
object store, the results store and the API server crash (SIGKILL) and come back. Each
evaluation must end in the right terminal phase, with every attempt recorded, exactly one Ray
job per attempt and exactly one result document per attempt."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import httpx
import pytest
from pymongo import MongoClient

from testbed import Tools, kill_component, start_component

from .kube import eventually
from .operator_fixture import apply_manifest, events_of, get_evaluation, spec_text, wait_phase

pytestmark = pytest.mark.e2e


def runner_started(uid: str, timeout: float = 180) -> None:
    """Returns as soon as the Ray job's driver process of this evaluation exists."""
    import psutil

    def find():
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "modeleval.runner" in cmdline and f"--uid {uid}" in cmdline:
                return True
        return None

    eventually(find, timeout, f"the runner of {uid} to start", interval=0.05)


def uid_of(api, namespace: str, name: str) -> str:
    return eventually(lambda: get_evaluation(api, namespace, name)["metadata"].get("uid"), 30, "uid")


def jobs_of(bed, uid: str) -> list[str]:
    listed = httpx.get(f"{bed.ray_dashboard}/api/jobs/", timeout=10,
                       headers={"Authorization": f"Bearer {bed.ray_auth_token}"}).json()
    return sorted(j["submission_id"] for j in listed
                  if (j.get("submission_id") or "").startswith(f"modeleval-{uid}-"))


def results_of(bed, uid: str) -> list[dict]:
    with MongoClient(bed.mongodb_uri, serverSelectionTimeoutMS=10_000) as mongo:
        return list(mongo["modeleval"]["results"].find({"uid": uid}).sort("attempt", 1))


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def listening(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def api_ready(bed) -> bool:
    result = subprocess.run([str(Tools.locate().kubectl), f"--kubeconfig={bed.kubeconfig}", "get",
                             "--raw=/readyz"], capture_output=True, text=True, timeout=20)
    return result.returncode == 0


def reference_ndcg(bed, api, namespace: str) -> float:
    """The same evaluation with no fault, for the exact metric to compare with."""
    apply_manifest(bed, namespace, spec_text("calm"))
    return wait_phase(api, namespace, "calm", ("Succeeded",))["status"]["metrics"]["ndcg@10"]


def test_object_store_crash_mid_run_is_retried_then_succeeds(bed, api, namespace):
    expected = reference_ndcg(bed, api, namespace)
    apply_manifest(bed, namespace, spec_text("s3-outage", backoffLimit=6))
    uid = uid_of(api, namespace, "s3-outage")
    runner_started(uid)
    kill_component(bed.dir, "minio")  # before the driver's first read
    time.sleep(12)
    start_component(bed.dir, "minio")
    eventually(lambda: reachable(f"{bed.s3_endpoint}/minio/health/ready"), 60, "MinIO to be back")

    status = wait_phase(api, namespace, "s3-outage", ("Succeeded", "Failed"), timeout=300)["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] >= 2
    assert status["metrics"]["ndcg@10"] == pytest.approx(expected, abs=1e-12)
    docs = results_of(bed, uid)
    assert [d["attempt"] for d in docs] == list(range(1, status["attempt"] + 1))  # none lost
    first = docs[0]
    assert first["status"] == "Failed" and first["reason"] == "StorageUnavailable"
    assert bed.s3_endpoint in first["message"] and first["retryable"] is True
    assert jobs_of(bed, uid) == [f"modeleval-{uid}-{n}" for n in range(1, status["attempt"] + 1)]
    assert "Retrying" in events_of(api, namespace, "s3-outage")


def test_results_store_down_when_the_result_is_written_keeps_it(bed, api, namespace):
    apply_manifest(bed, namespace, spec_text("mongo-outage"))
    uid = uid_of(api, namespace, "mongo-outage")
    runner_started(uid)
    kill_component(bed.dir, "ferretdb")
    host = bed.mongodb_uri.split("//")[1].rstrip("/")
    try:
        # The runner retries with backoff, then keeps the document (spool and job log) and ends;
        # the evaluation waits for the store instead of failing or claiming success.
        def waiting():
            status = get_evaluation(api, namespace, "mongo-outage").get("status") or {}
            complete = [c for c in status.get("conditions", []) if c["type"] == "Complete"]
            return status if complete and "kept in the job's log" in complete[0]["message"] else None

        status = eventually(waiting, 240, "the evaluation to wait for MongoDB", interval=1)
        assert status["phase"] == "Running" and complete_reason(status) == "ResultsStoreUnavailable"
    finally:
        start_component(bed.dir, "ferretdb")
        eventually(lambda: listening(host), 60, "FerretDB to be back")

    status = wait_phase(api, namespace, "mongo-outage", ("Succeeded", "Failed"), timeout=120)["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 1
    docs = results_of(bed, uid)
    assert len(docs) == 1 and docs[0]["status"] == "Succeeded"
    assert docs[0]["metrics"] == status["metrics"]
    assert "ResultStored" in events_of(api, namespace, "mongo-outage")
    assert jobs_of(bed, uid) == [f"modeleval-{uid}-1"]


def complete_reason(status: dict) -> str | None:
    return next((c["reason"] for c in status.get("conditions", []) if c["type"] == "Complete"), None)


def test_api_server_restart_mid_run_is_survived(bed, api, namespace):
    apply_manifest(bed, namespace, spec_text("api-outage", metrics=["ndcg@10", "map@10"]))
    uid = uid_of(api, namespace, "api-outage")
    eventually(lambda: (get_evaluation(api, namespace, "api-outage").get("status") or {}).get("jobId"),
               180, "the Ray job to be submitted")
    kill_component(bed.dir, "kube-apiserver")
    time.sleep(8)  # the job runs on while the control plane is gone
    start_component(bed.dir, "kube-apiserver")
    eventually(lambda: api_ready(bed), 120, "the API server to be ready again", interval=1)

    status = wait_phase(api, namespace, "api-outage", ("Succeeded", "Failed"), timeout=300)["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 1
    assert jobs_of(bed, uid) == [f"modeleval-{uid}-1"]  # recovered, not resubmitted
    docs = results_of(bed, uid)
    assert len(docs) == 1 and docs[0]["metrics"] == status["metrics"]
