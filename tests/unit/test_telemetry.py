"""The operator's Prometheus metrics that the Grafana dashboard charts: evaluations by phase,
queue waits (observed by the handler from the status a round wrote), RayClusters by state
(from the RayCluster watch), data drift (from each evaluation's status, and a schedule's latest
compared run). Gauges are process-wide: each test reads differences."""

from __future__ import annotations

from datetime import timedelta

import kopf
import pytest
from prometheus_client import REGISTRY

from modeleval.api.reasons import Reason
from modeleval.api.schedule import EvaluationScheduleStatus, RunRecord
from modeleval.api.status import ConditionType as C, DataDriftStatus, Phase
from modeleval.controller import handlers, status as st, telemetry
from modeleval.controller.decide import decide
from modeleval.controller.observed import Evaluation, Slot

from .test_decide import (CLUSTER, DRIFTED, EV, NOW, RUNNING, SETTINGS, STEADY, job, ready, seen,
                          spec, status)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def waits(stage: str) -> tuple[float, float]:
    """(count, sum) of the queue wait histogram's stage."""
    return (sample("modeleval_queue_wait_seconds_count", stage=stage),
            sample("modeleval_queue_wait_seconds_sum", stage=stage))


PROVISIONING = status(Phase.Provisioning, cluster=CLUSTER,
                      conditions={C.Provisioned: (False, Reason.Creating, 30)})


def test_the_waits_end_when_the_cluster_turns_ready_and_when_the_job_is_found():
    created = (NOW - EV.created).total_seconds()
    provisioned, _ = decide(EV, spec(), PROVISIONING, seen(ready(), job_slot=Slot(True, 8)), NOW,
                            SETTINGS)
    assert provisioned.is_true(C.Provisioned) and provisioned.job_id is None
    assert handlers.queue_waits(EV, PROVISIONING, provisioned, NOW) == [("cluster_ready", created)]
    later = NOW + timedelta(seconds=7)
    running, _ = decide(EV, spec(), provisioned, seen(ready(), job=job("RUNNING")), later, SETTINGS)
    assert running.phase == Phase.Running
    assert handlers.queue_waits(EV, provisioned, running, later) == [("job_started", created + 7)]
    # A round that ends no wait observes nothing.
    assert handlers.queue_waits(EV, running, running, later) == []


def test_a_job_found_in_the_round_its_cluster_turned_ready_ends_both_waits():
    after, _ = decide(EV, spec(), PROVISIONING, seen(ready(), job=job("SUCCEEDED")), NOW, SETTINGS)
    assert [stage for stage, _ in handlers.queue_waits(EV, PROVISIONING, after, NOW)] == \
        ["cluster_ready", "job_started"]


def test_later_attempts_and_unknown_creation_times_are_not_waits():
    second = PROVISIONING.model_copy(update={"attempt": 2})
    after, _ = decide(EV, spec(), second, seen(ready(), job_slot=Slot(True, 8)), NOW, SETTINGS)
    assert after.is_true(C.Provisioned) and handlers.queue_waits(EV, second, after, NOW) == []
    unknown = Evaluation(name="ev", namespace="ns", uid="u1", generation=3, created=None)
    after, _ = decide(unknown, spec(), PROVISIONING, seen(ready(), job_slot=Slot(True, 8)), NOW,
                      SETTINGS)
    assert handlers.queue_waits(unknown, PROVISIONING, after, NOW) == []


def test_a_cluster_ready_again_under_its_running_job_is_no_wait():
    flapped = RUNNING.model_copy(deep=True)
    st.set_condition(flapped, C.Provisioned, False, Reason.Provisioning, "not ready", 3, NOW)
    after, _ = decide(EV, spec(), flapped, seen(ready(), job=job("RUNNING")), NOW, SETTINGS)
    assert after.is_true(C.Provisioned) and handlers.queue_waits(EV, flapped, after, NOW) == []


def test_a_wait_reaches_the_histogram_of_its_stage():
    count, total = waits("cluster_ready")
    telemetry.observe_queue_wait("cluster_ready", 42.0)
    telemetry.observe_queue_wait("cluster_ready", -1.0)  # a clock behind the API server's: 0
    assert waits("cluster_ready") == (count + 2, total + 42.0)
    assert sample("modeleval_queue_wait_seconds_bucket", stage="cluster_ready", le="60.0") >= 2


def test_evaluations_move_between_phases_and_leave_when_deleted():
    pending, running = (sample("modeleval_evaluations", phase=p) for p in ("Pending", "Running"))
    telemetry.observe_phase("tally-1", Phase.Pending)
    telemetry.observe_phase("tally-1", Phase.Pending)  # the same phase again: counted once
    assert sample("modeleval_evaluations", phase="Pending") == pending + 1
    telemetry.observe_phase("tally-1", Phase.Running)
    assert sample("modeleval_evaluations", phase="Pending") == pending
    assert sample("modeleval_evaluations", phase="Running") == running + 1
    telemetry.forget("tally-1")
    telemetry.forget("tally-1")  # twice is fine
    assert sample("modeleval_evaluations", phase="Running") == running


