"""Ranking curve aggregates, computed shard by shard in the tasks beside the per-query metrics
(:mod:`.querymetrics`) and added up on the driver: numpy only (a task process loads no pydantic;
:func:`.curves.ranking_curves` turns the merged state into the result document's model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import metrics as metric_fns

NDCG_BINS = 20
RANKING_CUTOFFS = 20
WORST_QUERIES = 20


def ranking_cutoffs(names: list[str]) -> tuple[int, int]:
    """The cut-offs a ranking evaluation's curves go to (every k the metrics ask, and at least
    ``RANKING_CUTOFFS``) and the one its distribution, length buckets and worst queries use:
    the first ``ndcg@k`` asked (the primary metric when it is one), else 10."""
    asked = [int(k) for base, _, k in (n.partition("@") for n in names) if k]
    ndcg = [int(k) for base, _, k in (n.partition("@") for n in names) if k and base == "ndcg"]
    deepest = max([RANKING_CUTOFFS, *asked])
    return deepest, ndcg[0] if ndcg else 10


def _length_bucket(sizes: np.ndarray) -> np.ndarray:
    """Queries by length: 1, 2-3, 4-7, ... documents (bucket b: 2**b to 2**(b+1) - 1)."""
    return np.floor(np.log2(sizes)).astype(np.int64)


@dataclass(frozen=True)
class RankingState:
    """One shard's ranking aggregates for one model; states of disjoint queries add up."""

    ndcg_sums: np.ndarray        # per k = 1..deepest, the sum over queries of NDCG@k
    precision_sums: np.ndarray   # the same for precision@k
    queries: int
    cutoff: int
    histogram: np.ndarray        # per-query NDCG@cutoff in NDCG_BINS bins of [0, 1]
    length_sums: np.ndarray      # per length bucket: sum of NDCG@cutoff, and queries
    length_counts: np.ndarray
    worst: np.ndarray            # (qid, ndcg, documents) of the lowest NDCG@cutoff, at most WORST_QUERIES

    @classmethod
    def of(cls, names: list[str], labels: np.ndarray, scores: np.ndarray,
           qids: np.ndarray, lists: metric_fns.RankedLists | None = None) -> "RankingState":
        """``lists``: the rows already ranked (by the shard's per-query metrics)."""
        deepest, cutoff = ranking_cutoffs(names)
        if lists is None:
            lists = metric_fns.RankedLists.build(
                labels, np.asarray(scores, dtype=np.float64).reshape(-1), qids)
        ndcg, precision, sizes = _at_every_cutoff(lists, deepest)
        at_cutoff = ndcg[:, cutoff - 1]
        histogram = np.histogram(at_cutoff, np.linspace(0.0, 1.0, NDCG_BINS + 1))[0]
        bucket = _length_bucket(sizes)
        width = int(bucket.max()) + 1 if len(bucket) else 1
        ids = np.unique(qids)  # the queries in ascending qid order, as the lists' groups
        order = np.lexsort((ids, at_cutoff))[:WORST_QUERIES]
        worst = np.stack((ids[order].astype(np.float64), at_cutoff[order],
                          sizes[order].astype(np.float64)), axis=1)
        return cls(ndcg.sum(axis=0), precision.sum(axis=0), lists.queries, cutoff, histogram,
                   np.bincount(bucket, weights=at_cutoff, minlength=width),
                   np.bincount(bucket, minlength=width), worst)

    def merge(self, other: "RankingState") -> "RankingState":
        width = max(len(self.length_counts), len(other.length_counts))
        worst = np.concatenate((self.worst, other.worst))
        worst = worst[np.lexsort((worst[:, 0], worst[:, 1]))][:WORST_QUERIES]
        return RankingState(self.ndcg_sums + other.ndcg_sums,
                            self.precision_sums + other.precision_sums,
                            self.queries + other.queries, self.cutoff,
                            self.histogram + other.histogram,
                            _padded(self.length_sums, width) + _padded(other.length_sums, width),
                            _padded(self.length_counts, width) + _padded(other.length_counts, width),
                            worst)


def _padded(values: np.ndarray, width: int) -> np.ndarray:
    return np.pad(values, (0, width - len(values)))


def _at_every_cutoff(lists: metric_fns.RankedLists,
                     deepest: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query (rows) and k = 1..deepest (columns): NDCG@k and precision@k as the metrics
    define them, and each query's size. One pass: each row's gain lands in its (query, rank)
    cell, and a running sum along the ranks gives every cut-off at once."""
    if np.any(lists.labels > 31):
        raise metric_fns.LabelError("NDCG's exponential gain needs relevance labels of at most 31")
    top = lists.position < deepest
    cells = lists.group[top] * deepest + lists.position[top]
    discount = 1.0 / np.log2(lists.position[top] + 2.0)

    def running(weights: np.ndarray) -> np.ndarray:
        summed = np.bincount(cells, weights=weights, minlength=lists.queries * deepest)
        return np.cumsum(summed.reshape(lists.queries, deepest), axis=1)

    dcg = running((np.exp2(lists.labels[top]) - 1.0) * discount)
    idcg = running((np.exp2(lists.ideal[top]) - 1.0) * discount)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 1.0)
    sizes = np.bincount(lists.group, minlength=lists.queries)
    hits = running((lists.labels[top] > 0).astype(np.float64))
    precision = hits / np.minimum(np.arange(1, deepest + 1)[None, :], sizes[:, None])
    return ndcg, precision, sizes
