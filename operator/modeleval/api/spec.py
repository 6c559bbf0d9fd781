"""The ModelEvaluation spec: the one source of truth for validation, the CRD schema and the docs.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python; only the
camelCase spelling is accepted, as in the CRD. Types are strict (``"2"`` is not a number, ``1``
is not true), every model forbids unknown fields, and a typo is an error that names the field.

Every rule is declared once, here, and enforced on both sides: by pydantic when the CLI, the
runner or the operator reads a spec, and by the API server at admission through the CRD that
api/crd.py generates from these models. Field constraints (types, patterns, lengths, bounds)
become the OpenAPI schema; a :class:`Rule` carries one check the schema cannot say, written as
the CEL the API server runs and as the Python check pydantic runs, next to each other;
:class:`UniqueItems` and :class:`UniqueBy` become Kubernetes list types. The corpus in
tests/manifest_corpus.py checks that both sides refuse the same manifests naming the same field.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema

from .direction import higher_is_better
from .events import EventsSpec
from . import metrics as declared_metrics
from .metrics import NONE, OPTIONAL, REQUIRED
from .metadata import annotations_problem, labels_problem
from .registry import ALIAS_PATTERN, MODELS_URI
from .results import PROGRESS_COLLECTION

API_GROUP = "modeleval.dev"
API_VERSION = "v1alpha1"
KIND = "ModelEvaluation"

# Regular expressions in the RE2 subset that Go (OpenAPI patterns, CEL), Rust (pydantic) and
# Python all read the same way: no look-around, no \w or \d (Unicode-aware in Rust).
BUCKET = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
URI_PATTERN = rf"^(s3://{BUCKET}/.+|file://.+)$"
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
NAME_PATTERN = rf"^{_DNS_LABEL}$"
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = rf"({_DNS_LABEL}(\.{_DNS_LABEL})*/)?{_LABEL_NAME}"
LABEL_KEY_PATTERN = rf"^{_LABEL_KEY}$"
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
# An image reference as the container runtimes parse it (distribution/reference's grammar):
# [registry[:port]/]path[:tag][@digest], path components lowercase.
_REGISTRY_PART = r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_REGISTRY = rf"({_REGISTRY_PART}(\.{_REGISTRY_PART})*|\[[0-9A-Fa-f:]+\])(:[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_PATTERN = rf"^({_REGISTRY}/)?{_PATH_PART}(/{_PATH_PART})*(:{_TAG})?(@{_DIGEST})?$"
UID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"  # a uid also names local result files


def checked_uid(value: str) -> str:
    """A uid given on a command line, checked like metadata.uid (it names result files)."""
    if not re.fullmatch(UID_PATTERN, value):
        raise ValueError(f"uid {value!r}: letters, digits and '-' only, at most 64, not starting "
                         "with '-'")
    return value

CEL_RULES = "x-kubernetes-validations"

_QUANTITY_FACTORS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                     "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity as a number ("500m" -> 0.5, "2Gi" -> 2147483648)."""
    match = re.fullmatch(QUANTITY_PATTERN, text)
    if not match:
        raise ValueError(f"'{text}' is not a Kubernetes quantity")
    return float(match.group(1)) * _QUANTITY_FACTORS[match.group(3) or ""]


def cel_string(text: str) -> str:
    """A CEL string literal; raw, so a regular expression's backslashes stay as they are."""
    if "'" in text:
        raise ValueError(f"no quote allowed in a CEL rule's string: {text}")
    return f"r'{text}'" if "\\" in text else f"'{text}'"


def refusal(where: str, message: str) -> PydanticCustomError:
    """A pydantic error whose message names the field (``where`` is appended to the error's
    location by :func:`format_validation_error`)."""
    return PydanticCustomError("rule", "{message}", {"message": message, "where": where})


