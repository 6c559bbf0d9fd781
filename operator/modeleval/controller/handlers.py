"""kopf wiring for ModelEvaluation: which events run what. The judgement is in ``decide.py``
(pure), the reads and writes in ``runtime.py``. EvaluationSchedule's wiring is at the end
(``schedule.py`` and ``schedule_runtime.py``).

One timer per live evaluation is the one writer of its status: first run as soon as the object
is seen (so its RayCluster is requested at once), then every poll interval. Create, resume and
spec changes (suspend) all land there; no second handler can race it. kopf's own bookkeeping
lives in annotations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

import kopf
from pydantic import BaseModel, ValidationError

from ..api.crd import PLURAL
from ..api.reasons import Reason
from ..api.schedule import (SCHEDULE_LABEL, SCHEDULE_PLURAL, EvaluationScheduleStatus,
                            ScheduleConditionType)
from ..api.spec import API_GROUP, API_VERSION, KIND, ModelEvaluationSpec
from ..api.status import ConditionType, ModelEvaluationStatus, Phase, is_terminal, parse_time
from . import status as st, telemetry
from .builders import LABEL_MANAGED_BY, MANAGER
from .decide import decide, plan
from .actions import SendEvents
from .events import record_deliveries, schedule_outbox
from .observed import Evaluation, ObjectIdentity, kuberay_ready
from .policy import parse_spec
from .kube import LIST_PAGE, RAY
from .schedule import ScheduleLimits, decide_schedule, parse_schedule_spec, record_refusals
from .schedule_runtime import ScheduleRuntime
from .runtime import ADMISSION_KEY, NAMESPACE_KEY, Holders, RoundContext, Runtime, send_events
from .settings import OperatorSettings

SETTINGS = OperatorSettings()
RUNTIME = Runtime(SETTINGS)


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration as a digest of the spec, labels and annotations, not
    a copy of them. No handler here reads a diff (the timer reads the spec itself), and a copy
    of a large spec (thousands of feature columns) next to kubectl's own copy passes the API
    server's 256 KiB bound on annotations: every patch of kopf's would be refused, the
    finalizer never removed, and the evaluation and its namespace left Terminating forever."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        text = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
        return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for this operator (what the startup handler applies)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 32
    settings.watching.server_timeout = 300
    # kopf lists (at start, after a watch expires) a page at a time: a namespace's evaluations
    # in one response can be hundreds of MB (a spec may be 1.4 MB); this way one page at most is
    # held in memory besides what kopf keeps of each object.
    settings.watching.chunk_size = LIST_PAGE
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # A deleted evaluation keeps its finalizer until its timers have stopped; one caught inside
    # a round (the TTL timer is, when it deletes) is looked at again after this, not kopf's 60 s.
    settings.background.cancellation_polling = 1.0


@kopf.on.startup(id="operator_startup")
def operator_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure(settings)
    telemetry.start(SETTINGS)
    RUNTIME.kube  # connects (and imports the client's modules) before the first evaluation


@kopf.index(*RAY, id="holding_clusters", labels={LABEL_MANAGED_BY: MANAGER})
def holding_clusters(namespace: str, meta: kopf.Meta, **_: Any) -> dict:
    """RayClusters the operator made, by the evaluation that owns them: a cluster holds its
    slot for as long as it exists, so one kept (keepCluster) after its evaluation finished or
    while it is suspended still counts against maxActiveEvaluations and maxActivePerNamespace.
    One being deleted no longer does. (An empty result, not None, removes it: kopf keeps the
    old value on None.)"""
    owner = evaluation_owner(meta)
    if owner is None or meta.get("deletionTimestamp"):
        return {}
    return {ADMISSION_KEY: owner, NAMESPACE_KEY.format(namespace): owner}


@kopf.on.event(*RAY, id="raycluster_telemetry", labels={LABEL_MANAGED_BY: MANAGER})
def raycluster_telemetry(type: str | None, body: kopf.Body, **_: Any) -> None:
    """The RayClusters gauge: each cluster the operator made, by its state, until it is gone
    (the first listing after a start sees every existing one)."""
    if type == "DELETED":
        telemetry.forget_raycluster(body.metadata.uid)
    else:
        telemetry.observe_raycluster(body.metadata.uid, raycluster_state(body))


def raycluster_state(obj: kopf.Body | dict) -> str:
    """provisioning, ready, suspended, failed or deleting: KubeRay's state, in a few words."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "deleting"
    if kuberay_ready(obj):
        return "ready"
    state = (obj.get("status") or {}).get("state")
    return state if state in ("suspended", "failed") else "provisioning"


def evaluation_owner(meta: kopf.Meta | dict) -> str | None:
    """The uid of the ModelEvaluation that owns an object, if one does."""
    return next((ref.get("uid") for ref in meta.get("ownerReferences") or []
                 if ref.get("kind") == KIND and ref.get("apiVersion") == f"{API_GROUP}/{API_VERSION}"),
                None)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="modelevaluation_telemetry")