def raycluster(uid: str, status: dict | None = None, deleting: bool = False) -> kopf.Body:
    meta = {"name": f"c-{uid}", "namespace": "ns", "uid": uid,
            "labels": {"app.kubernetes.io/managed-by": "modeleval"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    return kopf.Body({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta,
                      "status": status or {}})


READY = {"state": "ready", "conditions": [{"type": "RayClusterProvisioned", "status": "True"},
                                          {"type": "HeadPodReady", "status": "True"}]}


@pytest.mark.parametrize("status, deleting, state", [
    ({}, False, "provisioning"),
    (READY, False, "ready"),
    ({"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "False"}]}, False,
     "provisioning"),  # KubeRay's conditions rule over its deprecated state
    ({"state": "suspended"}, False, "suspended"),
    ({"state": "failed"}, False, "failed"),
    (READY, True, "deleting"),
])
def test_a_rayclusters_state_in_a_word(status, deleting, state):
    assert handlers.raycluster_state(raycluster("x", status, deleting)) == state


def test_the_rayclusters_gauge_follows_the_watch_until_a_cluster_is_gone():
    def count(state: str) -> float:
        return sample("modeleval_rayclusters", state=state)

    provisioning, ready_ = count("provisioning"), count("ready")
    handlers.raycluster_telemetry(type=None, body=raycluster("rc-1"))  # the first listing
    handlers.raycluster_telemetry(type="ADDED", body=raycluster("rc-2"))
    assert count("provisioning") == provisioning + 2
    handlers.raycluster_telemetry(type="MODIFIED", body=raycluster("rc-1", READY))
    assert (count("provisioning"), count("ready")) == (provisioning + 1, ready_ + 1)
    handlers.raycluster_telemetry(type="DELETED", body=raycluster("rc-1", READY, deleting=True))
    handlers.raycluster_telemetry(type="DELETED", body=raycluster("rc-2"))
    assert (count("provisioning"), count("ready")) == (provisioning, ready_)


def evaluation_body(name: str, drift: DataDriftStatus | None = None) -> kopf.Body:
    status = {"phase": "Succeeded"}
    if drift is not None:
        status["drift"] = drift.model_dump(by_alias=True, mode="json")
    return kopf.Body({"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
                      "metadata": {"name": name, "namespace": "drift-ns", "uid": f"u-{name}"},
                      "status": status})


def test_the_drift_gauges_follow_each_evaluations_status_until_it_is_gone():
    def gauges(name: str) -> tuple[float | None, float | None]:
        labels = {"namespace": "drift-ns", "evaluation": name}
        return (REGISTRY.get_sample_value("modeleval_data_drift_share", labels),
                REGISTRY.get_sample_value("modeleval_data_drifted", labels))

    drifted = DataDriftStatus.of(DRIFTED.model_dump(by_alias=True))
    handlers.modelevaluation_telemetry(type=None, body=evaluation_body("a", drifted))  # listing
    handlers.modelevaluation_telemetry(type="ADDED", body=evaluation_body("b"))
    assert gauges("a") == (0.375, 1) and gauges("b") == (None, None)  # no drift, no series
    steady = DataDriftStatus.of(STEADY.model_dump(by_alias=True))
    handlers.modelevaluation_telemetry(type="MODIFIED", body=evaluation_body("b", steady))
    assert gauges("b") == (0, 0)
    for name in ("a", "b"):
        handlers.modelevaluation_telemetry(type="DELETED", body=evaluation_body(name, steady))
        assert gauges(name) == (None, None)


def test_a_schedules_drift_gauges_read_its_latest_compared_run_and_go_with_it():
    labels = {"namespace": "drift-ns", "schedule": "nightly"}

    def gauges() -> tuple[float | None, float | None]:
        return (REGISTRY.get_sample_value("modeleval_schedule_data_drift_share", labels),
                REGISTRY.get_sample_value("modeleval_schedule_data_drifted", labels))

    runs = [RunRecord(name="r3", metric=0.8), RunRecord(name="r2", drifted=True, drifted_share=0.6),
            RunRecord(name="r1", drifted=False, drifted_share=0.1)]
    status = EvaluationScheduleStatus(runs=runs)
    assert handlers.schedule_drift(status) == (True, 0.6)
    telemetry.observe_schedule_drift("drift-ns", "nightly", handlers.schedule_drift(status))
    assert gauges() == (0.6, 1)
    telemetry.forget_schedule("drift-ns", "nightly")
    assert gauges() == (None, None)
    assert handlers.schedule_drift(EvaluationScheduleStatus(runs=runs[:1])) is None
