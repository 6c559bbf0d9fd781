"""Where the operator reads and writes an evaluation's result document, and with whose
credentials: its own only in the databases the platform lists for the namespace, otherwise the
namespace's own Secret; a result relayed from a job's log only as the evaluation's own; and a
store error in a tenant's status says what failed, not the driver's words (hosts, topology)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from modeleval.api.results import ResultDocument, document_id, submission_id
from modeleval.api.spec import ModelEvaluationSpec
from modeleval.api.status import ModelEvaluationStatus, Phase
from modeleval.controller import results_store, runtime as rt
from modeleval.controller.actions import StoreLogged
from modeleval.controller.observed import Evaluation, Wants
from modeleval.controller.rayjobs import JobInfo
from modeleval.controller.results_store import ResultsStores, tenant_uri_problem
from modeleval.controller.secrets import NamespaceSecrets
from modeleval.controller.settings import OperatorSettings
from modeleval.store import ResultsStoreError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
EV = Evaluation("ev", "team-a", "u1", 1, NOW)
OPERATOR_URI = "mongodb://operator:op-pw@127.0.0.1:9/"
TENANT_URI = "mongodb://tenant:t-pw@127.0.0.1:8/"


def spec(database: str = "modeleval") -> ModelEvaluationSpec:
    return ModelEvaluationSpec.model_validate({
        "task": "ranking", "model": {"uri": "s3://models/r.json"},
        "dataset": {"uri": "s3://data/t.txt"}, "metrics": ["ndcg"],
        "output": {"mongodb": {"database": database}}})


class FakeKube:
    def __init__(self, secrets: dict | None = None):
        self.secrets = {("team-a", "modeleval-mongodb"): {"MONGODB_URI": TENANT_URI}} \
            if secrets is None else secrets
        self.reads: list[tuple[str, str]] = []

    def read_secret(self, namespace: str, name: str) -> dict | None:
        self.reads.append((namespace, name))
        return self.secrets.get((namespace, name))

    def get_raycluster(self, namespace: str, name: str) -> dict:
        return {"metadata": {"name": name, "uid": "c1"}, "spec": {},
                "status": {"conditions": [{"type": "RayClusterProvisioned", "status": "True"},
                                          {"type": "HeadPodReady", "status": "True"}]}}


class RecordingStore:
    """Stands for StatusResultStore: records the URI each store was opened with and writes."""

    opened: list[tuple[str, str, str]] = []
    written: list[tuple[str, str]] = []

    def __init__(self, uri: str, database: str, collection: str, timeout_ms: int):
        self.uri = uri
        RecordingStore.opened.append((uri, database, collection))

    def upsert(self, document: ResultDocument) -> None:
        RecordingStore.written.append((self.uri, document.id))

    def insert_if_absent(self, document: ResultDocument) -> bool:
        RecordingStore.written.append((self.uri, document.id))
        return True


@pytest.fixture()
def recording(monkeypatch):
    RecordingStore.opened, RecordingStore.written = [], []
    monkeypatch.setattr(results_store, "StatusResultStore", RecordingStore)
    return RecordingStore


def stores(kube: FakeKube, **settings) -> ResultsStores:
    return ResultsStores(OperatorSettings(_env_file=None, mongodb_uri=OPERATOR_URI, **settings),
                         NamespaceSecrets(lambda: kube))


@pytest.mark.parametrize("database, allowed, uri", [
    ("modeleval", None, OPERATOR_URI),                     # the platform's shared database
    ("billing", None, TENANT_URI),                         # a tenant's choice: its own Secret
    ("team-a-results", ["{namespace}-results"], OPERATOR_URI),
    ("team-b-results", ["{namespace}-results"], TENANT_URI),  # another namespace's database
    ("modeleval", [], TENANT_URI),
])
def test_the_operator_s_credentials_serve_only_the_databases_the_platform_lists(
        recording, database, allowed, uri):
    extra = {} if allowed is None else {"mongodb_operator_databases": allowed}
    store = stores(FakeKube(), **extra).open("team-a", spec(database).output.mongodb)
    assert recording.opened == [(uri, database, "results")] and store.uri == uri


def test_without_the_namespace_s_secret_another_database_is_not_served(recording):
    with pytest.raises(ResultsStoreError) as caught:
        stores(FakeKube({})).open("team-a", spec("billing").output.mongodb)
    assert recording.opened == []
    assert caught.value.public == caught.value.message == (
        "spec.output.mongodb.database 'billing' is not one the operator serves for namespace "
        "team-a (modeleval), so it uses the namespace's own Secret team-a/modeleval-mongodb "
        "(not found; it must have the key MONGODB_URI)")


@pytest.mark.parametrize("uri, named", [
    ("mongodb://h/?authMechanism=MONGODB-AWS", "authMechanism=MONGODB-AWS"),
    ("mongodb://h/?authmechanism=gssapi", "authMechanism=GSSAPI"),
    ("mongodb://h/?authMechanism=MONGODB-OIDC&authMechanismProperties=ENVIRONMENT:azure",
     "authMechanism=MONGODB-OIDC"),
    ("mongodb://u:p@h/?tls=true&tlsCertificateKeyFile=/var/run/secrets/x.pem", "tlscertificatekeyfile"),
    ("mongodb://u:p@h/?tlsCAFile=/etc/ca.pem", "tlscafile"),
])
def test_a_tenant_uri_cannot_borrow_the_operator_s_identity_or_files(recording, uri, named):
    assert named in tenant_uri_problem(uri)
    kube = FakeKube({("team-a", "modeleval-mongodb"): {"MONGODB_URI": uri}})
    with pytest.raises(ResultsStoreError, match="refused"):
        stores(kube).open("team-a", spec("billing").output.mongodb)
    assert recording.opened == []
    assert tenant_uri_problem(TENANT_URI + "?authSource=admin&tls=true") is None


def test_a_logged_result_is_written_with_the_tenant_s_credentials(recording, monkeypatch):
    events: list[str] = []
    monkeypatch.setattr(rt.kopf, "info", lambda body, reason, message: events.append(reason))
    kube = FakeKube()
    runtime = rt.Runtime(OperatorSettings(_env_file=None, mongodb_uri=OPERATOR_URI), kube=lambda: kube)
    document = ResultDocument(_id=document_id("u1", 1), uid="u1", attempt=1, name="ev",
                              namespace="team-a", status="Succeeded")
    runtime._do(rt.RoundContext(EV, spec("billing"), ModelEvaluationStatus()), None, StoreLogged(document))
    runtime._do(rt.RoundContext(EV, spec("modeleval"), ModelEvaluationStatus()), None, StoreLogged(document))
    assert recording.written == [(TENANT_URI, "u1:1"), (OPERATOR_URI, "u1:1")]
    assert events == ["ResultStored", "ResultStored"]


def test_a_logged_document_of_another_evaluation_is_never_written(recording):
    runtime = rt.Runtime(OperatorSettings(_env_file=None, mongodb_uri=OPERATOR_URI),
                         kube=lambda: FakeKube())
    forged = ResultDocument(_id=document_id("u1", 1), uid="u1", attempt=1, name="victim",
                            namespace="team-b", status="Succeeded")
    runtime._do(rt.RoundContext(EV, spec(), ModelEvaluationStatus()), None, StoreLogged(forged))
    assert recording.written == []


class FinishedJobs:
    """A Ray head whose job ended, with a log a tenant's runner wrote."""

    log = ""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0):
        pass

    def get(self, sid: str) -> JobInfo:
        return JobInfo(sid, "SUCCEEDED", "", end_time=1, driver_node_id="n1")

    def log_tail(self, job: JobInfo) -> str:
        return FinishedJobs.log


