"""Bootstrap intervals against a reference written here: a slow loop that draws each resample
with the same seeded generator, builds the resampled dataset row by row (a drawn query keeps its
documents, under a new query id) and recomputes every metric from it with metrics.compute."""

from __future__ import annotations

import numpy as np
import pytest

from modeleval.api.spec import Confidence
from modeleval.engine import intervals as I
from modeleval.engine import metrics as M
from modeleval.engine.errors import EvaluationError


def _metric_or_nan(task, name, labels, predictions, qids):
    try:
        value = M.compute(task, [name], labels, predictions, qids)[name]
    except EvaluationError:  # e.g. AUC on a resample holding one class
        return float("nan")
    return value


def reference(task, names, labels, models, qids, confidence):
    """Per model, metric -> the value on each resample, the obvious way."""
    rng = np.random.default_rng(confidence.seed)
    if task == "ranking":
        queries = [np.flatnonzero(qids == q) for q in np.unique(qids)]
        units = len(queries)
    else:
        units = len(labels)
    out = [{name: [] for name in names} for _ in models]
    for _ in range(confidence.resamples):
        drawn = rng.integers(0, units, units)
        if task == "ranking":
            rows = np.concatenate([queries[i] for i in drawn])
            new_qids = np.repeat(np.arange(units), [len(queries[i]) for i in drawn])
        else:
            rows, new_qids = drawn, None
        for model, values in zip(models, out):
            for name in names:
                values[name].append(_metric_or_nan(task, name, labels[rows], model[rows], new_qids))
    return [{name: np.array(v) for name, v in values.items()} for values in out]


def reference_interval(values, level):
    values = values[~np.isnan(values)]
    lower, upper = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return lower, upper


def _case(task, seed=0):
    rng = np.random.default_rng(seed)
    if task == "ranking":
        sizes = rng.integers(1, 12, 40)
        qids = np.repeat(rng.permutation(40) * 7 + 3, sizes)  # qids neither sorted nor dense
        n = len(qids)
        labels = rng.integers(0, 4, n).astype(np.float64)
        labels[qids == qids[0]] = 0  # a query without a relevant document (recall undefined)
        signal = labels + rng.normal(size=n)
        models = [np.round(signal, 1), np.round(signal + rng.normal(size=n), 1)]  # with ties
        return ["ndcg@5", "ndcg", "map@3", "mrr", "precision@3", "recall@3"], labels, models, qids
    n = 50
    if task == "binary":
        labels = np.zeros(n)
        labels[[3, 17, 40]] = 1  # few positives: some resamples have none (AUC undefined there)
        models = [np.round(np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1), 1),
                  np.round(rng.random(n), 1)]
        return ["auc", "logloss", "accuracy", "precision", "recall", "f1"], labels, models, None
    if task == "multiclass":
        labels = rng.integers(0, 3, n).astype(np.float64)
        models = []
        for noise in (1.0, 3.0):
            logits = np.eye(3)[labels.astype(int)] * 2 + rng.normal(scale=noise, size=(n, 3))
            p = np.exp(logits)
            models.append(np.round(p / p.sum(axis=1, keepdims=True), 2))
        return ["auc", "logloss", "accuracy", "precision", "recall", "f1"], labels, models, None
    labels = rng.normal(size=n) * 3 + 10
    models = [labels + rng.normal(size=n), labels + rng.normal(scale=2, size=n)]
    return ["rmse", "mae", "r2"], labels, models, None


TASKS = ["ranking", "binary", "multiclass", "regression"]
CONFIDENCE = Confidence(level=0.9, resamples=150, seed=11)


@pytest.mark.parametrize("task", TASKS)
def test_resampled_metrics_match_recomputing_each_resample(task):
    names, labels, models, qids = _case(task)
    got = I.bootstrap(task, names, labels, models, qids, CONFIDENCE)
    expected = reference(task, names, labels, models, qids, CONFIDENCE)
    for model_got, model_expected in zip(got, expected):
        for name in names:
            np.testing.assert_allclose(model_got[name], model_expected[name], rtol=1e-9,
                                       atol=1e-12, equal_nan=True, err_msg=f"{task} {name}")


@pytest.mark.parametrize("task", TASKS)
def test_intervals_and_paired_delta_intervals_match_the_reference(task):
    names, labels, models, qids = _case(task, seed=3)
    candidate, baseline = I.bootstrap(task, names, labels, models, qids, CONFIDENCE)
    ref_candidate, ref_baseline = reference(task, names, labels, models, qids, CONFIDENCE)
    got = I.intervals(candidate, CONFIDENCE.level)
    deltas = I.delta_intervals(candidate, baseline, CONFIDENCE.level)
    for name in names:
        lower, upper = reference_interval(ref_candidate[name], CONFIDENCE.level)
        assert (got[name].lower, got[name].upper) == pytest.approx((lower, upper), rel=1e-9)
        # Paired: the delta of each resample, candidate and baseline on the same draw.
        lower, upper = reference_interval(ref_candidate[name] - ref_baseline[name], CONFIDENCE.level)
        assert (deltas[name].lower, deltas[name].upper) == pytest.approx((lower, upper), rel=1e-9)


def test_the_paired_interval_is_narrower_than_unpaired_for_correlated_models():
    names, labels, models, qids = _case("ranking", seed=5)
    close = [models[0], models[0] + 0.01 * np.arange(len(labels)) % 0.3]
    candidate, baseline = I.bootstrap("ranking", ["ndcg@5"], labels, close, qids, CONFIDENCE)
    paired = I.delta_intervals(candidate, baseline, 0.9)["ndcg@5"]
    rng = np.random.default_rng(0)
    unpaired = candidate["ndcg@5"] - rng.permutation(baseline["ndcg@5"])
    lower, upper = np.percentile(unpaired, [5, 95])
    assert paired.upper - paired.lower < upper - lower


def test_resamples_without_both_classes_are_left_out_of_auc():
    names, labels, models, qids = _case("binary")
    auc = I.bootstrap("binary", names, labels, models, qids, CONFIDENCE)[0]["auc"]
    assert 0 < np.isnan(auc).sum() < len(auc)
    assert "auc" in I.intervals({"auc": auc}, 0.9)


def test_same_seed_same_intervals_other_seed_others():
    names, labels, models, qids = _case("binary")
    first = I.bootstrap("binary", names, labels, models, qids, CONFIDENCE)
    again = I.bootstrap("binary", names, labels, models, qids, CONFIDENCE)
    other = I.bootstrap("binary", names, labels, models, qids,
                        Confidence(level=0.9, resamples=150, seed=12))
    np.testing.assert_array_equal(first[0]["logloss"], again[0]["logloss"])
    assert not np.array_equal(first[0]["logloss"], other[0]["logloss"])


def test_blocks_do_not_change_the_draws(monkeypatch):
    names, labels, models, qids = _case("regression")
    whole = I.bootstrap("regression", names, labels, models, qids, CONFIDENCE)
    monkeypatch.setattr(I, "_BLOCK_CELLS", 7 * len(labels))  # 7 resamples per block
    blocked = I.bootstrap("regression", names, labels, models, qids, CONFIDENCE)
    np.testing.assert_allclose(whole[1]["r2"], blocked[1]["r2"], rtol=1e-12)


def test_a_metric_undefined_on_every_resample_has_no_interval():
    assert I.percentile_interval(np.array([np.nan, np.nan]), 0.95) is None
    interval = I.percentile_interval(np.array([np.nan, 1.0, 2.0, 3.0]), 0.5)
    assert (interval.lower, interval.upper) == (1.5, 2.5)
