"""The EvaluationSchedule's judgement, as pure functions: no I/O, no clock, no globals.

Like decide.py for evaluations: the runtime (schedule_runtime.py) lists the schedule's children
and, when :func:`wants_models` says so, the trigger's S3 prefix or registered model; :func:`decide_schedule` turns
the spec, the status and that observation into the next status and a list of actions.

What it decides, in the order of a round:
- children: ``active`` are those not finished; the newest succeeded child's watched metric
  becomes ``lastPrimaryMetric``, its change from the run before (or from the champion, whose
  delta the child computed as its baseline) ``metricChange``, and ``Degraded`` turns true when
  the metric is worse by more than ``degradation.maxDrop`` (an Event when it turns true); each
  such run goes into ``runs`` (the last RUNS_LIMIT) with its drift, read from the child's
  ``status.drift``, and ``DataDrift`` follows the latest run that compared its data with a
  reference (an Event when it turns true);
- history: finished children beyond the history limits are deleted, oldest first;
- cron: the run the CronJob controller would make (api/cron.py's ``most_recent``): the latest
  cron time since ``lastScheduleTime`` (at first, the schedule's creation), once, however many
  were missed while the operator was down or the schedule suspended; with
  ``startingDeadlineSeconds`` only times that recent count (an older one is skipped, said once);
  a schedule that never fires (30 February) is Ready=False;
- new models: the prefix's objects (or the registered model's versions, keyed
  ``models:/NAME/VERSION`` with their creation time as the ETag) are compared with the seen ones
  (key and ETag, in status, so a restarted operator evaluates none twice); what was there at
  the first listing of a source is only recorded. With Forbid a new model waits while a child is active (it is never lost); with
  Replace the newest new model replaces the active children and older new ones are skipped;
  with Allow each gets its child (at most :data:`MAX_NEW_PER_ROUND` a round);
- child names are deterministic (``<schedule>-<unix minutes>`` for a cron time,
  ``<schedule>-m<hash of key and ETag>`` for a model), so a round repeated after a crash finds
  its child already made instead of making a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ..api.cron import Cron, CronError, Zone, most_recent, next_run, zone
from ..api.reasons import Reason
from ..api.registry import is_registry_uri
from ..api.schedule import (RUNS_LIMIT, SCHEDULE_KIND, SCHEDULE_LABEL, Against,
                            ConcurrencyPolicy, EvaluationScheduleSpec, EvaluationScheduleStatus,
                            RunRecord, ScheduleConditionType as SC, SeenModel, metric_drop)
from ..api.status import DataDriftStatus, Phase, is_terminal, parse_time, rfc3339
from ..api.spec import API_GROUP, API_VERSION, KIND, format_validation_error
from . import status as st
from .actions import Emit
from .observed import ObjectIdentity
from .policy import InvalidSpec, model_refusal
from .settings import OperatorSettings

# Bounds of what a schedule keeps and does per round.
SEEN_LIMIT = 200
MAX_NEW_PER_ROUND = 5
# Metrics in a schedule's status (and kubectl's columns) are rounded to this many decimals.
DIGITS = 6
SCHEDULED_TIME_ANNOTATION = f"{API_GROUP}/scheduled-time"
MODEL_KEY_ANNOTATION = f"{API_GROUP}/model-key"
MODEL_ETAG_ANNOTATION = f"{API_GROUP}/model-etag"


@dataclass(frozen=True)
class Child:
    """What a round needs of one child ModelEvaluation."""

    name: str
    phase: str | None = None
    created: datetime | None = None
    completed: datetime | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)  # candidate - baseline (champion)
    deleting: bool = False
    drift: DataDriftStatus | None = None  # its data against dataQuality.reference, if compared

    @property
    def finished(self) -> bool:
        return is_terminal(self.phase)

    @classmethod
    def of(cls, obj: dict[str, Any]) -> "Child":
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        return cls(name=meta.get("name", ""), phase=status.get("phase"),
                   created=parse_time(meta.get("creationTimestamp")),
                   completed=parse_time(status.get("completionTime")),
                   metrics=dict(status.get("metrics") or {}),
                   deltas=dict((status.get("baseline") or {}).get("deltas") or {}),
                   deleting=bool(meta.get("deletionTimestamp")),
                   drift=DataDriftStatus.model_validate(status["drift"])
                   if status.get("drift") else None)


@dataclass(frozen=True)
class ModelObject:
    """One object under the trigger's prefix (its key, ETag and Last-Modified), or one version
    of its registered model (``models:/NAME/VERSION``, its creation time in milliseconds and
    that time); ``last_modified`` to the second, as status keeps times."""

    key: str
    etag: str
    last_modified: datetime

    @property
    def identity(self) -> str:
        """What tells this object from another under the same key, in words."""
        if is_registry_uri(self.key):
            return f"created {rfc3339(self.last_modified)}"
        return f"ETag {self.etag}"


@dataclass(frozen=True)
class ScheduleLimits:
    """The platform's bounds on schedules (policy values; 0: no limit)."""

    max_active: int = 0              # active children per schedule
    max_per_namespace: int = 0       # schedules per namespace that make runs


