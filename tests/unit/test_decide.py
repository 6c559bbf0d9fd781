"""Every transition of the controller, as a table: (status before, what a round observed) ->
(status after, actions). ``decide`` is pure, so each row is a plain function call."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from modeleval.api.reasons import Reason
from modeleval.api.results import ProgressDocument, ResultDocument, document_id, submission_id
from modeleval.api.spec import ModelEvaluationSpec
from modeleval.api.profile import DataDrift
from modeleval.api.status import ConditionType as C, DataDriftStatus, ModelEvaluationStatus, Phase
from modeleval.controller import status as st
from modeleval.controller.actions import (CreateCluster, DeleteCluster, Emit, LeaveLines,
                                          QueueForClusterSlot, QueueForJobSlot, RecordFailure,
                                          ReleaseAdmission, ReleaseJobSlot, StopJob, StoreLogged,
                                          SubmitJob, TakeClusterSlot, TakeJobSlot)
from modeleval.controller.decide import decide, plan
from modeleval.controller.observed import (Evaluation, Observed, RayClusterView, Slot, Wants,
                                           kuberay_ready)
from modeleval.controller.policy import InvalidSpec, parse_spec
from modeleval.controller.rayjobs import JobInfo
from modeleval.controller.settings import OperatorSettings

from drift_documents import data_drift

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
SETTINGS = OperatorSettings(mongodb_uri="mongodb://store", backoff_base=10, backoff_max=300,
                            pending_timeout=300, results_store_timeout=3600,
                            head_lost_timeout=600, _env_file=None)
EV = Evaluation(name="ev", namespace="ns", uid="u1", generation=3, created=NOW - timedelta(minutes=5))
CLUSTER = "ev-ray"
SID1, SID2 = submission_id("u1", 1), submission_id("u1", 2)
HEAD = "http://ev-ray-head-svc.ns.svc.cluster.local:8265"


def spec(**extra: Any) -> ModelEvaluationSpec:
    return ModelEvaluationSpec.model_validate({
        "task": "ranking", "model": {"uri": "s3://models/r.json"},
        "dataset": {"uri": "s3://data/t.txt"}, "metrics": ["ndcg@10", "map"], **extra})


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def status(phase: Phase = Phase.Pending, attempt: int = 1, cluster: str | None = None,
           job: str | None = None, conditions: dict[C, tuple[bool, Reason, float]] | None = None,
           **extra: Any) -> ModelEvaluationStatus:
    """A status as an earlier round left it; conditions: type -> (value, reason, seconds ago)."""
    s = ModelEvaluationStatus(phase=phase, attempt=attempt, ray_cluster=cluster, job_id=job,
                              **{"start_time": ago(60), **extra})
    for type_, (value, reason, since) in (conditions or {}).items():
        st.set_condition(s, type_, value, reason, "earlier", 3, ago(since))
    return s


def ready(**extra: Any) -> RayClusterView:
    return RayClusterView(name=CLUSTER, uid="c1", ready=True, created=ago(120), token_secret="t", **extra)


def seen(cluster: RayClusterView | None = None, **extra: Any) -> Observed:
    return Observed(store=True, cluster_read=True, cluster=cluster, **extra)


def job(state: str, ended: float | None = None, sid: str = SID1) -> JobInfo:
    end = int((NOW - timedelta(seconds=ended)).timestamp() * 1000) if ended is not None else None
    return JobInfo(sid, state, f"job is {state}", end_time=end)


def doc(ok: bool = True, attempt: int = 1, **extra: Any) -> ResultDocument:
    if ok:
        return ResultDocument(_id=document_id("u1", attempt), uid="u1", attempt=attempt, name="ev",
                              status="Succeeded", rows=1000,
                              **{"metrics": {"ndcg@10": 0.81234, "map": 0.7}, **extra})
    return ResultDocument.failure("u1", attempt, "ev", "ns", extra.pop("reason", Reason.SchemaMismatch),
                                  "136 features, model wants 46", extra.pop("retryable", False),
                                  "s3://models/r.json", "s3://data/t.txt")


def finished_with(drift: DataDrift) -> Observed:
    """A succeeded job whose document has ``drift``, as the runtime reads it: the document
    without its drift, and the drift as status carries it."""
    return seen(ready(), job=job("SUCCEEDED", 1), document=doc(),
                drift=DataDriftStatus.of(drift.model_dump(by_alias=True)))


DRIFTED = data_drift(("2", "5", "7"))  # 3 of 8 features, past driftShare 0.3
STEADY = data_drift()


def drift_told(after: ModelEvaluationStatus, actions: list) -> None:
    drift, condition = after.drift, after.condition(C.DataDrift)
    assert drift.drifted and drift.drifted_share == 0.375 and drift.features == 8
    assert [f.name for f in drift.most_drifted] == [f.name for f in DRIFTED.most_drifted(5)]
    assert {f.name for f in drift.most_drifted} == {"2", "5", "7"}
    top = drift.most_drifted[0]
    assert condition.message.startswith("the data drifted from evaluation weekly-1: 3 of 8 "
                                        "features drifted (38%); most drifted: "
                                        f"{top.name} (PSI {top.psi:.3g}), ")
    warnings = [a for a in actions if isinstance(a, Emit) and a.reason == Reason.DataDrifted]
    assert [(e.message, e.warning) for e in warnings] == [(condition.message, True)]


# A RayCluster Kueue holds: labelled with its LocalQueue and still suspended (no pod).
HELD = RayClusterView.of({"metadata": {"name": CLUSTER, "creationTimestamp": "2026-11-22T11:45:00Z",
                                       "labels": {"kueue.x-k8s.io/queue-name": "team-a"}},
                          "spec": {"suspend": True}})


RUNNING = status(Phase.Running, cluster=CLUSTER, job=SID1,
                 conditions={C.Provisioned: (True, Reason.RayClusterReady, 100),
                             C.JobSubmitted: (True, Reason.JobRunning, 50)})


@dataclass
class Row:
    """One transition: what was, what was seen, what must follow."""

    before: ModelEvaluationStatus
    observed: Observed
    phase: Phase
    spec: ModelEvaluationSpec | InvalidSpec = field(default_factory=spec)
    conditions: dict[C, tuple[bool, Reason]] = field(default_factory=dict)
    actions: tuple[type, ...] = ()
    check: Any = None  # further assertions on (after, actions)


def condition_of(s: ModelEvaluationStatus, type_: C) -> tuple[bool, Reason] | None:
    c = s.condition(type_)
    return (c.true, Reason(c.reason)) if c else None


def retried(attempt: int, delay: float):
    def check(after: ModelEvaluationStatus, actions: list) -> None:
        assert after.attempt == attempt and after.job_id is None and after.progress is None
        assert after.next_retry_time == NOW + timedelta(seconds=delay)
        assert any(isinstance(a, Emit) and a.reason == Reason.Retrying and a.warning for a in actions)
    return check


ROWS: dict[str, Row] = {
    # -------------------------------------------------------------- admission and provisioning
    "new evaluation gets a cluster": Row(
        ModelEvaluationStatus(), Observed(store=True, admission=Slot(True, 4)), Phase.Provisioning,
        conditions={C.Provisioned: (False, Reason.Creating)},
        actions=(TakeClusterSlot, CreateCluster),
        check=lambda a, acts: (a.attempt == 1 and a.start_time == NOW and a.ray_cluster == CLUSTER
                               and acts[1].manifest["metadata"]["name"] == CLUSTER)),
    "new evaluation queues for a cluster slot": Row(
        ModelEvaluationStatus(), Observed(store=True, admission=Slot(False, 4)), Phase.Pending,
        conditions={C.Provisioned: (False, Reason.Queued)}, actions=(QueueForClusterSlot,),
        check=lambda a, acts: ("4 cluster slots" in a.message and a.ray_cluster is None
                               and acts == [QueueForClusterSlot("operator")])),
    "new evaluation queues in its namespace's line": Row(
        ModelEvaluationStatus(), Observed(store=True, admission=Slot(False, 2, "namespace")),
        Phase.Pending, conditions={C.Provisioned: (False, Reason.Queued)},
        actions=(QueueForClusterSlot,),
        check=lambda a, acts: ("namespace ns's 2 cluster slots" in a.message
                               and acts == [QueueForClusterSlot("namespace")])),
    "a spec beyond the operator's policy is forbidden": Row(
        ModelEvaluationStatus(), Observed(), Phase.Failed,
        spec=parse_spec({**spec().model_dump(by_alias=True, exclude_none=True),
                         "resources": {"workers": 65}}, SETTINGS),
        conditions={C.Failed: (True, Reason.Forbidden)}, actions=(LeaveLines, ReleaseAdmission),
        check=lambda a, _: a.message.startswith("spec.resources.workers: 65 is above")),
    "spec edited to invalid while its job runs: job stopped, cluster released": Row(
        RUNNING, seen(ready()), Phase.Failed, spec=parse_spec({"task": "ranking"}, SETTINGS),
        conditions={C.Failed: (True, Reason.InvalidSpec)},
        actions=(ReleaseJobSlot, StopJob, LeaveLines, DeleteCluster, ReleaseAdmission)),
    "policy tightened under a kept cluster: the cluster stays": Row(
        RUNNING, seen(ready()), Phase.Failed,
        spec=parse_spec({**spec().model_dump(by_alias=True, exclude_none=True), "keepCluster": True,
                         "rayImage": "evil/ray:1"}, SETTINGS),
        conditions={C.Failed: (True, Reason.Forbidden)},
        actions=(ReleaseJobSlot, StopJob, LeaveLines, ReleaseAdmission)),
    "invalid spec fails at once": Row(
        ModelEvaluationStatus(), Observed(), Phase.Failed, spec=InvalidSpec("spec.metrics: bad"),
        conditions={C.Failed: (True, Reason.InvalidSpec), C.Complete: (False, Reason.InvalidSpec)},
        actions=(LeaveLines, ReleaseAdmission), check=lambda a, _: a.message == "spec.metrics: bad"),
    "cluster not ready yet": Row(
        status(Phase.Provisioning, cluster=CLUSTER), seen(RayClusterView(CLUSTER, "c1", created=ago(5))),
        Phase.Provisioning, conditions={C.Provisioned: (False, Reason.Provisioning)}),
    "pods unschedulable, still within pendingTimeout": Row(
        status(Phase.Provisioning, cluster=CLUSTER),
        seen(RayClusterView(CLUSTER, "c1", created=ago(100), problem=(Reason.Unschedulable, "pod w-1 x"))),
        Phase.Provisioning, conditions={C.Provisioned: (False, Reason.Unschedulable)}),
    "pods unschedulable past pendingTimeout (from this cluster's creation)": Row(
        status(Phase.Provisioning, cluster=CLUSTER, start_time=ago(900)),
        seen(RayClusterView.of({"metadata": {"name": CLUSTER, "creationTimestamp": "2026-11-22T11:54:59Z"}},
                            [("w-1", "Unschedulable", "0/3 nodes: gpu")])),
        Phase.Failed, conditions={C.Failed: (True, Reason.Unschedulable)},
        actions=(LeaveLines, DeleteCluster, ReleaseAdmission),
        check=lambda a, _: a.message == "pod w-1 cannot be scheduled: 0/3 nodes: gpu"),
    "an image that cannot be pulled is reported": Row(
        status(Phase.Provisioning, cluster=CLUSTER),
        seen(RayClusterView.of({"metadata": {"name": CLUSTER, "creationTimestamp": "2026-11-22T11:59:00Z"}},
                            [("h-0", "ImagePullBackOff", "container ray-head: pull denied")])),
        Phase.Provisioning, conditions={C.Provisioned: (False, Reason.PodsNotReady)},
        check=lambda a, _: a.condition(C.Provisioned).message ==
        "pod h-0: ImagePullBackOff: container ray-head: pull denied"),
    "pods never created (quota) past pendingTimeout": Row(
        status(Phase.Provisioning, cluster=CLUSTER, start_time=ago(900)),
        seen(RayClusterView.of({"metadata": {"name": CLUSTER, "creationTimestamp": "2026-11-22T11:50:00Z"},
                             "status": {"conditions": [{"type": "ReplicaFailure", "status": "True",
                                                        "message": "exceeded quota: pods=0"}]}})),
        Phase.Failed, conditions={C.Failed: (True, Reason.PodsNotReady)},
        actions=(LeaveLines, DeleteCluster, ReleaseAdmission),
        check=lambda a, _: "exceeded quota" in a.message),
    "not ready past pendingTimeout with nothing to blame": Row(
        status(Phase.Provisioning, cluster=CLUSTER, start_time=ago(900)), seen(RayClusterView(CLUSTER, "c1", created=ago(301))),
        Phase.Failed, conditions={C.Failed: (True, Reason.PodsNotReady)},
        check=lambda a, _: a.message == "RayCluster ev-ray was not ready 300s after it was created"),
    "a spec may shorten pendingTimeout": Row(
        status(Phase.Provisioning, cluster=CLUSTER, start_time=ago(900)),
        seen(RayClusterView(CLUSTER, "c1", created=ago(61))), Phase.Failed,
        spec=spec(pendingTimeoutSeconds=60), conditions={C.Failed: (True, Reason.PodsNotReady)},
        actions=(LeaveLines, DeleteCluster, ReleaseAdmission),
        check=lambda a, _: a.message == "RayCluster ev-ray was not ready 60s after it was created"),
    "a spec may not lengthen it past the operator's": Row(
        status(Phase.Provisioning, cluster=CLUSTER, start_time=ago(900)),
        seen(RayClusterView(CLUSTER, "c1", created=ago(301))), Phase.Failed,
        spec=spec(pendingTimeoutSeconds=3600), conditions={C.Failed: (True, Reason.PodsNotReady)},
        actions=(LeaveLines, DeleteCluster, ReleaseAdmission)),
    "within a spec's shorter pendingTimeout": Row(
        status(Phase.Provisioning, cluster=CLUSTER), seen(RayClusterView(CLUSTER, "c1", created=ago(50))),
        Phase.Provisioning, spec=spec(pendingTimeoutSeconds=60),
        conditions={C.Provisioned: (False, Reason.Provisioning)}),
    # ------------------------------------------------------------------ Kueue holds the cluster
    "held by Kueue: Queued with its queue named, not Unschedulable, no pending timeout": Row(
        status(Phase.Provisioning, cluster=CLUSTER, start_time=ago(900),
               conditions={C.Provisioned: (False, Reason.Creating, 900)}),
        seen(HELD), Phase.Pending,
        conditions={C.Queued: (True, Reason.QueuedInKueue),
                    C.Provisioned: (False, Reason.QueuedInKueue)}, actions=(Emit,),
        check=lambda a, acts: ("Kueue LocalQueue team-a" in a.message
                               and acts[0].reason == Reason.QueuedInKueue and not acts[0].warning)),
    "still held an hour on: no timeout, no second Event": Row(
        status(Phase.Pending, cluster=CLUSTER, start_time=ago(3600),
               conditions={C.Queued: (True, Reason.QueuedInKueue, 3600)}),
        seen(HELD), Phase.Pending, conditions={C.Queued: (True, Reason.QueuedInKueue)},
        check=lambda a, acts: acts == [] and a.condition(C.Queued).last_transition_time == ago(3600)),
    "admitted by Kueue: Queued turns False and provisioning proceeds": Row(
        status(Phase.Pending, cluster=CLUSTER, start_time=ago(900),
               conditions={C.Queued: (True, Reason.QueuedInKueue, 800)}),
        seen(RayClusterView(CLUSTER, "c1", created=ago(900), queue="team-a")), Phase.Provisioning,
        conditions={C.Queued: (False, Reason.AdmittedByKueue),
                    C.Provisioned: (False, Reason.Provisioning)}, actions=(Emit,),
        check=lambda a, acts: (a.condition(C.Queued).last_transition_time == NOW
                               and acts[0].reason == Reason.AdmittedByKueue)),
    "admitted and ready in one round: its job is submitted": Row(
        status(Phase.Pending, cluster=CLUSTER, conditions={C.Queued: (True, Reason.QueuedInKueue, 80)}),
        seen(ready(queue="team-a"), job_slot=Slot(True)), Phase.Provisioning,
        conditions={C.Queued: (False, Reason.AdmittedByKueue),
                    C.Provisioned: (True, Reason.RayClusterReady)},
        actions=(Emit, TakeJobSlot, SubmitJob)),
    "admitted long after creation: pendingTimeout counts from the admission": Row(
        status(Phase.Provisioning, cluster=CLUSTER, start_time=ago(900),
               conditions={C.Queued: (False, Reason.AdmittedByKueue, 200)}),
        seen(RayClusterView(CLUSTER, "c1", created=ago(900), queue="team-a")), Phase.Provisioning,
        conditions={C.Provisioned: (False, Reason.Provisioning)}),
    "admitted, then not ready past pendingTimeout": Row(
        status(Phase.Provisioning, cluster=CLUSTER, start_time=ago(900),
               conditions={C.Queued: (False, Reason.AdmittedByKueue, 301)}),
        seen(RayClusterView(CLUSTER, "c1", created=ago(900), queue="team-a")), Phase.Failed,
        conditions={C.Failed: (True, Reason.PodsNotReady)},
        actions=(LeaveLines, DeleteCluster, ReleaseAdmission),
        check=lambda a, _: a.message == "RayCluster ev-ray was not ready 300s after Kueue admitted it"),
    "previous attempt's cluster still being deleted": Row(
        status(cluster=CLUSTER), seen(RayClusterView(CLUSTER, "old", deleting=True)), Phase.Pending,
        conditions={C.Provisioned: (False, Reason.Replacing)}),
    "own cluster gone: created again": Row(
        status(Phase.Provisioning, cluster=CLUSTER), seen(None), Phase.Provisioning,
        actions=(CreateCluster,)),
    "shared cluster missing": Row(
        status(), seen(None), Phase.Pending, spec=spec(rayClusterName="shared"),
        conditions={C.Provisioned: (False, Reason.RayClusterNotFound)}),
    "shared cluster missing past pendingTimeout": Row(
        status(start_time=ago(301)), seen(None), Phase.Failed, spec=spec(rayClusterName="shared"),
        conditions={C.Failed: (True, Reason.RayClusterNotFound)}, actions=(LeaveLines, ReleaseAdmission)),
    # -------------------------------------------------------------- submission
    "ready cluster, slot free: submit": Row(
        status(Phase.Provisioning, cluster=CLUSTER), seen(ready(), job_slot=Slot(True, 8)),
        Phase.Provisioning, actions=(TakeJobSlot, SubmitJob),
        conditions={C.Provisioned: (True, Reason.RayClusterReady), C.JobSubmitted: (False, Reason.Submitting)},
        check=lambda a, acts: (acts[0] == TakeJobSlot(HEAD, SID1)
                               and acts[1].request["submission_id"] == SID1 and a.job_id is None)),
    "ready cluster, job slots full: queued": Row(
        status(Phase.Provisioning, cluster=CLUSTER), seen(ready(), job_slot=Slot(False, 8)),
        Phase.Provisioning, conditions={C.JobSubmitted: (False, Reason.Queued)},
        actions=(QueueForJobSlot,),
        check=lambda a, acts: "8 job slots" in a.message and acts == [QueueForJobSlot(HEAD)]),
    "queued for a job slot before any read": Row(
        status(cluster=CLUSTER, conditions={C.Provisioned: (True, Reason.RayClusterReady, 9)}),
        Observed(store=True, job_slot=Slot(False, 8)), Phase.Pending,
        conditions={C.JobSubmitted: (False, Reason.Queued)}, actions=(QueueForJobSlot,)),
    "job found that status does not name (submitted before a restart): reattach": Row(
        status(Phase.Provisioning, cluster=CLUSTER), seen(ready(), job=job("RUNNING")), Phase.Running,
        conditions={C.JobSubmitted: (True, Reason.JobRunning)},
        check=lambda a, acts: a.job_id == SID1 and a.dashboard_url == HEAD and not acts),
    "running job mirrors progress": Row(
        RUNNING, seen(ready(), job=job("RUNNING"),
                      progress=ProgressDocument(_id="u1:1", done=250, total=1000)), Phase.Running,
        check=lambda a, _: (a.progress.done, a.progress.percent) == (250, "25%")),
    # -------------------------------------------------------------- endings
    "succeeded with its document": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc()), Phase.Succeeded,
        conditions={C.Complete: (True, Reason.Succeeded), C.Failed: (False, Reason.Succeeded)},
        actions=(ReleaseJobSlot, LeaveLines, DeleteCluster, ReleaseAdmission),
        check=lambda a, _: (a.metrics == {"ndcg@10": 0.81234, "map": 0.7}
                            and a.primary_metric == "ndcg@10=0.8123" and a.results_ref.id == "u1:1"
                            and a.progress.percent == "100%" and a.completion_time == NOW)),
    "succeeded, cluster kept": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc()), Phase.Succeeded,
        spec=spec(keepCluster=True), actions=(ReleaseJobSlot, LeaveLines, ReleaseAdmission)),
    "succeeded with a baseline and gate": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc(
            baseline={"metrics": {"ndcg@10": 0.8}, "deltas": {"ndcg@10": 0.01234}},
            gate={"passed": False, "rules": []})), Phase.Succeeded,
        check=lambda a, _: a.baseline.deltas == {"ndcg@10": 0.01234} and a.baseline.gate_passed is False),
    "succeeded with warnings: status carries them, at most 10 of 256 characters": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc(
            warnings=["spec.resources.gpu asks for a GPU, but " + "x" * 1000]
            + [f"w{i}" for i in range(20)])), Phase.Succeeded,
        check=lambda a, _: (len(a.warnings) == 10 and len(a.warnings[0]) == 256
                            and a.warnings[0].startswith("spec.resources.gpu asks for a GPU")
                            and a.warnings[0].endswith("...") and a.warnings[1:] == [
                                f"w{i}" for i in range(9)])),
    "succeeded with its report: status points to it": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc(
            report_uri="s3://data/modeleval-reports/ns/ev-u1-1.html")), Phase.Succeeded,
        conditions={C.Complete: (True, Reason.Succeeded),
                    C.ReportWritten: (True, Reason.ReportWritten)},
        check=lambda a, acts: (a.report_uri == "s3://data/modeleval-reports/ns/ev-u1-1.html"
                               and not any(isinstance(e, Emit) for e in acts))),
    "succeeded, its report not written: still Succeeded, a warning condition says why": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc(
            report_error="s3://nobucket/r/ev-u1-1.html: no such bucket")), Phase.Succeeded,
        conditions={C.Complete: (True, Reason.Succeeded),
                    C.ReportWritten: (False, Reason.ReportNotWritten)},
        check=lambda a, acts: (
            a.report_uri is None and a.metrics == {"ndcg@10": 0.81234, "map": 0.7}
            and a.condition(C.ReportWritten).message
            == "the report was not written: s3://nobucket/r/ev-u1-1.html: no such bucket"
            and any(isinstance(e, Emit) and e.reason == Reason.ReportNotWritten and e.warning
                    for e in acts))),
    "succeeded with reports off: no report, no report condition": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc()), Phase.Succeeded,
        check=lambda a, _: a.report_uri is None and a.condition(C.ReportWritten) is None),
    "succeeded, its data drifted: DataDrift=True names the most drifted, a Warning Event": Row(
        RUNNING, finished_with(DRIFTED), Phase.Succeeded,
        conditions={C.Complete: (True, Reason.Succeeded), C.DataDrift: (True, Reason.DataDrifted)},
        check=drift_told),
    "succeeded, its data did not drift: DataDrift=False, no Event": Row(
        RUNNING, finished_with(STEADY), Phase.Succeeded,
        conditions={C.Complete: (True, Reason.Succeeded), C.DataDrift: (False, Reason.NoDataDrift)},
        check=lambda a, acts: (
            not a.drift.drifted and a.drift.drifted_share == 0 and a.drift.most_drifted == []
            and a.condition(C.DataDrift).message == "the data did not drift from evaluation "
            "weekly-1: 0 of 8 features drifted (0%)" and not any(isinstance(e, Emit) for e in acts))),
    "succeeded without a reference: no drift, no DataDrift condition": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc()), Phase.Succeeded,
        check=lambda a, acts: (a.drift is None and a.condition(C.DataDrift) is None
                               and not any(isinstance(e, Emit) for e in acts))),
    "failed for good (not retryable)": Row(
        RUNNING, seen(ready(), job=job("FAILED", 1), document=doc(ok=False)), Phase.Failed,
        conditions={C.Failed: (True, Reason.SchemaMismatch)},
        actions=(ReleaseJobSlot, LeaveLines, DeleteCluster, ReleaseAdmission),
        check=lambda a, _: "not retried: SchemaMismatch" in a.message),
    "retryable failure retried with backoff": Row(
        RUNNING, seen(ready(), job=job("FAILED", 1),
                      document=doc(ok=False, reason=Reason.StorageUnavailable, retryable=True)),
        Phase.Pending, check=retried(2, 10)),
    "crash without a document retried, backoff doubles": Row(
        status(Phase.Running, attempt=2, cluster=CLUSTER, job=SID2),
        seen(ready(), job=job("FAILED", 1, sid=SID2)), Phase.Pending,
        check=lambda a, acts: retried(3, 20)(a, acts) is None and a.reason == Reason.JobFailed),
    "crash with no retries left": Row(
        status(Phase.Running, attempt=3, cluster=CLUSTER, job=submission_id("u1", 3)),
        seen(ready(), job=job("FAILED", 1, sid=submission_id("u1", 3))), Phase.Failed,
        conditions={C.Failed: (True, Reason.JobFailed)},
        actions=(ReleaseJobSlot, LeaveLines, DeleteCluster, ReleaseAdmission)),
    "stopped from outside": Row(
        RUNNING, seen(ready(), job=job("STOPPED", 1)), Phase.Failed,
        conditions={C.Failed: (True, Reason.Cancelled)},
        actions=(ReleaseJobSlot, LeaveLines, DeleteCluster, ReleaseAdmission)),
    # -------------------------------------------------------------- results store outages
    "store down when the job ended": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 60), store_error="timed out"), Phase.Running,
        conditions={C.Complete: (False, Reason.ResultsStoreUnavailable)}, actions=(ReleaseJobSlot,)),
    "store down past resultsStoreTimeout: metrics from the job's log kept in status": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 3601), store_error="timed out", logged=doc()),
        Phase.Failed, conditions={C.Failed: (True, Reason.ResultsStoreUnavailable)},
        check=lambda a, _: a.metrics["map"] == 0.7 and "metrics are in status" in a.message),
    "store back, result only in the job's log: stored from it": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 60), logged=doc()), Phase.Running,
        actions=(ReleaseJobSlot, StoreLogged),
        conditions={C.Complete: (False, Reason.ResultsStoreUnavailable)}),
    "job succeeded, its document never written": Row(
        RUNNING, seen(ready(), job=job("SUCCEEDED", 301)), Phase.Failed,
        conditions={C.Failed: (True, Reason.ResultsStoreUnavailable)},
        actions=(ReleaseJobSlot, LeaveLines, DeleteCluster, ReleaseAdmission)),
    # -------------------------------------------------------------- deadline, suspend, resume
    "deadline passed while running": Row(
        status(Phase.Running, cluster=CLUSTER, job=SID1, start_time=ago(601)),
        seen(ready(), job=job("RUNNING")), Phase.Failed, spec=spec(activeDeadlineSeconds=600),
        conditions={C.Failed: (True, Reason.DeadlineExceeded)},
        actions=(ReleaseJobSlot, StopJob, LeaveLines, DeleteCluster, ReleaseAdmission)),
    "suspended while running": Row(
        RUNNING, seen(ready()), Phase.Pending, spec=spec(suspend=True),
        conditions={C.Suspended: (True, Reason.Suspended)},
        actions=(ReleaseJobSlot, StopJob, LeaveLines, DeleteCluster, ReleaseAdmission),
        check=lambda a, _: a.job_id is None and a.ray_cluster is None and a.message == "suspended"),
    "still suspended: nothing more to stop or delete": Row(
        status(conditions={C.Suspended: (True, Reason.Suspended, 30)}), Observed(store=True),
        Phase.Pending, spec=spec(suspend=True), actions=(LeaveLines, ReleaseAdmission)),
    "resumed: a fresh attempt asks for a cluster again": Row(
        status(conditions={C.Suspended: (True, Reason.Suspended, 30)}),
        Observed(store=True, admission=Slot(True)), Phase.Provisioning,
        conditions={C.Suspended: (False, Reason.Resumed)}, actions=(TakeClusterSlot, CreateCluster),
        check=lambda a, _: a.attempt == 2),
    "waiting out a retry's backoff": Row(
        status(attempt=2, next_retry_time=NOW + timedelta(seconds=5)), Observed(store=True),
        Phase.Pending, check=lambda a, acts: a.next_retry_time is not None and not acts),
    "backoff over: the retry gets a cluster": Row(
        status(attempt=2, next_retry_time=ago(1)), Observed(store=True, admission=Slot(True)),
        Phase.Provisioning, actions=(TakeClusterSlot, CreateCluster),
        check=lambda a, _: a.next_retry_time is None),
    # -------------------------------------------------------------- a lost Ray head
    "head replaced, job gone, no document: recorded and retried on a fresh cluster": Row(
        RUNNING, seen(ready()), Phase.Pending,
        conditions={C.JobSubmitted: (False, Reason.RayHeadLost), C.Provisioned: (False, Reason.RayHeadLost)},
        actions=(ReleaseJobSlot, RecordFailure, LeaveLines, DeleteCluster, ReleaseAdmission, Emit),
        check=lambda a, acts: (retried(2, 10)(a, acts) is None and a.ray_cluster is None
                               and acts[1].document.reason == Reason.RayHeadLost
                               and acts[1].document.retryable)),
    "head replaced after the job wrote its result: succeeds": Row(
        RUNNING, seen(ready(), document=doc()), Phase.Succeeded,
        actions=(ReleaseJobSlot, LeaveLines, DeleteCluster, ReleaseAdmission)),
    "head replaced, no retries left": Row(
        status(Phase.Running, attempt=3, cluster=CLUSTER, job=submission_id("u1", 3)), seen(ready()),
        Phase.Failed, conditions={C.Failed: (True, Reason.RayHeadLost)},
        actions=(ReleaseJobSlot, RecordFailure, LeaveLines, DeleteCluster, ReleaseAdmission)),
    "Jobs API silent for a while": Row(
        RUNNING, seen(ready(), jobs_error="connection refused"), Phase.Running,
        conditions={C.JobSubmitted: (False, Reason.RayUnavailable)}),
    "Jobs API silent past headLostTimeout": Row(
        status(Phase.Running, cluster=CLUSTER, job=SID1,
               conditions={C.Provisioned: (True, Reason.RayClusterReady, 900),
                           C.JobSubmitted: (False, Reason.RayUnavailable, 601)}),
        seen(ready(), jobs_error="connection refused"), Phase.Pending, check=retried(2, 10)),
    "cluster not ready past headLostTimeout while its job ran": Row(
        status(Phase.Running, cluster=CLUSTER, job=SID1,
               conditions={C.Provisioned: (False, Reason.Provisioning, 601)}),
        seen(RayClusterView(CLUSTER, "c1", created=ago(900))), Phase.Pending,
        conditions={C.Provisioned: (False, Reason.RayHeadLost)}, check=retried(2, 10)),
    "cluster briefly not ready while its job ran": Row(
        status(Phase.Running, cluster=CLUSTER, job=SID1,
               conditions={C.Provisioned: (False, Reason.Provisioning, 30)}),
        seen(RayClusterView(CLUSTER, "c1", created=ago(900))), Phase.Running),
    "finished evaluations are left alone": Row(
        status(Phase.Succeeded), seen(ready(), job=job("FAILED", 1)), Phase.Succeeded),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_transition(name: str) -> None:
    row = ROWS[name]
    before = row.before.model_copy(deep=True)
    after, actions = decide(EV, row.spec, row.before, row.observed, NOW, SETTINGS)
    assert row.before == before, "decide changed its input"
    assert after.phase == row.phase, after.message
    for type_, expected in row.conditions.items():
        assert condition_of(after, type_) == expected, type_
    if row.actions or not row.check:
        assert tuple(type(a) for a in actions) == row.actions
    if row.check is not None:
        assert row.check(after, actions) is not False
    if not row.before.phase.terminal:
        assert after.observed_generation == EV.generation
    if after.phase.terminal and not row.before.phase.terminal:
        # Whatever ends an evaluation frees its cluster slot and its place in every line.
        assert ReleaseAdmission() in actions and any(isinstance(a, LeaveLines) for a in actions)


def test_only_a_labelled_suspended_cluster_is_held_by_kueue() -> None:
    assert HELD.held and HELD.queue == "team-a"
    admitted = RayClusterView.of({"metadata": {"name": CLUSTER, "labels": {
        "kueue.x-k8s.io/queue-name": "team-a"}}, "spec": {"suspend": False}})
    assert not admitted.held and admitted.queue == "team-a"
    # Suspended by someone else (no queue label): not Kueue's, so no Queued condition.
    own = RayClusterView.of({"metadata": {"name": CLUSTER}, "spec": {"suspend": True}})
    assert not own.held and own.queue is None


def test_decide_is_repeatable() -> None:
    """The same round decided twice gives the same answer (nothing hidden in between)."""
    for row in ROWS.values():
        first = decide(EV, row.spec, row.before, row.observed, NOW, SETTINGS)
        assert decide(EV, row.spec, row.before, row.observed, NOW, SETTINGS) == first


def test_condition_transition_time_moves_only_when_its_value_changes() -> None:
    s = status(conditions={C.Provisioned: (False, Reason.Creating, 40)})
    after, _ = decide(EV, spec(), s, seen(RayClusterView(CLUSTER, "c1")), NOW, SETTINGS)
    provisioned = after.condition(C.Provisioned)
    assert provisioned.reason == Reason.Provisioning and provisioned.last_transition_time == ago(40)
    after, _ = decide(EV, spec(), after, seen(ready(), job_slot=Slot(True)), NOW, SETTINGS)
    assert after.condition(C.Provisioned).last_transition_time == NOW
    assert [c.type for c in after.conditions] == [C.Provisioned, C.JobSubmitted]


WANTS = {
    "first round: only the cluster slot": (ModelEvaluationStatus(), spec(), Wants(admission=True)),
    "shared cluster: its cluster and job": (status(), spec(rayClusterName="shared"),
                                            Wants(cluster=True, job=True)),
    "waiting for a job slot: the slot before any read": (
        status(cluster=CLUSTER, conditions={C.Provisioned: (True, Reason.RayClusterReady, 9)}), spec(),
        Wants(job_slot=True, cluster=True, job=True)),
    "running": (RUNNING, spec(), Wants(cluster=True, job=True)),
    "suspending a running job: its cluster, to reach the job": (RUNNING, spec(suspend=True),
                                                                Wants(cluster=True)),
    "suspended: nothing": (status(conditions={C.Suspended: (True, Reason.Suspended, 9)}),
                           spec(suspend=True), Wants()),
    "waiting out a backoff: nothing": (status(attempt=2, next_retry_time=NOW + timedelta(seconds=9)),
                                       spec(), Wants()),
    "finished: nothing": (status(Phase.Failed), spec(), Wants()),
    "invalid: nothing": (ModelEvaluationStatus(), InvalidSpec("x"), Wants()),
    "invalid while running: its cluster, to stop the job": (RUNNING, InvalidSpec("x"), Wants(cluster=True)),
}


@pytest.mark.parametrize("name", list(WANTS))
def test_plan_reads_only_what_the_round_needs(name: str) -> None:
    before, spec_, wanted = WANTS[name]
    assert plan(EV, spec_, before, NOW) == wanted


@pytest.mark.parametrize("conditions, state, expected", [
    ([("RayClusterProvisioned", "True"), ("HeadPodReady", "True")], "ready", True),
    ([("RayClusterProvisioned", "True"), ("HeadPodReady", "False")], "ready", False),  # head went
    ([("RayClusterProvisioned", "False"), ("HeadPodReady", "True")], None, False),  # workers pending
    ([], "ready", True),  # a KubeRay without status conditions
    ([], None, False),
])
def test_readiness_comes_from_kuberay_conditions(conditions, state, expected) -> None:
    obj = {"status": {"conditions": [{"type": t, "status": v} for t, v in conditions],
                      **({"state": state} if state else {})}}
    assert kuberay_ready(obj) is expected


def test_cluster_view_reads_auth_and_deletion_from_one_object() -> None:
    obj = {"metadata": {"name": "c", "uid": "9", "creationTimestamp": "2026-11-22T11:00:00Z",
                        "deletionTimestamp": "2026-11-22T11:59:00Z"},
           "spec": {"authOptions": {"mode": "token", "secretName": "c-auth"}}}
    view = RayClusterView.of(obj)
    assert (view.uid, view.token_secret, view.deleting) == ("9", "c-auth", True)
    assert view.created == datetime(2026, 11, 22, 11, 0, tzinfo=timezone.utc)
    assert RayClusterView.of({"metadata": {"name": "c"}}).token_secret is None


def test_file_uris_are_refused_naming_the_field() -> None:
    raw = spec().model_dump(by_alias=True, exclude_none=True)
    raw["dataset"]["uri"] = "file:///tmp/x.txt"
    refused = parse_spec(raw, SETTINGS)
    assert isinstance(refused, InvalidSpec) and refused.message.startswith("spec.dataset.uri: file://")
    assert isinstance(parse_spec({"task": "ranking"}, SETTINGS), InvalidSpec)


@pytest.mark.parametrize("extra, settings, refused", [
    ({"rayImage": "evil/ray:1"}, {}, "spec.rayImage: evil/ray:1 is not an allowed Ray image"),
    ({"rayImage": "modeleval/ray:0.1.0"}, {}, None),  # the chart's own
    ({"rayImage": "registry.local/ray:2"}, {"allowed_ray_images": ["registry.local/*"]}, None),
    ({"model": {"uri": "s3://models/m.pkl", "format": "pickle", "allowPickle": True}}, {},
     "spec.model.format: pickle models run code"),
    ({"model": {"uri": "s3://models/m.pkl", "format": "pickle", "allowPickle": True}},
     {"allow_pickle": True}, None),
    ({"baseline": {"model": {"uri": "s3://models/b.pkl", "format": "pickle", "allowPickle": True}}},
     {}, "spec.baseline.model.format: pickle"),
    ({"resources": {"workers": 4, "gpu": 5}}, {}, "spec.resources.gpu: 4 worker(s) x 5 GPU(s)"),
    ({"resources": {"memory": "300Gi"}}, {}, "spec.resources.memory: 300Gi is above"),
    ({"resources": {"headMemory": "1Ti"}}, {"max_worker_memory": "512Gi"}, "spec.resources.headMemory"),
    ({"resources": {"workers": 500, "memory": "1Ti"}},
     {"max_workers": 0, "max_worker_memory": ""}, None),  # limits off
])
def test_the_operator_policy_bounds_what_a_tenant_may_ask(extra, settings, refused) -> None:
    raw = {**spec().model_dump(by_alias=True, exclude_none=True), **extra}
    answer = parse_spec(raw, OperatorSettings(**{**SETTINGS.model_dump(), **settings}, _env_file=None))
    if refused is None:
        assert isinstance(answer, ModelEvaluationSpec)
    else:
        assert isinstance(answer, InvalidSpec) and answer.reason == Reason.Forbidden
        assert answer.message.startswith(refused), answer.message


def test_a_result_cannot_grow_the_status() -> None:
    """Only the metrics the spec asked for reach status, and messages are cut at 1 KiB."""
    extra = {f"junk{i}": float(i) for i in range(1000)}
    big = doc(metrics={"ndcg@10": 0.8, "map": 0.7, **extra},
              baseline={"metrics": {}, "deltas": {"ndcg@10": 0.1, **extra}})
    after, _ = decide(EV, spec(), RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=big),
                      NOW, SETTINGS)
    assert after.metrics == {"ndcg@10": 0.8, "map": 0.7} and after.baseline.deltas == {"ndcg@10": 0.1}
    failed = doc(ok=False).model_copy(update={"message": "x" * 100_000})
    after, _ = decide(EV, spec(), RUNNING, seen(ready(), job=job("FAILED", 1), document=failed),
                      NOW, SETTINGS)
    assert after.phase == Phase.Failed and len(after.message) <= st.MESSAGE_LIMIT
    assert all(len(c.message) <= st.MESSAGE_LIMIT for c in after.conditions)
    assert after.message.endswith("[truncated]")


def test_a_drift_of_many_long_named_features_cannot_grow_the_status() -> None:
    """Whatever a document compared (10,000 features, names of 500 characters, a long
    reference), status.drift and the DataDrift message stay within their bounds."""
    wide = data_drift(("2", "5", "7")).model_dump(by_alias=True)
    template = wide["features"][1]  # a drifted feature's measures
    wide["features"] = [{**template, "name": f"{i:04d}" + "x" * 500, "psi": float(i)}
                        for i in range(10_000)]
    wide["reference"] = "s3://data/" + "r" * 2000
    wide["driftedShare"] = 1.0
    drift = DataDriftStatus.of(wide)
    assert drift.drifted_features == drift.features == 10_000
    assert [f.name[:4] for f in drift.most_drifted] == ["9999", "9998", "9997", "9996", "9995"]
    assert all(len(f.name) == 64 and f.name.endswith("...") for f in drift.most_drifted)
    assert len(drift.reference) == 256
    assert drift.describe().endswith("and 9995 more")
    after, _ = decide(EV, spec(), RUNNING, seen(ready(), job=job("SUCCEEDED", 1), document=doc(),
                                                drift=drift), NOW, SETTINGS)
    assert len(after.condition(C.DataDrift).message) <= st.MESSAGE_LIMIT
    assert len(after.model_dump_json(by_alias=True)) < 4_000


def test_the_drift_status_needs_only_each_features_name_psi_and_verdict() -> None:
    """What the operator's read leaves of a document's drift (its other measures stay in
    MongoDB) gives the status the whole drift gives; a feature without a finite PSI is counted
    but not listed (JSON has no NaN)."""
    full = DRIFTED.model_dump(by_alias=True)
    trimmed = {**full, "features": [{key: feature[key] for key in ("name", "psi", "drifted")}
                                    for feature in full["features"]]}
    assert DataDriftStatus.of(trimmed) == DataDriftStatus.of(full)
    trimmed["features"][1]["psi"] = float("nan")
    odd = DataDriftStatus.of(trimmed)
    assert odd.drifted_features == 3 and "2" not in [f.name for f in odd.most_drifted]
    with pytest.raises(ValueError, match="psi"):
        DataDriftStatus.of({**full, "features": [{"name": "1", "drifted": True}]})


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_the_job_carries_the_platforms_pickle_permission_only_when_the_policy_grants_it(
        allow_pickle) -> None:
    settings = SETTINGS.model_copy(update={"allow_pickle": allow_pickle})
    _, actions = decide(EV, spec(), status(Phase.Provisioning, cluster=CLUSTER),
                        seen(ready(), job_slot=Slot(True, 8)), NOW, settings)
    submit = next(a for a in actions if isinstance(a, SubmitJob))
    assert submit.request["entrypoint"].endswith(" --allow-pickle") is allow_pickle


@pytest.mark.parametrize("reports", [True, False])
def test_the_job_writes_no_report_only_when_the_platform_turned_reports_off(reports) -> None:
    settings = SETTINGS.model_copy(update={"reports": reports})
    _, actions = decide(EV, spec(), status(Phase.Provisioning, cluster=CLUSTER),
                        seen(ready(), job_slot=Slot(True, 8)), NOW, settings)
    submit = next(a for a in actions if isinstance(a, SubmitJob))
    assert (" --no-report" in submit.request["entrypoint"]) is not reports


def test_a_schedules_child_submits_its_schedule_to_the_runner() -> None:
    import io
    import zipfile

    import yaml

    child = Evaluation(name="nightly-1", namespace="ns", uid="u1", generation=3, schedule="nightly")
    _, actions = decide(child, spec(), status(Phase.Provisioning, cluster=CLUSTER),
                        seen(ready(), job_slot=Slot(True, 8)), NOW, SETTINGS)
    submit = next(a for a in actions if isinstance(a, SubmitJob))
    with zipfile.ZipFile(io.BytesIO(submit.package.data)) as archive:
        manifest = yaml.safe_load(archive.read("manifest.yaml"))
    assert manifest["metadata"]["labels"] == {"modeleval.dev/schedule": "nightly"}