class Constraint(ABC):
    """``Annotated`` metadata that pydantic runs after the type's own validation (``enforce``)
    and that adds to the field's JSON schema what the API server needs (``add_to_schema``)."""

    @abstractmethod
    def enforce(self, value: Any) -> Any:
        """The value, checked (a PydanticCustomError naming the field when it is refused)."""

    @abstractmethod
    def add_to_schema(self, schema: dict[str, Any]) -> None:
        """Adds the rule's CEL, list type or pattern to the field's schema, in place."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.enforce, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        out = handler(schema)
        self.add_to_schema(out)
        return out


@dataclass(frozen=True)
class Rule(Constraint):
    """One rule the schema's types, patterns and bounds cannot say, declared once for both sides.

    ``cel`` is what the API server runs (it goes into the CRD's x-kubernetes-validations);
    ``check`` is the same rule in Python, run by pydantic. In both ``self`` is the value the rule
    is attached to: a field (as ``Annotated`` metadata) or a model (in its ``rules``).
    ``field`` is where a refusal points, relative to that value (a CEL fieldPath, e.g. ``.min``);
    ``locate`` may add what only Python can say (the index of the offending item, ``[2]``).
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str = ""
    locate: Callable[[Any], str] | None = None

    def enforce(self, value: Any) -> Any:
        if not self.check(value):
            raise refusal(self.field + (self.locate(value) if self.locate else ""), self.message)
        return value

    def cel_rule(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message,
                **({"fieldPath": self.field} if self.field else {})}

    def add_to_schema(self, schema: dict[str, Any]) -> None:
        schema.setdefault(CEL_RULES, []).append(self.cel_rule())


def matching(regex: str, message: str) -> Rule:
    """A string that must match the anchored ``regex``: a pattern with a message a person can
    read, where the schema's own pattern error would print the expression."""
    return Rule(f"self.matches({cel_string(regex)})", message,
                lambda value: re.fullmatch(regex, value) is not None)


def not_matching(regex: str, message: str) -> Rule:
    """A string that must not contain a match of ``regex`` (CEL ``matches`` searches, as
    ``re.search`` does)."""
    return Rule(f"!self.matches({cel_string(regex)})", message,
                lambda value: re.search(regex, value) is None)


def quantity_at_least(minimum: str, message: str, *, exclusive: bool = False) -> Rule:
    """A Kubernetes quantity of at least (or, exclusive, above) ``minimum``, compared with the
    API server's quantity library (the schema's pattern has already said it is a quantity)."""
    compare = (f"quantity(self).isGreaterThan(quantity('{minimum}'))" if exclusive
               else f"quantity(self).compareTo(quantity('{minimum}')) >= 0")
    bound = parse_quantity(minimum)
    return Rule(f"!isQuantity(self) || {compare}", message,
                lambda value: parse_quantity(value) > bound if exclusive
                else parse_quantity(value) >= bound)


def _first_repeat(values: list[Any]) -> int | None:
    seen: set[Any] = set()
    for index, value in enumerate(values):
        if value in seen:
            return index
        seen.add(value)
    return None


@dataclass(frozen=True)
class UniqueItems(Constraint):
    """A list without repeated items: ``x-kubernetes-list-type: set`` for the API server (which
    says ``Duplicate value`` at the repeated item), the same check here."""

    def enforce(self, values: list[Any]) -> list[Any]:
        index = _first_repeat(values)
        if index is not None:
            raise refusal(f"[{index}]", f"Duplicate value: {values[index]!r} is listed twice")
        return values

    def add_to_schema(self, schema: dict[str, Any]) -> None:
        schema["x-kubernetes-list-type"] = "set"


@dataclass(frozen=True)
class UniqueBy(Constraint):
    """A list of objects keyed by one field: ``x-kubernetes-list-type: map`` for the API server,
    the same uniqueness check here."""

    key: str  # a field whose Python and manifest names are the same

    def enforce(self, values: list[Any]) -> list[Any]:
        keys = [getattr(item, self.key) for item in values]
        index = _first_repeat(keys)
        if index is not None:
            raise refusal(f"[{index}]", f"Duplicate value: {self.key} {keys[index]!r} is used twice")
        return values

    def add_to_schema(self, schema: dict[str, Any]) -> None:
        schema.update({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [self.key]})


def _add_model_rules(schema: dict[str, Any], cls: type) -> None:
    rules = getattr(cls, "rules", ())
    if rules:
        schema[CEL_RULES] = [rule.cel_rule() for rule in rules]


class SpecModel(BaseModel):
    """Base for every spec object: camelCase only, strict types, no NaN or infinity, unknown
    fields refused; cross-field ``rules`` checked after the fields."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_alias=True,
                              validate_by_name=False, extra="forbid", strict=True,
                              allow_inf_nan=False, use_enum_values=True, frozen=True,
                              json_schema_extra=_add_model_rules)
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules(self) -> "SpecModel":
        for rule in type(self).rules:
            rule.enforce(self)
        return self


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


# Which metrics each task accepts, and whether each takes an "@k" cut-off: read from the metric
# declarations (api/metrics.py), in TaskType order (the order of the CRD's rules).
CUTOFFS_BY_TASK: dict[str, dict[str, str]] = {
    task.value: {m.name: m.cutoff for m in declared_metrics.of_task(task.value)}
    for task in TaskType}
CUTOFF_METRICS = {m.name for m in declared_metrics.METRICS if m.cutoff != NONE}
ALL_METRICS = declared_metrics.names()
_CUTOFF = r"@[1-9][0-9]{0,3}"
METRIC_PATTERN = r"^(" + "|".join(sorted(ALL_METRICS)) + rf")({_CUTOFF})?$"


def task_metric_pattern(task: str) -> str:
    """The metric names one task accepts, as one anchored regular expression."""
    by_kind = {kind: "|".join(sorted(m for m, c in CUTOFFS_BY_TASK[task].items() if c == kind))
               for kind in (OPTIONAL, REQUIRED, NONE)}
    parts = [f"({names})" + {OPTIONAL: f"({_CUTOFF})?", REQUIRED: _CUTOFF, NONE: ""}[kind]
             for kind, names in by_kind.items() if names]
    return "^(" + "|".join(parts) + ")$"


def _task_metrics_message(task: str) -> str:
    cutoffs = CUTOFFS_BY_TASK[task]
    names = [m + {OPTIONAL: "[@k]", REQUIRED: "@k", NONE: ""}[cutoffs[m]] for m in sorted(cutoffs)]
    note = "" if any(c != NONE for c in cutoffs.values()) else " (no @k cut-off: that is for ranking)"
    return f"task {task} takes the metrics {', '.join(names)}{note}"


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


_NO_DOTDOT = not_matching(r"/\.\.(/|$)", "no '..' path segments (a key is a name, not a path "
                          "to walk)")
Uri = Annotated[str, Field(pattern=URI_PATTERN, max_length=2048), _NO_DOTDOT]
# A model may also be named in an MLflow model registry (api/registry.py): the operator resolves
# it to the version's artefact in S3.
MODEL_URI_PATTERN = rf"^(s3://{BUCKET}/.+|file://.+|{MODELS_URI})$"
ModelUri = Annotated[str, Field(pattern=MODEL_URI_PATTERN, max_length=2048), _NO_DOTDOT]
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
Cpu = Annotated[Quantity, quantity_at_least("0", "must be greater than zero", exclusive=True)]
Memory = Annotated[Quantity, quantity_at_least("256Mi", "must be at least 256Mi (a Ray worker "
                                               "does not start in less)")]
LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN, max_length=317,
                                description="a label key: [DNS-subdomain/]name")]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]


class ModelSource(SpecModel):
    uri: ModelUri = Field(description="Where the model file is: s3://bucket/key or "
                          "file:///path; or a registered model, models:/NAME/VERSION or "
                          "models:/NAME@ALIAS, which the operator resolves through the "
                          "platform's MLflow server (the chart's mlflow.trackingUri) to the "
                          "version's artefact in S3.")
    format: ModelFormat = Field(ModelFormat.xgboost, strict=False, description="Model file "
                                "format: xgboost (JSON or UBJSON, detected from the content), "
                                "onnx, or pickle.")
    allow_pickle: bool = Field(False, description="Pickle runs arbitrary code when loaded; it is "
                               "refused unless this is true.")

    rules = (
        Rule("!has(self.format) || self.format != 'pickle' || "
             "(has(self.allowPickle) && self.allowPickle)",
             "format pickle is refused unless allowPickle is true (loading a pickle runs "
             "arbitrary code)",
             lambda m: m.format != ModelFormat.pickle.value or m.allow_pickle, ".allowPickle"),
    )


class MissingFeatures(str, Enum):
    missing = "missing"
    zero = "zero"


# How large a spec may be. The API server stores at most about 1.5 MiB per object (etcd's request
# limit) and reads requests of at most 3 MiB; each bound of the schema (items, characters) is
# small except the feature columns', so bounding their total bounds the whole object at
# admission, and the operator and the CLI also measure the whole spec (SpecModel cannot be
# measured in CEL). A schedule's children copy its template: the same bound serves both.
MAX_FEATURE_COLUMNS = 20_000
MAX_FEATURE_COLUMN_CHARS = 1_300_000
MAX_SPEC_BYTES = 1_400_000


class DatasetSource(SpecModel):
    uri: Uri = Field(description="Where the dataset is: s3://bucket/key or file:///path.")
    format: DatasetFormat = Field(DatasetFormat.letor, strict=False, description="letor "
                                  "(SVMlight lines with qid:, as MSLR-WEB10K/30K ship), parquet "
                                  "or csv.")
    label_column: str = Field("label", description="Column holding the label (parquet/csv).",
                              min_length=1, max_length=256)
    group_column: str | None = Field(None, description="Column holding the query id (parquet/csv; "
                                     "LETOR files carry it as qid:). Required for ranking.",
                                     max_length=256)
    feature_columns: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]],
        Rule(f"self.map(c, c.size()).sum() <= {MAX_FEATURE_COLUMN_CHARS}",
             f"at most {MAX_FEATURE_COLUMN_CHARS} characters of column names in all",
             lambda columns: sum(map(len, columns)) <= MAX_FEATURE_COLUMN_CHARS)] | None = Field(
        None, description="Feature columns in model order (parquet/csv). Default: every column "
        "except the label, group and slice columns.", max_length=MAX_FEATURE_COLUMNS)
    num_features: int | None = Field(None, ge=1, le=1_000_000, description="Feature count for "
                                     "LETOR files; default: the model's expected feature count.")
    missing_features: MissingFeatures = Field(
        MissingFeatures.missing, strict=False, description="What a feature a LETOR line omits "
        "is: missing (NaN, as XGBoost reads LETOR/SVMlight files; the default) or zero (as the "
        "SVMlight format defines it).")

    rules = (
        Rule("!has(self.missingFeatures) || self.missingFeatures == 'missing' || "
             "!has(self.format) || self.format == 'letor'",
             "missingFeatures applies to LETOR files (a table's nulls stay missing)",
             lambda d: d.missing_features == MissingFeatures.missing.value
             or d.format == DatasetFormat.letor.value, ".missingFeatures"),
    )


def _ascending(values: list[float]) -> bool:
    return all(a < b for a, b in zip(values, values[1:]))


class SliceSpec(SpecModel):
    name: str = Field(description="Name shown in results.", pattern=NAME_PATTERN, max_length=63)
    column: str | None = Field(None, description="Slice by the distinct values of this column.",
                               max_length=256)
    feature: int | None = Field(None, ge=0, description="Slice by buckets of this feature index "
                                "(0-based, as in the model).")
    buckets: Annotated[list[float], UniqueItems(), Rule(
        "self.isSorted()", "bucket edges must be strictly ascending", _ascending)] | None = Field(
        None, min_length=1, max_length=100, description="Ascending bucket edges for feature or "
        "numeric columns.")

    rules = (
        Rule("has(self.column) != has(self.feature)", "set exactly one of column or feature",
             lambda s: (s.column is None) != (s.feature is None)),
        Rule("!has(self.feature) || has(self.buckets)", "a feature slice needs buckets "
             "(ascending edges)", lambda s: s.feature is None or bool(s.buckets), ".buckets"),
    )


_LOWER_IS_BETTER = " and ".join(", ".join(declared_metrics.lower_is_better()).rsplit(", ", 1))
_POSITIVE_CHANGE = Rule("self > 0.0", "must be a positive number (MLflow's MetricThreshold "
                        "refuses a min_absolute_change <= 0)", lambda value: value > 0)


class GateRule(SpecModel):
    """One metric's conditions. ``threshold``, ``minAbsoluteChange``, ``minRelativeChange`` and
    ``higherIsBetter`` mean what they mean in MLflow's MetricThreshold."""

    metric: str = Field(description="Metric the rule checks, e.g. ndcg@10.", pattern=METRIC_PATTERN,
                        max_length=32)
    min: float | None = Field(None, description="The model's value must be at least this.")
    max: float | None = Field(None, description="The model's value must be at most this.")
    max_regression: float | None = Field(None, ge=0, description="Largest allowed worsening "
                                          "versus the baseline (absolute; direction-aware: loss "
                                          "metrics worsen upwards).")
    threshold: float | None = Field(None, description="The value must be at least this when "
                                    "higher is better, at most this otherwise (MLflow's threshold).")
    min_absolute_change: Annotated[float, _POSITIVE_CHANGE] | None = Field(
        None, description="The model must beat the baseline by at least this much: value >= "
        "baseline + change (higher is better) or value <= baseline - change. A positive number, "
        "as MLflow's MetricThreshold requires (0 would be no change).")
    min_relative_change: float | None = Field(None, ge=0, le=1, description="The model must "
                                              "beat the baseline by at least this fraction of the "
                                              "size of the baseline's value: (value - baseline) / "
                                              "abs(baseline) >= change (higher is better; "
                                              "(baseline - value) / abs(baseline) otherwise). "
                                              "Divided by abs(baseline), so a metric that can be "
                                              "negative (r2) must still move the better way; for "
                                              "a positive baseline this is MLflow's rule. A "
                                              "baseline of 0: the value must only be better.")
    higher_is_better: bool | None = Field(None, description="The metric's direction; default: "
                                          f"lower is better for {_LOWER_IS_BETTER}, higher for "
                                          "every other metric.")
    require_significant: bool | None = Field(None, description="Also require the model to beat "
                                             "the baseline significantly: the confidence interval "
                                             "of the paired delta (spec.confidence) lies wholly on "
                                             "the better side of zero.")

    rules = (
        Rule("has(self.min) || has(self.max) || has(self.maxRegression) || has(self.threshold) || "
             "has(self.minAbsoluteChange) || has(self.minRelativeChange) || "
             "(has(self.requireSignificant) && self.requireSignificant)",
             "set min, max, maxRegression, threshold, minAbsoluteChange, minRelativeChange or "
             "requireSignificant",
             lambda g: not (g.min is None and g.max is None and g.max_regression is None
                            and g.threshold is None and g.min_absolute_change is None
                            and g.min_relative_change is None and not g.require_significant)),
        Rule("!has(self.min) || !has(self.max) || self.min <= self.max",
             "min must not be above max (no value could pass)",
             lambda g: g.min is None or g.max is None or g.min <= g.max, ".min"),
    )

    @property
    def needs_change(self) -> bool:
        """Whether the rule asks the model to beat the baseline (MLflow's changes, significance)."""
        return (self.min_absolute_change is not None or self.min_relative_change is not None
                or bool(self.require_significant))

    @property
    def direction_up(self) -> bool:
        return (self.higher_is_better if self.higher_is_better is not None
                else higher_is_better(self.metric))


class Baseline(SpecModel):
    model: ModelSource = Field(description="The baseline (champion) model, evaluated on the same "
                               "data; results carry the deltas candidate minus baseline.")


class Challenger(SpecModel):
    name: Annotated[str, not_matching(r"^(candidate|baseline)$", "candidate and baseline name "
                                      "spec.model and spec.baseline in results")] = Field(
        description="Name shown in results.", pattern=NAME_PATTERN, max_length=63)
    model: ModelSource = Field(description="A further model scored on the same parse of the "
                               "data, with its own metrics, deltas and gate.")


class Confidence(SpecModel):
    level: float = Field(0.95, ge=0.5, le=0.999, description="Coverage of each interval.")
    resamples: int = Field(1000, ge=100, le=10_000, description="Bootstrap resamples.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the resampling: the same seed "
                      "gives the same intervals.")


def _exactly_one(fields: tuple[str, ...]) -> str:
    """CEL: exactly one of ``fields`` is set."""
    return " + ".join(f"(has(self.{name}) ? 1 : 0)" for name in fields) + " == 1"


class DataReference(SpecModel):
    """The profile the data is compared with: exactly one of evaluation, uri, schedule."""

    evaluation: str | None = Field(None, pattern=NAME_PATTERN, max_length=253, description="A "
                                   "previous ModelEvaluation in the same namespace: its recorded "
                                   "profile.")
    uri: Uri | None = Field(None, description="A dataset, read with spec.dataset's format and "
                            "options, profiled once and cached by its fingerprint.")
    schedule: Literal["first", "previous"] | None = Field(None, description="In a schedule's "
                                                          "template: the schedule's first run, "
                                                          "or the run before this one.")

    rules = (Rule(_exactly_one(("evaluation", "uri", "schedule")),
                  "set exactly one of evaluation, uri or schedule",
                  lambda r: [r.evaluation, r.uri, r.schedule].count(None) == 2),)


class DriftThresholds(SpecModel):
    """A feature drifts when any measure with a threshold passes it; null turns a measure off."""

    psi: float | None = Field(0.2, ge=0, description="Population stability index above this.")
    jensen_shannon: float | None = Field(0.1, ge=0, le=1, description="Jensen-Shannon distance "
                                         "(base 2, 0 to 1) above this.")
    ks: float | None = Field(0.1, ge=0, le=1, description="Kolmogorov-Smirnov statistic above "
                             "this, with its p-value below ksPValue.")
    ks_p_value: float = Field(0.05, gt=0, lt=1, description="The KS test's significance level.")
    drift_share: float = Field(0.5, gt=0, le=1, description="The dataset drifts when at least "
                               "this share of its features drift.")


class Bounds(SpecModel):
    min: float | None = Field(None, description="The value must be at least this.")
    max: float | None = Field(None, description="The value must be at most this.")

    rules = (Rule("has(self.min) || has(self.max)", "set min, max or both",
                  lambda b: b.min is not None or b.max is not None),
             Rule("!has(self.min) || !has(self.max) || self.min <= self.max",
                  "min must not be above max",
                  lambda b: b.min is None or b.max is None or b.min <= b.max))


QUALITY_CHECKS = ("maxMissingRate", "noConstantFeatures", "labelRange", "rows", "queries",
                  "sliceValuesSeen")


class QualityRule(SpecModel):
    """One check of the data's profile: exactly one of the checks, and what a breach does."""

    max_missing_rate: float | None = Field(None, ge=0, le=1, description="The largest share of "
                                           "missing (NaN or absent) values a feature may have.")
    features: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, max_length=1000, description="The features maxMissingRate applies to (LETOR: "
        "1-based indices as text); default every feature.")
    no_constant_features: bool | None = Field(None, description="true: every feature takes at "
                                              "least two distinct finite values.")
    label_range: Bounds | None = Field(None, description="Every label lies within these bounds.")
    rows: Bounds | None = Field(None, description="The dataset's row count lies within these.")
    queries: Bounds | None = Field(None, description="The query count (ranking) lies within "
                                   "these.")
    slice_values_seen: bool | None = Field(None, description="true: every value of each slice "
                                           "column was seen in the reference.")
    action: Literal["warn", "fail"] = Field("fail", description="fail: the evaluation fails "
                                            "with DataQualityFailed before its metrics are "
                                            "trusted; warn: a warning, and the metrics are "
                                            "recorded.")

    rules = (Rule(_exactly_one(QUALITY_CHECKS), f"set exactly one check: {', '.join(QUALITY_CHECKS)}",
                  lambda r: len(r.checks()) == 1),
             Rule("!has(self.features) || has(self.maxMissingRate)", "features goes with "
                  "maxMissingRate", lambda r: r.features is None or r.max_missing_rate is not None,
                  ".features"))

    def checks(self) -> list[str]:
        """The checks this rule sets (one, once validated)."""
        values = {"maxMissingRate": self.max_missing_rate,
                  "noConstantFeatures": self.no_constant_features,
                  "labelRange": self.label_range, "rows": self.rows, "queries": self.queries,
                  "sliceValuesSeen": self.slice_values_seen}
        return [name for name, value in values.items() if value is not None]


