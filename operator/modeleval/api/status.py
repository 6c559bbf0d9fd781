"""The ModelEvaluation status: what the operator writes, and only the operator.

Spelled as the Kubernetes API conventions and KubeRay's RayJob spell theirs: a ``phase``
summary, ``conditions`` as a list-map keyed by ``type`` (each with a reason from
:class:`~modeleval.api.reasons.Reason`, a transition time and the generation it was decided for),
``observedGeneration``, RFC 3339 times, and the job's identity.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel


def rfc3339(moment: datetime) -> str:
    """Seconds precision, UTC, ``Z``: how Kubernetes writes times."""
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


Time = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json"),
                 WithJsonSchema({"type": "string", "format": "date-time"})]


class Phase(StrEnum):
    Pending = "Pending"
    Provisioning = "Provisioning"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.Succeeded, Phase.Failed)


class ConditionType(StrEnum):
    Provisioned = "Provisioned"   # the RayCluster is ready
    JobSubmitted = "JobSubmitted"  # the Ray job of the current attempt exists
    Complete = "Complete"
    Failed = "Failed"
    Suspended = "Suspended"
    ReportWritten = "ReportWritten"  # the HTML report is where status.reportURI says


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    type: str = Field(description="Provisioned, JobSubmitted, Complete, Failed, Suspended or "
                      "ReportWritten.")
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(description="A Reason (see the README's troubleshooting table).")
    message: str = ""
    last_transition_time: Time
    observed_generation: int | None = None

    @property
    def true(self) -> bool:
        return self.status == "True"


class Progress(StatusModel):
    done: int = 0
    total: int = 0
    unit: str = Field("rows", description="What done and total count: rows, or bytes of the "
                      "source while a dataset is parsed and predicted in one pass.")
    percent: str = Field("0%", description="done / total, for kubectl's PROGRESS column.")


class BaselineStatus(StatusModel):
    deltas: dict[str, float] = Field(default_factory=dict, description="candidate - baseline")
    gate_passed: bool | None = None


class ResultsRef(StatusModel):
    database: str
    collection: str
    id: str


_CONDITIONS_LIST_MAP = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}

WARNINGS_LIMIT = 10  # entries of status.warnings
WARNING_CHARS = 256  # characters of each


def capped_warnings(warnings: list[str]) -> list[str]:
    """A result's warnings as status carries them: a result cannot grow the status."""
    return [w if len(w) <= WARNING_CHARS else w[:WARNING_CHARS - 3] + "..."
            for w in warnings[:WARNINGS_LIMIT]]


class ClusterFields(StatusModel):
    """The spec fields that decide whose RayCluster an evaluation runs on and whether it is
    deleted after, fixed at creation."""

    ray_cluster_name: str | None = None
    keep_cluster: bool = False


class ModelEvaluationStatus(StatusModel):
    phase: Phase = Phase.Pending
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_CONDITIONS_LIST_MAP)
    attempt: int = 0
    start_time: Time | None = None
    completion_time: Time | None = None
    ray_cluster: str | None = None
    cluster_fields: ClusterFields | None = Field(None, description="spec.rayClusterName and "
                                                 "spec.keepCluster as the evaluation was first "
                                                 "seen with: they cannot change after.")
    job_id: str | None = None
    dashboard_url: str | None = Field(None, alias="dashboardURL")
    progress: Progress | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    primary_metric: str | None = Field(None, description="e.g. ndcg@10=0.8562, for kubectl.")
    baseline: BaselineStatus | None = None
    results_ref: ResultsRef | None = None
    predictions_uri: str | None = Field(None, alias="predictionsURI")
    report_uri: str | None = Field(None, alias="reportURI", description="Where the evaluation's "
                                   "HTML report was written (see the ReportWritten condition).")
    warnings: list[Annotated[str, Field(max_length=WARNING_CHARS)]] = Field(default_factory=list, max_length=WARNINGS_LIMIT, description=(
        f"What the result warns of (e.g. a GPU asked for but not used), at most "
        f"{WARNINGS_LIMIT} of {WARNING_CHARS} characters; the full list is in the result document."))
    reason: str | None = Field(None, description="Reason of the last failure, if any.")
    message: str | None = None
    observed_generation: int | None = Field(None, description="The metadata.generation this "
                                            "status was last decided for.")
    next_retry_time: Time | None = Field(None, description="When a failed attempt is retried.")

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: ConditionType) -> bool:
        found = self.condition(type_)
        return found is not None and found.true
