"""Bootstrap percentile intervals for every metric, and paired intervals for deltas.

A resample draws ``n`` units with replacement from the ``n`` units of the data: whole queries for
ranking (a query's documents are not independent), rows otherwise. Draw ``b`` is
``rng.integers(0, n, n)`` with ``rng = numpy.random.default_rng(seed)``, drawn in order, so a seed
gives the same intervals on every machine. Every model is scored on the same draws, which makes
the delta between two models a paired bootstrap. The interval is the percentile interval of the
resampled values: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's linear
interpolation). A resample on which a metric is undefined (AUC without both classes, recall
without a relevant document) is left out of that metric's quantiles.

Nothing is recomputed per resample from the rows: a draw is a vector of counts (how often each
unit was drawn), and each metric is a weighted sum over per-query values (ranking) or over
per-row terms (classification, regression), so a block of resamples is a few matrix products.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

import numpy as np

from ..api.metrics import BINARY, MULTICLASS, REGRESSION, resampled_unit
from ..api.results import Interval
from ..api.spec import Confidence
from . import metrics as metric_fns

_BLOCK_CELLS = 1_000_000  # counts held at once (resamples x units): 8 MB, cache-friendly


def draws(units: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The resamples as blocks of counts (block x units): row b counts how often each unit was
    drawn by ``rng.integers(0, units, units)``, the b-th draw of the seeded generator."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _BLOCK_CELLS // max(units, 1)))
    done = 0
    while done < resamples:
        rows = min(block, resamples - done)
        counts = np.empty((rows, units), np.float64)
        for b in range(rows):
            counts[b] = np.bincount(rng.integers(0, units, units), minlength=units)
        done += rows
        yield counts


def percentile_interval(values: np.ndarray, level: float) -> Interval | None:
    """The percentile interval of the resampled values that are defined (None if none is)."""
    defined = values[~np.isnan(values)]
    if not len(defined):
        return None
    lower, upper = np.percentile(defined, [50 * (1 - level), 50 * (1 + level)])
    return Interval(lower=float(lower), upper=float(upper))


Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]  # counts block -> metric -> values


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)


def _ranking(names: list[str], labels: np.ndarray, scores: np.ndarray,
             qids: np.ndarray, per_query: dict[str, np.ndarray] | None = None) -> Statistic:
    if per_query is None:
        per_query = metric_fns.ranking_per_query(names, labels, scores, qids)
    prepared = {name: (np.nan_to_num(values), (~np.isnan(values)).astype(np.float64))
                for name, values in per_query.items()}

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        return {name: _ratio(counts @ values, counts @ defined)
                for name, (values, defined) in prepared.items()}
    return statistic


def _weighted_auc(positive: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """AUC with tied scores sharing ranks, for each row of counts (NaN without both classes):
    each positive scores the negatives below it plus half the negatives tied with it. The scores
    are sorted once, not per resample."""
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    positive = positive[order]

    def auc(counts: np.ndarray) -> np.ndarray:
        drawn = counts[:, order]
        pos = np.add.reduceat(drawn * positive, starts, axis=1)
        neg = np.add.reduceat(drawn * ~positive, starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        wins = (pos * (below + 0.5 * neg)).sum(axis=1)
        return _ratio(wins, pos.sum(axis=1) * neg.sum(axis=1))
    return auc


class ClassifiedTerms:
    """A classification model's per-row terms, made once: each row's log loss, whether its
    predicted class is right, and per class whether the row is a true positive, a false
    positive, a false negative and whether it holds the class (true or predicted); and the
    sorted scores the AUC reads. ``draws(counts)`` sums them for a block of resamples."""

    LOG_LOSS, CORRECT, PER_CLASS = 0, 1, 2  # columns: then 4 per class, from PER_CLASS

    def __init__(self, task: str, labels: np.ndarray, scores: np.ndarray) -> None:
        p = np.asarray(scores, dtype=np.float64)
        if task == BINARY:
            truth = metric_fns.binary_labels(labels)
            predicted = (p > 0.5).astype(np.int64)
            self.classes = [1]
            self.auc = _weighted_auc(truth.astype(bool), p)
        else:
            truth = metric_fns.class_labels(labels, p.shape[1])
            predicted = p.argmax(axis=1)
            self.classes = list(range(p.shape[1]))
            self.auc = _macro_auc([_weighted_auc(truth == c, p[:, c]) for c in self.classes])
        columns = [metric_fns.log_losses(truth, p), predicted == truth]
        for c in self.classes:
            is_true, is_predicted = truth == c, predicted == c
            columns += [is_true & is_predicted, ~is_true & is_predicted, is_true & ~is_predicted,
                        is_true | is_predicted]
        self.matrix = np.column_stack(columns).astype(np.float64)
        self.held_only = task == MULTICLASS  # binary: class 1 always counts, as metrics._prf

    def draws(self, counts: np.ndarray) -> "ClassifiedDraws":
        return ClassifiedDraws(self, counts)


def _macro_auc(per_class_auc: list[Callable[[np.ndarray], np.ndarray]]
               ) -> Callable[[np.ndarray], np.ndarray]:
    def auc(counts: np.ndarray) -> np.ndarray:  # macro over classes with both outcomes
        per_class = np.stack([class_auc(counts) for class_auc in per_class_auc])
        defined = ~np.isnan(per_class)
        return _ratio(np.where(defined, per_class, 0.0).sum(axis=0), defined.sum(axis=0))
    return auc


class ClassifiedDraws:
    """A block of resamples of a classification model's rows: the counts-weighted sums of its
    terms (one matrix product), from which each metric's value on each resample follows."""

    def __init__(self, terms: ClassifiedTerms, counts: np.ndarray) -> None:
        self.terms, self.counts = terms, counts

    @cached_property
    def sums(self) -> np.ndarray:
        return self.counts @ self.terms.matrix

    @cached_property
    def drawn(self) -> np.ndarray:
        return self.counts.sum(axis=1)

    @property
    def log_loss(self) -> np.ndarray:
        return self.sums[:, ClassifiedTerms.LOG_LOSS]

    @property
    def correct(self) -> np.ndarray:
        return self.sums[:, ClassifiedTerms.CORRECT]

    def auc(self) -> np.ndarray:
        return self.terms.auc(self.counts)

    @cached_property
    def macro(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Macro precision, recall and F1 over the classes a resample holds (true or predicted),
        an undefined ratio counting 0, as metrics._prf on the resampled rows."""
        totals = np.zeros((3, len(self.counts)))
        present = np.zeros(len(self.counts))
        for i in range(len(self.terms.classes)):
            at = ClassifiedTerms.PER_CLASS + 4 * i
            tp, fp, fn, held = self.sums[:, at:at + 4].T
            held = held > 0 if self.terms.held_only else np.ones(len(self.counts), bool)
            present += held
            for total, value in zip(totals, (_ratio(tp, tp + fp), _ratio(tp, tp + fn),
                                             _ratio(2 * tp, 2 * tp + fp + fn))):
                total += np.where(held, np.nan_to_num(value), 0.0)
        precision, recall, f1 = (_ratio(total, present) for total in totals)
        return precision, recall, f1


class RegressedDraws:
    """A block of resamples of a regression model's rows: the counts, the rows drawn, and the
    counts-weighted sum of squared residuals (the other sums are each metric's own)."""

    def __init__(self, rows: metric_fns.RegressedRows, counts: np.ndarray) -> None:
        self.counts, self.y, self.residual = counts, rows.y, rows.residual

    @cached_property
    def drawn(self) -> np.ndarray:
        return self.counts.sum(axis=1)

    @cached_property
    def squared(self) -> np.ndarray:
        return self.counts @ self.residual**2


def _per_row(task: str, names: list[str], labels: np.ndarray, predictions: np.ndarray
             ) -> Statistic:
    """Every metric of a task whose resamples draw rows: each follows from sums of per-row
    terms (metrics.IMPLEMENTATIONS' ``resampled``), so a block is a few matrix products."""
    if task == REGRESSION:
        rows = metric_fns.RegressedRows(labels, predictions)

        def draw(counts: np.ndarray) -> Any:
            return RegressedDraws(rows, counts)
    else:
        draw = ClassifiedTerms(task, labels, predictions).draws
    metrics = {name: metric_fns.row_metric(task, name) for name in names}

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        drawn = draw(counts)
        return {name: metric.resampled(drawn) for name, metric in metrics.items()}
    return statistic


def bootstrap(task: str, names: list[str], labels: np.ndarray, predictions: list[np.ndarray],
              qids: np.ndarray | None, confidence: Confidence,
              per_query: list[dict[str, np.ndarray]] | None = None) -> list[dict[str, np.ndarray]]:
    """Every metric of every model on each resample: per model, metric -> resampled values.
    All models share the draws (a paired bootstrap). Ranking: ``per_query`` gives each model's
    per-query values when they are already known (else they are computed here)."""
    if resampled_unit(task) == "queries":
        known = per_query or [None] * len(predictions)
        statistics = [_ranking(names, labels, p, qids, q)  # type: ignore[arg-type]
                      for p, q in zip(predictions, known)]
        units = len(next(iter(per_query[0].values()))) if per_query else len(np.unique(qids))
    else:
        statistics = [_per_row(task, names, labels, p) for p in predictions]
        units = len(labels)
    blocks: list[list[dict[str, np.ndarray]]] = [[] for _ in statistics]
    for counts in draws(units, confidence.resamples, confidence.seed):
        for out, statistic in zip(blocks, statistics):
            out.append(statistic(counts))
    return [{name: np.concatenate([block[name] for block in model]) for name in names}
            for model in blocks]


def intervals(values: dict[str, np.ndarray], level: float) -> dict[str, Interval]:
    """Each metric's interval (metrics undefined on every resample have none)."""
    out = {name: percentile_interval(v, level) for name, v in values.items()}
    return {name: i for name, i in out.items() if i is not None}


def delta_intervals(model: dict[str, np.ndarray], baseline: dict[str, np.ndarray],
                    level: float) -> dict[str, Interval]:
    """Intervals of model minus baseline, paired: the same resample for both."""
    return intervals({name: model[name] - baseline[name] for name in model}, level)
