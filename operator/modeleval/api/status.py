"""The ModelEvaluation status: what the operator writes, and only the operator.

Spelled as the Kubernetes API conventions and KubeRay's RayJob spell theirs: a ``phase``
summary, ``conditions`` as a list-map keyed by ``type`` (each with a reason from
:class:`~modeleval.api.reasons.Reason`, a transition time and the generation it was decided for),
``observedGeneration``, RFC 3339 times, and the job's identity.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .registry import PromotionStatus, ResolvedModel

from .events import PendingEvent
# Kubernetes' times: one parser, one writer (times.py), imported from here by the rest.
from .times import Time, parse_time, rfc3339  # noqa: F401


class Phase(StrEnum):
    Pending = "Pending"
    Provisioning = "Provisioning"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"

    @property
    def terminal(self) -> bool:
        return is_terminal(self)


# The phases an evaluation ends in, and so the status of a stored attempt's result: the one list
# (a type for the documents' fields, a tuple for everything else).
TerminalPhase = Literal["Succeeded", "Failed"]
TERMINAL_PHASES: tuple[Phase, ...] = tuple(Phase(name) for name in get_args(TerminalPhase))


def is_terminal(phase: str | None) -> bool:
    """Whether a phase (as read from an object's status: a string, or none yet) is final."""
    return phase in TERMINAL_PHASES


class ConditionType(StrEnum):
    Provisioned = "Provisioned"   # the RayCluster is ready
    Queued = "Queued"  # Kueue holds the RayCluster in its LocalQueue (False: admitted)
    JobSubmitted = "JobSubmitted"  # the Ray job of the current attempt exists
    Complete = "Complete"
    Failed = "Failed"
    Suspended = "Suspended"
    ReportWritten = "ReportWritten"  # the HTML report is where status.reportURI says
    DataDrift = "DataDrift"  # the data drifted from spec.dataQuality.reference (True) or not
    ModelResolved = "ModelResolved"  # every models:/ URI was resolved (pinned in resolvedModels)
    Promoted = "Promoted"  # spec.promote's alias was set on the candidate's version
    EventsDelivered = "EventsDelivered"  # every event reached its sinks (False: one is waiting)


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    type: str = Field(description="Provisioned, JobSubmitted, Complete, Failed, Suspended, "
                      "ReportWritten or DataDrift.")
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(description="A Reason (see the README's troubleshooting table).")
    message: str = Field("", description="The reason in words.")
    last_transition_time: Time = Field(description="When status last changed.")
    observed_generation: int | None = Field(None, description="The metadata.generation this "
                                            "condition was decided for.")

    @property
    def true(self) -> bool:
        return self.status == "True"


class Progress(StatusModel):
    done: int = Field(0, description="Units processed so far by the current attempt.")
    total: int = Field(0, description="Units in all (0 while not known yet).")
    unit: str = Field("rows", description="What done and total count: rows, or bytes of the "
                      "source while a dataset is parsed and predicted in one pass.")
    percent: str = Field("0%", description="done / total, for kubectl's PROGRESS column.")


class BaselineStatus(StatusModel):
    deltas: dict[str, float] = Field(default_factory=dict, description="candidate - baseline")
    gate_passed: bool | None = Field(None, description="Whether the candidate's gate passed "
                                     "(null without gate rules).")


class ResultsRef(StatusModel):
    database: str = Field(description="The MongoDB database (spec.output.mongodb.database).")
    collection: str = Field(description="Its collection (spec.output.mongodb.collection).")
    id: str = Field(description="The result document's _id.")


_CONDITIONS_LIST_MAP = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}

WARNINGS_LIMIT = 10  # entries of status.warnings
WARNING_CHARS = 256  # characters of each


def capped_warnings(warnings: list[str]) -> list[str]:
    """A result's warnings as status carries them: a result cannot grow the status."""
    return [w if len(w) <= WARNING_CHARS else w[:WARNING_CHARS - 3] + "..."
            for w in warnings[:WARNINGS_LIMIT]]


DRIFT_FEATURES = 5  # entries of status.drift.mostDrifted
FEATURE_NAME_CHARS = 64  # characters of each name there
REFERENCE_CHARS = 256  # characters of status.drift.reference


def _capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class DriftedFeature(StatusModel):
    name: str = Field(max_length=FEATURE_NAME_CHARS, description="The feature (cut at "
                      f"{FEATURE_NAME_CHARS} characters).")
    psi: float = Field(description="Its population stability index against the reference.")


class _FeatureDigest(StatusModel):
    """What status reads of one feature of a result document's drift (as stored: its other
    measures may have been left in MongoDB by the operator's read)."""

    name: str
    psi: float
    drifted: bool


class _DriftDigest(StatusModel):
    reference: str
    drifted: bool
    drifted_share: float
    features: list[_FeatureDigest] = Field(default_factory=list)


