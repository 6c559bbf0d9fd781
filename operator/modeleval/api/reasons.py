"""The one reason vocabulary: every ``status.reason``, condition reason, result document reason
and Event reason is a member of :class:`Reason`, used alike by the engine, the runner and the
controller.

Each member carries where it shows, what it means and what to do; the docs' reasons
table is generated from that (``python -m modeleval.api.reasons``) and a test fails when the
two differ.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class _Doc:
    where: str
    meaning: str
    action: str


# Where a reason shows, in the table's words.
FAILURE = "reason (Failed)"
RETRY = "reason (retried)"
PROVISIONED = "Provisioned=False"
JOB = "JobSubmitted"
COMPLETE = "Complete"
EVENT = "Event"
REPORT = "ReportWritten"


class Reason(StrEnum):
    """Why an evaluation is where it is. Values are CamelCase, as Kubernetes spells reasons."""

    def __new__(cls, value: str, where: str, meaning: str, action: str) -> "Reason":
        member = str.__new__(cls, value)
        member._value_ = value
        member.doc = _Doc(where, meaning, action)
        return member

    doc: _Doc

    # ----------------------------------------------------------------- the evaluation failed
    InvalidSpec = ("InvalidSpec", FAILURE, "the spec failed validation (or names a `file://` URI "
                   "in a cluster); the message names the field", "fix the field the message names")
    Forbidden = ("Forbidden", FAILURE, "the spec asks for more than the operator's policy "
                 "allows (an image not in `policy.allowedRayImages`, a pickle model while "
                 "`policy.allowPickle` is false, more workers, GPUs or memory than the limits); "
                 "the message names the field and the limit", "ask within the limits, or ask "
                 "the platform team to raise them")
    ModelNotFound = ("ModelNotFound", FAILURE, "no object at the model's S3 URI (or no "
                     "bucket); or, for a `models:/` URI, no such registered model, version or "
                     "alias in the MLflow registry, or a version whose artefact is not in S3",
                     "check the URI and the bucket, or the model's name, version and alias")
    RegistryNotConfigured = ("RegistryNotConfigured", FAILURE, "a `models:/` URI while the "
                             "operator has no MLflow server (`mlflow.trackingUri` unset)",
                             "use an `s3://` URI, or ask the platform team to set it")
    RegistryAccessDenied = ("RegistryAccessDenied", FAILURE, "the MLflow server refused the "
                            "namespace's credentials (HTTP 401/403), or the namespace has no "
                            "`modeleval-mlflow` Secret (`mlflow.secretName`)", "create or fix "
                            "the Secret (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, "
                            "or MLFLOW_TRACKING_TOKEN), then create the evaluation again")
    DatasetNotFound = ("DatasetNotFound", FAILURE, "no object at the dataset's S3 URI (or no "
                       "bucket)", "check the URI and the bucket")
    AccessDenied = ("AccessDenied", FAILURE, "S3 refused the credentials",
                    "check the `modeleval-s3` Secret in the namespace")
    StorageUnavailable = ("StorageUnavailable", RETRY, "the S3 endpoint did not answer",
                          "check `s3.endpoint` and the network")
    ModelLoadError = ("ModelLoadError", FAILURE, "the file is not a readable model of that format",
                      "check `model.format`; re-export the model")
    PickleRefused = ("PickleRefused", FAILURE, "a pickle without `allowPickle: true` (or a "
                     "pickle renamed)", "export to JSON/UBJSON/ONNX, or allow it for trusted files")
    DatasetParseError = ("DatasetParseError", FAILURE, "a line or column could not be parsed; "
                         "the message names it", "fix the data")
    EmptyDataset = ("EmptyDataset", FAILURE, "the dataset has no rows", "check the URI")
    SchemaMismatch = ("SchemaMismatch", FAILURE, "feature count or columns differ from what the "
                      "model expects (or from the `dataQuality.reference`'s features, which the "
                      "message names), or the objective does not fit the task",
                      "set `dataset.numFeatures`/`featureColumns`, or the right task")
    LabelError = ("LabelError", FAILURE, "labels out of range for the task (e.g. not 0/1 for "
                  "binary)", "check `task` and the label column")
    DataQualityFailed = ("DataQualityFailed", FAILURE, "a `dataQuality.rules` check with "
                         "`action: fail` did not hold on the data's profile (a missing rate, a "
                         "constant feature, a label out of range, a row or query count, a slice "
                         "value the reference never had); the message names the rule and the "
                         "features", "fix the data, or relax the rule (or make it `action: warn`)")
    ReferenceNotFound = ("ReferenceNotFound", FAILURE, "`dataQuality.reference` names an "
                         "evaluation without a recorded profile, a dataset that is not there, or "
                         "a schedule run that does not exist yet", "check the reference's name "
                         "or URI; a schedule's first run has no `previous`")
    InferenceError = ("InferenceError", FAILURE, "the model raised while predicting",
                      "check that the model and the dataset belong together")
    Unschedulable = ("Unschedulable", f"{PROVISIONED}, then {FAILURE}", "the Ray pods cannot be "
                     "placed (the scheduler's message follows) for longer than "
                     "`operator.pendingTimeoutSeconds`, or no Ray node has the requested CPU/GPU",
                     "lower `resources` or add capacity")
    PodsNotReady = ("PodsNotReady", f"{PROVISIONED}, then {FAILURE}", "the Ray pods were "
                    "created but did not start for longer than `operator.pendingTimeoutSeconds`: "
                    "an image that cannot be pulled, a missing Secret (`modeleval-s3`, "
                    "`modeleval-mongodb`), a quota that refuses the pods, a container that "
                    "keeps crashing; the message names the pod and what Kubernetes reports",
                    "fix what the message names; `kubectl describe pod` shows more")
    ResultsStoreUnavailable = ("ResultsStoreUnavailable", f"{COMPLETE}=False, then {FAILURE}",
                               "MongoDB did not take the result; the runner keeps it (spool and "
                               "job log) and it is written when the store is back",
                               "check MongoDB and the `modeleval-mongodb` Secret")
    DeadlineExceeded = ("DeadlineExceeded", FAILURE, "ran longer than `activeDeadlineSeconds`",
                        "raise it")
    Cancelled = ("Cancelled", FAILURE, "the Ray job was stopped from outside",
                 "re-create the evaluation")
    JobFailed = ("JobFailed", RETRY, "the Ray job died without recording a reason (e.g. out of "
                 "memory)", "`kubectl describe` the evaluation; raise `resources.memory`")
    RayHeadLost = ("RayHeadLost", RETRY, "the Ray head pod was replaced (deleted, evicted, "
                   "crashed) or stopped answering while the job ran: Ray keeps its jobs in the "
                   "head, so the job is gone. The attempt is recorded as failed and retried on a "
                   "fresh RayCluster", "nothing, if retries remain; otherwise check why the head "
                   "pod restarted (`kubectl describe pod`)")
    RayClusterNotFound = ("RayClusterNotFound", f"{PROVISIONED}, then {FAILURE}",
                          "`spec.rayClusterName` names no RayCluster in the namespace",
                          "create that RayCluster or fix the name")
    # ----------------------------------------------------------------- on the way
    RegistryUnavailable = ("RegistryUnavailable", "ModelResolved=False", "the MLflow server "
                           "did not answer (or answered 5xx) while the evaluation's `models:/` "
                           "URIs were resolved; asked again after a backoff (from "
                           "`operator.backoffBaseSeconds`, doubling up to its maximum)",
                           "check the MLflow server and `mlflow.trackingUri`")
    Promoting = ("Promoting", "Promoted=False", "the candidate's gate passed: the alias of "
                 "`spec.promote` is being set on its registered version (a server that did "
                 "not answer is asked again after a doubling backoff, 5 tries in all)", "wait")
    Promoted = ("Promoted", f"Promoted=True, {EVENT}", "the candidate's gate passed and its "
                "registered version got the alias of `spec.promote` (`status.promotion`); a "
                "retried round never sets it again", "-")
    PromotionFailed = ("PromotionFailed", f"Promoted=False, {EVENT}", "the gate passed but the "
                       "MLflow server did not set the alias (did not answer 5 tries, refused the "
                       "namespace's credentials, no such version); the evaluation succeeded "
                       "all the same", "set the alias by hand, or fix what the message names "
                       "and evaluate again")
    NotPromoted = ("NotPromoted", "Promoted=False", "the candidate's gate did not pass: the "
                   "alias of `spec.promote` was left where it was", "-")
    ModelResolved = ("ModelResolved", "ModelResolved=True", "every `models:/` URI was "
                     "resolved to a version and its artefact, pinned in "
                     "`status.resolvedModels`: every attempt scores those", "-")
    Queued = ("Queued", f"{PROVISIONED} or {JOB}=False", "waiting for one of "
              "`operator.maxActiveEvaluations` cluster slots, or for one of "
              "`operator.maxJobsPerHead` job slots on a shared RayCluster (oldest first)",
              "wait, or raise the limit / give it its own cluster")
    QueuedInKueue = ("QueuedInKueue", f"Queued=True, {PROVISIONED}", "the RayCluster waits in "
                     "its Kueue LocalQueue (`spec.queueName` or the chart's "
                     "`kueue.defaultQueueName`) until Kueue admits all of it; the pending "
                     "timeout does not run meanwhile", "wait, or look at the queue: `kubectl get "
                     "workloads` in the namespace says why it is not admitted")
    AdmittedByKueue = ("AdmittedByKueue", "Queued=False", "Kueue admitted the RayCluster: its "
                       "pods are created and the pending timeout counts from now", "-")
    Creating = ("Creating", PROVISIONED, "the RayCluster was just created", "wait")
    Provisioning = ("Provisioning", PROVISIONED, "KubeRay reports the RayCluster not ready yet "
                    "(its `HeadPodReady` / `RayClusterProvisioned` conditions)", "wait; "
                    "`kubectl get pods -l ray.io/cluster=NAME` shows the pods")
    Replacing = ("Replacing", PROVISIONED, "the previous attempt's RayCluster is still being "
                 "deleted; the fresh one is created after it", "wait")
    RayClusterReady = ("RayClusterReady", "Provisioned=True", "the RayCluster is ready", "-")
    RayUnavailable = ("RayUnavailable", f"{JOB}=False", "the Ray head's Jobs API did not answer; "
                      "after `operator.headLostTimeoutSeconds` a running job counts as lost",
                      "check the head pod")
    Submitting = ("Submitting", f"{JOB}=False", "the attempt's Ray job is being submitted", "wait")
    JobPending = ("JobPending", f"{JOB}=True", "Ray accepted the job; its driver is starting",
                  "wait")
    JobRunning = ("JobRunning", f"{JOB}=True", "the Ray job runs", "wait")
    JobSucceeded = ("JobSucceeded", f"{JOB}=True", "the Ray job ended successfully", "-")
    JobStopped = ("JobStopped", f"{JOB}=True, {EVENT}", "the Ray job was stopped (deletion, "
                  "suspend, deadline)", "-")
    Suspended = ("Suspended", "Suspended=True", "`spec.suspend` is true: the job is stopped and "
                 "the cluster released", "set `spec.suspend: false` to run a fresh attempt")
    Resumed = ("Resumed", "Suspended=False", "the evaluation was resumed", "-")
    Succeeded = ("Succeeded", f"{COMPLETE}=True", "the metrics are in status and MongoDB", "-")
    ReportWritten = ("ReportWritten", f"{REPORT}=True", "the evaluation's HTML report was "
                     "written where `status.reportURI` says", "-")
    ReportNotWritten = ("ReportNotWritten", f"{REPORT}=False, {EVENT}", "the evaluation succeeded (its "
                        "metrics are in status and MongoDB) but its HTML report could not be "
                        "written: S3 refused it, no such bucket, a full disk, a rendering error; "
                        "the message says which", "give the `modeleval-s3` Secret write access "
                        "to `spec.output.reportUri` (default: next to the predictions, else the "
                        "dataset's bucket), or run `modeleval report UID` from the stored result")
    DataDrifted = ("DataDrifted", f"DataDrift=True, {EVENT}; schedule DataDrift=True, {EVENT}",
                   "the data drifted from `dataQuality.reference`: at least "
                   "`thresholds.driftShare` of the features passed a drift threshold; the "
                   "message names the most drifted (largest PSI first), `status.drift` has the "
                   "share", "look at the named features' data (`modeleval results show UID "
                   "--features`); the evaluation itself succeeded")
    NoDataDrift = ("NoDataDrift", "DataDrift=False; schedule DataDrift=False", "the data was "
                   "compared with `dataQuality.reference` and did not drift (fewer than "
                   "`thresholds.driftShare` of the features passed a threshold)", "-")
    # ----------------------------------------------------------------- Events only
    RayClusterCreated = ("RayClusterCreated", EVENT, "the operator created the RayCluster", "-")
    JobSubmitted = ("JobSubmitted", EVENT, "the operator submitted the attempt's Ray job", "-")
    Retrying = ("Retrying", EVENT, "an attempt failed for a reason a retry can change; the next "
                "one starts after the backoff", "-")
    ResultStored = ("ResultStored", EVENT, "a result kept in the job's log while MongoDB was "
                    "down was written by the operator", "-")
    TTLExpired = ("TTLExpired", EVENT, "`ttlSecondsAfterFinished` passed; the evaluation is "
                  "deleted", "-")
    CreateRefused = ("CreateRefused", f"{FAILURE}, schedule Ready=False, {EVENT}", "the API "
                     "server refused to create the evaluation's RayCluster or a schedule's child "
                     "(HTTP 4xx: invalid, too large, forbidden by a quota or an admission "
                     "webhook), or a NetworkPolicy the evaluation does not own already has its "
                     "RayCluster's name (never adopted); not retried", "fix what the message "
                     "names, then create it again")
    NotOwned = ("NotOwned", EVENT, "a RayCluster or NetworkPolicy the evaluation would delete "
                "is not owned by it (another evaluation's, or made by someone else): left alone",
                "-")
    # ----------------------------------------------------------------- EvaluationSchedule
    Scheduled = ("Scheduled", "schedule Ready=True", "the EvaluationSchedule is valid and makes "
                 "runs", "-")
    ScheduleSuspended = ("ScheduleSuspended", "schedule Ready=False", "the schedule's "
                         "`spec.suspend` is true: no new runs", "set it to false; the latest "
                         "missed cron run is then made once (within `startingDeadlineSeconds`)")
    ModelListFailed = ("ModelListFailed", f"schedule Ready=False, {EVENT}", "the new-model "
                       "trigger's S3 prefix could not be listed with the namespace's own S3 "
                       "Secret (`s3.secretName`), or that Secret is missing",
                       "create the Secret (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and "
                       "give it list access to the prefix; a missing bucket and a refused one "
                       "read the same")
    RunCreated = ("RunCreated", EVENT, "the schedule created a child ModelEvaluation (a cron "
                  "time, or a new model under the trigger's prefix)", "-")
    RunSkipped = ("RunSkipped", EVENT, "a cron run was not made: a child was still active "
                  "(`concurrencyPolicy: Forbid`), the schedule has `policy.maxActivePerSchedule` "
                  "active children, or it was missed by more than `startingDeadlineSeconds`",
                  "-")
    TooManySchedules = ("TooManySchedules", "schedule Ready=False", "the namespace has more "
                        "EvaluationSchedules than `policy.maxSchedulesPerNamespace`: the newest "
                        "make no runs", "delete schedules you no longer need")
    RunReplaced = ("RunReplaced", EVENT, "an active child was deleted to make way for a new run "
                   "(`concurrencyPolicy: Replace`)", "-")
    MetricDegraded = ("MetricDegraded", f"Degraded=True, {EVENT}", "the latest run's watched "
                      "metric is worse than the previous run's (or the champion's) by more than "
                      "`degradation.maxDrop`", "look at the model or the data of the latest run")
    MetricWithinBounds = ("MetricWithinBounds", "Degraded=False", "the latest run's watched "
                          "metric is within `degradation.maxDrop` of what it is compared with",
                          "-")

    EventsDelivered = ("EventsDelivered", "EventsDelivered=True", "every event reached every "
                       "sink it is for (spec.events and the platform's `events.sinks`)", "-")
    EventSinkUnavailable = ("EventSinkUnavailable", f"EventsDelivered=False, {EVENT}", "a sink "
                            "did not acknowledge an event (a webhook's non-2xx answer or no "
                            "answer, a Kafka broker down, its Secret missing); the event waits "
                            "in status.pendingEvents and is sent again with backoff, the "
                            "evaluation carries on", "fix the sink or its Secret; nothing "
                            "needs resending")
    EventsDropped = ("EventsDropped", f"EventsDelivered=False, {EVENT}", "more events waited "
                     "for a sink than status.pendingEvents holds (16): the oldest were dropped",
                     "fix the sink; the object's status has the outcome")


BEGIN = "<!-- reasons:begin (generated by python -m modeleval.api.reasons) -->"
END = "<!-- reasons:end -->"


def render() -> str:
    lines = [BEGIN, "", "| reason | shown as | meaning | what to do |", "|---|---|---|---|"]
    for reason in Reason:
        d = reason.doc
        lines.append(f"| {reason.value} | {d.where} | {d.meaning} | {d.action} |")
    return "\n".join([*lines, "", END])


if __name__ == "__main__":
    sys.stdout.write(render() + "\n")
