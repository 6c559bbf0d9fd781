"""The operator end to end on the test bed: real API server, KubeRay, kwok nodes, MinIO,
FerretDB and the local Ray head."""

from __future__ import annotations

import contextlib
import json
from html import escape as html_escape
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client, watch
from pymongo import MongoClient

from modeleval.demo import EXAMPLES_BUCKET, letor_bytes, make_letor
from modeleval.engine.evaluate import Identity
from modeleval.engine.storage import Storage
from modeleval.runner import parse_manifest, run_manifest
from modeleval.settings import EngineSettings

from .kube import eventually
from .operator_fixture import (EVALUATIONS, EXAMPLES, apply_manifest, events_of, get_evaluation,
                               gone, kubectl, spec_text, wait_phase)

pytestmark = pytest.mark.e2e


class Recorder:
    """Watches RayClusters and pods in a namespace, keeping every version it saw."""

    def __init__(self, api, namespace: str):
        self.clusters: dict[str, dict] = {}
        self.pod_nodes: dict[str, str] = {}
        self._stop = threading.Event()
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self._threads = [
            threading.Thread(target=self._watch, daemon=True, args=(
                custom.list_namespaced_custom_object, ("ray.io", "v1", namespace, "rayclusters"),
                self._cluster)),
            threading.Thread(target=self._watch, daemon=True, args=(
                core.list_namespaced_pod, (namespace,), self._pod)),
        ]
        for t in self._threads:
            t.start()

    def _watch(self, fn, args, sink) -> None:
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(fn, *args, timeout_seconds=2):
                    sink(event["object"])
            except Exception:  # noqa: BLE001 - the namespace may be going away
                time.sleep(0.2)

    def _cluster(self, obj) -> None:
        self.clusters.setdefault(obj["metadata"]["name"], obj)

    def _pod(self, pod) -> None:
        if pod.spec.node_name:
            self.pod_nodes[pod.metadata.name] = pod.spec.node_name

    def stop(self) -> None:
        self._stop.set()


def evaluation_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ModelEvaluation"]


