"""Metrics agree with XGBoost's own evaluation and with scikit-learn to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from sklearn import metrics as skm

from modeleval.engine import metrics as M

TOL = 1e-6


def _ranking_case(seed: int, binary: bool):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 60, 150)  # uneven groups, including single-document queries
    qids = np.repeat(np.arange(len(sizes)) * 3 + 5, sizes)
    n = len(qids)
    x = rng.random((n, 6))
    labels = (rng.random(n) < 0.2).astype(int) if binary else rng.integers(0, 5, n)
    labels[qids == qids[0]] = 0  # one query without any relevant document
    dtrain = xgb.DMatrix(x, label=labels, qid=qids)
    booster = xgb.train({"objective": "rank:ndcg", "max_depth": 3}, dtrain, 5)
    return booster, dtrain, labels, qids, booster.predict(dtrain)


def _xgb_eval(booster, dmatrix, names):
    booster.set_param([("eval_metric", n) for n in names])
    fields = booster.eval(dmatrix, "d").split("\t")[1:]
    return {k.removeprefix("d-"): float(v) for k, v in (f.split(":") for f in fields)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ndcg_matches_xgboost_graded(seed):
    booster, d, labels, qids, scores = _ranking_case(seed, binary=False)
    names = ["ndcg@1", "ndcg@5", "ndcg@10", "ndcg@100"]
    expected = _xgb_eval(booster, d, names)
    got = M.ranking_metrics(names, labels.astype(float), scores, qids)
    for name in names:
        assert got[name] == pytest.approx(expected[name], abs=TOL), name


@pytest.mark.parametrize("seed", [3, 4])
def test_map_and_precision_match_xgboost_binary(seed):
    booster, d, labels, qids, scores = _ranking_case(seed, binary=True)
    ours = ["map@5", "map@10", "map@1000", "precision@5", "precision@10", "ndcg@10"]
    theirs = [n.replace("precision@", "pre@") for n in ours]
    expected = _xgb_eval(booster, d, theirs)
    got = M.ranking_metrics(ours, labels.astype(float), scores, qids)
    for a, b in zip(ours, theirs):
        assert got[a] == pytest.approx(expected[b], abs=TOL), a


def test_full_list_ndcg_is_ndcg_at_longest_query():
    booster, d, labels, qids, scores = _ranking_case(5, binary=False)
    longest = int(np.bincount(np.unique(qids, return_inverse=True)[1]).max())
    got = M.ranking_metrics(["ndcg", f"ndcg@{longest}"], labels.astype(float), scores, qids)
    assert got["ndcg"] == pytest.approx(got[f"ndcg@{longest}"], abs=1e-12)


def test_ranking_by_hand():
    # query 1: ranked labels [0, 2, 1]; query 2: no relevant docs.
    labels = np.array([0, 2, 1, 0, 0], dtype=float)
    scores = np.array([0.9, 0.5, 0.1, 0.3, 0.2])
    qids = np.array([1, 1, 1, 2, 2])
    got = M.ranking_metrics(["ndcg@3", "mrr", "recall@2", "precision@2", "map@3"], labels, scores, qids)
    dcg = 3 / np.log2(3) + 1 / np.log2(4)
    idcg = 3 + 1 / np.log2(3)
    assert got["ndcg@3"] == pytest.approx((dcg / idcg + 1.0) / 2)  # no-relevant query scores 1
    assert got["mrr"] == pytest.approx((1 / 2 + 0) / 2)            # and 0 for MRR
    assert got["recall@2"] == pytest.approx(1 / 2)                 # excluded from recall
    assert got["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["map@3"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1.0) / 2)


def test_ties_keep_input_order():
    labels = np.array([0, 1], dtype=float)
    got = M.ranking_metrics(["mrr"], labels, np.array([0.5, 0.5]), np.array([1, 1]))
    assert got["mrr"] == pytest.approx(0.5)


def test_binary_classification_matches_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.3).astype(float)
    p = np.clip(0.3 * y + rng.random(5000) * 0.7, 0, 1)
    p[:50] = 0.5  # ties and the threshold itself
    got = M.binary_metrics(["auc", "logloss", "accuracy", "f1", "precision", "recall"], y, p)
    predicted = (p > 0.5).astype(int)
    assert got["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=TOL)
    assert got["logloss"] == pytest.approx(skm.log_loss(y, p), abs=TOL)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=TOL)
    assert got["f1"] == pytest.approx(skm.f1_score(y, predicted), abs=TOL)
    assert got["precision"] == pytest.approx(skm.precision_score(y, predicted), abs=TOL)
    assert got["recall"] == pytest.approx(skm.recall_score(y, predicted), abs=TOL)


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 3000).astype(float)
    raw = rng.random((3000, 4)) + np.eye(4)[y.astype(int)] * 0.6
    p = raw / raw.sum(axis=1, keepdims=True)
    got = M.multiclass_metrics(["auc", "logloss", "accuracy", "f1", "precision", "recall"], y, p)
    predicted = p.argmax(axis=1)
    assert got["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), abs=TOL)
    assert got["logloss"] == pytest.approx(skm.log_loss(y, p), abs=TOL)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=TOL)
    for name in ("f1", "precision", "recall"):
        fn = getattr(skm, f"{name}_score")
        assert got[name] == pytest.approx(fn(y, predicted, average="macro"), abs=TOL), name


def test_regression_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.normal(size=4000)
    p = y + rng.normal(scale=0.3, size=4000)
    got = M.regression_metrics(["rmse", "mae", "r2"], y, p)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), abs=TOL)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p), abs=TOL)
    assert got["r2"] == pytest.approx(skm.r2_score(y, p), abs=TOL)


def test_label_errors_are_typed():
    with pytest.raises(M.LabelError, match="binary classification needs labels 0 and 1"):
        M.binary_metrics(["auc"], np.array([0.0, 2.0]), np.array([0.1, 0.9]))
    with pytest.raises(M.LabelError, match="both classes"):
        M.binary_metrics(["auc"], np.array([1.0, 1.0]), np.array([0.1, 0.9]))
    with pytest.raises(M.LabelError, match="must not be negative"):
        M.ranking_metrics(["ndcg@5"], np.array([-1.0, 1.0]), np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(M.LabelError, match="row 2 has inf"):
        M.compute("regression", ["rmse"], np.array([1.0, np.inf]), np.array([0.1, 0.2]))


def _lexsort_order(values: np.ndarray, qids: np.ndarray) -> np.ndarray:
    """The definition: by qid ascending, then value descending, ties in input order."""
    return np.lexsort((-values.astype(np.float64), qids))


@pytest.mark.parametrize("case", ["contiguous", "interleaved", "strings", "float64", "nan",
                                  "zeros", "ties", "one query", "infinite", "beyond float32"])
def test_query_order_is_lexsorts(case):
    rng = np.random.default_rng(sum(map(ord, case)))
    sizes = rng.integers(1, 40, 300)
    qids = np.repeat(rng.permutation(len(sizes)) * 7 - 50, sizes)  # qids out of order
    values = rng.standard_normal(len(qids)).astype(np.float32).astype(np.float64)
    if case == "interleaved":
        qids = rng.permutation(qids)
    elif case == "strings":
        qids = np.array([f"q{q}" for q in qids])
    elif case == "float64":
        values = rng.standard_normal(len(qids))  # not float32: the lexsort fallback
    elif case == "nan":
        values[::17] = np.nan
    elif case == "zeros":
        values[::3], values[1::3] = 0.0, -0.0  # equal: input order
    elif case == "ties":
        values = rng.integers(0, 3, len(qids)).astype(np.float64)
    elif case == "one query":
        qids = np.full(len(qids), 4)
    elif case == "infinite":
        values[::5], values[1::5] = np.inf, -np.inf
    elif case == "beyond float32":
        values[::4] = 1e300  # not a float32: the fallback, without an overflow warning
    groups = M.QueryGroups.of(qids)
    assert np.array_equal(groups.order(values), _lexsort_order(values, qids))
    assert np.array_equal(groups.sizes, np.unique(qids, return_counts=True)[1])


def test_interleaved_queries_give_the_same_per_query_values():
    booster, d, labels, qids, scores = _ranking_case(6, binary=False)
    names = ["ndcg@10", "map@5", "mrr", "precision@3", "recall@5"]
    contiguous = M.ranking_per_query(names, labels.astype(float), scores, qids)
    # Queries interleaved, each query's rows kept in their input order (ties stay broken the
    # same way): the fallback path, the same values.
    shuffled = qids[np.random.default_rng(0).permutation(len(qids))]
    rows = np.empty(len(qids), dtype=np.int64)
    for q in np.unique(qids):
        rows[shuffled == q] = np.flatnonzero(qids == q)
    assert not np.array_equal(rows, np.arange(len(qids)))
    interleaved = M.ranking_per_query(names, labels[rows].astype(float), scores[rows], qids[rows])
    for name in names:
        np.testing.assert_array_equal(interleaved[name], contiguous[name])


def test_empty_qids_have_no_queries():
    groups = M.QueryGroups.of(np.array([], dtype=np.int64))
    assert len(groups.sizes) == 0 and len(groups.order(np.array([]))) == 0
