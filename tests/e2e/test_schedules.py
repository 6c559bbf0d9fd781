"""EvaluationSchedule on the test bed: a `* * * * *` schedule makes a child that succeeds and
whose metric reaches the schedule's status, history limits prune, deleting the schedule deletes
its children (kube-controller-manager's garbage collector, through owner references); a model
uploaded to MinIO under a trigger prefix makes exactly one child, also after the operator
restarts (the prefix is listed with the namespace's own S3 Secret: with keys MinIO refuses, the
schedule reports ModelListFailed naming that Secret); a worse model turns Degraded true with an
Event, and its data, replaced by drifted data, turns DataDrift true (on the run and the
schedule, with Events and gauges). A real Prometheus scrapes the operator all the while: at the
end every query of the chart's Grafana dashboard returns data from it."""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid

import numpy as np
import pytest
import yaml
from kubernetes import client
from pymongo import MongoClient

from modeleval.demo import (EXAMPLES_BUCKET, letor_bytes, make_letor, publish_example_assets,
                            train_ranker)
from modeleval.engine.storage import Storage

import grafana_dashboard

from .kube import eventually
from .operator_fixture import (CRD, EVALUATIONS, ROOT, OperatorProcess, events_of, gone, kubectl,
                               new_namespace)
from .prometheus import BINARY as PROMETHEUS, Prometheus, positive_values

pytestmark = pytest.mark.e2e
SCHEDULE_CRD = ROOT / "crds" / "evaluationschedules.modeleval.dev.yaml"
SCHEDULES = ("modeleval.dev", "v1alpha1", "evaluationschedules")
LABEL = "modeleval.dev/schedule"
RANKER = f"s3://{EXAMPLES_BUCKET}/models/ranker.json"
SMALL = {"workers": 1, "cpu": "100m", "memory": "256Mi", "headCpu": "100m", "headMemory": "256Mi"}


@pytest.fixture(scope="module")
def operator(bed, tmp_path_factory):
    # Forced: on a shared bed the chart (helm) may have installed an older copy of these CRDs.
    for path in (CRD, SCHEDULE_CRD):
        kubectl(bed, "apply", "--server-side", "--force-conflicts", "-f", str(path))
    kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev",
            "crd/evaluationschedules.modeleval.dev")
    publish_example_assets(Storage(), EXAMPLES_BUCKET)
    process = OperatorProcess(bed, tmp_path_factory.mktemp("operator") / "operator.log",
                              MODELEVAL_SCHEDULE_POLL_INTERVAL="2",
                              MODELEVAL_TRIGGER_LIST_INTERVAL="4").start()
    yield process
    process.stop()


@pytest.fixture(scope="module", autouse=True)
def prometheus(operator, tmp_path_factory):
    """Debian's Prometheus scraping the operator's metrics port every second while the module's
    evaluations and schedules run (the operator is a process on this host). Without the package
    only the dashboard's test fails, saying so."""
    if not shutil.which(PROMETHEUS):
        yield None
        return
    server = Prometheus(tmp_path_factory.mktemp("prometheus"),
                        [f"127.0.0.1:{operator.metrics_port}"], PROMETHEUS).start()
    yield server
    server.stop()
    assert server.process.poll() is not None


@pytest.fixture(scope="module", autouse=True)
def every_minute(bed, api, operator):
    """A `* * * * *` schedule applied as the module starts, in a namespace of its own: its first
    cron minute passes while the other tests run, and its test (the module's last) reads it."""
    namespace = new_namespace(bed, api)
    apply_schedule(bed, namespace, "every-minute", schedule="* * * * *", successfulHistoryLimit=1)
    yield namespace
    client.CoreV1Api(api).delete_namespace(namespace)


def give_s3_keys(bed, namespace: str) -> None:
    """The namespace's own S3 Secret, with keys MinIO accepts: a trigger lists its prefix with
    them (the examples' Secret holds placeholders)."""
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "modeleval-s3"},
        "stringData": {"AWS_ACCESS_KEY_ID": bed.s3_access_key,
                       "AWS_SECRET_ACCESS_KEY": bed.s3_secret_key}}))