@dataclass(frozen=True)
class ScheduleObserved:
    children: tuple[Child, ...] = ()
    older_schedules: int = 0  # schedules of its namespace created before it
    models: tuple[ModelObject, ...] | None = None  # None: not listed this round
    bucket: str | None = None
    models_error: str | None = None


@dataclass(frozen=True)
class CreateChild:
    manifest: dict[str, Any]
    message: str


@dataclass(frozen=True)
class DeleteChild:
    name: str
    why: str


ScheduleAction = CreateChild | DeleteChild | Emit


def parse_schedule_spec(raw: dict[str, Any],
                        settings: OperatorSettings | None = None) -> EvaluationScheduleSpec | InvalidSpec:
    """The schedule, or why it is refused: its own validation, then (given the operator's
    settings) the platform's check of every model its children could name, so a child that
    would be refused is never made."""
    try:
        spec = EvaluationScheduleSpec.model_validate(raw)
    except ValidationError as error:
        return InvalidSpec(format_validation_error(error, "spec"))
    for where, model in spec.named_models() if settings is not None else ():
        refused = model_refusal(where, model, settings)
        if refused:
            return InvalidSpec(refused[1], refused[0])
    return spec


def wants_models(spec: EvaluationScheduleSpec | InvalidSpec,
                 status: EvaluationScheduleStatus) -> bool:
    """Whether the round lists the trigger's prefix: not for an invalid schedule, and for a
    suspended one only once, to record what is there before it (what comes while it is
    suspended is evaluated when it resumes)."""
    return isinstance(spec, EvaluationScheduleSpec) and spec.trigger is not None \
        and (not spec.suspend or not listed(spec, status))


def listed(spec: EvaluationScheduleSpec, status: EvaluationScheduleStatus) -> bool:
    """Whether the trigger's source, as the spec names it now, was listed once (a status from
    before ``modelsSource`` was kept names none: its listing was of the same source)."""
    source = spec.trigger.new_model.source if spec.trigger else None
    return status.models_listed and status.models_source in (None, source)


def owner_reference(sched: ObjectIdentity) -> dict[str, Any]:
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": SCHEDULE_KIND, "name": sched.name,
            "uid": sched.uid, "controller": True, "blockOwnerDeletion": True}


def cron_child_name(schedule: str, when: datetime) -> str:
    return f"{schedule}-{int(when.timestamp() // 60)}"


def model_child_name(schedule: str, key: str, etag: str) -> str:
    digest = hashlib.sha256(f"{key}\0{etag}".encode()).hexdigest()[:8]
    return f"{schedule}-m{digest}"


