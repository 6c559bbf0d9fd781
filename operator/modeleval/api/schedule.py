"""The EvaluationSchedule resource: a schedule (cron) and/or a new-model trigger (an S3 prefix or
a registered model in MLflow) that create child ModelEvaluations from a template, as a CronJob
creates Jobs.

The spec models generate the second CRD (api/crd.py) and validate the spec in the operator,
the same way as api/spec.py's; the status model is what the operator writes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field

from .cron import ZONE_PATTERN, Cron, CronError, zone
from .direction import improvement
from .spec import (BUCKET, ModelEvaluationSpec, ModelFormat, ModelSource, Rule,
                   SpecModel, matching)
from .events import PendingEvent
from .registry import MODEL_NAME_PATTERN
from .status import _CONDITIONS_LIST_MAP, Condition, StatusModel, Time

SCHEDULE_KIND = "EvaluationSchedule"
SCHEDULE_PLURAL = "evaluationschedules"
SCHEDULE_SINGULAR = "evaluationschedule"
SCHEDULE_SHORT_NAMES = ["evalsched"]
# The label every child carries, naming its schedule (children are listed by it).
SCHEDULE_LABEL = "modeleval.dev/schedule"
# A child's name is the schedule's plus at most 11 characters, within a DNS label (63).
SCHEDULE_NAME_MAX = 52
PREFIX_PATTERN = rf"^s3://{BUCKET}/(.*/)?$"


def _cron(text: str) -> str:
    """Checked by the operator as the API server checks a CronJob's schedule; the CRD bounds
    only the length (a pattern there could refuse what a CronJob accepts)."""
    try:
        Cron.parse(text)
    except CronError as error:
        raise ValueError(str(error)) from None
    return text


def _zone(text: str) -> str:
    try:
        zone(text)
    except CronError as error:
        raise ValueError(str(error)) from None
    return text


class ConcurrencyPolicy(StrEnum):
    Allow = "Allow"      # runs may overlap
    Forbid = "Forbid"    # a due run is skipped (cron) or waits (new model) while one is active
    Replace = "Replace"  # the active runs are deleted and the new one created


class Against(StrEnum):
    previous = "previous"
    champion = "champion"


class NewModelTrigger(SpecModel):
    prefix: Annotated[str, matching(PREFIX_PATTERN, "must be s3://bucket/ or s3://bucket/prefix/ "
                                    "(ending in /)")] | None = Field(
        None, max_length=1024, description="Every new object (key and ETag) under this prefix "
        "is evaluated once: the template's model.uri is replaced by the object's URI. Objects "
        "already there when the schedule is created are not evaluated. Set this or "
        "registeredModel.")
    registered_model: str | None = Field(
        None, pattern=MODEL_NAME_PATTERN, max_length=256, description="A registered model of the "
        "platform's MLflow server (the chart's mlflow.trackingUri), read with the namespace's "
        "own MLflow credentials: every new version is evaluated once, the template's model.uri "
        "replaced by models:/NAME/VERSION (resolved and pinned as any models:/ URI). Versions "
        "already there when the schedule is created are not evaluated. Set this or prefix.")
    format: ModelFormat | None = Field(None, strict=False, description="The new models' format "
                                       "(default: the template's model.format).")

    rules = (
        Rule("has(self.prefix) != has(self.registeredModel)",
             "set exactly one of prefix and registeredModel",
             lambda t: (t.prefix is None) != (t.registered_model is None)),
    )

    @property
    def source(self) -> str:
        """What the trigger watches, as its runs' messages name it."""
        return self.prefix if self.prefix is not None else f"models:/{self.registered_model}"


class Trigger(SpecModel):
    new_model: NewModelTrigger = Field(description="Evaluate each model uploaded under an S3 "
                                       "prefix, or each new version of a registered model.")


