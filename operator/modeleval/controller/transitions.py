"""The transitions of one round, in the order a round meets them: suspended, past its
deadline, waiting out a backoff, refused, queued for a slot; then the RayCluster (create it,
wait for it, lose it), the Ray job (queue for a slot, submit it, reattach to it, mirror it) and
how the attempt ends (succeeded, retried, failed; its result store down; its head lost).

Each is a function of a :class:`~.draft.DecisionDraft`: it reads what the round observed and
writes the draft's status and actions. :func:`.decide.decide` runs them; nothing here does I/O.
"""

from __future__ import annotations

from datetime import datetime

from ..api.reasons import Reason
from ..api.results import ResultDocument, submission_id
from ..api.status import (BaselineStatus, ConditionType, DataDriftStatus, Phase, ResultsRef,
                          capped_warnings)
from . import status as st
from .actions import (CreateCluster, Emit, QueueForClusterSlot, QueueForJobSlot, RecordFailure,
                      ReleaseJobSlot, StoreLogged, SubmitJob, TakeClusterSlot, TakeJobSlot)
from .builders import (build_job_submission, build_network_policy, build_raycluster, cluster_name,
                       head_url, job_package)
from .draft import DecisionDraft
from .rayjobs import JobInfo
from .promotion import promotion_settled
from .resolution import models_resolved, with_resolved

JOB_REASONS = {"PENDING": Reason.JobPending, "RUNNING": Reason.JobRunning,
               "SUCCEEDED": Reason.JobSucceeded, "FAILED": Reason.JobFailed,
               "STOPPED": Reason.JobStopped}


def run_round(draft: DecisionDraft) -> None:
    """The story of a round of a live evaluation with a valid spec."""
    spec, status, observed = draft.spec, draft.status, draft.observed
    if spec.suspend:
        return suspend(draft)
    if st.deadline_passed(status, spec.active_deadline_seconds, draft.now):
        draft.stop_job("activeDeadlineSeconds exceeded")
        return draft.fail(Reason.DeadlineExceeded, "the evaluation ran longer than "
                          f"activeDeadlineSeconds={spec.active_deadline_seconds}")
    if status.next_retry_time:
        return None
    if observed.refused is not None:  # a 4xx other than a conflict: a retry would be refused too
        return draft.fail(Reason.CreateRefused, observed.refused)
    if not models_resolved(draft):
        return None
    if not admitted(draft):
        return None
    if observed.job_slot is not None and not observed.job_slot.available:
        return queue_for_job_slot(draft)
    if cluster_ready(draft):
        job_stage(draft)
    return None


def admitted(draft: DecisionDraft) -> bool:
    """Takes the cluster slot the round saw free, or queues for one; True unless queued. (A
    round that did not look at the cluster slots is past them.)"""
    admission = draft.observed.admission
    if admission is None:
        return True
    if admission.available:
        draft.actions.append(TakeClusterSlot())
        return True
    draft.actions.append(QueueForClusterSlot(admission.scope))
    if admission.scope == "namespace":
        draft.queued(ConditionType.Provisioned, f"waiting for one of namespace "
                     f"{draft.ev.namespace}'s {admission.limit} cluster slots "
                     "(policy.maxActivePerNamespace; oldest first)")
    else:
        draft.queued(ConditionType.Provisioned, f"waiting for one of the operator's "
                     f"{admission.limit} cluster slots (operator.maxActiveEvaluations;"
                     " namespaces holding fewer first, then oldest)")
    return False


def job_head(draft: DecisionDraft) -> str:
    """The Ray head whose job slots the attempt's job takes."""
    cluster = draft.spec.ray_cluster_name or draft.status.ray_cluster or ""
    return head_url(cluster, draft.ev.namespace, draft.settings)


def queue_for_job_slot(draft: DecisionDraft) -> None:
    job_slot = draft.observed.job_slot
    if job_slot is not None:
        draft.actions.append(QueueForJobSlot(job_head(draft)))
    limit = job_slot.limit if job_slot else 0
    draft.queued(ConditionType.JobSubmitted, f"waiting for one of the {limit} job slots on "
                 f"RayCluster {draft.status.ray_cluster} (oldest first)")