def template(**extra) -> dict:
    return {"task": "ranking", "model": {"uri": RANKER},
            "dataset": {"uri": f"s3://{EXAMPLES_BUCKET}/mslr/test.txt", "numFeatures": 136},
            "metrics": ["ndcg@10"], "resources": SMALL, **extra}


def apply_schedule(bed, namespace: str, name: str, **spec) -> None:
    body = {"apiVersion": "modeleval.dev/v1alpha1", "kind": "EvaluationSchedule",
            "metadata": {"name": name}, "spec": {"template": template(), **spec}}
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body))


def schedule_status(api, namespace: str, name: str) -> dict:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        *SCHEDULES[:2], namespace, SCHEDULES[2], name)
    return obj.get("status") or {}


def children(api, namespace: str, name: str) -> list[dict]:
    return client.CustomObjectsApi(api).list_namespaced_custom_object(
        *EVALUATIONS[:2], namespace, EVALUATIONS[2], label_selector=f"{LABEL}={name}")["items"]


def patch_schedule(api, namespace: str, name: str, spec: dict) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        *SCHEDULES[:2], namespace, SCHEDULES[2], name, {"spec": spec})


def drifted_letor() -> bytes:
    """The examples' test data with every feature shifted by 1: every feature drifts."""
    data = make_letor(6000, 136, mean_group=60, seed=8)
    return letor_bytes(dataclasses.replace(data, features=data.features + 1.0))


def condition(obj_status: dict, type_: str) -> dict | None:
    return next((c for c in obj_status.get("conditions") or [] if c["type"] == type_), None)


def bad_ranker() -> bytes:
    """A ranker trained on reversed relevance: its NDCG is far below the example ranker's."""
    data = make_letor(3000, 136, seed=11)
    data = dataclasses.replace(data, labels=(np.max(data.labels) - data.labels).astype(data.labels.dtype))
    return bytes(train_ranker(data, rounds=5).get_booster().save_raw("json"))


@pytest.mark.timeout(600)
def test_a_new_model_is_evaluated_once_also_after_a_restart(bed, api, namespace, operator):
    prefix = f"schedules/{uuid.uuid4().hex[:8]}/"
    storage = Storage()
    storage.write(f"s3://{EXAMPLES_BUCKET}/{prefix}old.json", storage.read(RANKER))
    # With the examples' placeholder keys MinIO refuses the listing: the schedule says so.
    apply_schedule(bed, namespace, "refused",
                   trigger={"newModel": {"prefix": f"s3://{EXAMPLES_BUCKET}/{prefix}"}})
    refused = eventually(lambda: [c for c in schedule_status(api, namespace, "refused")
                                  .get("conditions") or [] if c["reason"] == "ModelListFailed"],
                         30, "the refused listing reported")
    assert "Secret " + namespace + "/modeleval-s3" in refused[0]["message"]
    give_s3_keys(bed, namespace)
    apply_schedule(bed, namespace, "on-upload",
                   trigger={"newModel": {"prefix": f"s3://{EXAMPLES_BUCKET}/{prefix}"}})
    # The Secret's old keys may be used for up to 30 s more (each Secret is read twice a minute).
    eventually(lambda: schedule_status(api, namespace, "on-upload").get("modelsListed"), 60,
               "the first listing of the prefix")
    time.sleep(5)  # a few rounds: what was there before the schedule is not evaluated
    assert children(api, namespace, "on-upload") == []

    storage.write(f"s3://{EXAMPLES_BUCKET}/{prefix}new.json", storage.read(RANKER))
    (child,) = eventually(lambda: children(api, namespace, "on-upload"), 30,
                          "a child for the uploaded model")
    assert child["spec"]["model"]["uri"] == f"s3://{EXAMPLES_BUCKET}/{prefix}new.json"
    assert "RunCreated" in events_of(api, namespace, "on-upload")

    operator.stop()
    operator.start()
    # The same bytes again under the same key: the same ETag, not a new model.
    storage.write(f"s3://{EXAMPLES_BUCKET}/{prefix}new.json", storage.read(RANKER))
    time.sleep(10)  # five rounds of the restarted operator
    assert [c["metadata"]["name"] for c in children(api, namespace, "on-upload")] == \
        [child["metadata"]["name"]]
    seen = schedule_status(api, namespace, "on-upload")["seenModels"]
    assert sorted(m["key"] for m in seen) == [f"{prefix}new.json", f"{prefix}old.json"]

    # Its child goes with the schedule (owner reference, the garbage collector).
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        *SCHEDULES[:2], namespace, SCHEDULES[2], "on-upload")
    eventually(lambda: gone(api, namespace, child["metadata"]["name"]), 90,
               f"{child['metadata']['name']} to be deleted with its schedule")


