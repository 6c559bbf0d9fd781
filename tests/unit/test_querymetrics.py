"""Ranking metrics per query computed shard by shard equal the whole-dataset computation."""

from __future__ import annotations

import numpy as np
import pytest

from modeleval.engine import intervals
from modeleval.engine import metrics as M
from modeleval.engine.inference import ShardPrediction
from modeleval.engine.querymetrics import assemble, shard_values
from modeleval.api.spec import Confidence

NAMES = ["ndcg@10", "ndcg", "map@5", "mrr", "precision@3", "recall@5"]


def _dataset(seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 50, 120)
    qids = np.repeat(rng.permutation(len(sizes)) * 5 + 3, sizes)  # not in ascending order
    labels = rng.integers(0, 5, len(qids)).astype(np.float32)
    labels[qids == qids[0]] = 0  # a query without a relevant document
    scores = [rng.standard_normal(len(qids)).astype(np.float32) for _ in range(2)]
    scores[0][1::7] = scores[0][:-1:7][:len(scores[0][1::7])]  # ties with the row before
    return labels, qids, scores


def _shards(labels, qids, scores, cuts):
    bounds = [0, *cuts, len(labels)]
    return [ShardPrediction(i, labels[a:b], qids[a:b], [s[a:b] for s in scores])
            for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def _query_cuts(qids, count):
    starts = np.flatnonzero(np.concatenate(([True], qids[1:] != qids[:-1])))
    return [int(starts[len(starts) * i // count]) for i in range(1, count)]


def _collect(shards):
    """What the driver assembles from the values each shard's task computed."""
    return assemble(NAMES, [shard_values(NAMES, s.labels, s.qids, s.predictions) for s in shards])


def test_shard_by_shard_equals_the_whole_dataset_bit_for_bit():
    labels, qids, scores = _dataset()
    shards = _shards(labels, qids, scores, _query_cuts(qids, 7))
    got = _collect(shards)
    assert got is not None and len(got) == 2
    for model, s in zip(got, scores):
        whole = M.ranking_per_query(NAMES, labels, s, qids)
        for name in NAMES:
            np.testing.assert_array_equal(model[name], whole[name])
        means = {name: M.query_mean(model[name]) for name in NAMES}
        assert means == M.ranking_metrics(NAMES, labels, s, qids)


def test_a_query_split_between_shards_falls_back():
    labels, qids, scores = _dataset(1)
    cuts = _query_cuts(qids, 4)
    cuts[1] += 1 if qids[cuts[1]] == qids[cuts[1] + 1] else 0  # inside a query
    assert qids[cuts[1] - 1] == qids[cuts[1]]
    assert _collect(_shards(labels, qids, scores, cuts)) is None


@pytest.mark.parametrize("bad", ["nan label", "negative label", "no shards", "no qids"])
def test_what_the_whole_dataset_must_report_falls_back(bad):
    labels, qids, scores = _dataset(2)
    shards = _shards(labels, qids, scores, _query_cuts(qids, 3))
    if bad == "nan label":
        shards[1].labels[0] = np.nan
    elif bad == "negative label":
        shards[2].labels[-1] = -1
    elif bad == "no shards":
        shards = []
    else:
        shards = [ShardPrediction(s.index, s.labels, None, s.predictions) for s in shards]
    assert _collect(shards) is None


def test_bootstrap_from_known_per_query_values_is_the_same():
    labels, qids, scores = _dataset(3)
    per_query = _collect(_shards(labels, qids, scores, _query_cuts(qids, 5)))
    confidence = Confidence(level=0.9, resamples=200, seed=7)
    known = intervals.bootstrap("ranking", NAMES, labels, scores, qids, confidence, per_query)
    computed = intervals.bootstrap("ranking", NAMES, labels, scores, qids, confidence)
    for a, b in zip(known, computed):
        for name in NAMES:
            np.testing.assert_array_equal(a[name], b[name])