class Degradation(SpecModel):
    metric: str | None = Field(None, max_length=32, description="Metric watched (default: the "
                               "template's primary metric, its first).")
    max_drop: float = Field(ge=0, description="Degraded when the metric is worse by more than "
                            "this (absolute; loss metrics worsen upwards).")
    against: Against = Field(Against.previous, strict=False, description="previous: the last "
                             "successful run before; champion: a champion model evaluated in "
                             "the same run as its baseline.")
    champion_model: ModelSource | None = Field(None, description="The champion (against: "
                                               "champion); default: the template's "
                                               "baseline.model.")

    def exceeded(self, drop: float) -> bool:
        """Whether a drop (:func:`metric_drop`) makes the schedule Degraded."""
        return drop > self.max_drop


def metric_drop(metric: str, value: float, reference: float) -> float:
    """How much worse ``value`` is than ``reference`` (negative: better), whichever way the
    metric improves: what a schedule's degradation rule compares with maxDrop (the operator's
    Degraded condition and the dashboard's marks both read it)."""
    return -improvement(metric, value, reference)


class EvaluationScheduleSpec(SpecModel):
    """Creates ModelEvaluations from a template on a cron schedule and/or for each new model
    under an S3 prefix; tracks the primary metric and says when it degrades."""

    # The API server cannot parse cron: the operator (and the CLI) check it exactly as the API
    # server checks a CronJob's, so the CRD holds no pattern that could refuse what it accepts.
    schedule: Annotated[str, AfterValidator(_cron)] | None = Field(
        None, min_length=1, max_length=256, description="Cron, read as a CronJob's schedule "
        "(minute hour day-of-month month day-of-week, @hourly, @daily, @every 90m, ...), in "
        "timeZone.")
    time_zone: Annotated[str, AfterValidator(_zone)] | None = Field(
        None, max_length=64, pattern=ZONE_PATTERN,
        description="IANA time zone of schedule, as a CronJob's timeZone (default UTC).")
    starting_deadline_seconds: int | None = Field(
        None, ge=1, description="A run missed (operator down, suspended) by more than this is "
        "skipped; unset: the latest missed run is made once, however late.")
    trigger: Trigger | None = Field(None, description="Runs on events besides (or instead of) "
                                    "the cron schedule: a new model object under an S3 prefix, "
                                    "or a new version of a registered model.")
    concurrency_policy: ConcurrencyPolicy = Field(ConcurrencyPolicy.Forbid, strict=False,
                                                  description="Allow, Forbid or Replace (as a "
                                                  "CronJob's).")
    suspend: bool = Field(False, description="No new runs while true; active runs go on.")
    successful_history_limit: int = Field(3, ge=0, le=100, description="Succeeded children kept.")
    failed_history_limit: int = Field(1, ge=0, le=100, description="Failed children kept.")
    degradation: Degradation | None = Field(None, description="When the runs' watched metric "
                                            "makes the schedule Degraded.")
    template: ModelEvaluationSpec = Field(description="The spec of each child ModelEvaluation.")

    rules = (
        Rule("has(self.schedule) || has(self.trigger)", "set schedule, trigger or both",
             lambda s: s.schedule is not None or s.trigger is not None),
        Rule("!has(self.degradation) || !has(self.degradation.against) || "
             "self.degradation.against != 'champion' || has(self.degradation.championModel) || "
             "has(self.template.baseline)",
             "against: champion needs championModel (or a template baseline)",
             lambda s: s.degradation is None or s.degradation.against != Against.champion
             or s.degradation.champion_model is not None or s.template.baseline is not None,
             ".degradation.championModel"),
        Rule("!has(self.degradation) || !has(self.degradation.metric) || "
             "self.degradation.metric in self.template.metrics",
             "must be one of template.metrics",
             lambda s: s.degradation is None or s.degradation.metric is None
             or s.degradation.metric in s.template.metrics, ".degradation.metric"),
    )

    def named_models(self) -> list[tuple[str, ModelSource]]:
        """Every model the schedule's children can name, with its field path: the template's,
        the new models (the template's model in the trigger's format) and the champion."""
        models = self.template.named_models("spec.template")
        if self.trigger is not None and self.trigger.new_model.format is not None:
            models.append(("spec.trigger.newModel", self.template.model.model_copy(
                update={"format": str(self.trigger.new_model.format)})))
        if self.degradation is not None and self.degradation.champion_model is not None:
            models.append(("spec.degradation.championModel", self.degradation.champion_model))
        return models

    @property
    def watched_metric(self) -> str:
        if self.degradation and self.degradation.metric:
            return self.degradation.metric
        return self.template.primary_metric