class DataDriftStatus(StatusModel):
    """A result document's drift (api.profile.DataDrift) in a few fields: a document cannot
    grow the status, however many features it compared."""

    drifted: bool = Field(description="Whether the data drifted (driftedShare reached "
                          "spec.dataQuality.thresholds.driftShare).")
    drifted_share: float = Field(description="Share of the features that drifted (0 to 1).")
    drifted_features: int = Field(description="Features that drifted.")
    features: int = Field(description="Features compared with the reference.")
    reference: str = Field(max_length=REFERENCE_CHARS, description="What the data was compared "
                           f"with (an evaluation, a dataset URI; cut at {REFERENCE_CHARS} "
                           "characters).")
    most_drifted: list[DriftedFeature] = Field(
        default_factory=list, max_length=DRIFT_FEATURES, description=f"At most {DRIFT_FEATURES} "
        "drifted features, largest PSI first; the result document has every feature's measures.")

    @classmethod
    def of(cls, drift: dict) -> "DataDriftStatus":
        """From a result document's ``drift`` as stored (by alias); each feature needs only its
        name, psi and drifted. Raises pydantic's ValidationError for one without them."""
        digest = _DriftDigest.model_validate(drift)
        drifted = [feature for feature in digest.features if feature.drifted]
        # Largest PSI first, as api.profile.DataDrift.most_drifted orders them.
        listed = [feature for feature in drifted if math.isfinite(feature.psi)]  # JSON has no NaN
        top = sorted(listed, key=lambda feature: -feature.psi)[:DRIFT_FEATURES]
        return cls(drifted=digest.drifted, drifted_share=digest.drifted_share,
                   drifted_features=len(drifted), features=len(digest.features),
                   reference=_capped(digest.reference, REFERENCE_CHARS),
                   most_drifted=[DriftedFeature(name=_capped(f.name, FEATURE_NAME_CHARS),
                                                psi=f.psi) for f in top])

    def describe(self) -> str:
        """The DataDrift condition's message: the reference, the share, the most drifted."""
        verdict = "drifted" if self.drifted else "did not drift"
        text = (f"the data {verdict} from {self.reference}: {self.drifted_features} of "
                f"{self.features} features drifted ({self.drifted_share:.0%})")
        if self.most_drifted:
            named = ", ".join(f"{f.name} (PSI {f.psi:.3g})" for f in self.most_drifted)
            more = self.drifted_features - len(self.most_drifted)
            text += f"; most drifted: {named}" + (f" and {more} more" if more > 0 else "")
        return text


class ClusterFields(StatusModel):
    """The spec fields that decide whose RayCluster an evaluation runs on and whether it is
    deleted after, fixed at creation."""

    ray_cluster_name: str | None = Field(None, description="spec.rayClusterName as first seen.")
    keep_cluster: bool = Field(False, description="spec.keepCluster as first seen.")


class ModelEvaluationStatus(StatusModel):
    phase: Phase = Field(Phase.Pending, description="Pending, Provisioning, Running, Succeeded "
                         "or Failed.")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_CONDITIONS_LIST_MAP,
                                        description="The latest of each condition type (Provisioned, "
                                        "JobSubmitted, Complete, Failed, Suspended, ReportWritten, "
                                        "DataDrift).")
    attempt: int = Field(0, description="The current attempt, from 1; a retry or a resume adds one.")
    start_time: Time | None = Field(None, description="When the operator accepted the evaluation.")
    completion_time: Time | None = Field(None, description="When it Succeeded or Failed.")
    ray_cluster: str | None = Field(None, description="The RayCluster the current attempt runs on.")
    cluster_fields: ClusterFields | None = Field(None, description="spec.rayClusterName and "
                                                 "spec.keepCluster as the evaluation was first "
                                                 "seen with: they cannot change after.")
    job_id: str | None = Field(None, description="The Ray job submission id of the current attempt.")
    dashboard_url: str | None = Field(None, alias="dashboardURL", description="The Ray dashboard "
                                      "of the cluster running the job.")
    progress: Progress | None = Field(None, description="How far the current attempt is.")
    metrics: dict[str, float] = Field(default_factory=dict, description="The candidate's value of "
                                      "each metric in spec.metrics, once Succeeded.")
    primary_metric: str | None = Field(None, description="e.g. ndcg@10=0.8562, for kubectl.")
    baseline: BaselineStatus | None = Field(None, description="The candidate against "
                                            "spec.baseline.")
    results_ref: ResultsRef | None = Field(None, description="Where the result document is in "
                                           "MongoDB.")
    predictions_uri: str | None = Field(None, alias="predictionsURI", description="Where the "
                                        "predictions were written, when spec.output.predictionsUri "
                                        "asks for them.")
    report_uri: str | None = Field(None, alias="reportURI", description="Where the evaluation's "
                                   "HTML report was written (see the ReportWritten condition).")
    resolved_models: list[ResolvedModel] = Field(
        default_factory=list, max_length=10, description="Each models:/ URI of the spec as "
        "the operator resolved it before the first attempt (the version and its artefact): "
        "a retry scores the same version, whatever the alias points to since.")
    promotion: PromotionStatus | None = Field(None, description="spec.promote as carried "
                                              "out: the alias, the version it was set on, "
                                              "whether it is done (see the Promoted condition).")
    drift: DataDriftStatus | None = Field(None, description="The data compared with "
                                          "spec.dataQuality.reference (see the DataDrift "
                                          "condition), once Succeeded.")
    warnings: list[Annotated[str, Field(max_length=WARNING_CHARS)]] = Field(default_factory=list, max_length=WARNINGS_LIMIT, description=(
        f"What the result warns of (e.g. a GPU asked for but not used), at most "
        f"{WARNINGS_LIMIT} of {WARNING_CHARS} characters; the full list is in the result document."))
    reason: str | None = Field(None, description="Reason of the last failure, if any.")
    message: str | None = Field(None, description="What the operator last did or saw, in words.")
    observed_generation: int | None = Field(None, description="The metadata.generation this "
                                            "status was last decided for.")
    next_retry_time: Time | None = Field(None, description="When a failed attempt is retried.")
    pending_events: list[PendingEvent] = Field(default_factory=list, max_length=16, description=
                                               "Events not yet acknowledged by every sink "
                                               "(spec.events and the platform's), oldest "
                                               "first; each leaves once its sinks have it.")

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: ConditionType) -> bool:
        found = self.condition(type_)
        return found is not None and found.true