def modelevaluation_telemetry(type: str | None, body: kopf.Body, **_: Any) -> None:
    """The drift gauges of each evaluation whose status has drift, from every evaluation the
    operator sees (the first listing after a start too, so a finished one keeps its series),
    until it is gone."""
    meta = body.metadata
    drift = None if type == "DELETED" else evaluation_drift(body.get("status") or {})
    telemetry.observe_evaluation_drift(meta.namespace, meta.name, drift)


def evaluation_drift(status: dict) -> tuple[bool, float] | None:
    """(drifted, driftedShare) of an evaluation's status.drift, or None without one."""
    drift = status.get("drift") or {}
    if "drifted" not in drift or "driftedShare" not in drift:
        return None
    return bool(drift["drifted"]), float(drift["driftedShare"])


def schedule_drift(status: EvaluationScheduleStatus) -> tuple[bool, float] | None:
    """(drifted, driftedShare) of the schedule's latest run that compared its data, if any."""
    return next(((run.drifted, run.drifted_share) for run in status.runs
                 if run.drifted is not None and run.drifted_share is not None), None)


def _live(status: dict | None, **_: Any) -> bool:
    return not is_terminal((status or {}).get("phase"))


def _live_or_sending(status: dict | None, **_: Any) -> bool:
    """Reconciled while it runs, and after it ended while events wait for their sinks."""
    return _live(status) or bool((status or {}).get("pendingEvents"))


@kopf.timer(API_GROUP, API_VERSION, PLURAL, id="modelevaluation_reconcile",
            interval=SETTINGS.poll_interval, initial_delay=0, backoff=SETTINGS.error_retry,
            when=_live_or_sending)
def modelevaluation_reconcile(body: kopf.Body, patch: kopf.Patch, holding_clusters: kopf.Index,
                              **_: Any) -> None:
    reconcile(body, patch, lambda key: list(holding_clusters.get(key, [])))


@kopf.timer(API_GROUP, API_VERSION, PLURAL, id="modelevaluation_ttl", interval=5.0,
            backoff=SETTINGS.error_retry,
            when=lambda spec, status, **_: not _live(status)
            and (spec or {}).get("ttlSecondsAfterFinished") is not None)
def modelevaluation_ttl(body: kopf.Body, **_: Any) -> None:
    status = ModelEvaluationStatus.model_validate(body.get("status") or {})
    ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
    if st.ttl_expired(status, ttl, datetime.now(timezone.utc)):
        kopf.info(body, reason=Reason.TTLExpired, message=f"deleted {ttl}s after it finished")
        RUNTIME.kube.delete_evaluation(body.metadata.namespace, body.metadata.name)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, id="modelevaluation_delete",
                backoff=SETTINGS.error_retry)
def modelevaluation_delete(body: kopf.Body, **_: Any) -> None:
    status = ModelEvaluationStatus.model_validate(body.get("status") or {})
    try:
        spec = ModelEvaluationSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError:
        spec = None
    RUNTIME.forget(evaluation(body), spec, status)


def identity(body: kopf.Body) -> ObjectIdentity:
    """An object's identity (an EvaluationSchedule's), from its metadata."""
    meta = body.metadata
    return ObjectIdentity(name=meta.name, namespace=meta.namespace, uid=meta.uid,
                    generation=meta.get("generation"),
                    created=parse_time(meta.get("creationTimestamp")))


def evaluation(body: kopf.Body) -> Evaluation:
    meta = body.metadata
    return Evaluation(name=meta.name, namespace=meta.namespace, uid=meta.uid,
                      generation=meta.get("generation"),
                      schedule=(meta.get("labels") or {}).get(SCHEDULE_LABEL),
                      created=parse_time(meta.get("creationTimestamp")))


def reconcile(body: kopf.Body, patch: kopf.Patch, holders: Holders = lambda key: []) -> None:
    """observe -> decide -> act -> record."""
    started = time.perf_counter()
    try:
        now = datetime.now(timezone.utc)
        ev = evaluation(body)
        before = ModelEvaluationStatus.model_validate(body.get("status") or {})
        spec = parse_spec(dict(body.get("spec") or {}), SETTINGS)
        context = RoundContext(ev, spec, before, holders)
        observed = RUNTIME.observe(context, plan(ev, spec, before, now))
        after, actions = decide(ev, spec, before, observed, now, SETTINGS)
        RUNTIME.act(context, body, actions)
        failed = record_deliveries(after, context.deliveries, now, SETTINGS, ev.generation)
        if failed:
            kopf.warn(body, reason=Reason.EventSinkUnavailable, message=st.cap(failed))
    finally:
        telemetry.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    _record(body, patch, before, after, now)
    for stage, seconds in queue_waits(ev, before, after, now):
        telemetry.observe_queue_wait(stage, seconds)


