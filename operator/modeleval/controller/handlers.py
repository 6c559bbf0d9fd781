"""kopf handlers for ModelEvaluation. Each reads like a short story: validate, decide, act, record.

One reconcile function drives an evaluation through its phases, run by a timer while the
evaluation is live. Status is written
only here, through kopf's ``patch``; kopf's own bookkeeping lives in annotations.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from ..api.crd import PLURAL
from ..api.spec import API_GROUP, API_VERSION, ModelEvaluationSpec, format_validation_error
from ..api.status import DOCUMENT_MARKER, ConditionType, ModelEvaluationStatus, Phase, ResultsRef
from . import metrics, status as st
from .builders import (RAY_AUTH_KEY, auth_secret_name, build_auth_secret, build_job_submission,
                       build_raycluster, cluster_name, head_url, submission_id)
from .kube import Kube
from .rayjobs import JobInfo, JobsApiError, RayJobsClient
from .settings import OperatorSettings
from .slots import Slots

log = logging.getLogger("modeleval.operator")

SETTINGS = OperatorSettings()
_FORGET = max(10.0, 5 * SETTINGS.poll_interval)
SLOTS = Slots(SETTINGS.max_jobs_per_head, refresh=max(5.0, SETTINGS.poll_interval), forget_after=_FORGET)
# Cluster slots: the operator's own index is the truth, read on every ask (no API call).
# Every holder is released when its cluster goes (finished, suspended, deleted), so a grant may
# wait long for the index to show it: 200 evaluations at once delay kopf's watch by tens of seconds.
ADMISSION = Slots(SETTINGS.max_active_evaluations, refresh=0.0, forget_after=_FORGET, grace=900.0)
ADMISSION_KEY = "clusters"
_kube: Kube | None = None
_store_cache: dict[tuple[str, str], Any] = {}


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube.connect()
    return _kube


def results_store(database: str, collection: str):
    from ..engine.results import MongoResultStore

    if SETTINGS.mongodb_uri is None:
        return None
    key = (database, collection)
    if key not in _store_cache:
        _store_cache[key] = MongoResultStore(SETTINGS.mongodb_uri.get_secret_value(), database,
                                             collection, timeout_ms=3000)
    return _store_cache[key]


# ------------------------------------------------------------------------- kopf wiring
@kopf.on.startup(id="operator_startup")
def operator_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 32
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    metrics.start(SETTINGS)
    kube()  # connects (and imports the client's modules) before the first evaluation arrives


@kopf.index(API_GROUP, API_VERSION, PLURAL, id="holding_clusters")
def holding_clusters(uid: str, status: dict | None, **_: Any) -> dict:
    """Evaluations that hold a RayCluster of their own: live, not suspended, cluster named. (An
    empty result, not None, removes an evaluation: kopf keeps the old value on None.)"""
    s = status or {}
    suspended = any(c.get("type") == ConditionType.Suspended.value and c.get("status") == "True"
                    for c in s.get("conditions") or [])
    if s.get("rayCluster") and _live(s) and not suspended:
        return {ADMISSION_KEY: uid}
    return {}


def _live(status: dict | None, **_: Any) -> bool:
    return (status or {}).get("phase") not in (Phase.Succeeded.value, Phase.Failed.value)


# The one writer of status: a timer per live evaluation, first run as soon as the object is
# seen (so its RayCluster is requested at once), then every poll interval. Create, resume and
# spec changes (suspend) all land here; no second handler can race it.
@kopf.timer(API_GROUP, API_VERSION, PLURAL, id="modelevaluation_reconcile",
            interval=SETTINGS.poll_interval, initial_delay=0, when=_live)
def modelevaluation_reconcile(body: kopf.Body, patch: kopf.Patch, holding_clusters: kopf.Index,
                              **_: Any) -> None:
    reconcile(body, patch, lambda: list(holding_clusters.get(ADMISSION_KEY, [])))


@kopf.timer(API_GROUP, API_VERSION, PLURAL, id="modelevaluation_ttl", interval=5.0,
            when=lambda spec, status, **_: not _live(status)
            and (spec or {}).get("ttlSecondsAfterFinished") is not None)
def modelevaluation_ttl(body: kopf.Body, **_: Any) -> None:
    status = ModelEvaluationStatus.model_validate(body.get("status") or {})
    ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
    if st.ttl_expired(status, ttl, datetime.now(timezone.utc)):
        kopf.info(body, reason="TTLExpired", message=f"deleted {ttl}s after it finished")
        kube().delete_evaluation(body.metadata.namespace, body.metadata.name)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, id="modelevaluation_delete")
def modelevaluation_delete(body: kopf.Body, **_: Any) -> None:
    """Stops the running Ray job; the RayCluster and its Secret go with the evaluation (owner
    references), and the garbage collector removes their pods."""
    status = ModelEvaluationStatus.model_validate(body.get("status") or {})
    metrics.forget(body.metadata.uid)
    _leave_line(body, status)
    ADMISSION.release(ADMISSION_KEY, body.metadata.uid)
    if status.job_id and not status.phase.terminal:
        _stop_job(body, status, "the evaluation was deleted")


# ------------------------------------------------------------------------- reconcile
class _Done(Exception):
    """Ends a reconcile early once the status for this round is decided."""


def reconcile(body: kopf.Body, patch: kopf.Patch, holders=lambda: []) -> None:
    started = time.perf_counter()
    before = ModelEvaluationStatus.model_validate(body.get("status") or {})
    status = before.model_copy(deep=True)
    try:
        with contextlib.suppress(_Done):  # _Done: this round's status is decided
            _reconcile(body, status, holders)
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    _record(body, patch, before, status)


def _record(body: kopf.Body, patch: kopf.Patch, before: ModelEvaluationStatus,
            after: ModelEvaluationStatus) -> None:
    # Compared with what is stored, not with the parsed model: defaults (phase Pending) must be
    # written the first time too. Keys kopf keeps elsewhere never appear in status.
    old = dict(body.get("status") or {})
    new = after.model_dump(by_alias=True, mode="json", exclude_none=True)
    if old != new:
        for key in set(old) | set(new):
            if old.get(key) != new.get(key):
                patch.status[key] = new.get(key)
    if after.phase.terminal:
        ADMISSION.release(ADMISSION_KEY, body.metadata.uid)
    if before.phase != after.phase:
        message = after.message or ""
        if after.phase == Phase.Failed:
            kopf.warn(body, reason=after.reason or "Failed", message=message)
        else:
            kopf.info(body, reason=after.phase.value, message=message or f"phase {after.phase.value}")
        if after.phase.terminal and after.start_time:
            start = st.parse_time(after.start_time)
            metrics.JOB_SECONDS.labels(after.phase.value).observe(
                (datetime.now(timezone.utc) - start).total_seconds())
    metrics.observe_phase(body.metadata.uid, after.phase.value)


def _reconcile(body: kopf.Body, status: ModelEvaluationStatus, holders) -> None:
    now = datetime.now(timezone.utc)
    meta = body.metadata
    generation = meta.get("generation")
    if status.phase.terminal:
        raise _Done

    spec = _validated_spec(body, status, now, generation)

    if status.attempt == 0:
        status.attempt = 1
        status.start_time = st.now_iso(now)
        status.phase = Phase.Pending
        status.message = "accepted"

    if spec.suspend:
        _suspend(body, spec, status, now, generation)
        raise _Done
    if any(c.type == ConditionType.Suspended.value and c.status == "True" for c in status.conditions):
        st.set_condition(status, ConditionType.Suspended, False, "Resumed", "resumed", generation, now)
        status.attempt += 1  # a resumed evaluation runs a fresh attempt
        status.job_id = None

    if st.deadline_passed(status, spec.active_deadline_seconds, now):
        _leave_line(body, status)
        if status.job_id:
            _stop_job(body, status, "activeDeadlineSeconds exceeded")
        _release_cluster(body, spec, status)
        st.fail(status, "DeadlineExceeded",
                f"the evaluation ran longer than activeDeadlineSeconds={spec.active_deadline_seconds}",
                generation, now)
        raise _Done

    retry_at = st.parse_time(status.next_retry_time)
    if retry_at and now < retry_at:
        raise _Done
    status.next_retry_time = None

    if status.job_id is None and status.ray_cluster and _provisioned(status):
        # Waiting for a job slot costs no API call: only the slot (in memory) is asked.
        _take_slot(body, status, status.ray_cluster, now, generation,
                   lambda: _list_jobs(body, status.ray_cluster))
    if not spec.ray_cluster_name and not status.ray_cluster:
        _admit(body, status, now, generation, holders)
    cluster = _ensure_cluster(body, spec, status, now, generation)
    _run_job(body, spec, status, cluster, now, generation)


def _provisioned(status: ModelEvaluationStatus) -> bool:
    return any(c.type == ConditionType.Provisioned.value and c.status == "True"
               for c in status.conditions)


def running_jobs(listed: list[JobInfo]) -> set[str]:
    return {j.submission_id for j in listed if j.submission_id.startswith("modeleval-") and not j.finished}


def _list_jobs(body: kopf.Body, cluster: str) -> set[str]:
    with _jobs_client(body, cluster) as jobs:
        return running_jobs(jobs.list())


def _admit(body: kopf.Body, status: ModelEvaluationStatus, now: datetime, generation: int | None,
           holders) -> None:
    """Returns once the evaluation may have a RayCluster (operator.maxActiveEvaluations); else
    records that it is queued and ends the round."""
    meta = body.metadata
    created = st.parse_time(meta.get("creationTimestamp"))
    slot = ADMISSION.acquire(ADMISSION_KEY, meta.uid, meta.uid, created.timestamp() if created else 0.0,
                             holders)
    if slot.granted:
        return
    text = (f"waiting for one of the operator's {ADMISSION.limit} cluster slots "
            "(operator.maxActiveEvaluations; oldest first)")
    status.message = text
    st.set_condition(status, ConditionType.Provisioned, False, "Queued", text, generation, now)
    raise _Done


def _take_slot(body: kopf.Body, status: ModelEvaluationStatus, cluster: str, now: datetime,
               generation: int | None, list_jobs) -> None:
    """Returns once this attempt holds a job slot on the cluster's head; else records that it is
    queued and ends the round."""
    meta = body.metadata
    created = st.parse_time(meta.get("creationTimestamp"))
    slot = SLOTS.acquire(head_url(cluster, meta.namespace, SETTINGS),
                         submission_id(meta.uid, status.attempt), meta.uid,
                         created.timestamp() if created else 0.0, list_jobs)
    if slot.granted:
        return
    # Position and counts are left out on purpose: they change for every waiter whenever a job
    # ends, and would rewrite every queued evaluation's status each time.
    text = f"waiting for one of the {SLOTS.limit} job slots on RayCluster {cluster} (oldest first)"
    status.message = text
    st.set_condition(status, ConditionType.JobSubmitted, False, "Queued", text, generation, now)
    raise _Done


def _validated_spec(body: kopf.Body, status: ModelEvaluationStatus, now: datetime,
                    generation: int | None) -> ModelEvaluationSpec:
    try:
        spec = ModelEvaluationSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as error:
        st.fail(status, "InvalidSpec", format_validation_error(error, "spec"), generation, now)
        raise _Done from None
    if SETTINGS.refuse_file_uris:
        uris = [("spec.model.uri", spec.model.uri), ("spec.dataset.uri", spec.dataset.uri)]
        if spec.baseline:
            uris.append(("spec.baseline.model.uri", spec.baseline.model.uri))
        if spec.output.predictions_uri:
            uris.append(("spec.output.predictionsUri", spec.output.predictions_uri))
        for field, uri in uris:
            if uri.startswith("file://"):
                st.fail(status, "InvalidSpec", f"{field}: file:// URIs are refused in a cluster "
                        "(pods cannot read the submitter's files); use s3://", generation, now)
                raise _Done
    return spec


def _suspend(body: kopf.Body, spec: ModelEvaluationSpec, status: ModelEvaluationStatus,
             now: datetime, generation: int | None) -> None:
    if status.job_id:
        _stop_job(body, status, "the evaluation was suspended")
        status.job_id = None
    _leave_line(body, status)
    _release_cluster(body, spec, status)
    status.phase = Phase.Pending
    status.progress = None
    status.message = "suspended"
    st.set_condition(status, ConditionType.Suspended, True, "Suspended",
                     "spec.suspend is true: the Ray job is stopped and the cluster released",
                     generation, now)


def _release_cluster(body: kopf.Body, spec: ModelEvaluationSpec, status: ModelEvaluationStatus) -> None:
    """Deletes the RayCluster this evaluation created (never a reused one, never a kept one)."""
    if spec.ray_cluster_name or spec.keep_cluster or not status.ray_cluster:
        ADMISSION.release(ADMISSION_KEY, body.metadata.uid)
        return
    kube().delete_raycluster(body.metadata.namespace, status.ray_cluster)
    kube().delete_secret(body.metadata.namespace, auth_secret_name(status.ray_cluster))
    ADMISSION.release(ADMISSION_KEY, body.metadata.uid)  # only once its cluster is going


def _ensure_cluster(body: kopf.Body, spec: ModelEvaluationSpec, status: ModelEvaluationStatus,
                    now: datetime, generation: int | None) -> dict:
    meta = body.metadata
    namespace = meta.namespace
    name = spec.ray_cluster_name or cluster_name(meta.name)
    # An evaluation that never created its cluster skips the read: the create answers 409 if a
    # round before a restart created it already.
    first = not spec.ray_cluster_name and status.ray_cluster is None
    cluster = None if first else kube().get_raycluster(namespace, name)
    if cluster is not None and (cluster.get("metadata") or {}).get("deletionTimestamp"):
        # The previous attempt's cluster (same name) is still going: create the fresh one after.
        st.set_condition(status, ConditionType.Provisioned, False, "Replacing",
                         f"waiting for the previous RayCluster {name} to be deleted", generation, now)
        raise _Done
    if cluster is None:
        if spec.ray_cluster_name:
            st.set_condition(status, ConditionType.Provisioned, False, "RayClusterNotFound",
                             f"spec.rayClusterName: RayCluster {name} does not exist", generation, now)
            if _waited_too_long(status, now):
                st.fail(status, "RayClusterNotFound",
                        f"spec.rayClusterName: RayCluster {name} does not exist", generation, now)
            raise _Done
        manifest = build_raycluster(meta.name, namespace, meta.uid, spec, SETTINGS)
        kube().ensure_secret(build_auth_secret(name, namespace, meta.name, meta.uid))
        if kube().create_raycluster(manifest):
            kopf.info(body, reason="RayClusterCreated", message=f"RayCluster {name} created with "
                      f"{spec.resources.workers} worker(s) of cpu={spec.resources.cpu} "
                      f"memory={spec.resources.memory} gpu={spec.resources.gpu}")
        status.ray_cluster = name
        status.phase = Phase.Provisioning
        status.message = f"created RayCluster {name}"
        st.set_condition(status, ConditionType.Provisioned, False, "Creating",
                         f"RayCluster {name} created", generation, now)
        raise _Done
    status.ray_cluster = name
    ready = (cluster.get("status") or {}).get("state") == "ready"
    if not ready:
        if status.job_id and _down_too_long(status, ConditionType.Provisioned, now):
            _lost_attempt(body, spec, status, f"RayCluster {name} stopped being ready while Ray job "
                          f"{status.job_id} ran", now, generation)
            raise _Done
        if status.phase == Phase.Pending:
            status.phase = Phase.Provisioning
        unschedulable = kube().unschedulable_pods(namespace, name)
        if unschedulable:
            pod, message = unschedulable[0]
            text = f"pod {pod} cannot be scheduled: {message}"
            st.set_condition(status, ConditionType.Provisioned, False, "Unschedulable", text,
                             generation, now)
            # Counted from this cluster's creation: a retry's fresh cluster gets the full wait.
            created = st.parse_time((cluster.get("metadata") or {}).get("creationTimestamp"))
            if _waited_too_long(status, now, since=created):
                _release_cluster(body, spec, status)
                st.fail(status, "Unschedulable", text, generation, now)
        else:
            st.set_condition(status, ConditionType.Provisioned, False, "Provisioning",
                             f"waiting for RayCluster {name} to be ready", generation, now)
        raise _Done
    st.set_condition(status, ConditionType.Provisioned, True, "RayClusterReady",
                     f"RayCluster {name} is ready", generation, now)
    return cluster


def _waited_too_long(status: ModelEvaluationStatus, now: datetime,
                     since: datetime | None = None) -> bool:
    start = since or st.parse_time(status.start_time)
    return bool(start and now - start > timedelta(seconds=SETTINGS.pending_timeout))


def _jobs_client(body: kopf.Body, cluster_name_: str) -> RayJobsClient:
    """A Jobs API client for the cluster, with the token KubeRay gave its pods: from the Secret
    named in ``authOptions.secretName``, else KubeRay's default (the cluster's name)."""
    namespace = body.metadata.namespace
    if SETTINGS.ray_head_override_token is not None:
        token = SETTINGS.ray_head_override_token.get_secret_value()
    else:
        cluster = kube().get_raycluster(namespace, cluster_name_) or {}
        auth = (cluster.get("spec") or {}).get("authOptions") or {}
        token = None
        if auth.get("mode") == "token":
            token = kube().read_secret_key(namespace, auth.get("secretName") or cluster_name_,
                                           RAY_AUTH_KEY)
    return RayJobsClient(head_url(cluster_name_, namespace, SETTINGS), token,
                         timeout=SETTINGS.job_submit_timeout)


def _run_job(body: kopf.Body, spec: ModelEvaluationSpec, status: ModelEvaluationStatus,
             cluster: dict, now: datetime, generation: int | None) -> None:
    meta = body.metadata
    name = cluster["metadata"]["name"]
    sid = submission_id(meta.uid, status.attempt)
    url = head_url(name, meta.namespace, SETTINGS)
    try:
        with _jobs_client(body, name) as jobs:
            # A job submitted just before a restart (its id not yet in status) is found here too.
            job = jobs.get(sid)
            if job is None and status.job_id == sid:
                # The head accepted this job and no longer knows it: the head pod was replaced
                # (Ray keeps its job table in the head's memory). Never resubmit onto it; the
                # result document says whether the job ended before its head went.
                job = _ended_before_head_lost(spec, status, meta.uid, sid)
                if job is None:
                    _lost_attempt(body, spec, status, f"the Ray head of RayCluster {name} lost "
                                  f"job {sid} (its pod was replaced)", now, generation)
                    raise _Done
            if job is None:
                _take_slot(body, status, name, now, generation, lambda: running_jobs(jobs.list()))
                job = jobs.submit(build_job_submission(meta.name, meta.namespace, meta.uid,
                                                       status.attempt, spec))
                kopf.info(body, reason="JobSubmitted", message=f"Ray job {sid} (attempt {status.attempt})")
    except JobsApiError as error:
        st.set_condition(status, ConditionType.JobSubmitted, False, "RayUnavailable", str(error),
                         generation, now)
        if status.job_id == sid and _down_too_long(status, ConditionType.JobSubmitted, now):
            _lost_attempt(body, spec, status, f"the Ray head of RayCluster {name} did not answer "
                          f"for {SETTINGS.head_lost_timeout:.0f}s while job {sid} ran: {error}",
                          now, generation)
        raise _Done from None
    status.job_id = sid
    status.dashboard_url = url
    status.phase = Phase.Running
    status.message = f"Ray job {sid}: {job.status}"
    st.set_condition(status, ConditionType.JobSubmitted, True, job.status.title(),
                     f"Ray job {sid} is {job.status}", generation, now)
    target = spec.output.mongodb
    store = results_store(target.database, target.collection)
    if not job.finished:
        _mirror_progress(store, meta.uid, status)
        raise _Done
    SLOTS.release(url, sid)
    _finish(body, spec, status, job, store, now, generation)


def _mirror_progress(store: Any, uid: str, status: ModelEvaluationStatus) -> None:
    if store is None:
        return
    try:
        found = store.get_progress(uid, status.attempt)
    except Exception:  # noqa: BLE001 - progress is best effort; the next round tries again
        return
    if found:
        status.progress = st.progress(int(found.get("done", 0)), int(found.get("total", 0)),
                                      str(found.get("unit", "rows")))


def _finish(body: kopf.Body, spec: ModelEvaluationSpec, status: ModelEvaluationStatus,
            job: JobInfo, store: Any, now: datetime, generation: int | None) -> None:
    from ..engine.errors import ResultsStoreError

    meta = body.metadata
    document = None
    store_error = None
    if store is not None:
        try:
            document = store.get(meta.uid, status.attempt)
        except ResultsStoreError as error:
            store_error = error.message
    logged = None
    if document is None and store is not None:
        # The runner prints a document it could not store to the job's log: store it now.
        logged = _logged_document(body, status, job)
        if logged is not None and store_error is None:
            try:
                store.upsert(logged)
                document = logged
                kopf.info(body, reason="ResultStored", message=f"result of attempt {status.attempt} "
                          "written to MongoDB from the job's log (the store was down when it ended)")
            except ResultsStoreError as error:
                store_error = error.message
    if document is None and store_error is not None:
        kept = " Its result is kept in the job's log and is written when MongoDB answers." if logged else ""
        text = f"Ray job {job.submission_id} {job.status.lower()}; MongoDB: {store_error}.{kept}"
        st.set_condition(status, ConditionType.Complete, False, "ResultsStoreUnavailable", text,
                         generation, now)
        if _waited_too_long_since(job, now, SETTINGS.results_store_timeout):
            if logged and logged.get("metrics"):
                status.metrics = {k: float(v) for k, v in logged["metrics"].items()}
            st.fail(status, "ResultsStoreUnavailable", f"MongoDB did not answer for "
                    f"{SETTINGS.results_store_timeout:.0f}s after the job ended: {store_error}"
                    + ("; the metrics are in status" if logged else ""), generation, now)
            return
        raise _Done

    if job.status == "SUCCEEDED" and document and document.get("status") == "Succeeded":
        target = spec.output.mongodb
        status.metrics = {k: float(v) for k, v in document.get("metrics", {}).items()}
        primary = spec.primary_metric
        if primary in status.metrics:
            status.primary_metric = f"{primary}={status.metrics[primary]:.4f}"
        status.progress = st.progress(int(document.get("rows", 0)), int(document.get("rows", 0)))
        status.results_ref = ResultsRef(database=target.database, collection=target.collection,
                                        id=str(document["_id"]))
        status.predictions_uri = document.get("predictionsUri")
        if document.get("baseline"):
            from ..api.status import BaselineStatus

            gate = document.get("gate") or {}
            status.baseline = BaselineStatus(deltas=document["baseline"].get("deltas", {}),
                                             gate_passed=gate.get("passed"))
        metrics.ROWS_SCORED.inc(int(document.get("rows", 0)))
        _release_cluster(body, spec, status)
        st.succeed(status, f"{status.primary_metric or 'done'} on {document.get('rows', 0)} rows",
                   generation, now)
        return
    if job.status == "SUCCEEDED" and document is None:
        # The runner keeps a result it could not store and writes it once the store is back.
        st.set_condition(status, ConditionType.Complete, False, "ResultsStoreUnavailable",
                         "the Ray job finished; its result document is not in MongoDB yet",
                         generation, now)
        if _waited_too_long_since(job, now, SETTINGS.pending_timeout):
            st.fail(status, "ResultsStoreUnavailable", "the Ray job succeeded but its result never "
                    "reached MongoDB", generation, now)
        raise _Done
    if job.status == "STOPPED":
        _release_cluster(body, spec, status)
        st.fail(status, "Cancelled", f"Ray job {job.submission_id} was stopped", generation, now)
        return

    reason = (document or {}).get("reason") or "JobFailed"
    message = (document or {}).get("message") or f"Ray job {job.submission_id} failed: {job.message}"
    retryable = bool((document or {}).get("retryable", document is None))
    if retryable and status.attempt <= spec.backoff_limit:
        delay = st.backoff_delay(status.attempt, SETTINGS.backoff_base, SETTINGS.backoff_max)
        status.next_retry_time = st.now_iso(now + timedelta(seconds=delay))
        kopf.warn(body, reason="Retrying", message=f"attempt {status.attempt} failed ({reason}: "
                  f"{message}); attempt {status.attempt + 1} in {delay:.0f}s")
        status.attempt += 1
        status.job_id = None
        status.progress = None
        status.phase = Phase.Pending
        status.reason, status.message = reason, f"retrying: {message}"
        return
    _release_cluster(body, spec, status)
    if not retryable:
        message = f"{message} (not retried: {reason} does not change on a retry)"
    st.fail(status, reason, message, generation, now)


def _ended_before_head_lost(spec: ModelEvaluationSpec, status: ModelEvaluationStatus, uid: str,
                            sid: str) -> JobInfo | None:
    """The job as its result document records it, when the runner wrote one before the head
    went away; None when the attempt left no document (it was cut off)."""
    target = spec.output.mongodb
    store = results_store(target.database, target.collection)
    try:
        document = store.get(uid, status.attempt) if store is not None else None
    except Exception:  # noqa: BLE001 - unknown: treated as cut off, and the attempt is retried
        return None
    if not document:
        return None
    ended = "SUCCEEDED" if document.get("status") == "Succeeded" else "FAILED"
    return JobInfo(sid, ended, "the job ended before its Ray head was replaced")


def _down_too_long(status: ModelEvaluationStatus, condition: ConditionType, now: datetime) -> bool:
    """Whether ``condition`` has been False for longer than the head-lost timeout (a busy head
    may not answer for a while; that alone is no loss)."""
    for c in status.conditions:
        if c.type == condition.value and c.status == "False":
            since = st.parse_time(c.last_transition_time)
            return bool(since and now - since > timedelta(seconds=SETTINGS.head_lost_timeout))
    return False


def _lost_attempt(body: kopf.Body, spec: ModelEvaluationSpec, status: ModelEvaluationStatus,
                  message: str, now: datetime, generation: int | None) -> None:
    """The attempt's Ray head went away with its job. The attempt is recorded as failed (a
    failure document, so no attempt is missing from the results) and, within backoffLimit,
    retried on a fresh RayCluster: the old one is deleted, never reused."""
    meta = body.metadata
    reason = "RayHeadLost"
    if status.ray_cluster and status.job_id:
        SLOTS.release(head_url(status.ray_cluster, meta.namespace, SETTINGS), status.job_id)
    target = spec.output.mongodb
    store = results_store(target.database, target.collection)
    if store is not None:
        document = {"_id": f"{meta.uid}:{status.attempt}", "uid": meta.uid, "attempt": status.attempt,
                    "name": meta.name, "namespace": meta.namespace, "status": "Failed",
                    "reason": reason, "message": message, "retryable": True,
                    "model": {"uri": spec.model.uri}, "dataset": {"uri": spec.dataset.uri},
                    "finishedAt": st.now_iso(now)}
        try:
            if store.get(meta.uid, status.attempt) is None:  # never over what the runner wrote
                store.upsert(document)
        except Exception as error:  # noqa: BLE001 - the Event and status still record the attempt
            log.warning("could not record lost attempt %s of %s: %s", status.attempt, meta.uid, error)
    _leave_line(body, status)
    _release_cluster(body, spec, status)
    if status.attempt > spec.backoff_limit:
        st.fail(status, reason, f"{message}; no retries left (backoffLimit={spec.backoff_limit})",
                generation, now)
        return
    delay = st.backoff_delay(status.attempt, SETTINGS.backoff_base, SETTINGS.backoff_max)
    kopf.warn(body, reason="Retrying", message=f"attempt {status.attempt} lost ({reason}: {message});"
              f" attempt {status.attempt + 1} on a fresh RayCluster in {delay:.0f}s")
    if not spec.ray_cluster_name and not spec.keep_cluster:
        status.ray_cluster = None  # the next attempt creates its own cluster again
        st.set_condition(status, ConditionType.Provisioned, False, reason, message, generation, now)
    st.set_condition(status, ConditionType.JobSubmitted, False, reason, message, generation, now)
    status.next_retry_time = st.now_iso(now + timedelta(seconds=delay))
    status.attempt += 1
    status.job_id = None
    status.progress = None
    status.phase = Phase.Pending
    status.reason, status.message = reason, f"retrying: {message}"


def _waited_too_long_since(job: JobInfo, now: datetime, seconds: float) -> bool:
    if not job.end_time:
        return False
    ended = datetime.fromtimestamp(job.end_time / 1000, tz=timezone.utc)
    return now - ended > timedelta(seconds=seconds)


def _logged_document(body: kopf.Body, status: ModelEvaluationStatus, job: JobInfo) -> dict | None:
    """The attempt's result document from the job's log, if the runner had to print it there."""
    if not job.finished or not status.ray_cluster:
        return None
    try:
        with _jobs_client(body, status.ray_cluster) as jobs:
            text = jobs.logs(job.submission_id)
    except (JobsApiError, kopf.TemporaryError):
        return None
    wanted = f"{body.metadata.uid}:{status.attempt}"
    for line in reversed(text.splitlines()):
        if line.startswith(DOCUMENT_MARKER):
            with contextlib.suppress(ValueError):
                document = json.loads(line[len(DOCUMENT_MARKER):])
                if isinstance(document, dict) and document.get("_id") == wanted:
                    return document
    return None


def _leave_line(body: kopf.Body, status: ModelEvaluationStatus) -> None:
    ADMISSION.leave(ADMISSION_KEY, body.metadata.uid)
    if status.ray_cluster:
        SLOTS.leave(head_url(status.ray_cluster, body.metadata.namespace, SETTINGS), body.metadata.uid)


def _stop_job(body: kopf.Body, status: ModelEvaluationStatus, why: str) -> None:
    if not status.ray_cluster or not status.job_id:
        return
    SLOTS.release(head_url(status.ray_cluster, body.metadata.namespace, SETTINGS), status.job_id)
    try:
        with _jobs_client(body, status.ray_cluster) as jobs:
            if jobs.stop(status.job_id):
                kopf.info(body, reason="JobStopped", message=f"Ray job {status.job_id} stopped: {why}")
    except (JobsApiError, ApiException) as error:
        log.warning("could not stop Ray job %s: %s", status.job_id, error)

