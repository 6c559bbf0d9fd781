"""Curve aggregates for the report: computed from every row, kept at a bounded size.

Binary and multiclass aggregates are computed on the driver from the labels and scores it
already holds for the metrics (the AUC is computed there too, over every row): the exact ROC and
PR curves (one point per distinct score) are thinned to the points a plot needs, with a proven
bound on how much the area under the thinned ROC differs from the exact AUC (``CURVE_AREA_TOLERANCE``).
Ranking aggregates are mergeable states computed shard by shard, in the tasks beside the
per-query metrics (:mod:`.querymetrics`), and added up on the driver. Regression histograms use
power-of-two bin widths aligned to 0, so each shard picks its own bins and any two merge exactly.

A binary model's :class:`ScoreCounts` (one sort of its scores, per distinct score the rows at
or above it) are made once and serve the AUC. Where the report is wanted, a :class:`BinaryTally`
gathers in that same tally what needs every distinct score (the average precision with the PR
curve's exact trapezoidal area, and the calibration bins' score sums: a handful of vectorised
operations per step); everything else is read off the counts afterwards by binary searches (the
rows beyond each threshold and edge, the points where the ROC and PR curves enter another grid
cell), at a cost that grows with the grid, not the rows: the curves never look at every
distinct score again (but for an adversarial curve whose grid points miss too much area: it is
thinned from every point). Memory beyond the arrays the driver already holds: the counts
(three arrays of the distinct scores' count, float32 and int32 for float32 scores), a few MB of
each step, and the aggregates themselves (at most about 2 MB per model).
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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

# The exact curve is first cut to the points where it moves to another box (a cell of a
# PLOT_GRID x PLOT_GRID grid; for the PR curve, a grid column and a band of rows: see
# :func:`_row_bands`) and the point before: the points between two of those lie in one box, so
# they stray at most a cell's diagonal from the line through them. Those points are found by
# binary searches of the counts (a few thousand, tens of thousands for a PR curve, at 240k rows
# as at 3M), never by a look at every distinct score; :func:`thin` works on them.
PLOT_GRID = 2048
_CELL_DIAGONAL = float(np.sqrt(2.0) / PLOT_GRID)



def _first_index(key: Callable[[np.ndarray], np.ndarray], size: int, targets: np.ndarray,
                 strict: bool = False) -> np.ndarray:
    """For each target, the first position i in 0..size-1 whose ``key(i)`` is at least it
    (above it: ``strict``), ``size`` where none is: a binary search of all targets at once over
    a non-decreasing key read at the probed positions only (no array of the positions' size is
    made, where ``numpy.searchsorted`` would want its keys whole and contiguous)."""
    low = np.zeros(len(targets), dtype=np.int64)
    high = np.full(len(targets), size, dtype=np.int64)
    while True:
        open_ = low < high
        if not open_.any():
            return low
        middle = (low + high) // 2
        probed = key(np.minimum(middle, size - 1))
        before = probed <= targets if strict else probed < targets
        low = np.where(open_ & before, middle + 1, low)
        high = np.where(open_ & ~before, middle, high)


def _scores_beyond(thresholds: np.ndarray, values: np.ndarray, at_least: bool) -> np.ndarray:
    """How many of the descending ``thresholds`` are above each value (at or above it:
    ``at_least``); compared in float64, exactly."""
    return _first_index(lambda i: -thresholds[i].astype(np.float64), len(thresholds),
                        -np.asarray(values, dtype=np.float64), strict=at_least)


def _column_entries(counts: np.ndarray, total: int) -> np.ndarray:
    """The positions in ``counts`` (non-decreasing) where the grid column of
    ``count / total`` (``floor(count * PLOT_GRID / total)``, exact) grows: a binary search for
    the least count of each column, not a look at every count."""
    if not len(counts) or not total:
        return np.zeros(0, dtype=np.int64)
    last = int(counts[-1]) * PLOT_GRID // total
    least = (np.arange(1, last + 1, dtype=np.int64) * total + PLOT_GRID - 1) // PLOT_GRID
    # In the counts' own type: numpy would otherwise convert every count to the least's.
    return np.searchsorted(counts, least.astype(counts.dtype), side="left")


def _row_bands(rows: int) -> np.ndarray:
    """The least row count of each band of the PR curve's boxes, up to ``rows``: every count
    below PLOT_GRID, then bands of width at most count / PLOT_GRID. Within a band and a grid
    column the precision moves by at most 1/PLOT_GRID (tp/r against (tp+a)/(r+b), a <= b,
    differ by at most b/r), so a box is at most a cell."""
    bands, width = [np.arange(1, min(rows, PLOT_GRID - 1) + 1)], 1
    while width * PLOT_GRID <= rows:
        bands.append(np.arange(width * PLOT_GRID, min(2 * width * PLOT_GRID, rows + 1), width))
        width *= 2
    return np.concatenate(bands)


def _first_full_recall(tps: np.ndarray, positives: int) -> int:
    """The first position of the (non-decreasing) true positive counts at every positive (in
    their own type: numpy would otherwise convert every count to a Python int's)."""
    return int(np.searchsorted(tps, tps.dtype.type(positives), side="left"))


def _kept(entered: np.ndarray, length: int) -> np.ndarray:
    """The positions 0..length-1 a curve keeps: those where it enters another box, the ones
    just before those, and both ends."""
    entered = entered[entered < length]
    index = np.sort(np.concatenate(([0, length - 1], entered, entered[entered > 0] - 1)))
    return index[np.concatenate(([True], index[1:] != index[:-1]))]


class BinaryTally:
    """What of a binary model's report needs every distinct score, gathered in the pass that
    tallies its sorted rows for the AUC (:class:`ScoreCounts`, given as its ``curves``): the
    average precision with the exact trapezoidal area under the PR curve, and the calibration
    bins' score sums. Each step of the tally hands over its distinct scores; a handful of
    vectorised operations over them (the AUC's own take about as many). Everything else (the
    confusion, sweep, histograms, calibration counts, the curves' points) is read off the counts
    afterwards by binary searches, at a cost that grows with the grid, not the rows."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.highest = self.lowest = float("nan")  # no rows: no curves
        self.positives = self.negatives = self.distinct = 0
        self.seconds = 0.0  # the tally's time spent handing over and waiting: the report's share
        self._worker: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()

    def start(self, highest: float, lowest: float, positives: int, negatives: int) -> None:
        """Before the tally: the highest and lowest score, and both classes' rows."""
        self.highest, self.lowest = float(highest), float(lowest)
        self.positives, self.negatives = positives, negatives
        self.calibrated = self.finite and self.lowest >= 0 and self.highest <= 1
        self.score_sums = np.zeros(CALIBRATION_BINS)  # of each calibration bin's rows
        # Inner calibration edges, descending: bins as calibration_curve's, (a, b], the first
        # [0, b] (and below), the last above a.
        self._calibration = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)[-2:0:-1]
        self.pr_done = not positives
        self.average_precision = self.pr_trapezoid = 0.0  # both times the positives
        self._precision = 1.0  # the PR curve starts at (0, 1)
        # Where the PR curve enters another band of rows (distinct-score positions): a search
        # of each step's (contiguous) row counts for the bands it passes.
        self._bands = _row_bands(positives + negatives)
        self._entries: list[np.ndarray] = []
        self._rows = self._seen = 0

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.highest) and np.isfinite(self.lowest))

    def add(self, scores: np.ndarray, tps: np.ndarray, rows: np.ndarray,
            gained_tp: np.ndarray, gained_fp: np.ndarray) -> None:
        """The tally's next distinct scores (descending); the positive rows and all rows
        scoring at least each, and the positive and negative rows each adds. Gathered on a
        thread of its own, in order, while the tally goes on with its next step (numpy lets go
        of the GIL for these operations: with a core to spare, as the driver has once its
        shards are in, the report adds next to nothing to the tally's time). At most two steps
        wait, so their arrays do not pile up."""
        started = time.perf_counter()
        self.distinct += len(scores)
        if self.finite:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="modeleval-report-tally")
            while len(self._pending) >= 2:
                self._pending.popleft().result()
            self._pending.append(self._worker.submit(self._gather, scores, tps, rows,
                                                     gained_tp, gained_fp))
        self.seconds += time.perf_counter() - started

    def finish(self) -> None:
        """After the tally (or its failure): waits for the steps still being gathered and
        stops the thread; a step's error is raised here."""
        started = time.perf_counter()
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True, cancel_futures=True)
                self._worker = None
            self._pending.clear()
            self.seconds += time.perf_counter() - started

    def _gather(self, scores: np.ndarray, tps: np.ndarray, rows: np.ndarray,
                gained_tp: np.ndarray, gained_fp: np.ndarray) -> None:
        if self.calibrated:
            self._add_score_sums(scores, gained_tp + gained_fp)
        if not self.pr_done:
            self._add_pr(tps, rows, gained_tp)

    def _add_score_sums(self, scores: np.ndarray, gained: np.ndarray) -> None:
        bounds = np.concatenate(([0], _scores_beyond(scores, self._calibration, False),
                                 [len(scores)]))
        filled = bounds[:-1] < bounds[1:]
        weighted = np.multiply(scores, gained, dtype=np.float64)
        bins = np.arange(CALIBRATION_BINS - 1, -1, -1)[filled]
        self.score_sums[bins] += np.add.reduceat(weighted, bounds[:-1][filled])

    def _add_pr(self, tps: np.ndarray, rows: np.ndarray, gained: np.ndarray) -> None:
        # Beyond the first point at full recall the curve only loses precision (scikit-learn
        # stops there too).
        found = _first_full_recall(tps, self.positives)
        self.pr_done = found < len(tps)
        end = min(found + 1, len(tps))
        tps, gained = tps[:end], gained[:end]
        precision = np.divide(tps, rows[:end], dtype=np.float64)
        here = float(np.dot(gained, precision))
        self.average_precision += here
        # The trapezoids: each point's gain times its precision and the one before it.
        self.pr_trapezoid += (here + float(gained[0]) * self._precision
                              + float(np.dot(gained[1:], precision[:-1]))) / 2.0
        self._precision = float(precision[-1])
        passed = self._bands[np.searchsorted(self._bands, self._rows, side="right"):
                             np.searchsorted(self._bands, rows[end - 1], side="right")]
        self._entries.append(self._seen + np.searchsorted(rows[:end], passed, side="left"))
        self._rows, self._seen = int(rows[end - 1]), self._seen + end

    @property
    def band_entries(self) -> np.ndarray:
        """The distinct-score positions where the PR curve enters another band of rows."""
        return np.concatenate(self._entries) if self._entries else np.zeros(0, dtype=np.int64)


