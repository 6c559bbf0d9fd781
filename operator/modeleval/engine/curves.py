"""Curve aggregates for the report: computed from every row, kept at a bounded size.

Binary and multiclass aggregates are computed on the driver from the labels and scores it
already holds for the metrics (the AUC is computed there too, over every row): the exact ROC and
PR curves (one point per distinct score) are thinned to the points a plot needs, with a proven
bound on how much the area under the thinned ROC differs from the exact AUC (``CURVE_AREA_TOLERANCE``).
Ranking aggregates are mergeable states computed shard by shard, in the tasks beside the
per-query metrics (:mod:`.querymetrics`), and added up on the driver. Regression histograms use
power-of-two bin widths aligned to 0, so each shard picks its own bins and any two merge exactly.

A binary model's :class:`ScoreCounts` (one sort of its scores, per distinct score the rows at
or above it) are made once and serve the AUC; where the report is wanted, a
:class:`BinaryTally` gathers every binary aggregate in that same tally, step by step (the grid
points of the ROC and PR curves with their exact areas, the average precision, the rows above
the thresholds and edges, the calibration bins' score sums), so the curves are built from at
most a few tens of thousands of numbers (about 8,000 ROC and 30,000 PR points at 240k rows as at
3M) and never read the rows or the distinct scores again (but for an adversarial
curve whose grid points miss too much area: it is thinned from every point). Memory beyond the
arrays the driver already holds: the counts (three arrays of the distinct scores' count,
float32 and int32 for float32 scores), a few MB of each step, and the aggregates themselves (at
most about 2 MB per model).
"""

from __future__ import annotations

import heapq
import time
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

# The exact curve is first cut, in the tally, to the points where it moves to another box (a
# cell of a PLOT_GRID x PLOT_GRID grid; for the PR curve, a grid column and a band of rows: see
# :func:`_row_bands`) and the point before: the points between two of those lie in one box, so
# they stray at most a cell's diagonal from the line through them. Thousands of points are
# left (tens of thousands for a PR curve); :func:`thin` works on those. The areas are tracked
# exactly throughout.
PLOT_GRID = 2048
_CELL_DIAGONAL = float(np.sqrt(2.0) / PLOT_GRID)

Points = Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # points a..b-1 of a polyline


class _GridPoints:
    """A polyline's points, handed over in steps, where it leaves the box of the point before
    (a grid cell, at most 1/PLOT_GRID a side), the points just before those, each step's last
    point and point 0: each with its index, coordinates, threshold and the trapezoid area under
    the polyline from point 0 (exact: the share of every point is summed, then scaled by
    ``scale``)."""

    def __init__(self, x: float, y: float, scale: float) -> None:
        self.scale = scale
        self.index = 0  # the last point handed over
        self.units = 0  # the area up to it, before scaling
        self.kept = [(np.zeros(1, dtype=np.int64), np.array([x]), np.array([y]),
                      np.array([np.nan]), np.zeros(1))]

    def add(self, entered: np.ndarray, at: Callable[[np.ndarray], tuple[np.ndarray, ...]],
            shares: np.ndarray) -> None:
        """The polyline's next ``len(shares)`` points: ``entered``, the positions of those in
        another box than the point before (in any order, repeated or not); ``at``, the x, y and threshold of the
        points at some positions; ``shares``, each one's trapezoid from the point before."""
        keep = np.zeros(len(shares), dtype=bool)
        keep[entered] = True
        keep[entered[entered > 0] - 1] = True
        keep[-1] = True
        kept = np.flatnonzero(keep)
        units = self.units + np.cumsum(np.add.reduceat(shares, np.append(0, kept[:-1] + 1)))
        self.kept.append((self.index + 1 + kept, *at(kept), units * self.scale))
        self.units, self.index = units[-1], self.index + len(shares)

    def points(self) -> tuple[np.ndarray, ...]:
        """Index, x, y, threshold and cumulative area of each point kept, by index."""
        return tuple(np.concatenate(column) for column in zip(*self.kept))


def _column_entries(counts: np.ndarray, before: int, total: int) -> np.ndarray:
    """The positions in ``counts`` (ascending, all above ``before``) where the grid column of
    ``count / total`` (``floor(count * PLOT_GRID / total)``, exact) grows: a binary search for
    the least count of each column passed, not a look at every count."""
    first, last = before * PLOT_GRID // total + 1, int(counts[-1]) * PLOT_GRID // total
    least = (np.arange(first, last + 1, dtype=np.int64) * total + PLOT_GRID - 1) // PLOT_GRID
    return np.searchsorted(counts, least, side="left")