def suspend(draft: DecisionDraft) -> None:
    status = draft.status
    draft.stop_job("the evaluation was suspended")
    status.job_id = None
    draft.leave_lines()
    draft.release_cluster()
    if draft.own_cluster:
        status.ray_cluster = None  # deleted: a resumed evaluation asks for a cluster again
    if status.ray_cluster and not draft.spec.ray_cluster_name:  # kept: admitted again on resume
        draft.condition(ConditionType.Provisioned, False, Reason.Suspended,
                        f"RayCluster {status.ray_cluster} is kept (keepCluster) while suspended")
    status.phase, status.progress, status.message = Phase.Pending, None, "suspended"
    draft.condition(ConditionType.Suspended, True, Reason.Suspended,
                    "spec.suspend is true: the Ray job is stopped and the cluster released")


def cluster_ready(draft: DecisionDraft) -> bool:
    """Creates or waits for the RayCluster; True once it is ready for the job."""
    spec, status, observed = draft.spec, draft.status, draft.observed
    name = spec.ray_cluster_name or status.ray_cluster or cluster_name(draft.ev.name, status.attempt)
    if not observed.cluster_read or (observed.cluster is None and not spec.ray_cluster_name):
        # Never created (or gone): create it. A round before a restart may have created it
        # already; the create then finds it, and the next round reads it.
        create_cluster(draft, name)
        return False
    cluster = observed.cluster
    if cluster is None:
        text = f"spec.rayClusterName: RayCluster {name} does not exist"
        draft.condition(ConditionType.Provisioned, False, Reason.RayClusterNotFound, text)
        if draft.waited(status.start_time, draft.pending_timeout):
            draft.fail(Reason.RayClusterNotFound, text)
        return False
    if cluster.deleting:
        # The previous attempt's cluster (same name) is still going: the fresh one after it.
        draft.condition(ConditionType.Provisioned, False, Reason.Replacing,
                        f"waiting for the previous RayCluster {name} to be deleted")
        return False
    status.ray_cluster = name
    if cluster.held and not status.job_id:
        queued_in_kueue(draft, name, cluster.queue or "")
        return False
    admitted_by_kueue(draft, name)
    if cluster.ready:
        draft.condition(ConditionType.Provisioned, True, Reason.RayClusterReady,
                        f"RayCluster {name} is ready")
        return True
    if status.job_id and draft.down_too_long(ConditionType.Provisioned):
        lost(draft, f"RayCluster {name} stopped being ready while Ray job {status.job_id} ran")
        return False
    cluster_not_ready(draft, name)
    return False


def cluster_not_ready(draft: DecisionDraft, name: str) -> None:
    """Before its job starts, every not-ready state ends within pendingTimeout of this
    cluster's creation or of Kueue's admission of it (a retry's fresh cluster gets the full
    wait; a shared cluster counts from the evaluation's start), with what Kubernetes reports."""
    status, cluster = draft.status, draft.observed.cluster
    if status.phase == Phase.Pending:
        status.phase = Phase.Provisioning
    reason, text = cluster.problem or (Reason.Provisioning,
                                       f"waiting for RayCluster {name} to be ready")
    draft.condition(ConditionType.Provisioned, False, reason, text)
    admitted = admitted_at(draft)
    since = max((moment for moment in (cluster.created, status.start_time, admitted) if moment),
                default=None)
    if not status.job_id and draft.waited(since, draft.pending_timeout):
        if cluster.problem is None:
            event = "Kueue admitted it" if admitted and admitted == since else "it was created"
            reason, text = Reason.PodsNotReady, (f"RayCluster {name} was not ready "
                                                 f"{draft.pending_timeout:.0f}s after {event}")
        draft.fail(reason, text)


def queued_in_kueue(draft: DecisionDraft, name: str, queue: str) -> None:
    """Kueue holds the RayCluster (suspended, no pod) until it admits all of it: the evaluation
    is Queued, not Unschedulable, and no pending timeout runs (the queue may be long)."""
    text = (f"RayCluster {name} waits in Kueue LocalQueue {queue} to be admitted whole "
            "(`kubectl get workloads` shows why it waits)")
    if not draft.status.is_true(ConditionType.Queued):
        draft.actions.append(Emit(Reason.QueuedInKueue, text))
    draft.status.phase, draft.status.message = Phase.Pending, text
    draft.condition(ConditionType.Queued, True, Reason.QueuedInKueue, text)
    draft.condition(ConditionType.Provisioned, False, Reason.QueuedInKueue, text)