class DataQuality(SpecModel):
    """The data's profile checked against rules and compared with a reference."""

    reference: DataReference | None = Field(None, description="What to compare the data with "
                                             "(drift); without it only the rules run.")
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds, description="When a "
                                        "feature, and the dataset, count as drifted.")
    # Named ``rules`` in the spec; ``rules`` in Python is SpecModel's cross-field rules.
    quality_rules: list[QualityRule] = Field(default_factory=list, max_length=32, alias="rules",
                                             description="Checks of the profile, each warning "
                                             "or failing the evaluation.")


class Resources(SpecModel):
    workers: int = Field(1, ge=1, le=1000, description="Ray worker pods (cluster) or parallel tasks.")
    cpu: Cpu = Field("1", description="CPU per worker, a Kubernetes quantity (e.g. 2, 500m).")
    memory: Memory = Field("2Gi", description="Memory per worker (e.g. 4Gi).")
    gpu: int = Field(0, ge=0, le=16, description="nvidia.com/gpu per worker.")
    head_cpu: Cpu = Field("1", description="CPU of the Ray head pod.")
    head_memory: Memory = Field("2Gi", description="Memory of the head pod.")


class MongoTarget(SpecModel):
    database: Annotated[str, not_matching(
        r"^(?i:admin|local|config)$", "admin, local and config are MongoDB's own databases")] = \
        Field("modeleval", pattern=r"^[A-Za-z0-9_\-]{1,63}$", description="MongoDB database. The "
              "operator reads and writes it with its own credentials only when the platform "
              "lists it for the namespace (the chart's mongodb.operatorDatabases); any other is "
              "served with the namespace's own MongoDB Secret.")
    collection: Annotated[str, not_matching(
        r"^(?i:system)\.", "system.* collections are MongoDB's own"), not_matching(
        f"^{PROGRESS_COLLECTION}$", f"'{PROGRESS_COLLECTION}' is where the engine keeps "
        "progress; choose another collection")] = Field(
        "results", pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$", max_length=120,
        description="MongoDB collection: dot-separated names of letters, digits, '_' and '-'.")


