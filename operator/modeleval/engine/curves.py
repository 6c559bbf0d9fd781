"""Curve aggregates for the report: computed from every row, kept at a bounded size.

Binary and multiclass aggregates are computed on the driver from the labels and scores it
already holds for the metrics (the AUC is computed there too, over every row): the exact ROC and
PR curves (one point per distinct score) are thinned to the points a plot needs, with a proven
bound on how much the area under the thinned ROC differs from the exact AUC (``CURVE_AREA_TOLERANCE``).
Ranking aggregates are mergeable states computed shard by shard, in the tasks beside the
per-query metrics (:mod:`.querymetrics`), and added up on the driver. Regression histograms use
power-of-two bin widths aligned to 0, so each shard picks its own bins and any two merge exactly.

Memory beyond the arrays the driver already holds: one sort of each model's scores (as the
AUC's), a few arrays of the distinct scores' count, and the aggregates themselves (a few
thousand numbers per model).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import reduce

import numpy as np

from ..api.curves import (BinaryCurves, ClassScores, Confusion, Curve, Histogram,
                          Histogram2D, MulticlassCurves, QueryLengthBucket, RankingCurves,
                          RegressionCurves, Reliability, ReliabilityBin, ThresholdRow, WorstQuery)
from . import metrics as metric_fns
from .rankingcurves import NDCG_BINS, RankingState
from .errors import EvaluationError, Reason

# The trapezoidal area under a thinned curve is within this of the exact curve's.
CURVE_AREA_TOLERANCE = 5e-5
# A thinned curve also keeps every point more than this (in curve units) from its chord, so the
# plotted line never strays visibly from the exact curve.
MAX_PLOT_DEVIATION = 0.005
CALIBRATION_BINS = 10
SCORE_BINS = 50
SWEEP_THRESHOLDS = 19
REGRESSION_BINS = 64
RESIDUAL_BINS = 128


# ------------------------------------------------------------------ thinning
def thin(x: np.ndarray, y: np.ndarray, tolerance: float = CURVE_AREA_TOLERANCE,
         deviation: float = MAX_PLOT_DEVIATION) -> tuple[np.ndarray, float]:
    """Indices of the points of the polyline (x, y) a plot keeps, and a bound on how far the
    trapezoidal area under them is from the full polyline's.

    Top down: the kept points start as the two ends; the segment (between consecutive kept
    points) whose chord is farthest in area from the polyline under it is split at its point
    farthest from the chord, until the segments' area differences add up to at most
    ``tolerance`` and no point lies more than ``deviation`` from its segment's chord (so the
    plotted line never strays visibly). The sum bounds the total area error."""
    n = len(x)
    if n <= 2:
        return np.arange(n), 0.0
    area = np.concatenate(([0.0], np.cumsum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)))

    def segment(i: int, j: int) -> tuple[bool, float, int, int, int]:
        """(within the deviation, -area error, i, j, split point) of the segment i..j."""
        error = abs((area[j] - area[i]) - (x[j] - x[i]) * (y[i] + y[j]) / 2.0)
        if j - i < 2:
            return True, -error, i, j, i
        inner = slice(i + 1, j)
        dx, dy = x[j] - x[i], y[j] - y[i]
        px, py = x[inner] - x[i], y[inner] - y[i]
        norm = np.hypot(dx, dy)  # each point's distance to the chord (a vertical one too)
        off = np.abs(px * dy - py * dx) / norm if norm else np.hypot(px, py)
        farthest = int(np.argmax(off))
        return bool(off[farthest] <= deviation), -error, i, j, i + 1 + farthest

    heap = [segment(0, n - 1)]
    total = -heap[0][1]
    keep = [0, n - 1]
    while heap and (not heap[0][0] or total > tolerance):
        _, negative_error, i, j, k = heapq.heappop(heap)
        total += negative_error
        if j - i < 2:  # an edge of the polyline: nothing to split (its error is 0)
            continue
        keep.append(k)
        for child in (segment(i, k), segment(k, j)):
            total -= child[1]
            heapq.heappush(heap, child)
    return np.unique(keep), total


# ------------------------------------------------------------------ binary
@dataclass(frozen=True)
class ScoreCounts:
    """Per distinct score, descending: the score, and the positive and negative rows scoring at
    least it (scikit-learn's _binary_clf_curve)."""

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray

    @classmethod
    def of(cls, truth: np.ndarray, scores: np.ndarray) -> "ScoreCounts":
        order = np.argsort(-scores, kind="stable")
        ordered = scores[order]
        last = np.concatenate((np.flatnonzero(ordered[1:] != ordered[:-1]), [len(ordered) - 1]))
        tps = np.cumsum(truth[order])[last]
        return cls(ordered[last], tps, last + 1 - tps)


def _curve(x: np.ndarray, y: np.ndarray, thresholds: np.ndarray, exact_area: float) -> Curve:
    """The thinned curve; ``thresholds[i]`` is point i + 1's (the first point has none)."""
    keep, bound = thin(x, y)
    marks = [float(thresholds[i - 1]) if i else None for i in keep.tolist()]
    return Curve(x=x[keep].tolist(), y=y[keep].tolist(), thresholds=marks, area=exact_area,
                 area_error=bound, exact_points=len(x))


def roc_curve(counts: ScoreCounts) -> Curve | None:
    positives, negatives = int(counts.tps[-1]), int(counts.fps[-1])
    if not positives or not negatives:
        return None
    fpr = np.concatenate(([0.0], counts.fps / negatives))
    tpr = np.concatenate(([0.0], counts.tps / positives))
    # The trapezoids under the exact curve are the AUC with tied scores sharing ranks.
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return _curve(fpr, tpr, counts.thresholds, auc)


def pr_curve(counts: ScoreCounts) -> Curve | None:
    positives = int(counts.tps[-1])
    if not positives:
        return None
    # Beyond the first point at full recall the curve only loses precision (scikit-learn
    # stops there too).
    end = int(np.searchsorted(counts.tps, positives)) + 1
    tps, fps = counts.tps[:end], counts.fps[:end]
    precision = tps / (tps + fps)
    recall = tps / positives
    average_precision = float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))
    x = np.concatenate(([0.0], recall))
    y = np.concatenate(([1.0], precision))
    return _curve(x, y, counts.thresholds[:end], average_precision)