def admitted_by_kueue(draft: DecisionDraft, name: str) -> None:
    """The RayCluster Kueue held is released: Queued turns False, and its transition time is
    when the pending timeout starts counting."""
    if draft.status.is_true(ConditionType.Queued):
        text = f"Kueue admitted RayCluster {name}"
        draft.status.phase = Phase.Provisioning
        draft.actions.append(Emit(Reason.AdmittedByKueue, text))
        draft.condition(ConditionType.Queued, False, Reason.AdmittedByKueue, text)


def admitted_at(draft: DecisionDraft) -> datetime | None:
    """When Kueue admitted the current RayCluster (None: it was never queued)."""
    queued = draft.status.condition(ConditionType.Queued)
    return queued.last_transition_time if queued is not None and not queued.true else None


def create_cluster(draft: DecisionDraft, name: str) -> None:
    ev, spec, status = draft.ev, draft.spec, draft.status
    resources = spec.resources
    draft.actions.append(CreateCluster(
        build_raycluster(ev.name, ev.namespace, ev.uid, spec, draft.settings, cluster=name),
        f"RayCluster {name} created with {resources.workers} worker(s) of cpu={resources.cpu} "
        f"memory={resources.memory} gpu={resources.gpu}",
        build_network_policy(name, ev.name, ev.namespace, ev.uid, draft.settings)))
    status.ray_cluster = name
    status.phase = Phase.Provisioning
    status.message = f"created RayCluster {name}"
    draft.condition(ConditionType.Provisioned, False, Reason.Creating,
                    f"RayCluster {name} created")


def job_stage(draft: DecisionDraft) -> None:
    """The attempt's Ray job on a ready cluster: queued, submitted, found, or lost."""
    status, observed = draft.status, draft.observed
    sid = submission_id(draft.ev.uid, status.attempt)
    if observed.jobs_error is not None:
        draft.condition(ConditionType.JobSubmitted, False, Reason.RayUnavailable,
                        observed.jobs_error)
        if status.job_id == sid and draft.down_too_long(ConditionType.JobSubmitted):
            lost(draft, f"the Ray head of RayCluster {status.ray_cluster} did not answer for "
                 f"{draft.settings.head_lost_timeout:.0f}s while job {sid} ran: "
                 f"{observed.jobs_error}")
        return None
    job = observed.job
    if job is None and status.job_id == sid:
        # The head accepted this job and no longer knows it: the head pod was replaced (Ray
        # keeps its job table in the head's memory). Never resubmitted onto it; the result
        # document says whether the job ended before its head went.
        job = _ended_before_head_lost(observed.document, sid)
        if job is None:
            return lost(draft, f"the Ray head of RayCluster {status.ray_cluster} lost job {sid} "
                        "(its pod was replaced)")
    if job is None:
        return submit(draft, sid)
    return follow_job(draft, job, sid)


def submit(draft: DecisionDraft, sid: str) -> None:
    """Takes the job slot the round saw free and submits the attempt's job, or queues."""
    ev, status, observed = draft.ev, draft.status, draft.observed
    if observed.job_slot is None or not observed.job_slot.available:
        return queue_for_job_slot(draft)
    package = job_package(ev.name, ev.namespace, ev.uid,
                          with_resolved(draft.spec, status.resolved_models), ev.schedule)
    draft.actions.append(TakeJobSlot(job_head(draft), sid))
    draft.actions.append(SubmitJob(package, build_job_submission(
        ev.name, ev.namespace, ev.uid, status.attempt, package, draft.settings.allow_pickle,
        draft.settings.reports), status.attempt))
    status.message = f"submitting Ray job {sid}"
    return draft.condition(ConditionType.JobSubmitted, False, Reason.Submitting,
                           f"submitting Ray job {sid} (attempt {status.attempt})")