class Promotion(SpecModel):
    alias: str = Field(pattern=ALIAS_PATTERN, max_length=255, description="The alias the "
                       "candidate's registered version gets when its gate passed (e.g. "
                       "champion), set with the namespace's MLflow credentials.")


# An MLflow experiment's or run's name: letters, digits and _ ./:@- (a path such as /Shared/x),
# no leading or trailing space.
MLFLOW_NAME_PATTERN = r"^[A-Za-z0-9_/]([A-Za-z0-9_ ./:@-]*[A-Za-z0-9_./:@-])?$"


class MlflowOutput(SpecModel):
    experiment: str = Field(pattern=MLFLOW_NAME_PATTERN, max_length=256, description="The "
                            "MLflow experiment the run is logged in, by name (created when "
                            "missing).")
    run_name: str | None = Field(None, pattern=MLFLOW_NAME_PATTERN, max_length=250,
                                 description="The run's name; default: the evaluation's name.")


class Output(SpecModel):
    mongodb: MongoTarget = Field(default_factory=MongoTarget, description="Where the result "
                                 "document goes (the URI comes from settings, never the spec).")
    predictions_uri: Uri | None = Field(None, description="If set, predictions are written here "
                                        "as Parquet (a prefix; one file per attempt).")
    report_uri: Uri | None = Field(None, description="Where the HTML report goes (a prefix; "
                                   "one file per attempt, NAME-UID-ATTEMPT.html). Default: next "
                                   "to the predictions, else modeleval-reports/NAMESPACE/ in the "
                                   "dataset's bucket; locally, beside the result.")
    mlflow: MlflowOutput | None = Field(None, description="Logs the evaluation as one MLflow "
                                        "run when it ends (Succeeded or Failed): its metrics "
                                        "with their intervals, parameters, tags naming it and "
                                        "the report as an artefact. The operator logs it with "
                                        "the namespace's MLflow credentials (the Secret the "
                                        "chart's mlflow.secretName names) on the chart's "
                                        "mlflow.trackingUri, once per evaluation; a server that "
                                        "does not answer is tried again with backoff and never "
                                        "holds or fails the evaluation (see the EventsDelivered "
                                        "condition).")