@pytest.mark.timeout(900)
def test_a_worse_model_turns_degraded_with_an_event(bed, api, namespace, operator, prometheus):
    prefix = f"schedules/{uuid.uuid4().hex[:8]}/"
    storage = Storage()
    give_s3_keys(bed, namespace)
    # Its data, at a URI of its own (outside the trigger's prefix): each run compares its data
    # with the run before's.
    data = f"s3://{EXAMPLES_BUCKET}/schedule-data/{prefix}test.txt"
    storage.write(data, storage.read(template()["dataset"]["uri"]))
    apply_schedule(bed, namespace, "watch", concurrencyPolicy="Forbid",
                   trigger={"newModel": {"prefix": f"s3://{EXAMPLES_BUCKET}/{prefix}"}},
                   degradation={"maxDrop": 0.01},
                   template=template(dataset={"uri": data, "numFeatures": 136},
                                     dataQuality={"reference": {"schedule": "previous"}}))
    eventually(lambda: schedule_status(api, namespace, "watch").get("modelsListed"), 30,
               "the first listing of the prefix")
    storage.write(f"s3://{EXAMPLES_BUCKET}/{prefix}v1.json", storage.read(RANKER))
    first = eventually(lambda: (s := schedule_status(api, namespace, "watch"))
                       .get("lastPrimaryMetric") is not None and s, 240, "the first model's metric")
    assert "metricChange" not in first and condition(first, "DataDrift") is None
    storage.write(data, drifted_letor())
    storage.write(f"s3://{EXAMPLES_BUCKET}/{prefix}v2.json", bad_ranker())

    def degraded():
        s = schedule_status(api, namespace, "watch")
        found = [c for c in s.get("conditions") or [] if c["type"] == "Degraded"]
        return s if found and found[0]["status"] == "True" else None

    status = eventually(degraded, 240, "Degraded=True after the worse model")
    if prometheus is not None:
        # The schedule goes with this test's namespace, and its gauges with it: the dashboard's
        # test (the module's last) needs a scrape of the 1 while it lasts, and on a loaded machine
        # a scrape of a busy operator can time out (a failed scrape marks every series stale).
        # So the wait is for what that test reads: a range query from the same start, whose
        # steps fall on the same moments, with a value above zero.
        for query in (f'modeleval_schedule_degraded{{namespace="{namespace}",schedule="watch"}}',
                      f'modeleval_schedule_data_drifted{{namespace="{namespace}",schedule="watch"}}',
                      f'modeleval_data_drifted{{namespace="{namespace}"}}'):
            eventually(lambda: positive_values(prometheus.query_range(
                query, prometheus.started, time.time())), 60, f"Prometheus to scrape {query} at 1")
    assert status["metricChange"] < -0.01
    assert status["lastPrimaryMetric"] < first["lastPrimaryMetric"]
    assert "MetricDegraded" in events_of(api, namespace, "watch")
    # The second run's data drifted from the first's: on the run, and on the schedule.
    latest = status["runs"][0]
    assert latest["name"] == status["lastCompletedRun"] and latest["drifted"] is True
    assert latest["driftedShare"] > 0.5 and "drifted" not in status["runs"][1]  # compared nothing
    drift = condition(status, "DataDrift")
    assert drift["status"] == "True" and drift["reason"] == "DataDrifted"
    assert drift["message"].startswith(f"{latest['name']}: the data drifted from ")
    assert "DataDrifted" in events_of(api, namespace, "watch")
    run = next(c for c in children(api, namespace, "watch")
               if c["metadata"]["name"] == latest["name"])
    assert run["status"]["drift"]["drifted"] and len(run["status"]["drift"]["mostDrifted"]) == 5
    assert condition(run["status"], "DataDrift")["status"] == "True"
    assert "DataDrifted" in events_of(api, namespace, latest["name"])
    table = kubectl(bed, "get", "evalsched", "-n", namespace)
    assert table.splitlines()[1].split()[-3:-1] == ["True", "True"]  # DEGRADED, DRIFTED
    # Each run's result names the schedule that made it.
    refs = [c["status"]["resultsRef"] for c in children(api, namespace, "watch")
            if (c.get("status") or {}).get("resultsRef")]
    assert len(refs) >= 2
    with MongoClient(bed.mongodb_uri) as mongo:
        for ref in refs:
            assert mongo[ref["database"]][ref["collection"]].find_one(
                {"_id": ref["id"]})["schedule"] == "watch"


