"""The ModelEvaluation spec: the one source of truth for validation, the CRD schema and the docs.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
Every model forbids unknown fields, so a typo is an error that names the field, not a silent
default.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)
from pydantic.alias_generators import to_camel

API_GROUP = "modeleval.dev"
API_VERSION = "v1alpha1"
KIND = "ModelEvaluation"

URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+|file://.+)$"
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SpecModel(BaseModel):
    """Base for every spec object: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              use_enum_values=True, frozen=True)


class TaskType(str, Enum):
    ranking = "ranking"
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


class ModelFormat(str, Enum):
    xgboost = "xgboost"
    onnx = "onnx"
    pickle = "pickle"


class DatasetFormat(str, Enum):
    letor = "letor"
    parquet = "parquet"
    csv = "csv"


# Which metrics each task accepts; "@k" metrics take a cut-off, the others must not.
RANKING_METRICS = {"ndcg", "map", "mrr", "precision", "recall"}
CLASSIFICATION_METRICS = {"auc", "logloss", "accuracy", "f1", "precision", "recall"}
REGRESSION_METRICS = {"rmse", "mae", "r2"}
METRICS_BY_TASK: dict[str, set[str]] = {
    TaskType.ranking.value: RANKING_METRICS,
    TaskType.binary.value: CLASSIFICATION_METRICS,
    TaskType.multiclass.value: CLASSIFICATION_METRICS,
    TaskType.regression.value: REGRESSION_METRICS,
}
CUTOFF_METRICS = {"ndcg", "map", "precision", "recall"}
ALL_METRICS = RANKING_METRICS | CLASSIFICATION_METRICS | REGRESSION_METRICS
METRIC_PATTERN = r"^(" + "|".join(sorted(ALL_METRICS)) + r")(@[1-9][0-9]{0,3})?$"


class MetricName(BaseModel):
    """A parsed metric name such as ``ndcg@10`` (base ``ndcg``, cut-off 10) or ``auc``."""

    base: str
    k: int | None = None

    @classmethod
    def parse(cls, text: str) -> "MetricName":
        match = re.fullmatch(r"([a-z0-9]+)(?:@(-?\d+))?", text.strip().lower())
        if not match:
            raise ValueError(f"'{text}' is not a metric name (expected e.g. ndcg@10, map, auc)")
        base, k = match.group(1), match.group(2)
        if base not in ALL_METRICS:
            raise ValueError(f"unknown metric '{base}' (known: {', '.join(sorted(ALL_METRICS))})")
        if k is not None:
            if int(k) <= 0:
                raise ValueError(f"metric '{text}': the cut-off k must be a positive integer")
            if base not in CUTOFF_METRICS:
                raise ValueError(f"metric '{base}' takes no cut-off (got '{text}')")
        return cls(base=base, k=int(k) if k is not None else None)

    def __str__(self) -> str:
        return f"{self.base}@{self.k}" if self.k is not None else self.base


class ModelSource(SpecModel):
    uri: str = Field(description="Where the model file is: s3://bucket/key or file:///path.",
                     pattern=URI_PATTERN, max_length=2048)
    format: ModelFormat = Field(ModelFormat.xgboost, description="Model file format: xgboost "
                                "(JSON or UBJSON, detected from the content), onnx, or pickle.")
    allow_pickle: bool = Field(False, description="Pickle runs arbitrary code when loaded; it is "
                               "refused unless this is true.")


class DatasetSource(SpecModel):
    uri: str = Field(description="Where the dataset is: s3://bucket/key or file:///path.",
                     pattern=URI_PATTERN, max_length=2048)
    format: DatasetFormat = Field(DatasetFormat.letor, description="letor (SVMlight lines with "
                                  "qid:, as MSLR-WEB10K/30K ship), parquet or csv.")
    label_column: str = Field("label", description="Column holding the label (parquet/csv).",
                              min_length=1, max_length=256)
    group_column: str | None = Field(None, description="Column holding the query id (parquet/csv; "
                                     "LETOR files carry it as qid:). Required for ranking.",
                                     max_length=256)
    feature_columns: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        None, description="Feature columns in model order (parquet/csv). Default: every column "
        "except the label, group and slice columns.", max_length=100_000)
    num_features: int | None = Field(None, ge=1, le=1_000_000, description="Feature count for "
                                     "LETOR files; default: the model's expected feature count.")


