"""The MLflow integration end to end: a real `mlflow server` (basic auth, SQLite, its artefacts
served into MinIO) that the bed starts, and the operator pointed at it. A tenant's user registers
an XGBoost ranker in MinIO as a model version, and the evaluation names it models:/NAME@ALIAS."""

from __future__ import annotations

import secrets
import uuid

import httpx
import pytest
import yaml
from kubernetes import client

from modeleval.demo import EXAMPLES_BUCKET, publish_example_assets
from modeleval.engine.storage import Storage

from .kube import api_client, eventually
from .operator_fixture import (CRD, OperatorProcess, apply_manifest, events_of, kubectl,
                               new_namespace, spec_text, wait_phase)
from .test_schedules import SCHEDULE_CRD, children, give_s3_keys, schedule_status

pytestmark = pytest.mark.e2e

API = "/api/2.0/mlflow"
RANKER = f"s3://{EXAMPLES_BUCKET}/models/ranker.json"


class MlflowUser:
    """A user of the bed's MLflow server, calling its REST API as the platform's users do."""

    def __init__(self, uri: str, username: str, password: str):
        self.username, self.password = username, password
        self.http = httpx.Client(base_url=uri + API, auth=(username, password), timeout=30)

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def new_user(self) -> "MlflowUser":
        name, password = f"tenant-{uuid.uuid4().hex[:6]}", secrets.token_hex(12)
        self.call("POST", "/users/create", json={"username": name, "password": password})
        return MlflowUser(str(self.http.base_url).removesuffix(API), name, password)

    def register(self, name: str, source: str) -> str:
        """A new version of ``name`` whose artefact is ``source``."""
        found = self.call("POST", "/model-versions/create", json={"name": name, "source": source})
        return found["model_version"]["version"]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call("POST", "/registered-models/alias",
                  json={"name": name, "alias": alias, "version": version})


@pytest.fixture(scope="module")
def mlflow_admin(mlflow_server) -> MlflowUser:
    env = mlflow_server.env()
    return MlflowUser(mlflow_server.mlflow_uri, env["MLFLOW_TRACKING_USERNAME"],
                      env["MLFLOW_TRACKING_PASSWORD"])


@pytest.fixture(scope="module")
def mlflow_operator(mlflow_server, tmp_path_factory):
    """The operator with the chart's mlflow.trackingUri set (its own process: the module's
    operator fixture has no MLflow)."""
    for path in (CRD, SCHEDULE_CRD):
        kubectl(mlflow_server, "apply", "--server-side", "--force-conflicts", "-f", str(path))
    kubectl(mlflow_server, "wait", "--for=condition=Established",
            "crd/modelevaluations.modeleval.dev", "crd/evaluationschedules.modeleval.dev")
    publish_example_assets(Storage(), EXAMPLES_BUCKET)
    process = OperatorProcess(mlflow_server, tmp_path_factory.mktemp("operator") / "operator.log",
                              MODELEVAL_MLFLOW_TRACKING_URI=mlflow_server.mlflow_uri,
                              MODELEVAL_SCHEDULE_POLL_INTERVAL="2",
                              MODELEVAL_TRIGGER_LIST_INTERVAL="4",
                              # A run waiting for its namespace's Secret is tried every few
                              # seconds, not after the default's minutes of doubling.
                              MODELEVAL_EVENTS_BACKOFF_BASE="1",
                              MODELEVAL_EVENTS_BACKOFF_MAX="4").start()
    yield process
    process.stop()


def tenant_namespace(bed, api, user: MlflowUser) -> str:
    """A namespace whose modeleval-mlflow Secret holds ``user``'s credentials."""
    name = new_namespace(bed, api)
    client.CoreV1Api(api).create_namespaced_secret(name, client.V1Secret(
        metadata=client.V1ObjectMeta(name="modeleval-mlflow"),
        string_data={"MLFLOW_TRACKING_USERNAME": user.username,
                     "MLFLOW_TRACKING_PASSWORD": user.password}))
    return name


