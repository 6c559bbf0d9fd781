"""spec.output.mlflow: an evaluation's end logged as one MLflow run, through the events' outbox.
A fake tracking server (MLflow's REST answers, over httpx.MockTransport) and a fake S3 stand
for the real ones; the e2e test runs the real server."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from itertools import count

import httpx
import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from modeleval.api import crd
from modeleval.api.events import MLFLOW_SINK, SINK_NAME, EventType, MlflowRunSink
from modeleval.api.reasons import Reason
from modeleval.api.registry import ResolvedModel
from modeleval.api.results import Interval
from modeleval.api.spec import ALL_METRICS
from modeleval.api.status import ConditionType as C, Phase
from modeleval.controller.actions import SendEvents
from modeleval.controller.decide import decide
from modeleval.controller.events import configured_sinks, record_deliveries
from modeleval.controller.runtime import send_events
from modeleval.controller.secrets import NamespaceSecrets
from modeleval.controller.settings import OperatorSettings
from modeleval.controller.sinks import EventSinks
from modeleval.controller.mlflow import NO_SERVER
from modeleval.controller.tracking import RunTracker, metric_key

from .test_decide import EV, NOW, RUNNING, doc, job, ready, seen, spec, status

SETTINGS = OperatorSettings(mongodb_uri="mongodb://store", backoff_base=10, backoff_max=300,
                            events_backoff_base=5, events_backoff_max=60,
                            mlflow_tracking_uri="http://mlflow.platform:5000",
                            s3_endpoint="http://minio:9000", _env_file=None)
OUTPUT = {"output": {"mlflow": {"experiment": "rankers"}}}
REPORT = "s3://reports/ns/ev-u1-1.html"
# What MLflow takes as a metric, param or tag key.
MLFLOW_KEY = r"^[A-Za-z0-9_\-. /:]+$"


class FakeKube:
    def __init__(self, secrets: dict | None = None):
        self.secrets = {("ns", "modeleval-mlflow"): {"MLFLOW_TRACKING_USERNAME": "team-a",
                                                     "MLFLOW_TRACKING_PASSWORD": "pw"},
                        ("ns", "modeleval-s3"): {"AWS_ACCESS_KEY_ID": "ak",
                                                 "AWS_SECRET_ACCESS_KEY": "sk"}} \
            if secrets is None else secrets

    def read_secret(self, namespace, name):
        return self.secrets.get((namespace, name))


class FakeS3:
    """The tenant's bucket: the report is there (unless ``objects`` says otherwise)."""

    def __init__(self, objects: dict | None = None):
        self.objects = {("reports", "ns/ev-u1-1.html"): b"<html>report</html>"} \
            if objects is None else objects
        self.made, self.put = [], {}

    def __call__(self, endpoint, key_id, secret):
        self.made.append((endpoint, key_id, secret))
        return self

    def _found(self, Bucket, Key):
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "404"}, "ResponseMetadata":
                               {"HTTPStatusCode": 404}}, "HeadObject")
        return self.objects[(Bucket, Key)]

    def head_object(self, Bucket, Key):
        return {"ContentLength": len(self._found(Bucket, Key))}

    def get_object(self, Bucket, Key):
        import io
        return {"Body": io.BytesIO(self._found(Bucket, Key))}

    def put_object(self, Bucket, Key, Body, ContentType):
        self.put[(Bucket, Key)] = Body