class ScheduleConditionType(StrEnum):
    Ready = "Ready"        # the schedule is valid and making runs (False: invalid, suspended)
    Degraded = "Degraded"  # the watched metric fell by more than degradation.maxDrop
    DataDrift = "DataDrift"  # the latest run that compared its data with a reference drifted


# Completed runs a schedule's status.runs keeps, newest first.
RUNS_LIMIT = 10


class SeenModel(StatusModel):
    key: str = Field(description="The model object's S3 key, or models:/NAME/VERSION.")
    etag: str = Field(description="Its ETag, or the version's creation time in milliseconds (the "
                      "same key with another one is a new model: an object written again, a "
                      "registered model deleted and made again).")
    last_modified: Time | None = Field(None, description="Its Last-Modified (creation) time.")


class RunRecord(StatusModel):
    """One completed run (a child that succeeded), as the schedule recorded it."""

    name: str = Field(description="The child ModelEvaluation.")
    completion_time: Time | None = Field(None, description="When it finished.")
    metric: float | None = Field(None, description="Its watched metric.")
    drifted: bool | None = Field(None, description="Whether its data drifted from "
                                 "dataQuality.reference (null: not compared).")
    drifted_share: float | None = Field(None, description="Share of its features that drifted.")


class EvaluationScheduleStatus(StatusModel):
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_CONDITIONS_LIST_MAP,
                                        description="Ready (valid and making runs), Degraded "
                                        "(the watched metric fell by more than maxDrop) and "
                                        "DataDrift (the latest run whose data was compared with "
                                        "a reference drifted).")
    last_schedule_time: Time | None = Field(None, description="The cron time of the last run "
                                            "made (or skipped by concurrencyPolicy: Forbid).")
    next_schedule_time: Time | None = Field(None, description="The next cron time.")
    last_run: str | None = Field(None, description="The newest child ModelEvaluation.")
    active: list[str] = Field(default_factory=list, description="Children not finished.")
    last_completed_run: str | None = Field(None, description="The newest child that succeeded "
                                           "and whose metric is below.")
    last_primary_metric: float | None = Field(None, description="The watched metric of "
                                              "lastCompletedRun.")
    last_completion_time: Time | None = Field(None, description="When lastCompletedRun "
                                              "finished.")
    metric_name: str | None = Field(None, description="The watched metric.")
    previous_primary_metric: float | None = Field(None, description="The watched metric of the "
                                                  "completed run before lastCompletedRun.")
    metric_change: float | None = Field(None, description="lastPrimaryMetric minus the run "
                                        "before's (against: previous) or minus the champion's "
                                        "(against: champion).")
    runs: list[RunRecord] = Field(default_factory=list, max_length=RUNS_LIMIT, description=(
        f"The last {RUNS_LIMIT} completed runs, newest first: metric and drift."))
    seen_models: list[SeenModel] = Field(default_factory=list, description="Model objects "
                                         "already evaluated (newest first, bounded).")
    seen_before: Time | None = Field(None, description="Model objects last modified at or "
                                     "before this count as seen.")
    models_listed: bool = Field(False, description="The trigger's source was listed once (what "
                                "was there then is not evaluated).")
    models_source: str | None = Field(None, description="The source (prefix or models:/NAME) "
                                      "listed then: a schedule edited to watch another lists it "
                                      "afresh, and what is there already is not evaluated.")
    observed_generation: int | None = Field(None, description="The metadata.generation this "
                                            "status was last decided for.")
    pending_events: list[PendingEvent] = Field(default_factory=list, max_length=16, description=
                                               "Events (Degraded, Drifted) not yet acknowledged "
                                               "by every sink (spec.template.events and the "
                                               "platform's), oldest first.")

    def condition(self, type_: ScheduleConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: ScheduleConditionType) -> bool:
        found = self.condition(type_)
        return found is not None and found.true