@pytest.mark.timeout(600)
def test_cron_schedule_runs_records_prunes_and_owns_its_children(bed, api, every_minute):
    """The schedule was applied as the module started (a minute or more ago by now), so one or
    two cron minutes have passed: every child it made is owned and labelled, the last completed
    one's metric is on the schedule, and the history limit (1) keeps one succeeded child."""
    namespace = every_minute

    def completed_and_kept():
        s = schedule_status(api, namespace, "every-minute")
        kept = {c["metadata"]["name"]: c for c in children(api, namespace, "every-minute")}
        return (s, kept) if s.get("lastCompletedRun") in kept else None

    status, kept = eventually(completed_and_kept, 240, "a child of the * * * * * schedule to succeed")
    for child in kept.values():
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["kind"] == "EvaluationSchedule" and owner["name"] == "every-minute" \
            and owner["controller"] is True
        assert child["spec"]["model"]["uri"] == RANKER
    assert status["metricName"] == "ndcg@10" and 0 < status["lastPrimaryMetric"] <= 1
    assert status["lastScheduleTime"].endswith(":00Z") and status["nextScheduleTime"]
    table = kubectl(bed, "get", "evalsched", "-n", namespace)
    assert table.split("\n")[0].split() == ["NAME", "SCHEDULE", "LAST", "RUN", "LAST", "METRIC",
                                            "CHANGE", "DEGRADED", "DRIFTED", "AGE"]
    assert table.split("\n")[1].split()[:2] == ["every-minute", "*"]

    def succeeded() -> list[str]:
        return [c["metadata"]["name"] for c in children(api, namespace, "every-minute")
                if (c.get("status") or {}).get("phase") == "Succeeded"]

    # History: at most one succeeded child is kept; with none allowed, the finished ones go.
    # (That children go with their schedule is checked with a trigger's child above.)
    eventually(lambda: len(succeeded()) <= 1, 30, "one succeeded child kept (successfulHistoryLimit 1)")
    patch_schedule(api, namespace, "every-minute", {"successfulHistoryLimit": 0})
    eventually(lambda: not succeeded(), 30, "the succeeded children to be pruned")


def test_every_grafana_panel_query_returns_data(prometheus):
    """The module's runs (cron and trigger children, a degraded schedule, an operator restart) as
    the chart's dashboard shows them: each panel's query, as Grafana sends it, over the module's
    time has values above zero (a phase count, a p95, a rate, a schedule's metric, a Degraded 1)."""
    assert prometheus is not None, f"{PROMETHEUS} is missing (hack/versions.env TEST_PACKAGES)"
    assert prometheus.targets_up(), prometheus.log()
    dashboard = grafana_dashboard.load()
    start, end = prometheus.started, time.time()
    empty = {}
    for title, expr in grafana_dashboard.panel_queries(dashboard):
        query = grafana_dashboard.substitute(expr, dashboard, rate_interval="30s")
        series = prometheus.query_range(query, start, end)
        if not positive_values(series):
            empty[title] = (query, series[:3])
    assert not empty, f"panels without data: {empty}"