def _curve(points: "_Polyline", length: int, entered: np.ndarray, counts: ScoreCounts,
           exact_area: float, trapezoid: float) -> Curve:
    """The thinned curve of ``length`` points; point i > 0 is at the (i-1)-th distinct score
    (point 0 has none). ``entered``: the points where it enters another box; ``trapezoid``: the
    exact trapezoidal area under every point. The trapezoidal area under the thinned curve is
    within ``area_error`` (at most ``CURVE_AREA_TOLERANCE``) of ``trapezoid``."""
    index = _kept(entered, length)
    x, y = points.at(index)
    # What the polyline through the box points misses of the exact area, all told.
    first_error = abs(float(np.trapezoid(y, x)) - trapezoid)
    if first_error > CURVE_AREA_TOLERANCE / 2:
        # An adversarial curve: thin every point, read again off the counts (the one case
        # where the curves read every distinct score).
        x, y = points(0, length)
        index, bound = thin(x, y)
        x, y = x[index], y[index]
    else:
        keep, bound = thin(x, y, CURVE_AREA_TOLERANCE - first_error,
                           MAX_PLOT_DEVIATION - _CELL_DIAGONAL)
        index, x, y, bound = index[keep], x[keep], y[keep], bound + first_error
    marks = counts.thresholds[np.maximum(index - 1, 0)]
    thresholds = [float(m) if i else None for i, m in zip(index.tolist(), marks.tolist())]
    return Curve(x=x.tolist(), y=y.tolist(), thresholds=thresholds, area=exact_area,
                 area_error=bound, exact_points=length)