def _row_bands(rows: int) -> np.ndarray:
    """The least row count of each band of the PR curve's boxes, up to ``rows``: every count
    below PLOT_GRID, then bands of width at most count / PLOT_GRID. Within a band and a grid
    column the precision moves by at most 1/PLOT_GRID (tp/r against (tp+a)/(r+b), a <= b,
    differ by at most b/r), so a box is at most a cell."""
    bands, width = [np.arange(1, PLOT_GRID)], 1
    while width * PLOT_GRID <= rows:
        bands.append(np.arange(width * PLOT_GRID, 2 * width * PLOT_GRID, width))
        width *= 2
    return np.concatenate(bands)


def _band_entries(rows: np.ndarray, before: int, bands: np.ndarray) -> np.ndarray:
    """The positions in ``rows`` (ascending, all above ``before``) where the band grows."""
    passed = bands[np.searchsorted(bands, before, side="right"):
                   np.searchsorted(bands, rows[-1], side="right")]
    return np.searchsorted(rows, passed, side="left")


def _neighbour_sums(values: np.ndarray, before: float) -> np.ndarray:
    """Each value plus the one before it (``before`` for the first)."""
    out = np.empty(len(values), dtype=values.dtype)
    out[0] = values[0] + before
    np.add(values[1:], values[:-1], out=out[1:])
    return out


class BinaryTally:
    """A binary model's report aggregates, gathered in the pass that tallies its sorted rows for
    the AUC (:class:`ScoreCounts`, given as its ``curves``): the ROC and PR curves' grid
    points with their exact areas, the average precision, the rows above the confusion
    matrix's, the sweep's, the calibration bins' and the histograms' edges, and the calibration
    bins' score sums. Each step of the tally hands over its distinct scores; what is kept grows
    with the grid (and the PR curve's row bands, with the log of the rows), and the curves are
    built from it alone."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.highest = self.lowest = float("nan")  # no rows: no curves
        self.distinct = 0
        self.seconds = 0.0  # spent gathering, inside the tally: the report's share of it

    def start(self, highest: float, lowest: float, positives: int, negatives: int) -> None:
        """Before the tally: the highest and lowest score, and both classes' rows."""
        self.highest, self.lowest = float(highest), float(lowest)
        self.positives, self.negatives = positives, negatives
        if not self.finite:
            return
        self.edges = _score_edges(self.lowest, self.highest, SCORE_BINS)
        self.sweep_at = np.linspace(self.edges[0], self.edges[-1], SWEEP_THRESHOLDS + 2)[1:-1]
        calibration = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)[1:-1]
        # Rows scoring above each value (the confusion's threshold, the sweep's, the inner
        # calibration edges, the last histogram edge), and at or above each histogram edge but
        # the last: negated, as the negated scores ascend.
        self._above = -np.concatenate(([self.threshold], self.sweep_at, calibration, self.edges[-1:]))
        self._at_least = -self.edges[:-1]
        self.above = np.zeros((2, len(self._above)), dtype=np.int64)  # positives, negatives
        self.at_least = np.zeros((2, len(self._at_least)), dtype=np.int64)
        self.score_sums = np.zeros(CALIBRATION_BINS)  # of each calibration bin's rows
        self.roc = _GridPoints(0.0, 0.0, 1.0 / (2.0 * positives * negatives or 1))
        self.pr = _GridPoints(0.0, 1.0, 1.0 / (2.0 * positives or 1))
        self.pr_done = not positives
        self.average_precision = 0.0
        self._bands = _row_bands(positives + negatives)
        self._tp = self._fp = 0
        self._precision = 1.0

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.highest) and np.isfinite(self.lowest))

    def add(self, scores: np.ndarray, tps: np.ndarray, fps: np.ndarray,
            gained_tp: np.ndarray) -> None:
        """The tally's next distinct scores (descending); the positive and negative rows
        scoring at least each, and the positive rows each adds (as floats)."""
        started = time.perf_counter()
        self.distinct += len(scores)
        if self.finite:
            self._add(scores, tps, fps, gained_tp, np.diff(fps, prepend=self._fp), tps + fps)
        self.seconds += time.perf_counter() - started

    def _add(self, scores: np.ndarray, tps: np.ndarray, fps: np.ndarray, gained_tp: np.ndarray,
             gained_fp: np.ndarray, rows: np.ndarray) -> None:
        negated = np.negative(scores, dtype=np.float64)  # compared exactly with float64 edges
        for values, side, counts in ((self._above, "left", self.above),
                                     (self._at_least, "right", self.at_least)):
            # Counts are cumulative: the last step with a score beyond a value has its count.
            beyond = np.searchsorted(negated, values, side=side)
            hit = beyond > 0
            counts[0, hit], counts[1, hit] = tps[beyond[hit] - 1], fps[beyond[hit] - 1]
        self._add_score_sums(scores, negated, gained_tp + gained_fp)
        if self.positives and self.negatives:
            shares = _neighbour_sums(tps, self._tp)
            shares *= gained_fp  # twice the trapezoid, in rows squared
            entered = np.concatenate((_column_entries(fps, self._fp, self.negatives),
                                      _column_entries(tps, self._tp, self.positives)))
            self.roc.add(entered, lambda at: (fps[at] / self.negatives, tps[at] / self.positives,
                                              scores[at]), shares)
        if not self.pr_done:
            self._add_pr(scores, tps, gained_tp, rows)
        self._tp, self._fp = int(tps[-1]), int(fps[-1])

    def _add_score_sums(self, scores: np.ndarray, negated: np.ndarray, gained: np.ndarray) -> None:
        """Each calibration bin's rows' scores, summed: bins as calibration_curve's, (a, b],
        the first [0, b] (and below), the last above a; the highest scores come first."""
        inner = -self._above[1 + SWEEP_THRESHOLDS:-1]
        bounds = np.concatenate(([0], np.searchsorted(negated, -inner[::-1], side="left"),
                                 [len(scores)]))
        filled = bounds[:-1] < bounds[1:]
        weighted = np.multiply(scores, gained, dtype=np.float64)
        bins = np.arange(CALIBRATION_BINS - 1, -1, -1)[filled]
        self.score_sums[bins] += np.add.reduceat(weighted, bounds[:-1][filled])

    def _add_pr(self, scores: np.ndarray, tps: np.ndarray, gained: np.ndarray,
                rows: np.ndarray) -> None:
        # Beyond the first point at full recall the curve only loses precision (scikit-learn
        # stops there too).
        end = int(np.searchsorted(tps, self.positives, side="left")) + 1
        self.pr_done = end <= len(tps)
        scores, tps, gained, rows = scores[:end], tps[:end], gained[:end], rows[:end]
        precision = tps / rows
        self.average_precision += float(np.dot(gained, precision)) / self.positives
        entered = np.concatenate((_band_entries(rows, self._tp + self._fp, self._bands),
                                  _column_entries(tps, self._tp, self.positives)))
        shares = _neighbour_sums(precision, self._precision)
        shares *= gained  # twice the trapezoid, times the positives
        self.pr.add(entered, lambda at: (tps[at] / self.positives, precision[at], scores[at]),
                    shares)
        self._precision = float(precision[-1])