def test_every_example_succeeds_like_modeleval_run(bed, api, namespace, tmp_path):
    recorder = Recorder(api, namespace)
    kubectl(bed, "apply", "-n", namespace, "-f", str(EXAMPLES / "shared-raycluster.yaml"))
    manifests = sorted(p for p in EXAMPLES.glob("*.yaml") if evaluation_docs(p))
    assert len(manifests) >= 6
    for path in manifests:
        kubectl(bed, "apply", "-n", namespace, "-f", str(path))
    # Beside the examples, on the shared cluster: a report S3 refuses (no such bucket).
    apply_manifest(bed, namespace, spec_text(
        "report-refused", rayClusterName="shared-ray",
        output={"reportUri": "s3://no-such-bucket-e2e/reports"}))
    # The local runs are for their metrics: no reports (the cluster's are checked below).
    settings = EngineSettings(cache_uri=(tmp_path / "cache").as_uri(), results_dir=tmp_path / "results",
                              report=False)
    try:
        for path in manifests:
            doc = evaluation_docs(path)[0]
            name = doc["metadata"]["name"]
            obj = wait_phase(api, namespace, name, ("Succeeded", "Failed"))
            status = obj["status"]
            assert status["phase"] == "Succeeded", f"{name}: {status.get('reason')}: {status.get('message')}"
            local = run_manifest(parse_manifest(path.read_text()), Identity(uuid.uuid4().hex), settings)
            assert status["metrics"] == pytest.approx(local.metrics, abs=1e-9), name
            primary = parse_manifest(path.read_text()).spec.primary_metric
            assert status["primaryMetric"].startswith(f"{primary}=")
            assert status["progress"]["percent"] == "100%"
            ref = status["resultsRef"]
            with MongoClient(bed.mongodb_uri) as mongo:
                stored = mongo[ref["database"]][ref["collection"]].find_one({"_id": ref["id"]})
            assert stored["status"] == "Succeeded" and stored["metrics"] == status["metrics"]
            assert stored["attempt"] == status["attempt"] == 1
            reasons = [c["reason"] for c in status["conditions"] if c["status"] == "True"]
            assert "Succeeded" in reasons and "RayClusterReady" in reasons, (name, status["conditions"])
            if doc["spec"].get("baseline"):
                assert set(status["baseline"]["deltas"]) == set(status["metrics"])
                gate_passed = local.gate["passed"] if local.gate else None
                assert status["baseline"].get("gatePassed") is gate_passed, name
    finally:
        recorder.stop()
    check_reports(bed, api, namespace, [evaluation_docs(p)[0]["metadata"]["name"] for p in manifests])

    table = kubectl(bed, "get", "evaluations", "-n", namespace)
    header = table.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "MODEL", "METRIC", "PROGRESS", "AGE"]
    def without_age(text: str) -> list[str]:  # AGE may tick between two calls
        return [line.rsplit(None, 1)[0] for line in text.splitlines()]

    assert without_age(kubectl(bed, "get", "modelevaluations", "-n", namespace)) == without_age(table)
    assert "Succeeded" in kubectl(bed, "get", "meval", "-n", namespace)

    # Each created RayCluster asked for exactly its spec's resources, and is gone afterwards.
    ranker = recorder.clusters["mslr-ranker-ray"]
    worker = ranker["spec"]["workerGroupSpecs"][0]
    assert worker["replicas"] == 2
    assert worker["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "500m", "memory": "2Gi"}
    gpu = recorder.clusters["mslr-ranker-gpu-ray"]["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    gpu_workers = [p for p in recorder.pod_nodes if p.startswith("mslr-ranker-gpu-ray") and "worker" in p]
    assert gpu_workers and all(recorder.pod_nodes[p] == "gpu-node-1" for p in gpu_workers)
    remaining = {c["metadata"]["name"] for c in client.CustomObjectsApi(api).list_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters")["items"]}
    assert remaining == {"shared-ray"}, "created clusters are deleted; the reused one is left alone"
    eventually(lambda: not [p for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items
                            if not p.metadata.name.startswith("shared-ray")], 60,
               "the deleted clusters' pods to be garbage-collected")


def check_reports(bed, api, namespace: str, names: list[str]) -> None:
    """Every evaluation's report is in MinIO where status.reportURI says, as the self-contained
    HTML (the inline Vega bundle); `kubectl get -o wide` shows where; a report S3 refuses
    leaves its evaluation Succeeded with the ReportWritten=False warning condition."""
    from modeleval.report import vega_bundle

    storage = Storage()
    wide = kubectl(bed, "get", "evaluations", "-n", namespace, "-o", "wide")
    assert "REPORT" in wide.splitlines()[0].split()
    for name in names:
        obj = get_evaluation(api, namespace, name)
        uri = obj["status"]["reportURI"]
        assert uri.endswith(f"/{name}-{obj['metadata']['uid']}-1.html"), uri
        html = storage.read(uri).decode()
        assert html_escape(name) in html and vega_bundle() in html, name
        assert any(line.split()[0] == name and uri in line.split() for line in wide.splitlines())
        written = next(c for c in obj["status"]["conditions"] if c["type"] == "ReportWritten")
        assert (written["status"], written["reason"]) == ("True", "ReportWritten")
    refused = wait_phase(api, namespace, "report-refused", ("Succeeded", "Failed"))["status"]
    assert refused["phase"] == "Succeeded" and refused["metrics"]["ndcg@10"] > 0
    assert "reportURI" not in refused
    condition = next(c for c in refused["conditions"] if c["type"] == "ReportWritten")
    assert (condition["status"], condition["reason"]) == ("False", "ReportNotWritten")
    assert "no-such-bucket-e2e" in condition["message"] and "no such bucket" in condition["message"]
    eventually(lambda: "ReportNotWritten" in events_of(api, namespace, "report-refused"), 30,
               "the ReportNotWritten warning Event")


def _leaves(node, prefix: str = "") -> dict:
    """A nested document as {dotted path: value}."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _leaves(child, f"{prefix}{key}.").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in _leaves(child, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): node}


def test_challengers_intervals_and_a_significance_gate_through_the_operator(bed, api, namespace,
                                                                           tmp_path):
    """Three models on one parse of a LETOR file whose lines omit features: each model's metrics
    with seeded bootstrap intervals, paired delta intervals and its own gate, the same in the
    cluster as on a laptop; the omitted features are warned about."""
    models = f"s3://{EXAMPLES_BUCKET}/models"
    data = f"s3://{EXAMPLES_BUCKET}/mslr/sparse-{namespace}.txt"
    Storage().write(data, letor_bytes(make_letor(4000, 136, mean_group=40, seed=5, sparse=0.05)))
    text = spec_text(
        "tournament", dataset={"uri": data, "numFeatures": 136}, metrics=["ndcg@10", "map@10"],
        baseline={"model": {"uri": f"{models}/ranker-challenger.ubj"}},
        challengers=[{"name": "shallow", "model": {"uri": f"{models}/ranker-shallow.json"}}],
        confidence={"level": 0.9, "resamples": 400, "seed": 5},
        gate=[{"metric": "ndcg@10", "threshold": 0.3},
              {"metric": "ndcg@10", "requireSignificant": True}])
    apply_manifest(bed, namespace, text)
    status = wait_phase(api, namespace, "tournament", ("Succeeded", "Failed"))["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    ref = status["resultsRef"]
    with MongoClient(bed.mongodb_uri) as mongo:
        stored = mongo[ref["database"]][ref["collection"]].find_one({"_id": ref["id"]})
    settings = EngineSettings(cache_uri=(tmp_path / "cache").as_uri(), results_dir=tmp_path / "r")
    local = run_manifest(parse_manifest(text), Identity(uuid.uuid4().hex), settings).document()
    local = json.loads(local.to_json())

    assert stored["confidence"] == {"level": 0.9, "resamples": 400, "seed": 5, "unit": "queries"}
    for name, value in stored["metrics"].items():
        assert stored["intervals"][name]["lower"] <= value <= stored["intervals"][name]["upper"]
    # Seeded: the cluster's intervals are the laptop's, for every model and delta.
    for key in ("metrics", "intervals", "gate", "challengers", "baseline"):
        got, expected = _leaves(stored[key]), _leaves(local[key])
        assert got.keys() == expected.keys(), key
        for where, value in expected.items():
            assert got[where] == (pytest.approx(value, abs=1e-9) if isinstance(value, float)
                                  else value), f"{key}.{where}"
    [shallow] = stored["challengers"]
    assert shallow["name"] == "shallow" and set(shallow["deltaIntervals"]) == {"ndcg@10", "map@10"}
    # One gate per model; the significance rule passes exactly when the delta's interval is
    # wholly above zero.
    for model in (stored, shallow):
        deltas = (stored["baseline"] if model is stored else shallow)["deltaIntervals"]
        significant = model["gate"]["rules"][1]
        assert significant["passed"] is (deltas["ndcg@10"]["lower"] > 0), significant
    assert status["baseline"]["gatePassed"] is stored["gate"]["passed"]
    assert status["baseline"]["deltas"] == pytest.approx(stored["baseline"]["deltas"])
    [warning] = stored["warnings"]
    assert "omit some of the 136 features" in warning and "read as missing" in warning


def test_missing_model_fails_with_its_reason_without_retrying(bed, api, namespace):
    apply_manifest(bed, namespace, spec_text(
        "missing-model", model={"uri": f"s3://{EXAMPLES_BUCKET}/models/nope.json"}, backoffLimit=3))
    status = wait_phase(api, namespace, "missing-model", ("Failed",))["status"]
    assert status["reason"] == "ModelNotFound" and status["attempt"] == 1
    assert "nope.json" in status["message"] and "not retried" in status["message"]
    assert "Retrying" not in events_of(api, namespace, "missing-model")
    eventually(lambda: not client.CustomObjectsApi(api).list_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters")["items"], 60, "the cluster to be deleted")


def test_a_manifest_too_big_for_a_command_line_reaches_the_runner(bed, api, namespace):
    """5,000 feature columns: about 150 KB of manifest, over the kernel's 128 KiB limit of one
    argument. It travels as the job's working_dir package, so the runner reads it and fails for
    the reason the data gives (the file is missing), not on E2BIG."""
    columns = [f"feature_with_a_long_name_{i:05d}" for i in range(5000)]
    apply_manifest(bed, namespace, spec_text("wide", dataset={
        "uri": f"s3://{EXAMPLES_BUCKET}/missing/wide.parquet", "format": "parquet",
        "groupColumn": "qid", "featureColumns": columns}))
    status = wait_phase(api, namespace, "wide", ("Failed", "Succeeded"))["status"]
    assert status["reason"] == "DatasetNotFound", status.get("message")
    assert "wide.parquet" in status["message"]
    # And it can be deleted: kopf's bookkeeping fits next to kubectl's copy of the manifest, so
    # its finalizer comes off (it once stayed Terminating, its namespace with it).
    client.CustomObjectsApi(api).delete_namespaced_custom_object(*EVALUATIONS[:2], namespace,
                                                                 EVALUATIONS[2], "wide")
    eventually(lambda: gone(api, namespace, "wide"), 60, "the deleted evaluation to be gone")


@pytest.mark.parametrize("name, extra, field", [
    ("other-image", {"rayImage": "attacker.example/ray:latest"}, "spec.rayImage"),
    ("pickled", {"model": {"uri": f"s3://{EXAMPLES_BUCKET}/models/ranker.json", "format": "pickle",
                           "allowPickle": True}}, "spec.model.format"),
    ("pickled-challenger", {"challengers": [{"name": "c", "model": {
        "uri": f"s3://{EXAMPLES_BUCKET}/models/ranker.json", "format": "pickle",
        "allowPickle": True}}]}, "spec.challengers[0].model.format"),
    ("too-wide", {"resources": {"workers": 65}}, "spec.resources.workers"),
])
def test_the_operator_policy_refuses_what_a_tenant_may_not_run(bed, api, namespace, name, extra, field):
    """A tenant's own allowPickle or image does not count: the operator's policy decides, before
    any cluster or job exists."""
    apply_manifest(bed, namespace, spec_text(name, **extra))
    status = wait_phase(api, namespace, name, ("Failed",), timeout=60)["status"]
    assert status["reason"] == "Forbidden" and status["message"].startswith(field), status["message"]
    assert not [c for c in client.CustomObjectsApi(api).list_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters")["items"] if c["metadata"]["name"].startswith(name)]


def test_unschedulable_gpu_request_fails_with_scheduler_message(bed, api, namespace):
    apply_manifest(bed, namespace, spec_text("too-many-gpus", resources={"gpu": 3}))
    status = wait_phase(api, namespace, "too-many-gpus", ("Failed",), timeout=120)["status"]
    assert status["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in status["message"]


def test_file_uris_refused_in_cluster_mode(bed, api, namespace):
    apply_manifest(bed, namespace, spec_text("local-file", model={"uri": "file:///etc/passwd"}))
    status = wait_phase(api, namespace, "local-file", ("Failed",))["status"]
    assert status["reason"] == "InvalidSpec" and "spec.model.uri" in status["message"]


def test_deadline_exceeded(bed, api, namespace):
    apply_manifest(bed, namespace, spec_text("short-deadline", activeDeadlineSeconds=1))
    status = wait_phase(api, namespace, "short-deadline", ("Failed", "Succeeded"))["status"]
    assert status["phase"] == "Failed" and status["reason"] == "DeadlineExceeded"


def test_ttl_deletes_a_finished_evaluation(bed, api, namespace):
    apply_manifest(bed, namespace, spec_text("short-lived", ttlSecondsAfterFinished=0))

    eventually(lambda: gone(api, namespace, "short-lived"), 240,
               "the evaluation to be deleted after it finished")
    assert "Succeeded" in events_of(api, namespace, "short-lived")


def test_suspend_releases_the_cluster_and_resume_runs_a_new_attempt(bed, api, namespace):
    apply_manifest(bed, namespace, spec_text("pausable", suspend=True))
    obj = eventually(lambda: (lambda o: o if any(c["type"] == "Suspended" and c["status"] == "True"
                                                 for c in (o.get("status") or {}).get("conditions", []))
                              else None)(get_evaluation(api, namespace, "pausable")), 60, "Suspended")
    assert obj["status"]["phase"] == "Pending"
    assert not client.CustomObjectsApi(api).list_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters")["items"]
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        *EVALUATIONS[:2], namespace, EVALUATIONS[2], "pausable", {"spec": {"suspend": False}})
    status = wait_phase(api, namespace, "pausable", ("Succeeded", "Failed"))["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 2


def test_metrics_and_liveness_endpoints(operator):
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for name in ("modeleval_evaluations", "modeleval_reconcile_duration_seconds",
                 "modeleval_evaluation_duration_seconds", "modeleval_rows_scored_total"):
        assert name in text
    records = [json.loads(line) for line in operator.log_path.read_text().splitlines()
               if line.startswith("{")]
    assert records and all("message" in record for record in records)  # kopf's JSON format


def test_restarted_operator_reattaches_without_a_second_submission(bed, api, namespace, operator):
    """Killed while the Ray job runs, a new operator process finds the job by its deterministic
    submission id: one job, one result document."""
    import httpx

    apply_manifest(bed, namespace, spec_text("survivor", metrics=["ndcg@10", "map@10"]))
    eventually(lambda: (get_evaluation(api, namespace, "survivor").get("status") or {}).get("jobId"),
               120, "the Ray job to be submitted")
    operator.kill()
    time.sleep(2)
    operator.start()
    status = wait_phase(api, namespace, "survivor", ("Succeeded", "Failed"))["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 1
    uid = get_evaluation(api, namespace, "survivor")["metadata"]["uid"]
    jobs = httpx.get(f"{bed.ray_dashboard}/api/jobs/",
                     headers={"Authorization": f"Bearer {bed.ray_auth_token}"}, timeout=10).json()
    mine = [j for j in jobs if (j.get("submission_id") or "").startswith(f"modeleval-{uid}-")]
    assert [j["submission_id"] for j in mine] == [f"modeleval-{uid}-1"]
    with MongoClient(bed.mongodb_uri) as mongo:
        assert mongo["modeleval"]["results"].count_documents({"uid": uid}) == 1


def _runner_of(uid: str, timeout: float = 120):
    """The runner process of the evaluation's Ray job (the bed's Ray head runs it locally)."""
    import psutil

    def find():
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "modeleval.runner" in cmdline and f"--uid {uid}" in cmdline:
                return proc
        return None

    return eventually(find, timeout, f"the runner of {uid} to start", interval=0.1)


def _kill_runner_of(uid: str, timeout: float = 120) -> None:
    _runner_of(uid, timeout).kill()


def test_crashed_attempt_is_retried_with_backoff(bed, api, namespace):
    """The runner is killed (as by an OOM kill): no result document, so the failure is not the
    data's fault; the operator waits its backoff and succeeds on attempt 2."""
    apply_manifest(bed, namespace, spec_text("crashy", backoffLimit=2))
    uid = eventually(lambda: get_evaluation(api, namespace, "crashy")["metadata"].get("uid"), 30, "uid")
    _kill_runner_of(uid)
    status = wait_phase(api, namespace, "crashy", ("Succeeded", "Failed"))["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 2
    assert "Retrying" in events_of(api, namespace, "crashy")


def test_deleting_a_running_evaluation_stops_its_job(bed, api, namespace):
    """The runner is paused (SIGSTOP) so the job cannot end on its own: only the operator's stop
    can end it, and Ray then reports STOPPED (not SUCCEEDED)."""
    import httpx

    apply_manifest(bed, namespace, spec_text("doomed"))
    uid = eventually(lambda: get_evaluation(api, namespace, "doomed")["metadata"].get("uid"), 30, "uid")
    runner = _runner_of(uid)
    runner.suspend()
    try:
        job = eventually(lambda: (get_evaluation(api, namespace, "doomed").get("status") or {}).get("jobId"),
                         120, "the Ray job to be adopted")
        client.CustomObjectsApi(api).delete_namespaced_custom_object(*EVALUATIONS[:2], namespace,
                                                                     EVALUATIONS[2], "doomed")
        headers = {"Authorization": f"Bearer {bed.ray_auth_token}"}
        final = eventually(lambda: (lambda s: s if s in ("STOPPED", "SUCCEEDED", "FAILED") else None)(
            httpx.get(f"{bed.ray_dashboard}/api/jobs/{job}", headers=headers, timeout=10).json()["status"]),
            60, "the job to end")
        assert final == "STOPPED"
    finally:
        with contextlib.suppress(Exception):
            runner.kill()
    eventually(lambda: not client.CustomObjectsApi(api).list_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters")["items"], 60, "the RayCluster to be collected")


def test_secrets_appear_nowhere(bed, api, namespace, operator):
    """The S3 secret key and the Ray token are in use during a run, and in none of: the status,
    the Events, the operator's log, the Ray job's arguments, the RayCluster, the result."""
    import httpx

    apply_manifest(bed, namespace, spec_text("canary"))
    obj = wait_phase(api, namespace, "canary", ("Succeeded", "Failed"))
    assert obj["status"]["phase"] == "Succeeded"
    canaries = {"s3 secret key": bed.s3_secret_key, "ray token": bed.ray_auth_token}
    headers = {"Authorization": f"Bearer {bed.ray_auth_token}"}
    jobs = httpx.get(f"{bed.ray_dashboard}/api/jobs/", headers=headers, timeout=10).json()
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    with MongoClient(bed.mongodb_uri) as mongo:
        results = list(mongo["modeleval"]["results"].find({"uid": obj["metadata"]["uid"]}))
    places = {
        "status": json.dumps(obj["status"]),
        "events": " ".join(f"{e.reason} {e.message}" for e in events),
        "operator log": operator.log_path.read_text(),
        "ray job arguments": json.dumps([{k: j.get(k) for k in ("entrypoint", "metadata", "runtime_env")}
                                          for j in jobs]),
        "result documents": json.dumps(results, default=str),
        "evaluation object": json.dumps(obj),
    }
    for what, text in places.items():
        for name, value in canaries.items():
            assert value not in text, f"the {name} leaked into the {what}"