class _Polyline:
    """A curve's points off the counts: point 0 is ``origin``, point i the ``(i-1)``-th
    distinct score's ``coordinates``."""

    def __init__(self, origin: tuple[float, float],
                 coordinates: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        self.origin, self.coordinates = origin, coordinates

    def at(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.coordinates(np.maximum(index - 1, 0))
        first = index == 0
        return np.where(first, self.origin[0], x), np.where(first, self.origin[1], y)

    def __call__(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return self.at(np.arange(a, b))


def roc_curve(counts: ScoreCounts) -> Curve | None:
    tally: BinaryTally = counts.curves
    positives, negatives = tally.positives, tally.negatives
    if not positives or not negatives:
        return None
    polyline = _Polyline((0.0, 0.0), lambda i: (counts.fps[i] / negatives,
                                                counts.tps[i] / positives))
    entered = np.concatenate((_column_entries(counts.fps, negatives),
                              _column_entries(counts.tps, positives))) + 1
    # The area under the exact curve (ties are straight lines) is the AUC with tied scores
    # sharing ranks.
    auc = counts.doubled_wins / (2.0 * positives * negatives)
    return _curve(polyline, len(counts.tps) + 1, entered, counts, auc, auc)


def pr_curve(counts: ScoreCounts) -> Curve | None:
    tally: BinaryTally = counts.curves
    positives = tally.positives
    if not positives:
        return None

    def coordinates(i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tps = counts.tps[i].astype(np.float64)
        return tps / positives, tps / (tps + counts.fps[i])

    # Up to the first point at full recall, as the tally.
    end = _first_full_recall(counts.tps, positives) + 1
    entered = np.concatenate((_column_entries(counts.tps[:end], positives),
                              tally.band_entries)) + 1
    return _curve(_Polyline((0.0, 1.0), coordinates), end + 1, entered, counts,
                  tally.average_precision / positives, tally.pr_trapezoid / positives)


def _rows_beyond(counts: ScoreCounts, values: np.ndarray, at_least: bool = False) -> np.ndarray:
    """The positive and negative rows scoring above each value (at or above: ``at_least``)."""
    beyond = _scores_beyond(counts.thresholds, values, at_least)
    last = np.maximum(beyond - 1, 0)
    hit = beyond > 0
    return np.stack((np.where(hit, counts.tps[last], 0), np.where(hit, counts.fps[last], 0))
                    ).astype(np.int64)


def reliability(counts: ScoreCounts, bins: int = CALIBRATION_BINS) -> Reliability | None:
    tally: BinaryTally = counts.curves
    if not tally.calibrated:
        return None
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Rows above each edge: all above the first (the first bin takes 0 and below too), none
    # above the last (the last bin takes anything above its lower edge).
    above = np.concatenate(([[tally.positives], [tally.negatives]],
                            _rows_beyond(counts, edges[1:-1]), [[0], [0]]), axis=1)
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


def _histograms(counts: ScoreCounts, edges: np.ndarray) -> tuple[Histogram, Histogram]:
    """The positive and negative rows' scores in the histogram's bins, as ``numpy.histogram``
    counts them ([a, b), the last bin [a, b])."""
    at_least = np.concatenate((_rows_beyond(counts, edges[:-1], at_least=True),
                               _rows_beyond(counts, edges[-1:])), axis=1)
    positive, negative = (at_least[:, :-1] - at_least[:, 1:]).tolist()
    return (Histogram(edges=edges.tolist(), counts=positive),
            Histogram(edges=edges.tolist(), counts=negative))


def _score_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    return np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def sweep(counts: ScoreCounts, edges: np.ndarray) -> list[ThresholdRow]:
    """The four counts at each of the sweep's thresholds, evenly between the histogram's ends."""
    tally: BinaryTally = counts.curves
    positives, negatives = tally.positives, tally.negatives
    at = np.linspace(edges[0], edges[-1], SWEEP_THRESHOLDS + 2)[1:-1]
    above = _rows_beyond(counts, at)
    rows = []
    for t, tp, fp in zip(at.tolist(), above[0].tolist(), above[1].tolist()):
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
    tp, fp = _rows_beyond(counts, np.array([threshold]))[:, 0].tolist()
    confusion = Confusion(classes=[0, 1], cells=[tally.negatives - fp, fp,
                                                 tally.positives - tp, tp])
    edges = _score_edges(tally.lowest, tally.highest, SCORE_BINS)
    positive, negative = _histograms(counts, edges)
    return BinaryCurves(
        roc=roc_curve(counts), pr=pr_curve(counts), reliability=reliability(counts),
        confusion=confusion, threshold=threshold, scores_positive=positive,
        scores_negative=negative, sweep=sweep(counts, edges))


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