def _curve(grid: _GridPoints, counts: ScoreCounts, points: Points, exact_area: float) -> Curve:
    """The thinned curve, from its grid points; point i > 0 is at the (i-1)-th distinct score
    (point 0 has none). The trapezoidal area under it is within ``area_error`` (at most
    ``CURVE_AREA_TOLERANCE``) of the exact curve's."""
    length = grid.index + 1
    index, x, y, marks, areas = grid.points()
    # Between two grid points the polyline's own area is known exactly: what their chord
    # misses, summed, is the first stage's error.
    chords = np.diff(x) * (y[1:] + y[:-1]) / 2.0
    first_error = float(np.sum(np.abs(np.diff(areas) - chords)))
    if first_error > CURVE_AREA_TOLERANCE / 2:
        # An adversarial curve: thin every point, read again off the counts (the one case
        # where the curves read them).
        x, y = points(0, length)
        index, bound = thin(x, y)
        marks = counts.thresholds[np.maximum(index - 1, 0)]
        x, y = x[index], y[index]
    else:
        keep, bound = thin(x, y, CURVE_AREA_TOLERANCE - first_error,
                           MAX_PLOT_DEVIATION - _CELL_DIAGONAL)
        index, x, y, marks, bound = index[keep], x[keep], y[keep], marks[keep], bound + first_error
    thresholds = [float(m) if i else None for i, m in zip(index.tolist(), marks.tolist())]
    return Curve(x=x.tolist(), y=y.tolist(), thresholds=thresholds, area=exact_area,
                 area_error=bound, exact_points=length)


def _from_origin(first: float, values: Callable[[int, int], np.ndarray],
                 a: int, b: int) -> np.ndarray:
    """Points a..b-1 of a curve whose point 0 is ``first`` and point i is ``values`` at i - 1."""
    rest = values(max(a - 1, 0), b - 1)
    return np.concatenate(([first], rest)) if a == 0 else rest


