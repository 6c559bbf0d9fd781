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
from .test_schedules import SCHEDULE_CRD, children, schedule_status

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
                              MODELEVAL_TRIGGER_LIST_INTERVAL="4").start()
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
                                           "version": version, "promoted": True}
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