def reliability(truth: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> Reliability | None:
    if scores.min() < 0 or scores.max() > 1:
        return None
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], scores)  # as calibration_curve bins them
    total = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=scores, minlength=bins)
    positive = np.bincount(index, weights=truth, minlength=bins)
    out = [ReliabilityBin(lower=float(edges[b]), upper=float(edges[b + 1]), rows=int(total[b]),
                          mean_predicted=float(predicted[b] / total[b]),
                          fraction_positive=float(positive[b] / total[b]))
           for b in np.flatnonzero(total)]
    ece = float(np.sum(np.abs(positive - predicted)) / len(scores))
    return Reliability(bins=out, expected_calibration_error=ece)


def _score_edges(scores: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = (0.0, 1.0) if scores.min() >= 0 and scores.max() <= 1 else (float(scores.min()),
                                                                       float(scores.max()))
    return np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)


def _histogram(values: np.ndarray, edges: np.ndarray) -> Histogram:
    return Histogram(edges=edges.tolist(), counts=np.histogram(values, edges)[0].tolist())


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def sweep(counts: ScoreCounts, thresholds: np.ndarray) -> list[ThresholdRow]:
    """The four counts at each threshold, read off the exact curve's cumulative counts."""
    above = np.searchsorted(-counts.thresholds, -thresholds, side="left")  # distinct scores > t
    tps = np.where(above > 0, counts.tps[np.maximum(above - 1, 0)], 0)
    fps = np.where(above > 0, counts.fps[np.maximum(above - 1, 0)], 0)
    positives, negatives = int(counts.tps[-1]), int(counts.fps[-1])
    rows = []
    for t, tp, fp in zip(thresholds, tps.tolist(), fps.tolist()):
        fn, tn = positives - tp, negatives - fp
        rows.append(ThresholdRow(threshold=float(t), tp=tp, fp=fp, tn=tn, fn=fn,
                                 precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
                                 f1=_ratio(2 * tp, 2 * tp + fp + fn)))
    return rows


