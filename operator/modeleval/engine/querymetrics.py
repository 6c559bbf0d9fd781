"""Ranking metrics computed shard by shard, while the other shards are still predicted.

A ranking metric is a mean over queries of a value that depends on that query's rows alone.
When every query's rows lie in one shard (LETOR shards are cut at query boundaries, and cached
parts keep those cuts), each finished shard's per-query values can be computed at once, in a
thread of the driver, instead of sorting every row after the last shard: on a warm evaluation
that sort was as long as the predictions themselves. The per-query values are the same numbers
the whole-dataset computation gives (each query's rows keep their relative order, so the same
sums in the same order), put in the same ascending-qid order, so every metric, slice and
bootstrap interval is bit-for-bit what it was. Whenever that cannot be guaranteed (a query split
between shards, a label the checks refuse, no rows), :meth:`ShardQueries.result` returns None
and the caller computes over the whole dataset, which also reports any error.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from . import metrics as metric_fns
from .errors import EvaluationError
from .inference import ShardPrediction

_PerShard = tuple[np.ndarray, list[dict[str, np.ndarray]]] | None


def _shard_values(names: list[str], shard: ShardPrediction) -> _PerShard:
    """The shard's query ids (ascending) and, per model, each metric's per-query values; None
    where the shard cannot be computed alone (the whole-dataset path decides)."""
    if shard.qids is None or shard.rows == 0 or not np.all(np.isfinite(shard.labels)):
        return None
    try:
        per_model = [metric_fns.ranking_per_query(names, shard.labels, p, shard.qids)
                     for p in shard.predictions]
    except EvaluationError:
        return None
    return np.unique(shard.qids), per_model


class ShardQueries:
    """Collects finished shards of a ranking evaluation and computes their per-query values in
    a background thread. Use as a context manager (the thread stops on exit)."""

    def __init__(self, names: list[str]):
        self.names = names
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="query-metrics")
        self._pending: dict[int, Future[_PerShard]] = {}

    def __enter__(self) -> "ShardQueries":
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def add(self, shard: ShardPrediction) -> None:
        self._pending[shard.index] = self._pool.submit(_shard_values, self.names, shard)

    def result(self, shards: int) -> list[dict[str, np.ndarray]] | None:
        """Per model, metric -> per-query values in ascending qid order, as
        :func:`metrics.ranking_per_query` of the whole dataset gives them; None when they
        cannot be assembled from the ``shards`` shards alone."""
        if sorted(self._pending) != list(range(shards)):
            return None
        parts = [self._pending[i].result() for i in range(shards)]
        if not parts or any(p is None for p in parts):
            return None
        qids = np.concatenate([q for q, _ in parts])  # type: ignore[misc]
        order = np.argsort(qids, kind="stable")
        ordered = qids[order]
        if len(ordered) > 1 and np.any(ordered[1:] == ordered[:-1]):
            return None  # a query's rows are in more than one shard
        models = len(parts[0][1])  # type: ignore[index]
        return [{name: np.concatenate([p[1][m][name] for p in parts])[order]  # type: ignore[index]
                 for name in self.names} for m in range(models)]