class SliceSpec(SpecModel):
    name: str = Field(description="Name shown in results.", pattern=NAME_PATTERN, max_length=63)
    column: str | None = Field(None, description="Slice by the distinct values of this column.",
                               max_length=256)
    feature: int | None = Field(None, ge=0, description="Slice by buckets of this feature index "
                                "(0-based, as in the model).")
    buckets: list[float] | None = Field(None, min_length=1, max_length=1000, description=
                                        "Ascending bucket edges for feature or numeric columns.")

    @model_validator(mode="after")
    def _one_source(self) -> "SliceSpec":
        if (self.column is None) == (self.feature is None):
            raise ValueError("set exactly one of column or feature")
        if self.feature is not None and not self.buckets:
            raise ValueError("a feature slice needs buckets (ascending edges)")
        if self.buckets and any(b <= a for a, b in zip(self.buckets, self.buckets[1:])):
            raise ValueError("buckets must be strictly ascending")
        return self


class GateRule(SpecModel):
    metric: str = Field(description="Metric the rule checks, e.g. ndcg@10.", pattern=METRIC_PATTERN,
                        max_length=32)
    min: float | None = Field(None, description="The candidate's value must be at least this.")
    max: float | None = Field(None, description="The candidate's value must be at most this.")
    max_regression: float | None = Field(None, ge=0, description="Largest allowed worsening versus "
                                         "the baseline (absolute; direction-aware: loss metrics "
                                         "worsen upwards).")

    @model_validator(mode="after")
    def _some_bound(self) -> "GateRule":
        MetricName.parse(self.metric)
        if self.min is None and self.max is None and self.max_regression is None:
            raise ValueError(f"gate rule for {self.metric}: set min, max or maxRegression")
        return self


class Baseline(SpecModel):
    model: ModelSource = Field(description="The baseline (champion) model, evaluated on the same "
                               "data; results carry the deltas candidate minus baseline.")


class Resources(SpecModel):
    workers: int = Field(1, ge=1, le=1000, description="Ray worker pods (cluster) or parallel tasks.")
    cpu: str = Field("1", pattern=QUANTITY_PATTERN, description="CPU per worker, a Kubernetes "
                     "quantity (e.g. 2, 500m).")
    memory: str = Field("2Gi", pattern=QUANTITY_PATTERN, description="Memory per worker "
                        "(e.g. 4Gi).")
    gpu: int = Field(0, ge=0, le=16, description="nvidia.com/gpu per worker.")
    head_cpu: str = Field("1", pattern=QUANTITY_PATTERN, description="CPU of the Ray head pod.")
    head_memory: str = Field("2Gi", pattern=QUANTITY_PATTERN, description="Memory of the head pod.")

    @field_validator("cpu", "head_cpu")
    @classmethod
    def _positive_cpu(cls, value: str) -> str:
        if parse_quantity(value) <= 0:
            raise ValueError("must be greater than zero")
        return value

    @field_validator("memory", "head_memory")
    @classmethod
    def _enough_memory(cls, value: str) -> str:
        if parse_quantity(value) < 256 * 2**20:
            raise ValueError("must be at least 256Mi (a Ray worker does not start in less)")
        return value


class MongoTarget(SpecModel):
    database: str = Field("modeleval", pattern=r"^[A-Za-z0-9_\-]{1,63}$")
    collection: str = Field("results", pattern=r"^[A-Za-z0-9_\-.]{1,120}$")


class Output(SpecModel):
    mongodb: MongoTarget = Field(default_factory=MongoTarget, description="Where the result "
                                 "document goes (the URI comes from settings, never the spec).")
    predictions_uri: str | None = Field(None, pattern=r"^(s3://.+|file://.+)$", max_length=2048,
                                        description="If set, predictions are written here as "
                                        "Parquet (a prefix; one file per attempt).")


