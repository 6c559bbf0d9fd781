"""Ranking metrics computed shard by shard, in the tasks that predict the shards.

A ranking metric is a mean over queries of a value that depends on that query's rows alone.
When every query's rows lie in one shard (LETOR shards are cut at query boundaries, and cached
parts keep those cuts), each shard's per-query values can be computed where the shard was
predicted, side by side with the others, instead of sorting every row in the driver: on a warm
evaluation that sort was as long as the predictions themselves, and one driver thread cannot
keep up with many workers. The per-query values are the same numbers the whole-dataset
computation gives (each query's rows keep their relative order, so the same sums in the same
order), put in the same ascending-qid order, so every metric, slice and bootstrap interval is
bit-for-bit what it was. Whenever that cannot be guaranteed (a query split between shards, a
label the checks refuse, no rows), :func:`assemble` returns None and the caller computes over
the whole dataset, which also reports any error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import metrics as metric_fns
from .rankingcurves import RankingState
from .errors import EvaluationError


@dataclass(frozen=True)
class QueryValues:
    """One shard's query ids (ascending) and, per model, each metric's per-query values and
    the shard's ranking curve aggregates (merged on the driver)."""

    qids: np.ndarray
    models: list[dict[str, np.ndarray]]
    curves: list[RankingState] | None = None


def shard_values(names: Sequence[str], labels: np.ndarray, qids: np.ndarray | None,
                 predictions: Sequence[np.ndarray], curves: bool = True) -> QueryValues | None:
    """A shard's per-query values, and its curve aggregates unless ``curves`` is false (an
    evaluation without a report); None where the shard cannot be computed alone (the
    whole-dataset path decides, and reports what is wrong)."""
    if qids is None or len(labels) == 0 or not np.all(np.isfinite(labels)) or np.any(labels < 0):
        return None
    try:
        models, states = [], []
        for p in predictions:  # each model's rows ranked once, for its metrics and its curves
            lists = metric_fns.RankedLists.build(
                labels, np.asarray(p, dtype=np.float64).reshape(-1), qids)
            models.append(metric_fns.ranking_per_query(list(names), labels, p, qids, lists))
            if curves:
                states.append(RankingState.of(list(names), labels, p, qids, lists))
    except EvaluationError:
        return None
    return QueryValues(np.unique(qids), models, states if curves else None)


def assemble(names: Sequence[str],
             shards: Sequence[QueryValues | None]) -> list[dict[str, np.ndarray]] | None:
    """Per model, metric -> per-query values in ascending qid order, as
    :func:`metrics.ranking_per_query` of the whole dataset gives them, from every shard's
    values in shard order; None when they cannot be assembled from the shards alone."""
    if not shards or any(s is None for s in shards):
        return None
    qids = np.concatenate([s.qids for s in shards])  # type: ignore[union-attr]
    order = np.argsort(qids, kind="stable")
    ordered = qids[order]
    if len(ordered) > 1 and np.any(ordered[1:] == ordered[:-1]):
        return None  # a query's rows are in more than one shard
    return [{name: np.concatenate([s.models[m][name] for s in shards])[order]  # type: ignore[union-attr]
             for name in names} for m in range(len(shards[0].models))]  # type: ignore[union-attr]