def follow_job(draft: DecisionDraft, job: JobInfo, sid: str) -> None:
    """Found: submitted by an earlier round, or before a restart (its id not yet in status)."""
    status, observed = draft.status, draft.observed
    status.job_id = sid
    status.dashboard_url = draft.head()
    status.phase = Phase.Running
    status.message = f"Ray job {sid}: {job.status}"
    draft.condition(ConditionType.JobSubmitted, True,
                    JOB_REASONS.get(job.status, Reason.JobRunning),
                    f"Ray job {sid} is {job.status}")
    if not job.finished:
        if observed.progress is not None:
            status.progress = st.progress(observed.progress.done, observed.progress.total,
                                          observed.progress.unit)
        return None
    draft.actions.append(ReleaseJobSlot(draft.head(), sid))
    return finish(draft, job)


def finish(draft: DecisionDraft, job: JobInfo) -> None:
    """The job ended: its result document decides, once the store has it."""
    observed = draft.observed
    document = observed.document
    if document is None and (observed.store_error is not None
                             or (observed.store and observed.logged is not None)):
        return result_not_stored(draft, job)
    if job.status == "SUCCEEDED" and document is not None and document.succeeded:
        return succeed(draft, document)
    if job.status == "SUCCEEDED" and document is None:
        # The runner keeps a result it could not store and writes it once the store is back.
        draft.condition(ConditionType.Complete, False, Reason.ResultsStoreUnavailable,
                        "the Ray job finished; its result document is not in MongoDB yet")
        if draft.waited(job.ended, draft.settings.pending_timeout):
            draft.fail(Reason.ResultsStoreUnavailable,
                       "the Ray job succeeded but its result never reached MongoDB")
        return None
    if job.status == "STOPPED":
        return draft.fail(Reason.Cancelled, f"Ray job {job.submission_id} was stopped")
    return attempt_failed(draft, job, document)


def result_not_stored(draft: DecisionDraft, job: JobInfo) -> None:
    """The job ended and MongoDB has no document of it: the runner printed it (stored from the
    job's log), or MongoDB does not answer (waited for, up to resultsStoreTimeout)."""
    observed, settings = draft.observed, draft.settings
    if observed.store_error is None:
        # The runner printed the document it could not store: store it; the next round
        # reads it back from MongoDB.
        draft.actions.append(StoreLogged(observed.logged))
        return draft.condition(ConditionType.Complete, False, Reason.ResultsStoreUnavailable,
                               f"Ray job {job.submission_id} {job.status.lower()}; its result "
                               "is being written to MongoDB from the job's log")
    kept = " Its result is kept in the job's log and is written when MongoDB answers." \
        if observed.logged else ""
    draft.condition(ConditionType.Complete, False, Reason.ResultsStoreUnavailable,
                    f"Ray job {job.submission_id} {job.status.lower()}; MongoDB: "
                    f"{observed.store_error}.{kept}")
    if draft.waited(job.ended, settings.results_store_timeout):
        if observed.logged and observed.logged.metrics:
            draft.status.metrics = draft.asked(observed.logged.metrics)
        draft.fail(Reason.ResultsStoreUnavailable, "MongoDB did not answer for "
                   f"{settings.results_store_timeout:.0f}s after the job ended: "
                   f"{observed.store_error}" + ("; the metrics are in status"
                                                if observed.logged else ""))
    return None


def attempt_failed(draft: DecisionDraft, job: JobInfo, document: ResultDocument | None) -> None:
    """Retried within backoffLimit when a retry can change the outcome, else failed."""
    reason = (document.reason if document else None) or Reason.JobFailed
    message = (document.message if document else None) or \
        f"Ray job {job.submission_id} failed: {job.message}"
    retryable = document.retryable if document and document.retryable is not None \
        else document is None
    attempt = draft.status.attempt
    if retryable and attempt <= draft.spec.backoff_limit:
        return draft.retry(reason, message, f"attempt {attempt} failed ({reason}: {message})")
    if not retryable:
        message = f"{message} (not retried: {reason} does not change on a retry)"
    return draft.fail(reason, message)