class Toleration(SpecModel):
    key: str | None = Field(None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class ModelEvaluationSpec(SpecModel):
    """What to evaluate, on what data, with which metrics, on how much compute."""

    model: ModelSource
    dataset: DatasetSource
    task: TaskType = Field(description="ranking, binary, multiclass or regression.")
    metrics: list[Annotated[str, Field(pattern=METRIC_PATTERN, max_length=32)]] = Field(
        min_length=1, max_length=32, description="Metric names, e.g. ndcg@10, map@10, mrr, auc. "
        "The first is the primary metric shown by kubectl.",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    slices: list[SliceSpec] = Field(default_factory=list, max_length=32)
    baseline: Baseline | None = None
    gate: list[GateRule] = Field(default_factory=list, max_length=16, description="Thresholds; "
                                 "the evaluation's gate passes when every rule holds.")
    resources: Resources = Field(default_factory=Resources)
    batch_size: int = Field(65536, ge=1, le=10_000_000, description="Rows per inference batch.")
    output: Output = Field(default_factory=Output)
    # Cluster-only fields; local mode ignores them.
    ray_cluster_name: str | None = Field(None, pattern=NAME_PATTERN, max_length=63, description=
                                         "Reuse this existing RayCluster instead of creating one.")
    ray_image: str | None = Field(None, max_length=512, description="Ray image for the pods "
                                  "(default from operator settings).")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    keep_cluster: bool = Field(False, description="Keep the RayCluster after the run.")
    backoff_limit: int = Field(2, ge=0, le=20, description="Retries before Failed.")
    active_deadline_seconds: int | None = Field(None, ge=1, le=7 * 24 * 3600)
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=365 * 24 * 3600)
    suspend: bool = False

    @model_validator(mode="after")
    def _cross_checks(self) -> "ModelEvaluationSpec":
        allowed = METRICS_BY_TASK[self.task]
        seen: set[str] = set()
        for text in self.metrics:
            name = MetricName.parse(text)
            if name.base not in allowed:
                raise ValueError(f"metrics: '{text}' does not apply to task {self.task} "
                                 f"(allowed: {', '.join(sorted(allowed))})")
            if self.task == TaskType.ranking.value and name.base in {"precision", "recall"} \
                    and name.k is None:
                raise ValueError(f"metrics: '{text}' needs a cut-off for ranking, e.g. {text}@10")
            if str(name) in seen:
                raise ValueError(f"metrics: '{text}' is listed twice")
            seen.add(str(name))
        if self.task == TaskType.ranking.value and self.dataset.format != DatasetFormat.letor.value \
                and not self.dataset.group_column:
            raise ValueError("dataset.groupColumn is required for ranking on parquet/csv data")
        for rule in self.gate:
            if rule.max_regression is not None and self.baseline is None:
                raise ValueError(f"gate: maxRegression on {rule.metric} needs a baseline model")
            if str(MetricName.parse(rule.metric)) not in seen:
                raise ValueError(f"gate: metric {rule.metric} is not in metrics")
        if self.model.format == ModelFormat.pickle.value and not self.model.allow_pickle:
            raise ValueError("model.format pickle is refused unless model.allowPickle is true")
        names = [s.name for s in self.slices]
        if len(names) != len(set(names)):
            raise ValueError("slices: names must be unique")
        return self

    @property
    def metric_names(self) -> list[MetricName]:
        return [MetricName.parse(m) for m in self.metrics]

    @property
    def primary_metric(self) -> str:
        return str(self.metric_names[0])


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    namespace: str | None = None
    uid: str | None = None


class ModelEvaluation(BaseModel):
    """A whole manifest, as `kubectl apply` and `modeleval run` read it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    api_version: Literal["modeleval.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelEvaluation"]
    metadata: ObjectMeta
    spec: ModelEvaluationSpec
    status: dict[str, Any] | None = None


_QUANTITY_FACTORS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                     "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity as a number ("500m" -> 0.5, "2Gi" -> 2147483648)."""
    match = re.fullmatch(QUANTITY_PATTERN, text)
    if not match:
        raise ValueError(f"'{text}' is not a Kubernetes quantity")
    return float(match.group(1)) * _QUANTITY_FACTORS[match.group(3) or ""]


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where or 'manifest'}: {message}")
    return "; ".join(lines)