def test_an_alias_is_resolved_pinned_and_scored_and_unknown_or_refused_ones_fail_clearly(
        mlflow_server, mlflow_admin, mlflow_operator):
    bed = mlflow_server
    api = api_client(bed.kubeconfig)
    tenant = mlflow_admin.new_user()
    model = f"ranker-{uuid.uuid4().hex[:6]}"
    mlflow_admin.call("POST", "/registered-models/create", json={"name": model})
    version = mlflow_admin.register(model, RANKER)
    mlflow_admin.set_alias(model, "champion", version)
    namespace = tenant_namespace(bed, api, tenant)
    # Its gate passes: promoted to "production"; the other's fails: "rejected" is never set.
    apply_manifest(bed, namespace, spec_text(
        "by-alias", model={"uri": f"models:/{model}@champion"}, promote={"alias": "production"},
        gate=[{"metric": "ndcg@10", "min": 0.0}]))
    apply_manifest(bed, namespace, spec_text(
        "gate-fails", model={"uri": f"models:/{model}/{version}"}, promote={"alias": "rejected"},
        gate=[{"metric": "ndcg@10", "max": 0.0001}]))
    apply_manifest(bed, namespace, spec_text("no-alias", model={"uri": f"models:/{model}@nope"}))
    # Another namespace whose Secret's password is wrong: refused by the server, never served
    # with anyone else's credentials.
    wrong = MlflowUser(bed.mlflow_uri, tenant.username, "not-the-password")
    other = tenant_namespace(bed, api, wrong)
    apply_manifest(bed, other, spec_text("refused", model={"uri": f"models:/{model}/{version}"}))

    failed = wait_phase(api, namespace, "no-alias", ("Succeeded", "Failed"), timeout=60)
    assert failed["status"]["reason"] == "ModelNotFound", failed["status"]
    assert "nope" in failed["status"]["message"]
    refused = wait_phase(api, other, "refused", ("Succeeded", "Failed"), timeout=60)
    assert refused["status"]["reason"] == "RegistryAccessDenied", refused["status"]
    done = wait_phase(api, namespace, "by-alias", ("Succeeded", "Failed"), timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["resolvedModels"] == [{
        "field": "spec.model", "uri": f"models:/{model}@champion", "name": model,
        "version": version, "artifactURI": RANKER}]
    assert "ModelResolved" in events_of(api, namespace, "by-alias")
    assert done["status"]["promotion"] == {"alias": "production", "name": model,
                                           "version": version, "promoted": True, "tries": 0}
    aliased = mlflow_admin.call("GET", "/registered-models/alias",
                          params={"name": model, "alias": "production"})
    assert aliased["model_version"]["version"] == version
    gated = wait_phase(api, namespace, "gate-fails", ("Succeeded", "Failed"), timeout=180)
    assert gated["status"]["phase"] == "Succeeded" and "promotion" not in gated["status"]
    assert mlflow_admin.http.get("/registered-models/alias",
                           params={"name": model, "alias": "rejected"}).status_code >= 400
    for name in (namespace, other):
        client.CoreV1Api(api).delete_namespace(name)


def test_each_new_registered_version_is_evaluated_once_and_promoted_when_its_gate_passes(
        mlflow_server, mlflow_admin, mlflow_operator):
    """trigger.newModel.registeredModel: the version there before the schedule is not
    evaluated; the one registered after it gets one child, which resolves models:/NAME/2,
    succeeds and, its gate passing, becomes the champion."""
    bed = mlflow_server
    api = api_client(bed.kubeconfig)
    model = f"ranker-{uuid.uuid4().hex[:6]}"
    mlflow_admin.call("POST", "/registered-models/create", json={"name": model})
    first = mlflow_admin.register(model, RANKER)
    mlflow_admin.set_alias(model, "champion", first)
    namespace = tenant_namespace(bed, api, mlflow_admin.new_user())
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "modeleval.dev/v1alpha1", "kind": "EvaluationSchedule",
        "metadata": {"name": "versions"},
        "spec": {"trigger": {"newModel": {"registeredModel": model}},
                 "template": yaml.safe_load(spec_text(
                     "t", model={"uri": f"models:/{model}@champion"},
                     gate=[{"metric": "ndcg@10", "min": 0.0}],
                     promote={"alias": "champion"}))["spec"]}}))
    eventually(lambda: schedule_status(api, namespace, "versions").get("modelsListed"), 60,
               "the schedule's first listing")
    assert children(api, namespace, "versions") == []  # version 1 was there before it
    second = mlflow_admin.register(model, RANKER)
    made = eventually(lambda: children(api, namespace, "versions"), 60, "a child for version 2")
    (child,) = made
    assert child["spec"]["model"]["uri"] == f"models:/{model}/{second}"
    name = child["metadata"]["name"]
    done = wait_phase(api, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert [m["version"] for m in done["status"]["resolvedModels"]] == [second]
    assert done["status"]["promotion"]["promoted"] is True
    aliased = mlflow_admin.call("GET", "/registered-models/alias",
                                params={"name": model, "alias": "champion"})
    assert aliased["model_version"]["version"] == second
    # Listed again and again since: still the one child.
    eventually(lambda: schedule_status(api, namespace, "versions").get("lastCompletedRun"), 30,
               "the schedule to record its run")
    assert [c["metadata"]["name"] for c in children(api, namespace, "versions")] == [name]
    client.CoreV1Api(api).delete_namespace(namespace)


def test_an_evaluation_is_logged_as_one_mlflow_run_with_its_report_once_and_late_when_it_must(
        mlflow_server, mlflow_admin, mlflow_operator):
    """spec.output.mlflow: the run has the metrics with their intervals, the parameters, the
    CR's tags and the report (read from S3 with the namespace's keys, uploaded through the
    server); an operator restart logs nothing twice. A namespace without its MLflow Secret
    still succeeds, says why the run is missing, and logs it once the Secret is there."""
    bed = mlflow_server
    api = api_client(bed.kubeconfig)
    experiment = f"e2e-{uuid.uuid4().hex[:6]}"
    tenant = mlflow_admin.new_user()
    logged = tenant_namespace(bed, api, tenant)
    late = new_namespace(bed, api)  # no modeleval-mlflow Secret yet
    for namespace in (logged, late):
        give_s3_keys(bed, namespace)
        apply_manifest(bed, namespace, spec_text(
            "tracked", confidence={"resamples": 200},
            output={"mlflow": {"experiment": experiment}}))

    done = wait_phase(api, logged, "tracked", ("Succeeded", "Failed"), timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    uid = done["metadata"]["uid"]

    def delivered(namespace: str):
        status = wait_phase(api, namespace, "tracked", ("Succeeded",))["status"]
        condition = next((c for c in status.get("conditions") or []
                          if c["type"] == "EventsDelivered"), None)
        return status if condition and condition["status"] == "True" \
            and not status.get("pendingEvents") else None

    eventually(lambda: delivered(logged), 60, "the run to be logged")
    run = one_run(mlflow_admin, experiment, uid)
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "tracked"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert (tags["modeleval.namespace"], tags["modeleval.name"], tags["modeleval.uid"],
            tags["modeleval.phase"], tags["modeleval.report"]) == (
        logged, "tracked", uid, "Succeeded", "report.html")
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    value = done["status"]["metrics"]["ndcg@10"]
    assert metrics["ndcg_at_10"] == pytest.approx(value, abs=1e-9)
    assert metrics["ndcg_at_10.ci_low"] <= value <= metrics["ndcg_at_10.ci_high"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["dataset"] == f"s3://{EXAMPLES_BUCKET}/mslr/test.txt"
    assert params["attempt"] == "1" and "ndcg@10" in params["metrics"]
    listed = mlflow_admin.call("GET", "/artifacts/list", params={"run_id": run["info"]["run_id"]})
    assert [f["path"] for f in listed.get("files") or []] == ["report.html"]
    report = httpx.get(bed.mlflow_uri + "/api/2.0/mlflow-artifacts/artifacts/"
                       + run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
                       + "/report.html", auth=(tenant.username, tenant.password), timeout=30)
    assert report.status_code == 200, report.text[:300]
    assert report.text.lstrip().lower().startswith("<!doctype html") and "tracked" in report.text

    # Without its Secret: Succeeded all the same, the run waits and says why.
    def waiting():
        status = wait_phase(api, late, "tracked", ("Succeeded",))["status"]
        condition = next((c for c in status.get("conditions") or []
                          if c["type"] == "EventsDelivered"), None)
        return condition if condition and condition["status"] == "False" else None

    condition = eventually(waiting, 180, "the missing Secret to be reported")
    assert condition["message"].startswith("sink output.mlflow: no MLflow credentials"), condition
    assert f"Secret {late}/modeleval-mlflow" in condition["message"]
    # An operator restart, then the Secret: the waiting run is logged, the logged one not again.
    mlflow_operator.stop()
    mlflow_operator.start()
    client.CoreV1Api(api).create_namespaced_secret(late, client.V1Secret(
        metadata=client.V1ObjectMeta(name="modeleval-mlflow"),
        string_data={"MLFLOW_TRACKING_USERNAME": tenant.username,
                     "MLFLOW_TRACKING_PASSWORD": tenant.password}))
    status = eventually(lambda: delivered(late), 120, "the late run to be logged")
    late_uid = get_uid(api, late)
    assert one_run(mlflow_admin, experiment, late_uid)["info"]["status"] == "FINISHED"
    assert one_run(mlflow_admin, experiment, uid)["info"]["run_id"] == run["info"]["run_id"]
    assert status["phase"] == "Succeeded"
    for namespace in (logged, late):
        client.CoreV1Api(api).delete_namespace(namespace)


def one_run(user: MlflowUser, experiment: str, uid: str) -> dict:
    """The experiment's one run of the evaluation ``uid`` (fails on none or two)."""
    found = user.call("GET", "/experiments/get-by-name", params={"experiment_name": experiment})
    runs = user.call("POST", "/runs/search", json={
        "experiment_ids": [found["experiment"]["experiment_id"]],
        "filter": f"tags.\"modeleval.uid\" = '{uid}'"}).get("runs") or []
    assert len(runs) == 1, runs
    return runs[0]


def get_uid(api, namespace: str) -> str:
    return wait_phase(api, namespace, "tracked", ("Succeeded",))["metadata"]["uid"]