class FakeMlflow:
    """MLflow's REST answers for experiments, runs and served artefacts, and what was asked."""

    def __init__(self, artifacts: str = "mlflow-artifacts:/"):
        self.artifacts = artifacts
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, dict] = {}
        self.uploads: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.down = False
        self.upload_refused = 0  # an HTTP status the artefact upload answers
        self.race = False  # another operator creates the experiment between our get and create
        self.ids = count(1)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.answer)

    @staticmethod
    def error(status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error_code": code, "message": message})

    def answer(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        user = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        assert user == "team-a:pw"  # the namespace's own credentials, on every request
        path = request.url.path
        self.calls.append((request.method, path.rsplit("/api/2.0/", 1)[-1]))
        if request.method == "PUT":
            if self.upload_refused:
                return self.error(self.upload_refused, "PERMISSION_DENIED", "not yours")
            self.uploads[path.split("/mlflow-artifacts/artifacts/", 1)[1]] = request.content
            return httpx.Response(200, json={})
        body = json.loads(request.content) if request.content else {}
        route = getattr(self, path.rsplit("/mlflow/", 1)[1].replace("/", "_").replace("-", "_"))
        return route(request, body)

    def experiments_get_by_name(self, request, body):
        name = request.url.params["experiment_name"]
        if name not in self.experiments:
            if self.race:
                self.race, self.experiments[name] = False, "7"
            return self.error(404, "RESOURCE_DOES_NOT_EXIST", f"No experiment '{name}'")
        return httpx.Response(200, json={"experiment": {
            "experiment_id": self.experiments[name], "name": name,
            "lifecycle_stage": "active"}})

    def experiments_create(self, request, body):
        if body["name"] in self.experiments:
            return self.error(400, "RESOURCE_ALREADY_EXISTS", "Experiment already exists")
        self.experiments[body["name"]] = str(next(self.ids))
        return httpx.Response(200, json={"experiment_id": self.experiments[body["name"]]})

    def runs_search(self, request, body):
        (uid,) = re.fullmatch(r"tags\.\"modeleval\.uid\" = '([^']*)'", body["filter"]).groups()
        found = [run for run in self.runs.values()
                 if run["info"]["experiment_id"] in body["experiment_ids"]
                 and run["data"]["tags"].get("modeleval.uid") == uid]
        return httpx.Response(200, json={"runs": found[:body["max_results"]]})

    def runs_create(self, request, body):
        run_id = f"run{next(self.ids)}"
        where = self.artifacts.rstrip("/") + "/" if self.artifacts.startswith("s3://") \
            else self.artifacts
        self.runs[run_id] = {
            "info": {"run_id": run_id, "experiment_id": body["experiment_id"],
                     "run_name": body["run_name"], "status": "RUNNING",
                     "start_time": body["start_time"],
                     "artifact_uri": f"{where}{body['experiment_id']}/{run_id}/artifacts"},
            "data": {"tags": {t["key"]: t["value"] for t in body["tags"]}, "params": {},
                     "metrics": []}}
        return httpx.Response(200, json={"run": self.runs[run_id]})

    def runs_log_batch(self, request, body):
        data = self.runs[body["run_id"]]["data"]
        for param in body["params"]:  # MLflow's rule: a param never changes
            if data["params"].get(param["key"], param["value"]) != param["value"]:
                return self.error(400, "INVALID_PARAMETER_VALUE", "Changing param values "
                                  "is not allowed")
            data["params"][param["key"]] = param["value"]
        for item in body["metrics"] + body["params"] + body["tags"]:
            assert re.fullmatch(MLFLOW_KEY, item["key"]), item["key"]
        data["metrics"] += body["metrics"]
        data["tags"].update({t["key"]: t["value"] for t in body["tags"]})
        return httpx.Response(200, json={})

    def runs_update(self, request, body):
        self.runs[body["run_id"]]["info"].update(status=body["status"],
                                                 end_time=body["end_time"])
        return httpx.Response(200, json={"run_info": self.runs[body["run_id"]]["info"]})

    def only_run(self) -> dict:
        (run,) = self.runs.values()
        return run


def tracker(server: FakeMlflow, s3: FakeS3 | None = None, kube: FakeKube | None = None,
            settings: OperatorSettings = SETTINGS) -> EventSinks:
    secrets = NamespaceSecrets(lambda: kube or FakeKube())
    return EventSinks(secrets, lambda: None, hold=0.0, tracker=RunTracker(
        settings, secrets, server.transport, s3 or FakeS3()))


def succeeded(the_spec=None, pinned: bool = False):
    """The round that saw the job succeed: its events wait in status (nothing sent yet)."""
    document = doc(intervals={"ndcg@10": Interval(lower=0.8, upper=0.83),
                              "map": Interval(lower=0.65, upper=0.74)},
                   report_uri=REPORT)
    before = RUNNING.model_copy(deep=True)
    if pinned:
        before.resolved_models = [ResolvedModel(field="spec.model", uri="models:/ranker@champion",
                                                name="ranker", version="3",
                                                artifact_uri="s3://models/ranker/v3.json")]
    after, actions = decide(EV, the_spec or spec(**OUTPUT), before,
                            seen(ready(), job=job("SUCCEEDED", 1), document=document), NOW,
                            SETTINGS)
    assert after.phase == Phase.Succeeded and not [a for a in actions if isinstance(a, SendEvents)]
    return after


def next_round(after, the_spec=None, at=NOW):
    """The next round sends what waited; the sinks' answers are recorded."""
    again, actions = decide(EV, the_spec or spec(**OUTPUT), after, seen(), at, SETTINGS)
    return again, [a for a in actions if isinstance(a, SendEvents)]


def deliver(sinks: EventSinks, after, at=NOW):
    again, sends = next_round(after, at=at)
    deliveries = [d for send in sends for d in send_events(sinks, "ns", send)]
    failed = record_deliveries(again, deliveries, at, SETTINGS, 3)
    return again, deliveries, failed


# --------------------------------------------------------------------------- the spec
def test_output_mlflow_is_off_by_default_and_validated():
    assert spec().output.mlflow is None
    assert MLFLOW_SINK not in configured_sinks(None, SETTINGS, spec().output.mlflow)
    named = spec(output={"mlflow": {"experiment": "/Shared/rankers v2", "runName": "nightly"}})
    assert (named.output.mlflow.experiment, named.output.mlflow.run_name) == \
        ("/Shared/rankers v2", "nightly")
    for wrong in ({}, {"experiment": ""}, {"experiment": " padded"}, {"experiment": "a\nb"},
                  {"experiment": "x" * 257}, {"experiment": "ok", "other": 1}):
        with pytest.raises(ValidationError, match="output.mlflow"):
            spec(output={"mlflow": wrong})


def test_the_mlflow_sink_s_name_is_one_no_spec_sink_can_take_and_it_wants_the_end_only():
    assert not re.fullmatch(SINK_NAME, MLFLOW_SINK)
    sink = configured_sinks(None, SETTINGS, spec(**OUTPUT).output.mlflow)[MLFLOW_SINK]
    assert sink == MlflowRunSink("rankers")
    assert [kind for kind in EventType if sink.wants(kind)] == [EventType.Succeeded,
                                                                EventType.Failed]


def test_the_generated_crd_has_output_mlflow_and_the_event_s_new_data():
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    mlflow = schema["spec"]["properties"]["output"]["properties"]["mlflow"]
    assert mlflow["required"] == ["experiment"]
    assert set(mlflow["properties"]) == {"experiment", "runName"}
    data = schema["status"]["properties"]["pendingEvents"]["items"]["properties"]["data"]
    assert {"intervals", "dataset", "modelVersion", "started"} <= set(data["properties"])


# --------------------------------------------------------------------------- what is logged
@pytest.mark.parametrize("name, key", [("ndcg@10", "ndcg_at_10"), ("map", "map"),
                                       ("precision@5", "precision_at_5"), ("auc", "auc")])
def test_metric_names_become_mlflow_keys(name, key):
    assert metric_key(name) == key


def test_every_metric_a_spec_takes_is_a_valid_mlflow_key():
    assert len(ALL_METRICS) > 5
    for name in ALL_METRICS:
        for written in (name, f"{name}@10"):
            assert re.fullmatch(MLFLOW_KEY, metric_key(written) + ".ci_high"), written


def test_a_succeeded_evaluation_is_one_finished_run_with_metrics_intervals_params_tags_report():
    after = succeeded(pinned=True)
    (event,) = [e for e in after.pending_events if e.type == EventType.Succeeded]
    assert event.sinks == [MLFLOW_SINK]
    assert event.data.intervals == {"ndcg@10": [0.8, 0.83], "map": [0.65, 0.74]}
    assert (event.data.dataset, event.data.model_version) == ("s3://data/t.txt", "3")
    server, s3 = FakeMlflow(), FakeS3()
    again, deliveries, failed = deliver(tracker(server, s3), after)
    assert failed is None and [d.error for d in deliveries] == [None]
    assert again.pending_events == []  # acknowledged: it leaves the outbox
    assert again.condition(C.EventsDelivered).reason == Reason.EventsDelivered
    assert server.experiments == {"rankers": "1"}
    run = server.only_run()
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "ev"
    assert run["info"]["end_time"] == int(NOW.timestamp() * 1000)
    assert run["info"]["start_time"] == int(RUNNING.start_time.timestamp() * 1000)
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics == {"ndcg_at_10": 0.81234, "ndcg_at_10.ci_low": 0.8,
                       "ndcg_at_10.ci_high": 0.83, "map": 0.7, "map.ci_low": 0.65,
                       "map.ci_high": 0.74}
    assert run["data"]["params"] == {"model": "s3://models/r.json", "model_version": "3",
                                     "dataset": "s3://data/t.txt", "metrics": "ndcg@10,map",
                                     "attempt": "1"}
    tags = run["data"]["tags"]
    assert {key: tags[key] for key in ("modeleval.namespace", "modeleval.name",
                                       "modeleval.uid", "modeleval.phase", "mlflow.runName")} \
        == {"modeleval.namespace": "ns", "modeleval.name": "ev", "modeleval.uid": "u1",
            "modeleval.phase": "Succeeded", "mlflow.runName": "ev"}
    assert tags["modeleval.metricNames"] == "ndcg_at_10=ndcg@10"
    assert tags["modeleval.report"] == "report.html" and tags["modeleval.reportURI"] == REPORT
    # The report, read with the namespace's S3 keys, is the run's artefact on the server.
    assert s3.made == [("http://minio:9000", "ak", "sk")]
    assert server.uploads == {"1/run2/artifacts/report.html": b"<html>report</html>"}


def test_a_repeated_send_finds_the_ended_run_and_logs_nothing_twice():
    after = succeeded()
    server = FakeMlflow()
    sinks = tracker(server)
    deliver(sinks, after)
    server.calls.clear()
    # The operator restarted before it recorded the answer: the same event is sent again.
    again, deliveries, failed = deliver(sinks, after)
    assert failed is None and [d.error for d in deliveries] == [None]
    assert server.calls == [("GET", "mlflow/experiments/get-by-name"),
                            ("POST", "mlflow/runs/search")]
    assert len(server.runs) == 1 and server.experiments == {"rankers": "1"}


def test_a_run_left_unfinished_by_a_send_that_died_midway_is_finished_not_made_again():
    after = succeeded()
    server = FakeMlflow()
    server.experiments["rankers"] = "4"
    server.runs_create(None, {"experiment_id": "4", "run_name": "ev", "start_time": 1,
                              "tags": [{"key": "modeleval.uid", "value": "u1"}]})
    _, deliveries, _ = deliver(tracker(server), after)
    assert [d.error for d in deliveries] == [None]
    run = server.only_run()
    assert run["info"]["status"] == "FINISHED" and len(run["data"]["metrics"]) == 6
    assert ("POST", "mlflow/runs/create") not in server.calls


def test_an_experiment_made_by_someone_else_meanwhile_is_used():
    server = FakeMlflow()
    server.race = True
    _, deliveries, _ = deliver(tracker(server), succeeded())
    assert [d.error for d in deliveries] == [None]
    assert server.experiments == {"rankers": "7"}
    assert server.only_run()["info"]["experiment_id"] == "7"


def test_a_failed_evaluation_is_a_failed_run_with_its_reason():
    failed_doc = doc(ok=False)
    after, _ = decide(EV, spec(**OUTPUT), RUNNING,
                      seen(ready(), job=job("FAILED", 1), document=failed_doc), NOW, SETTINGS)
    assert after.phase == Phase.Failed
    assert [(e.type, e.sinks) for e in after.pending_events] == [(EventType.Failed,
                                                                 [MLFLOW_SINK])]
    server = FakeMlflow()
    deliver(tracker(server), after)
    run = server.only_run()
    assert run["info"]["status"] == "FAILED" and run["data"]["metrics"] == []
    assert run["data"]["tags"]["modeleval.reason"] == "SchemaMismatch"
    assert run["data"]["tags"]["modeleval.report"].startswith("none")


def test_a_started_event_is_not_for_the_run():
    before = status(Phase.Provisioning, cluster="ev-ray",
                    conditions={C.Provisioned: (True, Reason.RayClusterReady, 10)})
    after, _ = decide(EV, spec(**OUTPUT), before, seen(ready(), job=job("RUNNING")), NOW,
                      SETTINGS)
    assert after.phase == Phase.Running and after.pending_events == []


# --------------------------------------------------------------------------- the report
def test_a_report_that_cannot_be_read_is_told_in_a_tag_and_the_run_still_ends():
    server = FakeMlflow()
    _, deliveries, _ = deliver(tracker(server, FakeS3(objects={})), succeeded())
    assert [d.error for d in deliveries] == [None]
    run = server.only_run()
    assert run["info"]["status"] == "FINISHED" and server.uploads == {}
    assert run["data"]["tags"]["modeleval.report"] == (
        f"not copied: cannot read {REPORT} with the namespace's S3 credentials")


def test_runs_whose_artefacts_are_in_s3_get_the_report_with_the_namespace_s_keys():
    server, s3 = FakeMlflow(artifacts="s3://mlflow/artifacts"), FakeS3()
    deliver(tracker(server, s3), succeeded())
    assert s3.put == {("mlflow", "artifacts/1/run2/artifacts/report.html"):
                      b"<html>report</html>"}
    assert server.only_run()["data"]["tags"]["modeleval.report"] == "report.html"


def test_artefacts_the_operator_cannot_reach_are_skipped_with_a_reason():
    server = FakeMlflow(artifacts="file:///mlruns/")
    deliver(tracker(server), succeeded())
    run = server.only_run()
    assert run["info"]["status"] == "FINISHED"
    assert run["data"]["tags"]["modeleval.report"].startswith(
        "not copied: the run's artefacts (file:///mlruns/1/run2/artifacts) are not in S3")


def test_an_upload_the_server_refuses_is_told_and_one_it_fails_is_tried_again():
    server = FakeMlflow()
    server.upload_refused = 403
    deliver(tracker(server), succeeded())
    run = server.only_run()
    assert run["info"]["status"] == "FINISHED"
    assert run["data"]["tags"]["modeleval.report"].startswith(
        "not copied: the MLflow server refused the namespace's credentials")
    server = FakeMlflow()
    server.upload_refused = 503
    sinks = tracker(server)
    again, deliveries, _ = deliver(sinks, succeeded())
    assert deliveries[0].error.startswith("the MLflow server answered HTTP 503 (artefact ")
    assert server.only_run()["info"]["status"] == "RUNNING" and len(again.pending_events) == 1
    server.upload_refused = 0
    done, _, _ = deliver(sinks, again, at=NOW + timedelta(seconds=6))
    assert done.pending_events == [] and server.only_run()["info"]["status"] == "FINISHED"
    assert list(server.uploads) == ["1/run2/artifacts/report.html"]


# --------------------------------------------------------------------------- failures
def test_an_unreachable_server_keeps_the_event_waiting_with_backoff_and_a_condition():
    after = succeeded()
    server = FakeMlflow()
    server.down = True
    sinks = tracker(server)
    again, deliveries, failed = deliver(sinks, after)
    assert again.phase == Phase.Succeeded  # the evaluation's outcome is not touched
    (delivery,) = deliveries
    assert delivery.sink == MLFLOW_SINK
    assert delivery.error.startswith("the MLflow server did not answer (experiment rankers)")
    (waiting,) = again.pending_events
    assert (waiting.sinks, waiting.tries) == ([MLFLOW_SINK], 1)
    assert waiting.next_try_time == NOW + timedelta(seconds=5)
    condition = again.condition(C.EventsDelivered)
    assert (condition.status, condition.reason) == ("False", Reason.EventSinkUnavailable)
    assert failed == condition.message and failed.startswith("sink output.mlflow: the MLflow")
    # Not due yet: nothing is sent; once due, the server back, the run is logged.
    _, sends = next_round(again, at=NOW + timedelta(seconds=4))
    assert sends == []
    server.down = False
    later = NOW + timedelta(seconds=6)
    done, deliveries, failed = deliver(sinks, again, at=later)
    assert failed is None and done.pending_events == []
    assert server.only_run()["info"]["status"] == "FINISHED"


@pytest.mark.parametrize("settings, kube, said", [
    (SETTINGS.model_copy(update={"mlflow_tracking_uri": None}), None, NO_SERVER),
    (SETTINGS, FakeKube(secrets={}), "no MLflow credentials: Secret ns/modeleval-mlflow"),
])
def test_a_missing_server_or_secret_is_said_plainly(settings, kube, said):
    server = FakeMlflow()
    again, deliveries, failed = deliver(tracker(server, kube=kube, settings=settings),
                                        succeeded())
    assert deliveries[0].error.startswith(said)
    assert len(again.pending_events) == 1 and server.calls == []
    assert failed.startswith(f"sink output.mlflow: {said}")


def test_refused_credentials_are_the_server_s_words():
    server = FakeMlflow()
    server.answer = lambda request: httpx.Response(403, json={"message": "Permission denied"})
    _, deliveries, _ = deliver(tracker(server), succeeded())
    assert deliveries[0].error == ("the MLflow server refused the namespace's credentials "
                                   "(experiment rankers: HTTP 403)")