def build_child(sched: ObjectIdentity, spec: EvaluationScheduleSpec, name: str,
                annotations: dict[str, str], model_uri: str | None = None) -> dict[str, Any]:
    """The child ModelEvaluation: the template, the new model in place of its model, the
    champion as its baseline when degradation is judged against one."""
    body = spec.template.model_dump(by_alias=True, mode="json", exclude_unset=True)
    if model_uri is not None:
        model = {**body["model"], "uri": model_uri}
        trigger_format = spec.trigger.new_model.format if spec.trigger else None
        if trigger_format is not None:
            model["format"] = str(trigger_format)
        body["model"] = model
    degradation = spec.degradation
    if degradation is not None and degradation.against == Against.champion \
            and degradation.champion_model is not None:
        champion = degradation.champion_model
        body["baseline"] = {"model": champion.model_dump(by_alias=True, mode="json",
                                                         exclude_unset=True)}
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": sched.namespace,
                         "labels": {SCHEDULE_LABEL: sched.name}, "annotations": annotations,
                         "ownerReferences": [owner_reference(sched)]},
            "spec": body}


@dataclass
class _ScheduleRound:
    sched: ObjectIdentity
    spec: EvaluationScheduleSpec
    status: EvaluationScheduleStatus
    observed: ScheduleObserved
    now: datetime
    limits: ScheduleLimits = field(default_factory=ScheduleLimits)
    actions: list[ScheduleAction] = field(default_factory=list)
    active: list[str] = field(default_factory=list)

    def condition(self, type_: SC, value: bool, reason: Reason, message: str) -> bool:
        """Sets a condition; True when its value changed."""
        before = self.status.is_true(type_)
        st.set_condition(self.status, type_, value, reason, message, self.sched.generation,
                         self.now)
        return before != value

    def emit(self, reason: Reason, message: str, warning: bool = False) -> None:
        self.actions.append(Emit(reason, message, warning))

    def delete(self, name: str, why: str) -> None:
        self.actions.append(DeleteChild(name, why))

    @property
    def room(self) -> int:
        """How many more children may be active now (policy.maxActivePerSchedule)."""
        limit = self.limits.max_active
        return max(limit - len(self.active), 0) if limit else MAX_NEW_PER_ROUND

    def full(self) -> str:
        return (f"{len(self.active)} children are active, the most one schedule may have "
                f"(policy.maxActivePerSchedule: {self.limits.max_active})")

    def too_many_schedules(self) -> str | None:
        limit = self.limits.max_per_namespace
        if not limit or self.observed.older_schedules < limit:
            return None
        return (f"namespace {self.sched.namespace} has {self.observed.older_schedules} older "
                f"EvaluationSchedules; at most {limit} make runs "
                "(policy.maxSchedulesPerNamespace): this one makes none")

    def create(self, name: str, message: str, annotations: dict[str, str],
               model_uri: str | None = None) -> None:
        self.actions.append(CreateChild(build_child(self.sched, self.spec, name, annotations,
                                                    model_uri), message))
        self.status.last_run = name
        self.active.append(name)

    # -- the rules
    def run(self) -> None:
        children = sorted(self.observed.children, key=lambda child: (child.created or self.now,
                                                                      child.name))
        self.active = [c.name for c in children if not c.finished and not c.deleting]
        fresh = self.fresh_runs(children)
        self.track_metric(fresh)
        self.record_runs(fresh)
        self.track_drift(fresh)
        self.prune(children)
        over = self.too_many_schedules()
        if over:
            self.condition(SC.Ready, False, Reason.TooManySchedules, over)
        elif self.spec.suspend:
            self.condition(SC.Ready, False, Reason.ScheduleSuspended, "spec.suspend is true: "
                           "no new runs")
            if self.observed.models is not None and not listed(self.spec, self.status):
                self.first_listing(self.observed.models)
        else:
            ready = (Reason.Scheduled, "making runs")
            if self.spec.schedule is not None:
                ready = self.cron() or ready
            if self.spec.trigger is not None:
                ready = self.new_models() or ready
            self.condition(SC.Ready, ready[0] == Reason.Scheduled, *ready)
        self.status.active = sorted(set(self.active))

    def fresh_runs(self, children: list[Child]) -> list[Child]:
        """The children that succeeded since the last one recorded, oldest first."""
        status, metric = self.status, self.spec.watched_metric
        status.metric_name = metric
        done = sorted((c for c in children if c.phase == Phase.Succeeded and c.completed
                       and metric in c.metrics), key=lambda child: (child.completed, child.name))
        # Ordered by (completion, name): what comes after the last one recorded is fresh (two
        # runs finishing in the same second are both counted).
        since = (status.last_completion_time, status.last_completed_run or "")
        return [c for c in done if since[0] is None or (c.completed, c.name) > since]

    def record_runs(self, fresh: list[Child]) -> None:
        """Each fresh run in the history, newest first, at most RUNS_LIMIT."""
        metric = self.spec.watched_metric
        records = [RunRecord(name=c.name, completion_time=c.completed,
                             metric=round(c.metrics[metric], DIGITS),
                             drifted=c.drift.drifted if c.drift else None,
                             drifted_share=round(c.drift.drifted_share, DIGITS) if c.drift
                             else None) for c in reversed(fresh)]
        self.status.runs = (records + self.status.runs)[:RUNS_LIMIT]

    def track_drift(self, fresh: list[Child]) -> None:
        """DataDrift follows the latest fresh run that compared its data with a reference
        (an Event when it turns true); runs that compared nothing leave it as it was."""
        compared = [child for child in fresh if child.drift is not None]
        if not compared:
            return
        latest = compared[-1]
        text = f"{latest.name}: {latest.drift.describe()}"
        if not latest.drift.drifted:
            self.condition(SC.DataDrift, False, Reason.NoDataDrift, text)
        elif self.condition(SC.DataDrift, True, Reason.DataDrifted, text):
            self.emit(Reason.DataDrifted, text, warning=True)

    def track_metric(self, fresh: list[Child]) -> None:
        spec, status = self.spec, self.status
        metric = spec.watched_metric
        if not fresh:
            return
        for child in fresh:
            value = round(child.metrics[metric], DIGITS)
            status.previous_primary_metric = status.last_primary_metric
            status.last_primary_metric = value
            status.last_completed_run = child.name
            status.last_completion_time = child.completed
        degradation = spec.degradation
        latest = fresh[-1]
        if degradation is not None and degradation.against == Against.champion:
            delta = latest.deltas.get(metric)
            delta = None if delta is None else round(delta, DIGITS)
            status.metric_change = delta
            reference = None if delta is None else status.last_primary_metric - delta
            what = "the champion's"
        else:
            reference = status.previous_primary_metric
            status.metric_change = None if reference is None \
                else round(status.last_primary_metric - reference, DIGITS)
            what = "the run before's"
        if degradation is None or reference is None:
            return
        drop = metric_drop(metric, status.last_primary_metric, reference)
        text = (f"{metric} of {latest.name} is {status.last_primary_metric:.4f}, {what} "
                f"{reference:.4f}: ")
        if degradation.exceeded(drop):
            text += f"worse by {drop:.4f} (> maxDrop {degradation.max_drop:g})"
            if self.condition(SC.Degraded, True, Reason.MetricDegraded, text):
                self.emit(Reason.MetricDegraded, text, warning=True)
        else:
            self.condition(SC.Degraded, False, Reason.MetricWithinBounds,
                           text + f"within maxDrop {degradation.max_drop:g}")

    def prune(self, children: list[Child]) -> None:
        for phase, limit in ((Phase.Succeeded, self.spec.successful_history_limit),
                             (Phase.Failed, self.spec.failed_history_limit)):
            done = sorted((c for c in children if c.phase == phase and not c.deleting),
                          key=lambda child: (child.completed or child.created or self.now,
                                             child.name),
                          reverse=True)
            for child in done[limit:]:
                self.delete(child.name, f"history limit: keeps the {limit} newest "
                            f"{phase.lower()} runs")

    def replace_active(self, why: str) -> None:
        for name in self.active:
            self.delete(name, why)
            self.emit(Reason.RunReplaced, f"deleted active run {name}: {why}")
        self.active = []

    def cron(self) -> tuple[Reason, str] | None:
        """Makes the run a CronJob would make now; a reason for Ready=False when the schedule
        never fires."""
        spec, status, now = self.spec, self.status, self.now
        cron, tz = Cron.parse(spec.schedule), zone(spec.time_zone)
        since = status.last_schedule_time or self.sched.created or now
        try:
            status.next_schedule_time = next_run(cron, tz, now)
            missed = most_recent(cron, tz, self.earliest(since), now)
        except CronError as error:
            return self.never_fires(str(error))
        latest = missed.latest
        if latest is None:
            return self.skipped_past_deadline(cron, tz, since)
        status.last_schedule_time = latest
        earlier = f" ({missed.due - 1} earlier cron time(s) missed)" if missed.due > 1 else ""
        if missed.too_many:
            earlier += ("; too many missed start times: set or lower startingDeadlineSeconds, "
                        "or check the clocks")
        if self.active and spec.concurrency_policy == ConcurrencyPolicy.Forbid:
            return self.emit(Reason.RunSkipped, f"the run of {rfc3339(latest)} is skipped: "
                             f"{', '.join(self.active)} still active (concurrencyPolicy: Forbid)")
        if self.active and spec.concurrency_policy == ConcurrencyPolicy.Replace:
            self.replace_active(f"the run of {rfc3339(latest)} replaces it "
                                "(concurrencyPolicy: Replace)")
        if not self.room:
            return self.emit(Reason.RunSkipped, f"the run of {rfc3339(latest)} is skipped: "
                             f"{self.full()}", warning=True)
        name = cron_child_name(self.sched.name, latest)
        self.create(name, f"created {name} for the cron time {rfc3339(latest)}{earlier}",
                    {SCHEDULED_TIME_ANNOTATION: rfc3339(latest)})

    def earliest(self, since: datetime) -> datetime:
        """Where the CronJob controller starts looking: the last run, or the start of
        ``startingDeadlineSeconds`` when that is later."""
        deadline = self.spec.starting_deadline_seconds
        return since if deadline is None else max(since, self.now - timedelta(seconds=deadline))

    def skipped_past_deadline(self, cron: Cron, tz: Zone, since: datetime) -> None:
        """A run due but older than the deadline is not made (as a CronJob); said once."""
        if self.spec.starting_deadline_seconds is None:
            return
        latest = most_recent(cron, tz, since, self.now).latest
        if latest is None:
            return
        self.status.last_schedule_time = latest
        late = (self.now - latest).total_seconds()
        self.emit(Reason.RunSkipped, f"the run of {rfc3339(latest)} was missed by {late:.0f}s "
                  f"(> startingDeadlineSeconds {self.spec.starting_deadline_seconds})",
                  warning=True)

    def never_fires(self, why: str) -> tuple[Reason, str]:
        message = f"spec.schedule: {why}"
        before = self.status.condition(SC.Ready)
        if before is None or before.message != message:
            self.emit(Reason.InvalidSpec, message, warning=True)
        self.status.next_schedule_time = None
        return Reason.InvalidSpec, message

    def new_models(self) -> tuple[Reason, str] | None:
        """Evaluates new objects; a reason for Ready=False when the prefix cannot be listed."""
        observed, status, spec = self.observed, self.status, self.spec
        if observed.models_error is not None:
            ready = status.condition(SC.Ready)
            if ready is None or ready.reason != Reason.ModelListFailed:
                self.emit(Reason.ModelListFailed, observed.models_error, warning=True)
            return Reason.ModelListFailed, observed.models_error
        if observed.models is None:
            return None
        if not listed(spec, status):
            self.first_listing(observed.models)
            return None
        seen = {(model.key, model.etag) for model in status.seen_models}
        new = sorted((model for model in observed.models if (model.key, model.etag) not in seen
                      and (status.seen_before is None or model.last_modified > status.seen_before)),
                     key=lambda model: (model.last_modified, model.key))
        if not new:
            return None
        policy = spec.concurrency_policy
        if policy == ConcurrencyPolicy.Forbid:
            if self.active:
                return None  # the oldest new model waits for the active run (never lost)
            chosen, skipped = new[:1], []
        elif policy == ConcurrencyPolicy.Replace:
            chosen, skipped = new[-1:], new[:-1]
            if self.active:
                self.replace_active(f"a new model {chosen[0].key} replaces it "
                                    "(concurrencyPolicy: Replace)")
        else:
            chosen, skipped = new[:min(MAX_NEW_PER_ROUND, self.room)], []
        for model in skipped:
            self.emit(Reason.RunSkipped, f"new model {model.key} ({model.identity}) is skipped: "
                      "a newer one replaces it (concurrencyPolicy: Replace)")
        for model in chosen:
            name = model_child_name(self.sched.name, model.key, model.etag)
            if is_registry_uri(model.key):  # a registered version: its URI is its key
                uri, what = model.key, "the new version"
            else:
                uri, what = f"s3://{observed.bucket}/{model.key}", "the new model"
            self.create(name, f"created {name} for {what} {uri} ({model.identity})",
                        {MODEL_KEY_ANNOTATION: model.key, MODEL_ETAG_ANNOTATION: model.etag}, uri)
        self.remember([*chosen, *skipped])
        return None

    def first_listing(self, models: tuple[ModelObject, ...]) -> None:
        """What was there before the schedule is not "new": only recorded."""
        status = self.status
        source = self.spec.trigger.new_model.source
        if status.models_source not in (None, source):  # another source: its own listing
            status.seen_models, status.seen_before = [], None
        status.models_listed, status.models_source = True, source
        self.remember(list(models))

    def remember(self, models: list[ModelObject]) -> None:
        """Adds to the seen list, newest first; beyond its bound the oldest leave it and
        ``seenBefore`` rises past them."""
        status = self.status
        merged = [SeenModel(key=model.key, etag=model.etag, last_modified=model.last_modified)
                  for model in models] + status.seen_models
        earliest = datetime.min.replace(tzinfo=self.now.tzinfo)
        merged.sort(key=lambda model: (model.last_modified or earliest, model.key), reverse=True)
        status.seen_models, dropped = merged[:SEEN_LIMIT], merged[SEEN_LIMIT:]
        for model in dropped:
            if model.last_modified and (status.seen_before is None
                                        or model.last_modified > status.seen_before):
                status.seen_before = model.last_modified


