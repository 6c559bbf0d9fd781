"""The ModelEvaluation status: what the operator writes, and only the operator.

Vocabulary follows the Kubernetes API conventions and KubeRay's RayJob where it fits: a
``phase`` summary, ``conditions`` with reasons, times, and the job's identity.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(str, Enum):
    Pending = "Pending"
    Provisioning = "Provisioning"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.Succeeded, Phase.Failed)


class ConditionType(str, Enum):
    Provisioned = "Provisioned"   # the RayCluster is ready
    JobSubmitted = "JobSubmitted"  # the Ray job of the current attempt exists
    Complete = "Complete"
    Failed = "Failed"
    Suspended = "Suspended"


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    type: str
    status: str = Field(description="True, False or Unknown.")
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


# A result document the runner could not store is printed to the job's log after this marker;
# the operator stores it once MongoDB answers, so a store outage loses no result.
DOCUMENT_MARKER = "MODELEVAL_DOCUMENT "


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


class ModelEvaluationStatus(StatusModel):
    phase: Phase = Phase.Pending
    conditions: list[Condition] = Field(default_factory=list)
    attempt: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    ray_cluster: str | None = None
    job_id: str | None = None
    dashboard_url: str | None = Field(None, alias="dashboardURL")
    progress: Progress | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    primary_metric: str | None = Field(None, description="e.g. ndcg@10=0.8562, for kubectl.")
    baseline: BaselineStatus | None = None
    results_ref: ResultsRef | None = None
    predictions_uri: str | None = Field(None, alias="predictionsURI")
    reason: str | None = Field(None, description="Reason of the last failure, if any.")
    message: str | None = None
    observed_generation: int | None = None
    next_retry_time: str | None = Field(None, description="When a failed attempt is retried.")
