"""Curve aggregates for the report: computed from every row, kept at a bounded size.

Binary and multiclass aggregates are computed on the driver from the labels and scores it
already holds for the metrics (the AUC is computed there too, over every row): the exact ROC and
PR curves (one point per distinct score) are thinned to the points a plot needs, with a proven
bound on how much the area under the thinned ROC differs from the exact AUC (``CURVE_AREA_TOLERANCE``).
Ranking aggregates are mergeable states computed shard by shard, in the tasks beside the
per-query metrics (:mod:`.querymetrics`), and added up on the driver. Regression histograms use
power-of-two bin widths aligned to 0, so each shard picks its own bins and any two merge exactly.

A binary model's :class:`ScoreCounts` (one sort of its scores, per distinct score the rows at
or above it) are made once and serve the AUC and every binary aggregate; the passes over them
read ``metrics.CHUNK_ROWS`` distinct scores at a time. Memory beyond the arrays the driver
already holds: the counts (three arrays of the distinct scores' count, float32 and int32 for
float32 scores), a few MB of each pass, and the aggregates themselves (a few thousand numbers
per model).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable
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
ScoreCounts = metric_fns.ScoreCounts

# The exact curve is first cut to the points where it moves to another cell of a PLOT_GRID x
# PLOT_GRID grid (and the point before): the points between two of those lie in one cell, so
# they stray at most a cell's diagonal from the line through them. A few thousand points are
# left; :func:`thin` works on those. The areas are tracked exactly throughout.
PLOT_GRID = 2048
_CELL_DIAGONAL = float(np.sqrt(2.0) / PLOT_GRID)

Points = Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # points a..b-1 of a polyline


def _grid_points(points: Points, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        np.ndarray]:
    """The indices, coordinates and cumulative trapezoid areas (from point 0) of the points of
    a polyline of ``length`` points where it enters another grid cell, the points just before
    those, and its two ends; read ``metrics.CHUNK_ROWS`` points at a time."""
    kept: list[tuple[np.ndarray, ...]] = []
    area = 0.0  # under the polyline up to the chunk's first point
    for start in range(0, length, metric_fns.CHUNK_ROWS):
        lo, hi = max(start - 1, 0), min(length, start + metric_fns.CHUNK_ROWS)
        x, y = points(lo, hi)  # from the previous chunk's last point on
        cells = np.floor(x * PLOT_GRID) * (PLOT_GRID + 2) + np.floor(y * PLOT_GRID)
        entered = np.flatnonzero(cells[1:] != cells[:-1]) + 1
        marks = np.union1d(entered, entered - 1)
        marks = np.union1d(marks, [0, len(x) - 1])
        cumulative = np.concatenate(([0.0], np.cumsum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)))
        kept.append((lo + marks, x[marks], y[marks], area + cumulative[marks]))
        area += float(cumulative[-1])
    index, x, y, areas = (np.concatenate(column) for column in zip(*kept))
    index, first = np.unique(index, return_index=True)
    return index, x[first], y[first], areas[first]


def _thinned(points: Points, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The kept indices and points of the polyline, and a bound on how far the trapezoidal area
    under them is from the whole polyline's (:func:`thin`'s, over every point)."""
    index, x, y, areas = _grid_points(points, length)
    # Between two grid points the polyline's own area is known exactly: what their chord
    # misses, summed, is the first stage's error.
    chords = np.diff(x) * (y[1:] + y[:-1]) / 2.0
    first_error = float(np.sum(np.abs(np.diff(areas) - chords)))
    if first_error > CURVE_AREA_TOLERANCE / 2:  # an adversarial curve: thin every point
        x, y = points(0, length)
        keep, bound = thin(x, y)
        return keep, x[keep], y[keep], bound
    keep, bound = thin(x, y, CURVE_AREA_TOLERANCE - first_error,
                       MAX_PLOT_DEVIATION - _CELL_DIAGONAL)
    return index[keep], x[keep], y[keep], bound + first_error