class Toleration(SpecModel):
    key: str | None = Field(None, pattern=rf"^({_LABEL_KEY})?$", max_length=317, description=
                            "The taint key this tolerates; empty (with operator Exists): every key.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Equal (the default): "
                                                        "the taint's value must be value; Exists: "
                                                        "any value.")
    value: LabelValue | None = Field(None, description="The taint value this tolerates (operator "
                                     "Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint effect this tolerates; empty: every effect.")
    toleration_seconds: int | None = Field(None, description="With effect NoExecute: how long a "
                                           "pod stays on the node after the taint appears.")

    rules = (
        Rule("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || "
             "self.value == ''", "operator Exists takes no value",
             lambda t: t.operator != "Exists" or not t.value, ".value"),
        Rule("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
             "an empty key needs operator Exists", lambda t: bool(t.key) or t.operator == "Exists",
             ".operator"),
        Rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "tolerationSeconds needs effect NoExecute",
             lambda t: t.toleration_seconds is None or t.effect == "NoExecute", ".tolerationSeconds"),
    )


def _metrics_rule(task: str) -> Rule:
    pattern = task_metric_pattern(task)
    return Rule(
        f"self.task != '{task}' || self.metrics.all(m, m.matches({cel_string(pattern)}))",
        _task_metrics_message(task),
        lambda s: s.task != task or all(re.fullmatch(pattern, m) for m in s.metrics),
        ".metrics",
        lambda s: next(f"[{i}]" for i, m in enumerate(s.metrics) if not re.fullmatch(pattern, m)))