def roc_curve(counts: ScoreCounts) -> Curve | None:
    tally: BinaryTally = counts.curves
    positives, negatives = tally.positives, tally.negatives
    if not positives or not negatives:
        return None

    def points(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return (_from_origin(0.0, lambda i, j: counts.fps[i:j] / negatives, a, b),
                _from_origin(0.0, lambda i, j: counts.tps[i:j] / positives, a, b))

    # The area under the exact curve is the AUC with tied scores sharing ranks.
    auc = counts.doubled_wins / (2.0 * positives * negatives)
    return _curve(tally.roc, counts, points, auc)


def pr_curve(counts: ScoreCounts) -> Curve | None:
    tally: BinaryTally = counts.curves
    positives = tally.positives
    if not positives:
        return None

    def precision(i: int, j: int) -> np.ndarray:
        tps = counts.tps[i:j].astype(np.float64)
        return tps / (tps + counts.fps[i:j])

    def points(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return (_from_origin(0.0, lambda i, j: counts.tps[i:j] / positives, a, b),
                _from_origin(1.0, precision, a, b))

    return _curve(tally.pr, counts, points, tally.average_precision)


def reliability(tally: BinaryTally, bins: int = CALIBRATION_BINS) -> Reliability | None:
    if tally.lowest < 0 or tally.highest > 1:
        return None
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Rows above each edge: all above the first (the first bin takes 0 and below too), none
    # above the last (the last bin takes anything above its lower edge).
    above = np.concatenate(([[tally.positives], [tally.negatives]],
                            tally.above[:, 1 + SWEEP_THRESHOLDS:-1], [[0], [0]]), axis=1)
    positives, negatives = (above[:, :-1] - above[:, 1:]).tolist()
    out, error = [], 0.0
    for b, (positive, negative, predicted) in enumerate(zip(positives, negatives,
                                                            tally.score_sums.tolist())):
        total = positive + negative
        if not total:
            continue
        error += abs(positive - predicted)
        out.append(ReliabilityBin(lower=float(edges[b]), upper=float(edges[b + 1]), rows=total,
                                  mean_predicted=predicted / total,
                                  fraction_positive=positive / total))
    rows = tally.positives + tally.negatives
    return Reliability(bins=out, expected_calibration_error=float(error / rows))


def _histograms(tally: BinaryTally) -> tuple[Histogram, Histogram]:
    """The positive and negative rows' scores in the histogram's bins, as ``numpy.histogram``
    counts them ([a, b), the last bin [a, b])."""
    at_least = np.concatenate((tally.at_least, tally.above[:, -1:]), axis=1)
    edges = tally.edges.tolist()
    positive, negative = (at_least[:, :-1] - at_least[:, 1:]).tolist()
    return Histogram(edges=edges, counts=positive), Histogram(edges=edges, counts=negative)


def _score_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    return np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def sweep(tally: BinaryTally) -> list[ThresholdRow]:
    """The four counts at each of the sweep's thresholds, gathered in the tally."""
    positives, negatives = tally.positives, tally.negatives
    rows = []
    sweep_at = slice(1, 1 + SWEEP_THRESHOLDS)
    for t, tp, fp in zip(tally.sweep_at.tolist(), tally.above[0, sweep_at].tolist(),
                         tally.above[1, sweep_at].tolist()):
        fn, tn = positives - tp, negatives - fp
        rows.append(ThresholdRow(threshold=float(t), tp=tp, fp=fp, tn=tn, fn=fn,
                                 precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
                                 f1=_ratio(2 * tp, 2 * tp + fp + fn)))
    return rows


def binary_curves(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5,
                  counts: ScoreCounts | None = None) -> BinaryCurves:
    """Every binary aggregate, built from the :class:`BinaryTally` gathered while the rows'
    :class:`ScoreCounts` were tallied (``counts``: made for the AUC with one, so the rows are
    neither sorted nor read again; without one, they are tallied here)."""
    tally = counts.curves if counts is not None else None
    if not isinstance(tally, BinaryTally) or tally.threshold != threshold:
        counts = ScoreCounts.of(metric_fns.binary_labels(labels), scores, BinaryTally(threshold))
        tally = counts.curves
    if not tally.finite:  # NaN sorts first, infinities at the ends; no rows: none
        raise EvaluationError("the model's scores include NaN or infinite values: no curves",
                              Reason.SchemaMismatch)
    tp, fp = tally.above[:, 0].tolist()
    confusion = Confusion(classes=[0, 1], cells=[tally.negatives - fp, fp,
                                                 tally.positives - tp, tp])
    positive, negative = _histograms(tally)
    return BinaryCurves(
        roc=roc_curve(counts), pr=pr_curve(counts), reliability=reliability(tally),
        confusion=confusion, threshold=threshold, scores_positive=positive,
        scores_negative=negative, sweep=sweep(tally))


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