def queue_waits(ev: Evaluation, before: ModelEvaluationStatus, after: ModelEvaluationStatus,
                now: datetime) -> list[tuple[str, float]]:
    """The waits this round ended, in seconds since the evaluation was created: its RayCluster
    turned ready, its Ray job was found. The first attempt's only: a retry's or a resumed
    attempt's time since creation holds the attempts before it, not a wait; nor is a cluster
    ready again under a running job."""
    if ev.created is None or after.attempt != 1 or before.job_id is not None:
        return []
    waited = (now - ev.created).total_seconds()
    ended = []
    if after.is_true(ConditionType.Provisioned) and not before.is_true(ConditionType.Provisioned):
        ended.append(("cluster_ready", waited))
    if after.job_id is not None and before.job_id is None:
        ended.append(("job_started", waited))
    return ended


def _patch_status(body: kopf.Body, patch: kopf.Patch, after: BaseModel) -> None:
    """Patches the status keys that differ from what is stored (compared with the stored dict,
    not a parsed model, so defaults are written the first time too)."""
    old = dict(body.get("status") or {})
    new = after.model_dump(by_alias=True, mode="json", exclude_none=True)
    for key in set(old) | set(new):
        if old.get(key) != new.get(key):
            patch.status[key] = new.get(key)


def _record(body: kopf.Body, patch: kopf.Patch, before: ModelEvaluationStatus,
            after: ModelEvaluationStatus, now: datetime) -> None:
    """Writes what changed and tells of a new phase."""
    _patch_status(body, patch, after)
    if before.phase != after.phase:
        message = after.message or ""
        if after.phase == Phase.Failed:
            kopf.warn(body, reason=after.reason or Reason.InvalidSpec, message=message)
        else:
            kopf.info(body, reason=after.phase, message=message or f"phase {after.phase}")
        if after.phase.terminal and after.start_time:
            telemetry.JOB_SECONDS.labels(after.phase).observe((now - after.start_time).total_seconds())
        if after.phase == Phase.Succeeded and after.progress:
            telemetry.ROWS_SCORED.inc(after.progress.total)
    telemetry.observe_phase(body.metadata.uid, after.phase)


# ----------------------------------------------------------------------------- EvaluationSchedule
# One timer per schedule is the one writer of its status: observe (children, the trigger's
# prefix) -> decide (schedule.py, pure) -> act -> record.
SCHEDULES = ScheduleRuntime(SETTINGS, lambda: RUNTIME.kube)


LIMITS = ScheduleLimits(max_active=SETTINGS.max_active_per_schedule,
                        max_per_namespace=SETTINGS.max_schedules_per_namespace)


@kopf.index(API_GROUP, API_VERSION, SCHEDULE_PLURAL, id="schedules_by_namespace")
def schedules_by_namespace(namespace: str, name: str, meta: kopf.Meta, **_: Any) -> dict:
    """Each namespace's schedules, (creation time, name), to find the oldest that make runs."""
    return {namespace: (meta.get("creationTimestamp") or "", name)}


def older_schedules(index: kopf.Index, sched: ObjectIdentity, created: str) -> int:
    return sum(1 for entry in index.get(sched.namespace, []) if entry < (created, sched.name))


@kopf.timer(API_GROUP, API_VERSION, SCHEDULE_PLURAL, id="evaluationschedule_reconcile",
            interval=SETTINGS.schedule_poll_interval, initial_delay=0,
            backoff=SETTINGS.error_retry)
def evaluationschedule_reconcile(body: kopf.Body, patch: kopf.Patch,
                                 schedules_by_namespace: kopf.Index, **_: Any) -> None:
    now = datetime.now(timezone.utc)
    sched = identity(body)
    before = EvaluationScheduleStatus.model_validate(body.get("status") or {})
    spec = parse_schedule_spec(dict(body.get("spec") or {}), SETTINGS)
    older = older_schedules(schedules_by_namespace, sched,
                            body.metadata.get("creationTimestamp") or "")
    observed = SCHEDULES.observe(sched, spec, before, older)
    after, actions = schedule_outbox(sched, spec, before, decide_schedule(
        sched, spec, before, observed, now, LIMITS), now, SETTINGS)
    sends = [action for action in actions if isinstance(action, SendEvents)]
    actions = [action for action in actions if not isinstance(action, SendEvents)]
    record_refusals(after, SCHEDULES.act(body, sched, actions), sched.generation, now)
    deliveries = [d for send in sends for d in send_events(RUNTIME.event_sinks, sched.namespace,
                                                           send)]
    failed = record_deliveries(after, deliveries, now, SETTINGS, sched.generation)
    if failed:
        kopf.warn(body, reason=Reason.EventSinkUnavailable, message=st.cap(failed))
    _patch_status(body, patch, after)
    telemetry.observe_schedule(sched.namespace, sched.name, after.last_primary_metric,
                               after.is_true(ScheduleConditionType.Degraded))
    telemetry.observe_schedule_drift(sched.namespace, sched.name, schedule_drift(after))


@kopf.on.delete(API_GROUP, API_VERSION, SCHEDULE_PLURAL, id="evaluationschedule_delete",
                optional=True, backoff=SETTINGS.error_retry)
def evaluationschedule_delete(body: kopf.Body, **_: Any) -> None:
    """Its children go with it (owner references); only its gauges are the operator's."""
    telemetry.forget_schedule(body.metadata.namespace, body.metadata.name)