def _first(items: list[Any], wrong: Callable[[Any], bool]) -> str:
    return next(f"[{i}]" for i, item in enumerate(items) if wrong(item))


def spec_size_refusal(raw: Any) -> str | None:
    """Why a spec (as read: a dict) is too large to hold, or None."""
    size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    if size > MAX_SPEC_BYTES:
        return (f"{size} bytes as JSON, more than the {MAX_SPEC_BYTES} a spec may hold (the API "
                "server stores about 1.5 MiB per object)")
    return None


class ModelEvaluationSpec(SpecModel):
    """What to evaluate, on what data, with which metrics, on how much compute."""

    @model_validator(mode="before")
    @classmethod
    def _bounded_size(cls, raw: Any) -> Any:
        refused = spec_size_refusal(raw) if isinstance(raw, dict) else None
        if refused:
            raise refusal("", refused)
        return raw

    model: ModelSource = Field(description="The model to evaluate (the candidate).")
    dataset: DatasetSource = Field(description="The labelled data it is evaluated on.")
    task: TaskType = Field(strict=False, description="ranking, binary, multiclass or regression.")
    metrics: Annotated[list[Annotated[str, Field(pattern=METRIC_PATTERN, max_length=32)]],
                       UniqueItems()] = Field(
        min_length=1, max_length=32, description="Metric names, e.g. ndcg@10, map@10, mrr, auc. "
        "The first is the primary metric shown by kubectl.")
    slices: Annotated[list[SliceSpec], UniqueBy("name")] = Field(
        default_factory=list, max_length=32, description="Groups of rows (a column's values or a "
        "feature's buckets), each with its own metrics.")
    baseline: Baseline | None = Field(None, description="A champion scored on the same data: the "
                                      "candidate's deltas against it, and the gate's "
                                      "maxRegression rules.")
    challengers: Annotated[list[Challenger], UniqueBy("name")] = Field(
        default_factory=list, max_length=8, description="Further models scored in the same run "
        "(the data is parsed once), each with its own metrics, deltas and gate.")
    gate: list[GateRule] = Field(default_factory=list, max_length=16, description="Thresholds; "
                                 "a model's gate passes when every rule holds for it. The "
                                 "evaluation's gate is the model's; each challenger gets its own.")
    confidence: Confidence | None = Field(None, description="Bootstrap percentile intervals for "
                                          "every metric (and for every delta, paired): queries are "
                                          "resampled for ranking, rows otherwise.")
    data_quality: DataQuality | None = Field(None, description="Rules checked on the data's "
                                             "profile (every evaluation records one, from the "
                                             "pass that reads every row) and drift against a "
                                             "reference, before the metrics are recorded.")
    resources: Resources = Field(default_factory=Resources, description="The Ray cluster's "
                                 "size: workers and each one's CPU, memory and GPU, the head's "
                                 "CPU and memory (locally: parallel tasks).")
    batch_size: int = Field(65536, ge=1, le=10_000_000, description="Rows per inference batch.")
    promote: Promotion | None = Field(None, description="Promotion: when the candidate's gate "
                                      "passed, its registered version (spec.model.uri a "
                                      "models:/ URI) gets this alias in the MLflow registry; "
                                      "never on a failed gate or a failed evaluation.")
    output: Output = Field(default_factory=Output, description="Where the result document, the "
                           "predictions and the HTML report go.")
    # Cluster-only fields; local mode ignores them.
    ray_cluster_name: str | None = Field(None, pattern=NAME_PATTERN, max_length=63, description=
                                         "Reuse this existing RayCluster instead of creating one.")
    queue_name: str | None = Field(None, pattern=NAME_PATTERN, max_length=63, description=
                                   "The Kueue LocalQueue (in this namespace) the evaluation's "
                                   "RayCluster waits in: Kueue admits the whole cluster or none "
                                   "of it, and the evaluation is Queued meanwhile. Default: the "
                                   "operator's kueue.defaultQueueName.")
    ray_image: Annotated[str, matching(IMAGE_PATTERN, "must be an image reference: "
                                       "[registry[:port]/]name[:tag][@digest], name in lowercase")
                         ] | None = Field(None, max_length=512, description="Ray image for the "
                                          "pods (default from operator settings).")
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Node labels the Ray pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description=
                                          "Kubernetes tolerations for the Ray pods.")
    keep_cluster: bool = Field(False, description="Keep the RayCluster after the run.")
    backoff_limit: int = Field(2, ge=0, le=20, description="Retries before Failed.")
    active_deadline_seconds: int | None = Field(None, ge=1, le=7 * 24 * 3600, description=
                                                "Fail (DeadlineExceeded) when the evaluation has "
                                                "run this long since it was accepted, retries "
                                                "included.")
    pending_timeout_seconds: int | None = Field(
        None, ge=10, le=24 * 3600, description="Fail (PodsNotReady, Unschedulable) when the "
        "RayCluster is not ready this long after it was created. The operator's "
        "pendingTimeoutSeconds is the most any evaluation waits: the smaller applies.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=365 * 24 * 3600, description=
                                                   "Delete the ModelEvaluation this long after "
                                                   "it Succeeded or Failed.")
    suspend: bool = Field(False, description="While true the Ray job is stopped and the cluster "
                          "released; set back to false, a fresh attempt runs.")
    events: EventsSpec | None = Field(None, description="Sinks (a webhook, a Kafka topic) this "
                                      "evaluation's CloudEvents go to, besides the platform's: "
                                      "Started, Succeeded, Failed, GateFailed, Drifted.")

    rules = (
        *(_metrics_rule(task) for task in CUTOFFS_BY_TASK),
        Rule("!has(self.gate) || self.gate.all(g, !has(g.maxRegression) || has(self.baseline))",
             "maxRegression needs spec.baseline",
             lambda s: s.baseline is not None or all(g.max_regression is None for g in s.gate),
             ".gate", lambda s: _first(s.gate, lambda g: g.max_regression is not None)),
        Rule("has(self.baseline) || !has(self.gate) || self.gate.all(g, "
             "!has(g.minAbsoluteChange) && !has(g.minRelativeChange) && "
             "!(has(g.requireSignificant) && g.requireSignificant))",
             "minAbsoluteChange, minRelativeChange and requireSignificant compare with "
             "spec.baseline: set it",
             lambda s: s.baseline is not None or not any(g.needs_change for g in s.gate),
             ".gate", lambda s: _first(s.gate, lambda g: g.needs_change)),
        Rule("has(self.confidence) || !has(self.gate) || self.gate.all(g, "
             "!(has(g.requireSignificant) && g.requireSignificant))",
             "requireSignificant needs spec.confidence (the delta's interval)",
             lambda s: s.confidence is not None or not any(g.require_significant for g in s.gate),
             ".gate", lambda s: _first(s.gate, lambda g: g.require_significant)),
        Rule("!has(self.promote) || self.model.uri.startsWith('models:/')",
             "promote needs spec.model.uri to be a models:/ URI (the registered version it "
             "sets the alias on)",
             lambda s: s.promote is None or s.model.uri.startswith("models:/"), ".promote"),
        Rule("!has(self.promote) || (has(self.gate) && self.gate.size() > 0)",
             "promote needs gate rules: a model is promoted only when its gate passed",
             lambda s: s.promote is None or bool(s.gate), ".promote"),
        Rule("!has(self.gate) || self.gate.all(g, g.metric in self.metrics)",
             "a gate's metric must be listed in spec.metrics",
             lambda s: all(g.metric in s.metrics for g in s.gate),
             ".gate", lambda s: _first(s.gate, lambda g: g.metric not in s.metrics)),
        Rule("self.task != 'ranking' || !has(self.dataset.format) || "
             "self.dataset.format == 'letor' || "
             "(has(self.dataset.groupColumn) && self.dataset.groupColumn != '')",
             "required for ranking on parquet/csv data",
             lambda s: s.task != TaskType.ranking.value or s.dataset.format == "letor"
             or bool(s.dataset.group_column), ".dataset.groupColumn"),
        Rule("!has(self.queueName) || !has(self.rayClusterName)",
             "a queue admits the RayCluster an evaluation creates; one named in "
             "spec.rayClusterName is not queued",
             lambda s: s.queue_name is None or s.ray_cluster_name is None, ".queueName"),
    )

    def named_models(self, prefix: str = "spec") -> list[tuple[str, ModelSource]]:
        """Every model the spec names, with its field path: the model, the baseline's and each
        challenger's. Every one is checked the same way (ModelSource's rules here, the
        operator's policy there); a new model slot belongs in this list."""
        return [(f"{prefix}.model", self.model),
                *([(f"{prefix}.baseline.model", self.baseline.model)] if self.baseline else []),
                *((f"{prefix}.challengers[{i}].model", c.model)
                  for i, c in enumerate(self.challengers))]

    def named_uris(self, prefix: str = "spec") -> list[tuple[str, str]]:
        """Every storage URI the spec names, with its field path: the models', the dataset's, the
        predictions' and the report's."""
        return [*((f"{where}.uri", model.uri) for where, model in self.named_models(prefix)),
                (f"{prefix}.dataset.uri", self.dataset.uri),
                *([(f"{prefix}.output.predictionsUri", self.output.predictions_uri)]
                  if self.output.predictions_uri else []),
                *([(f"{prefix}.output.reportUri", self.output.report_uri)]
                  if self.output.report_uri else [])]

    @property
    def metric_names(self) -> list[MetricName]:
        return [MetricName.parse(m) for m in self.metrics]

    @property
    def primary_metric(self) -> str:
        return str(self.metric_names[0])