def succeed(draft: DecisionDraft, document: ResultDocument) -> None:
    spec, status = draft.spec, draft.status
    if not promotion_settled(draft, document):  # spec.promote: the alias first, then done
        return None
    target = spec.output.mongodb
    status.metrics = draft.asked(document.metrics)
    primary = spec.primary_metric
    if primary in status.metrics:
        status.primary_metric = f"{primary}={status.metrics[primary]:.4f}"
    status.progress = st.progress(document.rows, document.rows)
    status.results_ref = ResultsRef(database=target.database, collection=target.collection,
                                    id=document.id)
    status.predictions_uri = document.predictions_uri
    status.warnings = capped_warnings(document.warnings)
    record_report(draft, document)
    record_drift(draft, draft.observed.drift)
    if document.baseline is not None:
        status.baseline = BaselineStatus(deltas=draft.asked(document.baseline.deltas),
                                         gate_passed=document.gate.passed if document.gate
                                         else None)
    draft.leave_lines()
    draft.release_cluster()
    st.succeed(status, f"{status.primary_metric or 'done'} on {document.rows} rows",
               draft.ev.generation, draft.now)


def record_report(draft: DecisionDraft, document: ResultDocument) -> None:
    """Where the report is; a report that could not be written is a warning condition (the
    evaluation succeeded all the same). Reports turned off leave no condition."""
    draft.status.report_uri = document.report_uri
    if document.report_uri:
        draft.condition(ConditionType.ReportWritten, True, Reason.ReportWritten,
                        f"the report is at {document.report_uri}")
    elif document.report_error:
        message = f"the report was not written: {document.report_error}"
        draft.condition(ConditionType.ReportWritten, False, Reason.ReportNotWritten, message)
        draft.actions.append(Emit(Reason.ReportNotWritten, message, warning=True))


def record_drift(draft: DecisionDraft, drift: DataDriftStatus | None) -> None:
    """The data compared with spec.dataQuality.reference: status.drift, a DataDrift condition
    and, when it drifted, a Warning Event. Told by the round that succeeds, the attempt's last,
    so once per attempt. A document without drift (no reference named) sets no condition."""
    draft.status.drift = drift
    if drift is None:
        return
    message = drift.describe()
    if drift.drifted:
        draft.condition(ConditionType.DataDrift, True, Reason.DataDrifted, message)
        draft.actions.append(Emit(Reason.DataDrifted, message, warning=True))
    else:
        draft.condition(ConditionType.DataDrift, False, Reason.NoDataDrift, message)


def lost(draft: DecisionDraft, message: str) -> None:
    """The attempt's Ray head went away with its job. The attempt is recorded as failed (a
    failure document, so no attempt is missing from the results) and, within backoffLimit,
    retried on a fresh RayCluster: the old one is deleted, never reused."""
    ev, spec, status = draft.ev, draft.spec, draft.status
    reason = Reason.RayHeadLost
    if status.ray_cluster and status.job_id:
        draft.actions.append(ReleaseJobSlot(draft.head(), status.job_id))
    if draft.observed.store:
        draft.actions.append(RecordFailure(ResultDocument.failure(
            ev.uid, status.attempt, ev.name, ev.namespace, reason, message, True,
            spec.model.uri, spec.dataset.uri, finished_at=draft.now.isoformat())))
    draft.leave_lines()
    draft.release_cluster()
    if status.attempt > spec.backoff_limit:
        return draft.fail(reason, f"{message}; no retries left "
                          f"(backoffLimit={spec.backoff_limit})")
    if draft.own_cluster:
        status.ray_cluster = None  # the next attempt creates its own cluster again
        draft.condition(ConditionType.Provisioned, False, reason, message)
    draft.condition(ConditionType.JobSubmitted, False, reason, message)
    return draft.retry(reason, message, f"attempt {status.attempt} lost ({reason}: {message}) "
                       "on a fresh RayCluster")


def _ended_before_head_lost(document: ResultDocument | None, sid: str) -> JobInfo | None:
    """The job as its result document records it, when the runner wrote one before the head
    went away; None when the attempt left no document (it was cut off)."""
    if document is None:
        return None
    return JobInfo(sid, "SUCCEEDED" if document.succeeded else "FAILED",
                   "the job ended before its Ray head was replaced")