def finished_round() -> rt.RoundContext:
    status = ModelEvaluationStatus(phase=Phase.Running, attempt=1, ray_cluster="ev-ray",
                                   job_id=submission_id("u1", 1))
    return rt.RoundContext(EV, spec(), status)


def test_a_store_outage_reaches_the_status_without_hosts(monkeypatch, caplog):
    monkeypatch.setattr(rt, "RayJobsClient", FinishedJobs)
    runtime = rt.Runtime(OperatorSettings(_env_file=None, mongodb_uri="mongodb://10.0.0.1:9/",
                                          ray_head_override_url="http://head:8265"),
                         kube=lambda: FakeKube())
    runtime.stores.timeout_ms = 100
    mine = ResultDocument(_id=document_id("u1", 1), uid="u1", attempt=1, name="ev",
                          namespace="team-a", status="Succeeded")
    forged = mine.model_copy(update={"namespace": "team-b", "name": "victim"})
    FinishedJobs.log = "\n".join([mine.log_line(), forged.log_line()])  # the forged one is last
    observed = runtime.observe(finished_round(), Wants(cluster=True, job=True))
    assert observed.store_error == "MongoDB read failed (the operator's log has the details)"
    assert "10.0.0.1" in caplog.text  # the details are in the operator's log
    assert observed.logged == mine
