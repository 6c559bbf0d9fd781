"""What the runner and the operator exchange besides the Ray job itself: the result document
and the progress document (both in MongoDB, keyed by :func:`document_id`), and the markers of the
lines the runner prints to the job's log.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .curves import ModelCurves
from .profile import DataDrift, DatasetProfile
from .reasons import Reason
from .status import TerminalPhase

# A result document the runner could not store is printed to the job's log after this marker;
# the operator stores it once MongoDB answers, so a store outage loses no result.
DOCUMENT_MARKER = "MODELEVAL_DOCUMENT "
# The runner's last line: the outcome in brief, for a person reading the job's log.
RESULT_MARKER = "MODELEVAL_RESULT "
# A document line longer than this (in characters) is not relayed from a job's log: whoever
# writes the log cannot make the operator parse more.
MAX_DOCUMENT_LINE = 256 * 1024
PROGRESS_MARKER = "MODELEVAL_PROGRESS "
# The MongoDB collection (in the results database) that progress documents go to.
PROGRESS_COLLECTION = "progress"


def document_id(uid: str, attempt: int) -> str:
    """The key of an attempt's result and progress documents: one per (evaluation, attempt), so
    a replayed write is an idempotent upsert."""
    return f"{uid}:{attempt}"


# Every Ray job the operator submits has an id with this prefix (how it tells its jobs apart on a
# shared head).
JOB_PREFIX = "modeleval-"


def submission_id(uid: str, attempt: int) -> str:
    """The Ray job's submission id: deterministic per attempt, so a restarted operator finds its
    job instead of submitting twice."""
    return f"{JOB_PREFIX}{uid}-{attempt}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


# MongoDB-compatible stores refuse (FerretDB) or mishandle keys with "." or a leading "$", and
# documents key maps by user data and numbers: slice values ("[0.5, 1)"), quantile ranks
# ("0.99"), label values ("2.5"), column names. Stored keys are percent-escaped ("%" too, so
# every key reads back exactly); JSON files and log lines keep the keys as they are.
_KEY_ESCAPES = {"%": "%25", ".": "%2E", "$": "%24"}


def mongo_keys(value: Any) -> Any:
    """``value`` with every map key escaped for storage in MongoDB."""
    if isinstance(value, dict):
        return {(_escaped(key) if isinstance(key, str) else key): mongo_keys(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [mongo_keys(item) for item in value]
    return value


def plain_keys(value: Any) -> Any:
    """A document as MongoDB returned it, its keys as they were before :func:`mongo_keys`."""
    if isinstance(value, dict):
        return {(unquote(key) if isinstance(key, str) and "%" in key else key): plain_keys(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [plain_keys(item) for item in value]
    return value


def _escaped(key: str) -> str:
    if not any(mark in key for mark in _KEY_ESCAPES):
        return key
    return "".join(_KEY_ESCAPES.get(char, char) for char in key)


class _Document(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_mongo(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")

    def to_stored(self) -> dict[str, Any]:
        """The document as MongoDB stores it (map keys escaped: :func:`mongo_keys`)."""
        return mongo_keys(self.to_mongo())

    @classmethod
    def from_stored(cls, raw: dict[str, Any]) -> Any:
        """A document read from MongoDB (its keys unescaped)."""
        return cls.model_validate(plain_keys(raw))

    def to_json(self) -> str:
        return json.dumps(self.to_mongo(), indent=2)


class Interval(_Document):
    """A bootstrap percentile interval."""

    lower: float
    upper: float


class GateRuleResult(_Document):
    """One gate rule as judged (the spec's rule is ``api.spec.GateRule``)."""

    metric: str
    value: float
    baseline: float | None = None
    passed: bool
    message: str


class GateResult(_Document):
    passed: bool
    rules: list[GateRuleResult] = Field(default_factory=list)


class BaselineResult(_Document):
    model: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    deltas: dict[str, float] = Field(default_factory=dict, description="candidate - baseline")
    intervals: dict[str, Interval] = Field(default_factory=dict)
    delta_intervals: dict[str, Interval] = Field(default_factory=dict,
                                                 description="paired bootstrap of the deltas")


class ChallengerResult(_Document):
    """A challenger (spec.challengers): scored on the same data as the candidate, in the same
    pass, with its own metrics, deltas versus the baseline and gate."""

    name: str
    model: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    intervals: dict[str, Interval] = Field(default_factory=dict)
    deltas: dict[str, float] = Field(default_factory=dict, description="challenger - baseline")
    delta_intervals: dict[str, Interval] = Field(default_factory=dict)
    gate: GateResult | None = None


class ConfidenceResult(_Document):
    """How the intervals were drawn (spec.confidence, and what was resampled)."""

    level: float
    resamples: int
    seed: int
    unit: Literal["queries", "rows"]


class ResultDocument(_Document):
    """One attempt's outcome: the metrics on success, the reason and message on failure."""

    id: str = Field(alias="_id")
    uid: str
    attempt: int
    name: str
    namespace: str | None = None
    status: TerminalPhase
    reason: Reason | None = None
    message: str | None = None
    retryable: bool | None = None
    primary_metric: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    intervals: dict[str, Interval] = Field(default_factory=dict)
    confidence: ConfidenceResult | None = None
    slices: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    slice_intervals: dict[str, dict[str, dict[str, Interval]]] = Field(
        default_factory=dict, description="slice name -> value -> metric -> the bootstrap "
        "interval of the candidate's metric on that slice's rows (or queries)")
    baseline: BaselineResult | None = None
    gate: GateResult | None = None
    challengers: list[ChallengerResult] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    rows: int = 0
    queries: int | None = None
    model: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict, description="the dataset read: uri, "
                                    "format, fingerprint, bytes, shards, features (the feature "
                                    "count) and missingValues (the feature values absent from "
                                    "the rows as parsed, before any missingFeatures: zero "
                                    "filling: NaN cells of a table, and features a sparse "
                                    "LETOR/SVMlight line leaves out)")
    timings: dict[str, float] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict, description="what the evaluation "
                                      "ran with: mode (local or cluster), CPUs, GPUs, actors")
    versions: dict[str, str] = Field(default_factory=dict, description="the versions of "
                                     "modeleval, Python and the libraries that scored it")
    cache_hit: bool = False
    predictions_uri: str | None = None
    report_uri: str | None = Field(None, description="where this attempt's HTML report was "
                                   "written (file:// locally, s3:// in a cluster)")
    report_error: str | None = Field(None, description="why the report could not be written "
                                     "(the evaluation still succeeded); None when it was, or "
                                     "when reports are off")
    schedule: str | None = Field(None, description="the EvaluationSchedule that created the "
                                 "evaluation, if one did")
    curves: list[ModelCurves] | None = Field(
        None, description="per model, what a report plots (ROC, PR, calibration, confusion, "
        "histograms, ranking cut-offs); absent in documents written before they existed")
    profile: DatasetProfile | None = Field(None, description="the data's profile: every "
                                           "feature, the labels, each model's predictions, the "
                                           "query lengths (api/profile.py bounds its size)")
    drift: DataDrift | None = Field(None, description="the profile compared with "
                                    "spec.dataQuality.reference's, when one is named")
    finished_at: str = Field(default_factory=utc_now)

    @property
    def succeeded(self) -> bool:
        return self.status == "Succeeded"

    @classmethod
    def failure(cls, uid: str, attempt: int, name: str, namespace: str | None, reason: Reason,
                message: str, retryable: bool, model_uri: str, dataset_uri: str,
                finished_at: str | None = None) -> "ResultDocument":
        return cls(_id=document_id(uid, attempt), uid=uid, attempt=attempt, name=name,
                   namespace=namespace, status="Failed", reason=reason, message=message,
                   retryable=retryable, model={"uri": model_uri}, dataset={"uri": dataset_uri},
                   finished_at=finished_at or utc_now())

    def log_line(self) -> str:
        """The line the runner prints when the store is down (read back by the operator). The
        operator relays no line over MAX_DOCUMENT_LINE: one that its curves would push over
        goes without them (the metrics matter more), saying so."""
        line = DOCUMENT_MARKER + json.dumps(self.to_mongo())
        if len(line) > MAX_DOCUMENT_LINE and self.profile is not None:
            # The profile is the largest part (hundreds of KB at MSLR's width); its drift stays.
            note = ("the data's profile was left out of this document: relayed through the "
                    "job's log, it would have exceeded the relayed line's size limit")
            return self.model_copy(update={"profile": None,
                                           "warnings": [*self.warnings, note]}).log_line()
        if len(line) > MAX_DOCUMENT_LINE and self.curves:
            note = ("the report's curves were left out of this document: relayed through the "
                    "job's log, it would have exceeded the relayed line's size limit")
            return self.model_copy(update={"curves": None,
                                           "warnings": [*self.warnings, note]}).log_line()
        return line

    @classmethod
    def from_log(cls, text: str, uid: str, attempt: int, name: str,
                 namespace: str) -> "ResultDocument | None":
        """The last document of this evaluation's attempt printed in a job's log, if any. The
        log is written by code in a tenant's pods: a document is taken only when its id, uid,
        attempt, name and namespace are all this evaluation's, and its line is not too long."""
        wanted = (document_id(uid, attempt), uid, attempt, name, namespace)
        for line in reversed(text.splitlines()):
            if not line.startswith(DOCUMENT_MARKER) or len(line) > MAX_DOCUMENT_LINE:
                continue
            try:
                document = cls.model_validate_json(line[len(DOCUMENT_MARKER):])
            except ValueError:
                continue
            if (document.id, document.uid, document.attempt, document.name,
                    document.namespace) == wanted:
                return document
        return None


class ProgressDocument(_Document):
    """Progress of a running attempt (best effort; the operator mirrors it into status)."""

    id: str = Field(alias="_id")
    done: int = 0
    total: int = 0
    unit: str = "rows"
    updated_at: str = Field(default_factory=utc_now)
