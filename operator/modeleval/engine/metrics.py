"""Exact evaluation metrics, vectorised with numpy over whole datasets.

Ranking (documents grouped by query id; a query is every row sharing a ``qid`` value):

* ``ndcg@k`` — XGBoost's definition: gain ``2^label - 1``, discount ``1/log2(rank + 1)``,
  normalised by the ideal ordering's DCG at the same cut-off; documents with equal scores keep
  their input order (a stable sort, as XGBoost's). A query without any relevant document (ideal
  DCG 0) scores **1**, as XGBoost's default ``ndcg@k`` does (its ``ndcg@k-`` would give 0).
* ``map@k`` — XGBoost's: relevance is ``label > 0``; AP@k is the sum of precision at each
  relevant rank within the top k, divided by ``min(relevant documents, k)``; queries without a
  relevant document score **1**. (XGBoost refuses ``map`` on graded labels; here they are
  binarised at ``label > 0``, so for 0/1 labels the two agree exactly.)
* ``mrr`` — reciprocal rank of the first relevant document; **0** for queries without one.
* ``precision@k`` — relevant documents in the top k divided by ``min(k, documents in the
  query)``, as XGBoost's ``pre@k``.
* ``recall@k`` — relevant documents in the top k divided by all relevant documents of the
  query; queries without a relevant document are left out of the mean (recall is undefined).
* Without ``@k`` the cut-off is the whole list. (XGBoost's plain ``ndcg`` and ``map`` cut at
  32 documents; name the cut-off, e.g. ``ndcg@32``, to compare with them.) Every ranking metric
  is the unweighted mean over queries.

Classification: ``auc`` (ties get average ranks; multiclass: one-vs-rest macro average),
``logloss`` (probabilities clipped to [eps, 1-eps], eps of float64; multiclass rows
renormalised), and ``accuracy``, ``precision``, ``recall``, ``f1`` of the predicted class
(binary: probability > 0.5, as XGBoost's ``error``; multiclass: argmax, macro averages; an
undefined precision/recall/F1 counts 0, as scikit-learn's default zero_division does).
Regression: ``rmse``, ``mae``, ``r2`` (coefficient of determination; 1.0 for a perfect fit of a
constant target and 0.0 otherwise, as scikit-learn).

Which metrics exist, for which tasks, with which cut-off and direction is declared in
api/metrics.py; ``IMPLEMENTATIONS`` at the end of this module binds each declaration to its
value on all rows and on each bootstrap resample (engine/intervals.py draws the resamples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..api.metrics import BINARY, MULTICLASS, RANKING, REGRESSION, Metric, declared
from .errors import EvaluationError, Reason

_EPS = np.finfo(np.float64).eps


class LabelError(EvaluationError):
    reason = Reason.LabelError


def _descending_key(values: np.ndarray) -> np.ndarray | None:
    """32 bits per value whose ascending order is ``values``' descending order (equal values
    equal keys), or None where a value is not exactly a float32 (the sort falls back)."""
    with np.errstate(over="ignore"):  # beyond float32's range: inf, unequal, the fallback
        narrow = values if values.dtype == np.float32 else values.astype(np.float32)
    if not np.array_equal(narrow, values):  # float64 precision, or NaN (NaN != NaN)
        return None
    bits = (narrow + np.float32(0)).view(np.uint32)  # + 0: -0.0 becomes 0.0 (they compare equal)
    negative = bits >> np.uint32(31)
    # IEEE 754 bits, read as unsigned: non-negative values ascend with their bits (flip the
    # 31 low bits to descend), negative ones descend with them already; the sign bit puts every
    # negative value after every non-negative one.
    return bits ^ ((negative ^ np.uint32(1)) * np.uint32(0x7FFFFFFF))


@dataclass(frozen=True)
class QueryGroups:
    """Each row's query as an index in ascending qid order, and each query's size."""

    index: np.ndarray   # per row, 0..queries-1
    sizes: np.ndarray   # per query

    @classmethod
    def of(cls, qids: np.ndarray) -> "QueryGroups":
        qids = np.asarray(qids)
        if len(qids) == 0:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        starts = np.concatenate(([0], np.flatnonzero(qids[1:] != qids[:-1]) + 1))
        runs = qids[starts]
        rank = np.argsort(runs, kind="stable")
        ordered = runs[rank]
        if not np.any(ordered[1:] == ordered[:-1]):
            # Each query's rows are contiguous (as in LETOR files): no sort of the rows.
            lengths = np.diff(np.append(starts, len(qids)))
            position = np.empty(len(runs), dtype=np.int64)
            position[rank] = np.arange(len(runs))
            return cls(np.repeat(position, lengths), lengths[rank])
        values, index = np.unique(qids, return_inverse=True)
        return cls(index.reshape(-1), np.bincount(index.reshape(-1), minlength=len(values)))

    def order(self, values: np.ndarray) -> np.ndarray:
        """Rows by query, then by ``values`` descending; equal values keep their input order
        (stable, as XGBoost's sort)."""
        key = _descending_key(values)
        if key is None:
            return np.lexsort((-values, self.index))
        # One stable sort of a 64-bit key (query index, then the value's key): several times
        # faster than lexsort's two passes over the rows.
        return np.argsort((self.index.astype(np.uint64) << np.uint64(32)) | key, kind="stable")


@dataclass(frozen=True)
class RankedLists:
    """Rows re-ordered so each query's documents are contiguous and sorted by score."""

    labels: np.ndarray      # labels in ranked order
    ideal: np.ndarray       # labels sorted descending within each query (the ideal ranking)
    position: np.ndarray    # 0-based rank of each row within its query
    group: np.ndarray       # query index of each row (0..queries-1, ascending qid order)
    queries: int

    @classmethod
    def build(cls, labels: np.ndarray, scores: np.ndarray, qids: np.ndarray) -> "RankedLists":
        groups = QueryGroups.of(qids)
        labels = labels.astype(np.float64)
        queries = len(groups.sizes)
        group = np.repeat(np.arange(queries), groups.sizes)
        starts = np.cumsum(groups.sizes) - groups.sizes
        position = np.arange(len(group)) - starts[group]
        ranked = labels[groups.order(scores.astype(np.float64))]
        return cls(ranked, labels[groups.order(labels)], position, group, queries)

    def per_query(self, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        weights = values if mask is None else np.where(mask, values, 0.0)
        return np.bincount(self.group, weights=weights, minlength=self.queries)

    def top(self, k: int | None) -> np.ndarray:
        return np.ones_like(self.position, dtype=bool) if k is None else self.position < k


def ndcg(lists: RankedLists, k: int | None) -> np.ndarray:
    if np.any(lists.labels > 31):
        raise LabelError("NDCG's exponential gain needs relevance labels of at most 31")
    discount = 1.0 / np.log2(lists.position + 2.0)
    top = lists.top(k)
    dcg = lists.per_query((np.exp2(lists.labels) - 1.0) * discount, top)
    idcg = lists.per_query((np.exp2(lists.ideal) - 1.0) * discount, top)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 1.0)


def _relevant(lists: RankedLists) -> np.ndarray:
    return lists.labels > 0


def _hits_so_far(lists: RankedLists, relevant: np.ndarray) -> np.ndarray:
    """Relevant documents at or above each rank, within the row's query."""
    running = np.cumsum(relevant)
    before_query = running - relevant  # count before this row
    first_rows = lists.position == 0
    base = np.zeros(lists.queries)
    base[lists.group[first_rows]] = before_query[first_rows]
    return running - base[lists.group]


def average_precision(lists: RankedLists, k: int | None) -> np.ndarray:
    relevant = _relevant(lists)
    hits = _hits_so_far(lists, relevant)
    precision = hits / (lists.position + 1.0)
    top = lists.top(k)
    accumulated = lists.per_query(precision, top & relevant)
    total = lists.per_query(relevant.astype(np.float64))
    denominator = total if k is None else np.minimum(total, k)
    return np.where(denominator > 0, accumulated / np.where(denominator > 0, denominator, 1), 1.0)


def reciprocal_rank(lists: RankedLists) -> np.ndarray:
    relevant = _relevant(lists)
    hits = _hits_so_far(lists, relevant)
    first = relevant & (hits == 1)
    return lists.per_query(1.0 / (lists.position + 1.0), first)


def precision_at(lists: RankedLists, k: int) -> np.ndarray:
    found = lists.per_query(_relevant(lists).astype(np.float64), lists.top(k))
    sizes = np.bincount(lists.group, minlength=lists.queries)
    return found / np.minimum(k, sizes)


def recall_at(lists: RankedLists, k: int) -> np.ndarray:
    """NaN for a query without a relevant document (left out of the mean)."""
    relevant = _relevant(lists).astype(np.float64)
    found = lists.per_query(relevant, lists.top(k))
    total = lists.per_query(relevant)
    return np.where(total > 0, found / np.where(total > 0, total, 1.0), np.nan)


# ------------------------------------------------------------------ classification
# Rows handled per step of a pass over sorted scores: its temporaries stay a few MB whatever
# the dataset's size.
CHUNK_ROWS = 1 << 18


def _from_descending_key(keys: np.ndarray) -> np.ndarray:
    """The float32 values whose :func:`_descending_key` is ``keys`` (its inverse)."""
    keys = keys.astype(np.uint32)
    return np.where(keys < np.uint32(1 << 31), keys ^ np.uint32(0x7FFFFFFF), keys).view(np.float32)


@dataclass(frozen=True)
class ScoreCounts:
    """Per distinct score, descending: the score, and the positive and negative rows scoring at
    least it (scikit-learn's _binary_clf_curve); and twice the Mann-Whitney count of the
    positive-negative pairs the positive wins (a tie counts half). The AUC, the ROC and PR
    curves, the calibration bins, the score histograms and the confusion at any threshold are
    all read off it, so the rows are sorted once per model.

    The scores are sorted once, without an argsort where they are float32 values (XGBoost's,
    ONNX's): each score's order-preserving 32-bit key and its label are packed into one
    64-bit integer and those are sorted in place. The counts are then tallied in steps of
    ``CHUNK_ROWS`` rows, so no other row-sized array is made.

    ``curves``: where the report is wanted, what gathers its aggregates in that same pass
    (``engine.curves.BinaryTally``): it is told the score range and both classes' sizes
    before the tally (``start``), told when it ends (``finish``), and handed each step's
    distinct scores and counts
    (``add``: the scores, the positive rows and all rows at or above each, and the positive
    and negative rows each score adds): what needs every distinct score is gathered there, and
    the curves read the counts afterwards only at the points binary searches find."""

    thresholds: np.ndarray  # float32 where the scores were float32 values, else float64
    tps: np.ndarray
    fps: np.ndarray
    doubled_wins: float
    curves: Any = None

    @property
    def positives(self) -> int:
        return int(self.tps[-1]) if len(self.tps) else 0

    @property
    def negatives(self) -> int:
        return int(self.fps[-1]) if len(self.fps) else 0

    def auc(self) -> float:
        """The ROC AUC, ties sharing ranks (exactly the area under the exact ROC curve)."""
        if not self.positives or not self.negatives:
            raise LabelError("AUC needs both classes in the labels; only one is present")
        return self.doubled_wins / (2.0 * self.positives * self.negatives)

    @classmethod
    def of(cls, truth: np.ndarray, scores: np.ndarray, curves: Any = None) -> "ScoreCounts":
        scores = np.asarray(scores).reshape(-1)
        negative = np.asarray(truth).reshape(-1) == 0
        negatives = int(np.count_nonzero(negative))
        key = _descending_key(scores) if len(scores) else None
        if key is not None:
            packed = key.astype(np.uint64)
            del key
            packed <<= np.uint64(1)
            np.bitwise_or(packed, negative, out=packed)
            del negative
            packed.sort()  # ascending keys: descending scores

            def rows(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
                chunk = packed[a:b]
                return chunk >> np.uint64(1), (chunk & np.uint64(1)).astype(bool)

            def values(keys: np.ndarray) -> np.ndarray:
                return _from_descending_key(keys)
        else:
            order = np.argsort(np.asarray(scores, dtype=np.float64))[::-1]

            def rows(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
                at = order[a:b]
                return scores[at].astype(np.float64), negative[at]

            def values(keys: np.ndarray) -> np.ndarray:
                return keys
        try:
            return cls._tally(rows, values, len(scores), negatives, curves)
        finally:
            if curves is not None:
                curves.finish()  # what it gathers beside the tally is in (or its error raised)

    @classmethod
    def _tally(cls, rows, values, n: int, negatives: int, curves: Any = None) -> "ScoreCounts":
        """The counts from rows sorted by descending score: ``rows(a, b)`` gives rows a..b-1's
        score identities and whether each is negative; ``values`` turns identities into
        scores. Two passes of ``CHUNK_ROWS`` rows: the first counts the distinct scores, so
        the second writes straight into arrays of their size."""
        chunks = [(a, min(n, a + CHUNK_ROWS)) for a in range(0, n, CHUNK_ROWS)]

        def run_ends(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
            keys, negative = rows(a, min(n, b + 1))  # one row more: is row b-1 a run's last?
            last = np.flatnonzero(keys[1:] != keys[:-1])
            return (np.append(last, b - a - 1) if b == n else last), keys, negative[:b - a]

        distinct = sum(len(run_ends(a, b)[0]) for a, b in chunks)
        if curves is not None and n:
            curves.start(values(rows(0, 1)[0])[0], values(rows(n - 1, n)[0])[0],
                         n - negatives, negatives)
        counts = np.int32 if n < 2**31 else np.int64
        tps, fps = np.empty(distinct, counts), np.empty(distinct, counts)
        thresholds = None
        # Runs written so far, negatives before the chunk, the counts at the last run's end.
        done = negatives_before = tp = fp = 0
        doubled_wins = 0.0
        for a, b in chunks:
            last, keys, negative = run_ends(a, b)
            running = np.cumsum(negative, dtype=np.int64)
            fp_runs = running[last] + negatives_before
            negatives_before += int(running[-1])
            del running
            rows_runs = last + (a + 1)  # the rows at or above each run's score
            tp_runs = rows_runs - fp_runs
            new_tp = np.diff(tp_runs, prepend=tp).astype(np.float64)
            new_fp = np.diff(fp_runs, prepend=fp)
            # Each new positive beats every negative below its score and half of those tied.
            doubled_wins += float(np.dot(new_tp, 2.0 * (negatives - fp_runs) + new_fp))
            scores = values(keys[last])
            if thresholds is None:
                thresholds = np.empty(distinct, scores.dtype)
            end = done + len(last)
            thresholds[done:end], tps[done:end], fps[done:end] = scores, tp_runs, fp_runs
            done = end
            if curves is not None and len(last):
                curves.add(scores, tp_runs, rows_runs, new_tp, new_fp)
            if len(last):
                tp, fp = int(tp_runs[-1]), int(fp_runs[-1])
        return cls(thresholds if thresholds is not None else np.zeros(0), tps, fps, doubled_wins,
                   curves)


def roc_auc(truth: np.ndarray, scores: np.ndarray,
            counts: ScoreCounts | None = None) -> float:
    """``counts``: the rows' :class:`ScoreCounts` when already made (the report's curves share
    them)."""
    return (counts or ScoreCounts.of(truth, scores)).auc()


def binary_labels(labels: np.ndarray) -> np.ndarray:
    values = np.unique(labels)
    if not np.isin(values, (0.0, 1.0)).all():
        raise LabelError(f"binary classification needs labels 0 and 1; found {values[:10].tolist()}")
    return labels.astype(np.int64)


def class_labels(labels: np.ndarray, classes: int) -> np.ndarray:
    as_int = labels.astype(np.int64)
    if (as_int != labels).any() or as_int.min() < 0 or as_int.max() >= classes:
        raise LabelError(f"multiclass labels must be integers 0..{classes - 1}; found "
                         f"{np.unique(labels)[:10].tolist()}")
    return as_int


def log_losses(truth: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Each row's log loss: probabilities clipped to [eps, 1-eps]; a multiclass row (one
    probability per class) renormalised after clipping. ``logloss`` is their mean."""
    q = np.clip(probabilities, _EPS, 1 - _EPS)
    if q.ndim == 1:
        return -(truth * np.log(q) + (1 - truth) * np.log(1 - q))
    q = q / q.sum(axis=1, keepdims=True)
    return -np.log(q[np.arange(len(truth)), truth])


def _prf(truth: np.ndarray, predicted: np.ndarray, classes: list[int]) -> tuple[float, float, float]:
    precision, recall, f1 = [], [], []
    for c in classes:
        tp = float(np.sum((predicted == c) & (truth == c)))
        fp = float(np.sum((predicted == c) & (truth != c)))
        fn = float(np.sum((predicted != c) & (truth == c)))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(precision)), float(np.mean(recall)), float(np.mean(f1))


class ClassifiedRows:
    """A classification model's rows as its metrics read them: each row's true and predicted
    class, the probabilities, the classes a macro average runs over, and the AUC, computed on
    demand (it is undefined for a one-class slice, and only asked-for metrics may fail)."""

    def __init__(self, truth: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray,
                 classes: list[int], auc: Callable[[], float]) -> None:
        self.truth, self.predicted, self.probabilities = truth, predicted, probabilities
        self.classes, self.auc = classes, auc

    @classmethod
    def binary(cls, labels: np.ndarray, probabilities: np.ndarray,
               counts: ScoreCounts | None = None) -> "ClassifiedRows":
        """Class 1 when its probability is above 0.5; ``counts``: the rows' ScoreCounts, when
        already made (the AUC reads them)."""
        truth = binary_labels(labels)
        p = np.asarray(probabilities, dtype=np.float64)
        return cls(truth, (p > 0.5).astype(np.int64), p, [1], lambda: roc_auc(truth, p, counts))

    @classmethod
    def multiclass(cls, labels: np.ndarray, probabilities: np.ndarray) -> "ClassifiedRows":
        """The most probable class; macro averages over the classes true or predicted."""
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 2:
            raise EvaluationError("a multiclass model must output one probability per class",
                                  Reason.SchemaMismatch)
        truth = class_labels(labels, p.shape[1])
        predicted = p.argmax(axis=1)
        present = sorted(set(np.unique(truth).tolist()) | set(np.unique(predicted).tolist()))

        def auc() -> float:  # one-vs-rest, macro average over classes present with both outcomes
            return float(np.mean([roc_auc(truth == c, p[:, c]) for c in range(p.shape[1])
                                  if 0 < np.sum(truth == c) < len(truth)]))
        return cls(truth, predicted, p, present, auc)

    @cached_property
    def macro(self) -> tuple[float, float, float]:
        """Precision, recall and F1 of the predicted class, averaged over ``classes``."""
        return _prf(self.truth, self.predicted, self.classes)


class RegressedRows:
    """A regression model's rows as its metrics read them: the labels and the residuals."""

    def __init__(self, labels: np.ndarray, predictions: np.ndarray) -> None:
        self.y = labels.astype(np.float64)
        self.residual = self.y - np.asarray(predictions, dtype=np.float64).reshape(-1)


def _r2(rows: RegressedRows) -> float:
    total = float(np.sum((rows.y - rows.y.mean()) ** 2))
    residual_sum = float(np.sum(rows.residual**2))
    return (1.0 - residual_sum / total) if total > 0 else (1.0 if residual_sum == 0 else 0.0)


def row_metrics(task: str, names: list[str], rows: Any) -> dict[str, float]:
    """Each metric in ``names`` on a model's rows (the task's ClassifiedRows or RegressedRows)."""
    return {name: row_metric(task, name).point(rows) for name in names}


def binary_metrics(names: list[str], labels: np.ndarray, probabilities: np.ndarray,
                   counts: ScoreCounts | None = None) -> dict[str, float]:
    """``counts``: the rows' :class:`ScoreCounts`, when already made (the AUC reads them)."""
    return row_metrics(BINARY, names, ClassifiedRows.binary(labels, probabilities, counts))


def multiclass_metrics(names: list[str], labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    return row_metrics(MULTICLASS, names, ClassifiedRows.multiclass(labels, probabilities))


def regression_metrics(names: list[str], labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return row_metrics(REGRESSION, names, RegressedRows(labels, predictions))


def ranking_per_query(names: list[str], labels: np.ndarray, scores: np.ndarray,
                      qids: np.ndarray, lists: RankedLists | None = None) -> dict[str, np.ndarray]:
    """Each ranking metric's value per query (queries in ascending qid order; NaN where a
    query has no value, e.g. recall without a relevant document). A metric is their mean.
    ``lists``: the rows already ranked (a shard's report curves rank them too)."""
    if qids is None:
        raise EvaluationError("ranking metrics need query ids (qid: in LETOR, or groupColumn)",
                              Reason.SchemaMismatch)
    if np.any(labels < 0):
        raise LabelError("ranking labels (relevance grades) must not be negative")
    if lists is None:
        lists = RankedLists.build(labels, np.asarray(scores, dtype=np.float64).reshape(-1), qids)
    out: dict[str, np.ndarray] = {}
    for text in names:
        base, _, k_text = text.partition("@")
        out[text] = query_metric(base).per_query(lists, int(k_text) if k_text else None)
    return out


def query_mean(values: np.ndarray) -> float:
    """The mean over the queries that have a value (NaN when none has)."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else float("nan")


def ranking_metrics(names: list[str], labels: np.ndarray, scores: np.ndarray,
                    qids: np.ndarray) -> dict[str, float]:
    return {name: query_mean(values)
            for name, values in ranking_per_query(names, labels, scores, qids).items()}


def _check_rows(labels: np.ndarray) -> None:
    if len(labels) == 0:
        raise EvaluationError("no rows to evaluate", Reason.EmptyDataset)
    bad = ~np.isfinite(labels)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LabelError(f"labels must be finite numbers; row {row + 1} has {labels[row]}")


def binary_score_counts(labels: np.ndarray, predictions: np.ndarray,
                        curves: Any = None) -> ScoreCounts:
    """A binary model's :class:`ScoreCounts`, after the checks :func:`compute` makes (so a bad
    label gets the same error): made once, for the AUC and (``curves``: what gathers their
    aggregates in the same pass) the report's curves."""
    _check_rows(labels)
    return ScoreCounts.of(binary_labels(labels), predictions, curves)


def compute(task: str, names: list[str], labels: np.ndarray, predictions: np.ndarray,
            qids: np.ndarray | None = None, counts: ScoreCounts | None = None) -> dict[str, float]:
    """Every metric in ``names`` (canonical text, e.g. ``ndcg@10``) for one task; ``counts``:
    a binary model's :class:`ScoreCounts` when already made."""
    _check_rows(labels)
    if task == "ranking":
        return ranking_metrics(names, labels, predictions, qids)
    if task == "binary":
        return binary_metrics(names, labels, predictions, counts)
    if task == "multiclass":
        return multiclass_metrics(names, labels, predictions)
    return regression_metrics(names, labels, predictions)


# ------------------------------------------------------------------ the declared metrics
@dataclass(frozen=True)
class QueryMetric:
    """A ranking metric: a value per query, from the ranked lists and the cut-off (None: the
    whole list), NaN where a query has none. The metric is their mean, and a bootstrap resample
    draws whole queries and takes the mean of the drawn queries' values."""

    per_query: Callable[[RankedLists, int | None], np.ndarray]


@dataclass(frozen=True)
class RowMetric:
    """A metric of the rows. ``point``: its value on a model's rows (the task's
    :class:`ClassifiedRows` or :class:`RegressedRows`); ``resampled``: its value on each
    bootstrap resample of a block, from the counts-weighted sums of the rows' terms
    (``intervals.ClassifiedDraws`` or ``intervals.RegressedDraws``)."""

    point: Callable[[Any], float]
    resampled: Callable[[Any], np.ndarray]


def _r2_resampled(draws: Any) -> np.ndarray:
    mean = (draws.counts @ draws.y) / draws.drawn
    total = draws.counts @ draws.y**2 - draws.drawn * mean**2
    exact = np.where(draws.squared == 0, 1.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 1e-12 * (draws.counts @ draws.y**2),
                        1.0 - draws.squared / total, exact)


# Each declared metric (api/metrics.py) bound to its implementation; a test holds the keys to
# the declarations. Binary and multiclass share their declarations: what differs between them
# (which class is predicted, the classes averaged over, the AUC) is in their ClassifiedRows.
IMPLEMENTATIONS: dict[Metric, QueryMetric | RowMetric] = {
    declared(RANKING, "ndcg"): QueryMetric(ndcg),
    declared(RANKING, "map"): QueryMetric(average_precision),
    declared(RANKING, "mrr"): QueryMetric(lambda lists, k: reciprocal_rank(lists)),
    declared(RANKING, "precision"): QueryMetric(precision_at),  # type: ignore[arg-type]
    declared(RANKING, "recall"): QueryMetric(recall_at),  # type: ignore[arg-type]
    declared(BINARY, "auc"): RowMetric(lambda rows: rows.auc(), lambda draws: draws.auc()),
    declared(BINARY, "logloss"): RowMetric(
        lambda rows: float(np.mean(log_losses(rows.truth, rows.probabilities))),
        lambda draws: draws.log_loss / draws.drawn),
    declared(BINARY, "accuracy"): RowMetric(
        lambda rows: float(np.mean(rows.predicted == rows.truth)),
        lambda draws: draws.correct / draws.drawn),
    declared(BINARY, "f1"): RowMetric(lambda rows: rows.macro[2], lambda draws: draws.macro[2]),
    declared(BINARY, "precision"): RowMetric(lambda rows: rows.macro[0],
                                             lambda draws: draws.macro[0]),
    declared(BINARY, "recall"): RowMetric(lambda rows: rows.macro[1],
                                          lambda draws: draws.macro[1]),
    declared(REGRESSION, "rmse"): RowMetric(
        lambda rows: float(np.sqrt(np.mean(rows.residual**2))),
        lambda draws: np.sqrt(draws.squared / draws.drawn)),
    declared(REGRESSION, "mae"): RowMetric(
        lambda rows: float(np.mean(np.abs(rows.residual))),
        lambda draws: (draws.counts @ np.abs(draws.residual)) / draws.drawn),
    declared(REGRESSION, "r2"): RowMetric(_r2, _r2_resampled),
}


def query_metric(name: str) -> QueryMetric:
    """The implementation of ranking metric ``name`` (no cut-off)."""
    found = IMPLEMENTATIONS[declared(RANKING, name)]
    assert isinstance(found, QueryMetric), f"{name}: a ranking metric is a QueryMetric"
    return found


def row_metric(task: str, name: str) -> RowMetric:
    """The implementation of metric ``name`` of a task whose bootstrap draws rows."""
    found = IMPLEMENTATIONS[declared(task, name)]
    assert isinstance(found, RowMetric), f"{task} {name}: a per-row metric is a RowMetric"
    return found