def decide_schedule(sched: ObjectIdentity, spec: EvaluationScheduleSpec | InvalidSpec,
                    status: EvaluationScheduleStatus, observed: ScheduleObserved, now: datetime,
                    limits: ScheduleLimits = ScheduleLimits()
                    ) -> tuple[EvaluationScheduleStatus, list[ScheduleAction]]:
    """The next status and what to do, from what a round observed. Pure."""
    after = status.model_copy(deep=True)
    after.observed_generation = sched.generation
    if isinstance(spec, InvalidSpec):
        before = after.condition(SC.Ready)
        st.set_condition(after, SC.Ready, False, spec.reason, spec.message, sched.generation, now)
        changed = before is None or before.reason != spec.reason or before.message != spec.message
        return after, [Emit(spec.reason, spec.message, True)] if changed else []
    round_ = _ScheduleRound(sched, spec, after, observed, now, limits)
    round_.run()
    return round_.status, round_.actions


def record_refusals(status: EvaluationScheduleStatus, refusals: list[str], generation: int | None,
                    now: datetime) -> None:
    """Children the API server refused to create (HTTP 4xx): Ready=False with why, until a
    later round makes a run. Each was one run's (a cron time, a new model): it is not retried."""
    if refusals:
        st.set_condition(status, SC.Ready, False, Reason.CreateRefused, refusals[-1], generation,
                         now)