def _from_origin(first: float, values: Callable[[int, int], np.ndarray],
                 a: int, b: int) -> np.ndarray:
    """Points a..b-1 of a curve whose point 0 is ``first`` and point i is ``values`` at i - 1."""
    rest = values(max(a - 1, 0), b - 1)
    return np.concatenate(([first], rest)) if a == 0 else rest


def _curve(counts: ScoreCounts, points: Points, length: int, exact_area: float) -> Curve:
    """The thinned curve; point i > 0 is at ``counts.thresholds[i - 1]`` (point 0 has none)."""
    keep, x, y, bound = _thinned(points, length)
    marks = [float(counts.thresholds[i - 1]) if i else None for i in keep.tolist()]
    return Curve(x=x.tolist(), y=y.tolist(), thresholds=marks, area=exact_area,
                 area_error=bound, exact_points=length)


def roc_curve(counts: ScoreCounts) -> Curve | None:
    positives, negatives = counts.positives, counts.negatives
    if not positives or not negatives:
        return None

    def points(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return (_from_origin(0.0, lambda i, j: counts.fps[i:j] / negatives, a, b),
                _from_origin(0.0, lambda i, j: counts.tps[i:j] / positives, a, b))

    # The area under the exact curve is the AUC with tied scores sharing ranks.
    return _curve(counts, points, len(counts.tps) + 1, counts.auc())


def pr_curve(counts: ScoreCounts) -> Curve | None:
    positives = counts.positives
    if not positives:
        return None
    # Beyond the first point at full recall the curve only loses precision (scikit-learn
    # stops there too).
    end = int(np.searchsorted(counts.tps, positives)) + 1

    def precision(i: int, j: int) -> np.ndarray:
        tps = counts.tps[i:j].astype(np.float64)
        return tps / (tps + counts.fps[i:j])

    def points(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return (_from_origin(0.0, lambda i, j: counts.tps[i:j] / positives, a, b),
                _from_origin(1.0, precision, a, b))

    average_precision = 0.0
    for a in range(0, end, metric_fns.CHUNK_ROWS):
        b = min(end, a + metric_fns.CHUNK_ROWS)
        gained = np.diff(counts.tps[a:b], prepend=counts.tps[a - 1] if a else 0)
        average_precision += float(np.dot(gained / positives, precision(a, b)))
    return _curve(counts, points, end + 1, average_precision)


def _distinct_above(counts: ScoreCounts, edge: float, inclusive: bool = False) -> int:
    """How many distinct scores lie above ``edge`` (at or above it, ``inclusive``): a binary
    search of the descending scores, comparing exactly (``numpy.searchsorted`` would copy
    float32 scores to float64 first)."""
    search = bisect.bisect_right if inclusive else bisect.bisect_left
    return search(counts.thresholds, -float(edge), key=lambda t: -float(t))


def _score_sum(counts: ScoreCounts, a: int, b: int) -> float:
    """The sum of the scores of the rows at distinct scores a..b-1."""
    total = 0.0
    for lo in range(a, b, metric_fns.CHUNK_ROWS):
        hi = min(b, lo + metric_fns.CHUNK_ROWS)
        rows = counts.tps[lo:hi] + counts.fps[lo:hi]  # rows at or above each (at most n)
        before = int(counts.tps[lo - 1]) + int(counts.fps[lo - 1]) if lo else 0
        total += float(np.dot(counts.thresholds[lo:hi].astype(np.float64),
                              np.diff(rows, prepend=before).astype(np.float64)))
    return total


def reliability(counts: ScoreCounts, bins: int = CALIBRATION_BINS) -> Reliability | None:
    if counts.thresholds[-1] < 0 or counts.thresholds[0] > 1:
        return None
    edges = np.linspace(0.0, 1.0, bins + 1)
    # As calibration_curve bins them: bin b holds the scores in (edges[b], edges[b + 1]]
    # (the first bin also 0, the last one anything above its lower edge).
    bounds = [len(counts.thresholds)] + [_distinct_above(counts, e) for e in edges[1:-1]] + [0]
    out, error = [], 0.0
    for b in range(bins):
        upper, lower = bounds[b + 1], bounds[b]  # distinct scores upper..lower-1 (descending)
        tps, fps = _cumulative(counts, lower, upper)
        positive, negative = int(tps[0] - tps[1]), int(fps[0] - fps[1])
        total = positive + negative
        if not total:
            continue
        predicted = _score_sum(counts, upper, lower)
        error += abs(positive - predicted)
        out.append(ReliabilityBin(lower=float(edges[b]), upper=float(edges[b + 1]), rows=int(total),
                                  mean_predicted=predicted / total,
                                  fraction_positive=positive / total))
    rows = counts.positives + counts.negatives
    return Reliability(bins=out, expected_calibration_error=float(error / rows))


def _cumulative(counts: ScoreCounts, *distinct: int) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative rows at the first ``d`` distinct scores, for each ``d``."""
    at = np.asarray(distinct)
    tps = np.where(at > 0, counts.tps[np.maximum(at - 1, 0)], 0).astype(np.int64)
    fps = np.where(at > 0, counts.fps[np.maximum(at - 1, 0)], 0).astype(np.int64)
    return tps, fps


def _score_edges(counts: ScoreCounts, bins: int) -> np.ndarray:
    lo, hi = float(counts.thresholds[-1]), float(counts.thresholds[0])
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    return np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)


def _histograms(counts: ScoreCounts, edges: np.ndarray) -> tuple[Histogram, Histogram]:
    """The positive and negative rows' scores in ``edges``' bins, as ``numpy.histogram``
    counts them ([a, b), the last bin [a, b])."""
    at_least = [_distinct_above(counts, e, inclusive=True) for e in edges[:-1]]
    tps, fps = _cumulative(counts, *at_least, _distinct_above(counts, edges[-1]))
    return (Histogram(edges=edges.tolist(), counts=(tps[:-1] - tps[1:]).tolist()),
            Histogram(edges=edges.tolist(), counts=(fps[:-1] - fps[1:]).tolist()))


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def sweep(counts: ScoreCounts, thresholds: np.ndarray) -> list[ThresholdRow]:
    """The four counts at each threshold, read off the exact curve's cumulative counts."""
    tps, fps = _cumulative(counts, *[_distinct_above(counts, t) for t in thresholds])
    positives, negatives = counts.positives, counts.negatives
    rows = []
    for t, tp, fp in zip(thresholds, tps.tolist(), fps.tolist()):
        fn, tn = positives - tp, negatives - fp
        rows.append(ThresholdRow(threshold=float(t), tp=tp, fp=fp, tn=tn, fn=fn,
                                 precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
                                 f1=_ratio(2 * tp, 2 * tp + fp + fn)))
    return rows


def binary_curves(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5,
                  counts: ScoreCounts | None = None) -> BinaryCurves:
    """Every binary aggregate, read off the rows' :class:`ScoreCounts` (``counts``: already
    made, for the AUC: the rows are not sorted again)."""
    if counts is None:
        counts = ScoreCounts.of(metric_fns.binary_labels(labels), scores)
    ends = counts.thresholds[[0, -1]] if len(counts.thresholds) else np.zeros(0)
    if not len(ends) or not np.all(np.isfinite(ends)):  # NaN sorts first, infinities at the ends
        raise EvaluationError("the model's scores include NaN or infinite values: no curves",
                              Reason.SchemaMismatch)
    edges = _score_edges(counts, SCORE_BINS)
    tp, fp = _cumulative(counts, _distinct_above(counts, threshold))
    tp, fp = int(tp[0]), int(fp[0])
    confusion = Confusion(classes=[0, 1], cells=[counts.negatives - fp, fp,
                                                 counts.positives - tp, tp])
    positive, negative = _histograms(counts, edges)
    return BinaryCurves(
        roc=roc_curve(counts), pr=pr_curve(counts), reliability=reliability(counts),
        confusion=confusion, threshold=threshold, scores_positive=positive,
        scores_negative=negative,
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
