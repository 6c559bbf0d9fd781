"""The curve aggregates of a result document: what a report plots, per model.

Each is computed from every row of the evaluation (no sampling) and kept at a bounded size, so
a result document stays small whatever the row count. The engine computes them (engine/curves.py);
this module is only their contract, read by whoever plots them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


def _rows(cells: list, width: int) -> list[list]:
    return [cells[i:i + width] for i in range(0, len(cells), width)] if width > 0 else []


class _Aggregate(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Curve(_Aggregate):
    """A ROC curve (x: false positive rate, y: true positive rate) or a PR curve (x: recall,
    y: precision): points thinned from the exact curve of every row, as three parallel lists.
    ``thresholds[i]``: rows scoring at least this are predicted positive at point i (None: the
    curve's start, where no row is). ``area``: the exact curve's (ROC: the AUC, ties sharing
    ranks; PR: average precision, as scikit-learn's average_precision_score);
    ``area_error``: a bound on how far the trapezoidal area under the thinned points is from the
    exact curve's trapezoidal area (for the ROC that is the AUC)."""

    x: list[float]
    y: list[float]
    thresholds: list[float | None]
    area: float
    area_error: float = 0.0
    exact_points: int = Field(description="points of the exact curve before thinning")


class Histogram(_Aggregate):
    """Counts between consecutive ``edges`` (len(edges) == len(counts) + 1); each bin holds its
    lower edge, the last also its upper one."""

    edges: list[float]
    counts: list[int]


class Histogram2D(_Aggregate):
    """``cells[i * (len(y_edges) - 1) + j]``: rows with x in bin i (``x_edges``) and y in bin j
    (``y_edges``). Row-major and flat: MongoDB-compatible stores such as FerretDB refuse nested
    arrays."""

    x_edges: list[float]
    y_edges: list[float]
    cells: list[int]

    def matrix(self) -> list[list[int]]:
        """``cells`` as rows of x bins: ``matrix()[i][j]``."""
        return _rows(self.cells, len(self.y_edges) - 1)


class ReliabilityBin(_Aggregate):
    """One bin of a reliability diagram: the rows whose predicted probability fell in it."""

    lower: float
    upper: float
    rows: int
    mean_predicted: float
    fraction_positive: float


class Reliability(_Aggregate):
    """A reliability diagram with uniform bins (scikit-learn's calibration_curve, strategy
    "uniform"; empty bins left out) and the expected calibration error: the row-weighted mean
    of |fraction positive - mean predicted| over the bins."""

    bins: list[ReliabilityBin]
    expected_calibration_error: float


class Confusion(_Aggregate):
    """A confusion matrix: ``cells[t * len(classes) + p]`` rows of true class ``classes[t]``
    predicted as ``classes[p]``; ``matrix()`` gives scikit-learn's confusion_matrix layout. Flat
    for the same reason as Histogram2D's cells."""

    classes: list[int]
    cells: list[int]

    @property
    def counts(self) -> list[list[int]]:
        """``counts[t][p]``, as confusion_matrix."""
        return _rows(self.cells, len(self.classes))

    def normalised(self, over: Literal["true", "pred", "all"] = "true") -> list[list[float]]:
        """The matrix as fractions of each true class's rows ("true"), of each predicted
        class's ("pred") or of all rows ("all"), as confusion_matrix's ``normalize``; an empty
        row or column stays 0."""
        rows = len(self.counts)
        if over == "all":
            total = sum(map(sum, self.counts))
            return [[c / total if total else 0.0 for c in row] for row in self.counts]
        if over == "true":
            return [[c / sum(row) if sum(row) else 0.0 for c in row] for row in self.counts]
        columns = [sum(self.counts[t][p] for t in range(rows)) for p in range(rows)]
        return [[c / columns[p] if columns[p] else 0.0 for p, c in enumerate(row)]
                for row in self.counts]


class ThresholdRow(_Aggregate):
    """The predicted class at one threshold (score > threshold is positive, as the metrics'
    0.5): the four counts and what follows from them (0 where undefined)."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float


class BinaryCurves(_Aggregate):
    roc: Curve | None = Field(None, description="None when the labels hold one class only")
    pr: Curve | None = Field(None, description="None without a positive row")
    reliability: Reliability | None = Field(None, description="None when scores are not "
                                            "probabilities (outside [0, 1])")
    confusion: Confusion
    threshold: float = 0.5
    scores_positive: Histogram
    scores_negative: Histogram
    sweep: list[ThresholdRow]


class ClassScores(_Aggregate):
    """Per-class precision, recall and F1 (0 where undefined, as scikit-learn's zero_division=0)
    and the rows of the class (support)."""

    label: int
    precision: float
    recall: float
    f1: float
    support: int


class MulticlassCurves(_Aggregate):
    confusion: Confusion
    per_class: list[ClassScores]


class RegressionCurves(_Aggregate):
    """Binned with power-of-two widths aligned to 0, so shards' histograms merge exactly;
    ``dropped``: rows whose label or prediction is not a finite number."""

    predicted_vs_actual: Histogram2D = Field(description="x: actual label, y: prediction")
    residuals: Histogram = Field(description="label - prediction")
    dropped: int = 0


class QueryLengthBucket(_Aggregate):
    """Queries with ``min_documents`` to ``max_documents`` documents and their mean NDCG."""

    min_documents: int
    max_documents: int
    queries: int
    mean_ndcg: float


class WorstQuery(_Aggregate):
    """A query among the lowest NDCG (ties: the lower qid first). ``qid``: as the engine reads
    it (LETOR's qid; a table's integer group column, or a string column's code in order of
    appearance)."""

    qid: float
    ndcg: float
    documents: int


class RankingCurves(_Aggregate):
    """``ndcg_at`` / ``precision_at``: the metric at cut-off k = 1, 2, ... (index k - 1), each
    the mean over queries as the metrics; the distribution, the buckets by query length and the
    worst queries are of NDCG at ``cutoff``."""

    ndcg_at: list[float]
    precision_at: list[float]
    cutoff: int
    ndcg_distribution: Histogram
    by_query_length: list[QueryLengthBucket]
    worst_queries: list[WorstQuery]


class ModelCurves(_Aggregate):
    """One model's aggregates; ``model``: "model" (the candidate), "baseline" or a challenger's
    name. Exactly one of the task's fields is set."""

    model: str
    binary: BinaryCurves | None = None
    multiclass: MulticlassCurves | None = None
    regression: RegressionCurves | None = None
    ranking: RankingCurves | None = None