def binary_curves(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> BinaryCurves:
    truth = metric_fns.binary_labels(labels)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)):
        raise EvaluationError("the model's scores include NaN or infinite values: no curves",
                              Reason.SchemaMismatch)
    counts = ScoreCounts.of(truth, scores)
    edges = _score_edges(scores, SCORE_BINS)
    predicted = (scores > threshold).astype(np.int64)
    return BinaryCurves(
        roc=roc_curve(counts), pr=pr_curve(counts), reliability=reliability(truth, scores),
        confusion=_confusion(truth, predicted, 2), threshold=threshold,
        scores_positive=_histogram(scores[truth == 1], edges),
        scores_negative=_histogram(scores[truth == 0], edges),
        sweep=sweep(counts, np.linspace(edges[0], edges[-1], SWEEP_THRESHOLDS + 2)[1:-1]))


# ------------------------------------------------------------------ multiclass
def _confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> Confusion:
    cells = np.bincount(truth * classes + predicted, minlength=classes * classes)
    return Confusion(classes=list(range(classes)), cells=cells.tolist())


def multiclass_curves(labels: np.ndarray, probabilities: np.ndarray) -> MulticlassCurves:
    p = np.asarray(probabilities, dtype=np.float64)
    truth = metric_fns.class_labels(labels, p.shape[1])
    confusion = _confusion(truth, p.argmax(axis=1), p.shape[1])
    matrix = np.asarray(confusion.counts)
    per_class = []
    for c in range(p.shape[1]):
        tp, predicted, support = int(matrix[c, c]), int(matrix[:, c].sum()), int(matrix[c].sum())
        per_class.append(ClassScores(label=c, precision=_ratio(tp, predicted),
                                     recall=_ratio(tp, support),
                                     f1=_ratio(2 * tp, predicted + support), support=support))
    return MulticlassCurves(confusion=confusion, per_class=per_class)


# ------------------------------------------------------------------ regression
def _exponent(lo: float, hi: float, bins: int) -> int:
    """The smallest power-of-two width whose bins aligned to 0 cover [lo, hi] in ``bins``."""
    scale = (hi - lo) or abs(lo) or 1.0
    if not np.isfinite(scale):  # a span beyond float64's range
        scale = max(abs(lo), abs(hi))
    exponent = int(np.floor(np.log2(scale / bins)))
    while np.floor(hi / 2.0**exponent) - np.floor(lo / 2.0**exponent) + 1 > bins:
        exponent += 1
    return exponent


@dataclass(frozen=True)
class AlignedHistogram:
    """Counts on a grid of power-of-two widths aligned to 0: along axis a, bin i holds values in
    [(origin[a] + i) * 2**exponents[a], (origin[a] + i + 1) * 2**exponents[a]). Two such
    histograms merge exactly: the finer one's bins nest in the coarser one's."""

    exponents: tuple[int, ...]
    origin: tuple[int, ...]
    counts: np.ndarray
    bins: int

    @classmethod
    def of(cls, columns: list[np.ndarray], bins: int) -> "AlignedHistogram":
        exponents = tuple(_exponent(float(c.min()), float(c.max()), bins) if len(c) else 0
                          for c in columns)
        return cls._binned(columns, exponents, bins)

    @classmethod
    def _binned(cls, columns: list[np.ndarray], exponents: tuple[int, ...],
                bins: int) -> "AlignedHistogram":
        cells = [np.floor(c / 2.0**e).astype(np.int64) for c, e in zip(columns, exponents)]
        return cls._from_cells(cells, np.ones(len(cells[0]), dtype=np.int64), exponents, bins)

    @classmethod
    def _from_cells(cls, cells: list[np.ndarray], weights: np.ndarray, exponents: tuple[int, ...],
                    bins: int) -> "AlignedHistogram":
        origin = tuple(int(c.min()) if len(c) else 0 for c in cells)
        shape = tuple(int(c.max()) - o + 1 if len(c) else 1 for c, o in zip(cells, origin))
        counts = np.zeros(shape, dtype=np.int64)
        np.add.at(counts, tuple(c - o for c, o in zip(cells, origin)), weights)
        return cls(exponents, origin, counts, bins)

    def _cells(self) -> tuple[list[np.ndarray], np.ndarray]:
        filled = np.nonzero(self.counts)
        return [f + o for f, o in zip(filled, self.origin)], self.counts[filled]

    def merge(self, other: "AlignedHistogram") -> "AlignedHistogram":
        mine, my_weights = self._cells()
        theirs, their_weights = other._cells()
        exponents = []
        for a in range(len(self.exponents)):
            exponent = max(self.exponents[a], other.exponents[a])
            while True:
                ends = [_coarsen(c[a], e[a], exponent) for c, e in ((mine, self.exponents),
                                                                     (theirs, other.exponents))
                        if len(c[a])]
                joined = np.concatenate(ends) if ends else np.zeros(1, dtype=np.int64)
                if joined.max() - joined.min() + 1 <= self.bins:
                    break
                exponent += 1
            exponents.append(exponent)
        cells = [np.concatenate((_coarsen(mine[a], self.exponents[a], exponents[a]),
                                 _coarsen(theirs[a], other.exponents[a], exponents[a])))
                 for a in range(len(exponents))]
        return AlignedHistogram._from_cells(cells, np.concatenate((my_weights, their_weights)),
                                            tuple(exponents), self.bins)

    def edges(self, axis: int) -> list[float]:
        width = 2.0 ** self.exponents[axis]
        start = self.origin[axis]
        return [(start + i) * width for i in range(self.counts.shape[axis] + 1)]