# Spec fields fixed at creation: they decide whose RayCluster an evaluation runs on and whether
# the operator deletes it after. The API server refuses a change (these transition rules, on the
# ModelEvaluation's spec only: a schedule's template may change); the operator refuses one it
# sees anyway (controller/policy.py's held_to_creation).
FIXED_AFTER_CREATION = ("rayClusterName", "keepCluster")


def transition_rules() -> list[dict[str, str]]:
    """The CEL rules (on spec, comparing with ``oldSelf``) that keep FIXED_AFTER_CREATION."""
    shared, keep = FIXED_AFTER_CREATION
    return [
        {"rule": f"has(self.{shared}) == has(oldSelf.{shared}) && (!has(self.{shared}) || "
                 f"self.{shared} == oldSelf.{shared})",
         "message": f"{shared} cannot change after creation", "fieldPath": f".{shared}"},
        {"rule": f"(has(self.{keep}) && self.{keep}) == (has(oldSelf.{keep}) && oldSelf.{keep})",
         "message": f"{keep} cannot change after creation", "fieldPath": f".{keep}"},
    ]


class ObjectMeta(BaseModel):
    """The metadata the engine reads; the rest (labels, annotations) passes through."""

    model_config = ConfigDict(extra="allow", strict=True)
    # A DNS label (not the API server's DNS subdomain): it also names the RayCluster, its
    # Services and label values.
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    namespace: str | None = Field(None, pattern=NAME_PATTERN, max_length=63)
    uid: str | None = Field(None, pattern=UID_PATTERN)
    # Checked as the API server checks them (api/metadata.py): the CLI refuses what kubectl
    # apply would have refused.
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        problem = labels_problem(labels or {})
        if problem:
            raise refusal("", problem)
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str] | None) -> dict[str, str] | None:
        problem = annotations_problem(annotations or {})
        if problem:
            raise refusal("", problem)
        return annotations


class ModelEvaluation(BaseModel):
    """A whole manifest, as `kubectl apply` and `modeleval run` read it."""

    model_config = ConfigDict(extra="forbid", validate_by_alias=True, validate_by_name=False,
                              strict=True)
    api_version: Literal["modeleval.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelEvaluation"]
    metadata: ObjectMeta
    spec: ModelEvaluationSpec
    status: dict[str, Any] | None = None


def field_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """A pydantic error location as the API server writes it: ``spec.gate[0].min``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line naming each wrong field: ``spec.resources.cpu: must be greater than zero``."""
    lines = []
    for item in error.errors():
        where = field_path(item["loc"], prefix) + (item.get("ctx") or {}).get("where", "")
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where or 'manifest'}: {message}")
    return "; ".join(lines)