def _coarsen(cells: np.ndarray, exponent: int, to: int) -> np.ndarray:
    return cells >> np.int64(to - exponent)  # an arithmetic shift: floor division by 2**k


@dataclass(frozen=True)
class RegressionState:
    """One shard's regression histograms (mergeable)."""

    joint: AlignedHistogram
    residuals: AlignedHistogram
    dropped: int

    @classmethod
    def of(cls, labels: np.ndarray, predictions: np.ndarray) -> "RegressionState":
        y = labels.astype(np.float64)
        p = np.asarray(predictions, dtype=np.float64).reshape(-1)
        finite = np.isfinite(y) & np.isfinite(p)
        y, p = y[finite], p[finite]
        return cls(AlignedHistogram.of([y, p], REGRESSION_BINS),
                   AlignedHistogram.of([y - p], RESIDUAL_BINS), int(np.sum(~finite)))

    def merge(self, other: "RegressionState") -> "RegressionState":
        return RegressionState(self.joint.merge(other.joint), self.residuals.merge(other.residuals),
                               self.dropped + other.dropped)

    def curves(self) -> RegressionCurves:
        joint = Histogram2D(x_edges=self.joint.edges(0), y_edges=self.joint.edges(1),
                            cells=self.joint.counts.ravel().tolist())
        residuals = Histogram(edges=self.residuals.edges(0),
                              counts=self.residuals.counts.tolist())
        return RegressionCurves(predicted_vs_actual=joint, residuals=residuals, dropped=self.dropped)


def regression_curves(shards: list[tuple[np.ndarray, np.ndarray]]) -> RegressionCurves:
    """Each shard's (labels, predictions) binned on its own, then merged."""
    return reduce(RegressionState.merge, [RegressionState.of(y, p) for y, p in shards]).curves()


# ------------------------------------------------------------------ ranking
def ranking_curves(state: RankingState) -> RankingCurves:
    """The merged state as the result document stores it."""
    buckets = [QueryLengthBucket(min_documents=2**b, max_documents=2 ** (b + 1) - 1,
                                 queries=int(state.length_counts[b]),
                                 mean_ndcg=float(state.length_sums[b] / state.length_counts[b]))
               for b in np.flatnonzero(state.length_counts)]
    return RankingCurves(
        ndcg_at=(state.ndcg_sums / state.queries).tolist(),
        precision_at=(state.precision_sums / state.queries).tolist(), cutoff=state.cutoff,
        ndcg_distribution=Histogram(edges=np.linspace(0.0, 1.0, NDCG_BINS + 1).tolist(),
                                    counts=state.histogram.tolist()),
        by_query_length=buckets,
        worst_queries=[WorstQuery(qid=float(q), ndcg=float(v), documents=int(d))
                       for q, v, d in state.worst])
