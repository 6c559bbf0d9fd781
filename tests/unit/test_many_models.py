"""One evaluation, many models, on local files and in this process (small data runs inline, no
Ray): challengers with their own tables and gates, intervals, and LETOR lines that omit features."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import yaml

from modeleval.demo import letor_bytes, make_letor, train_ranker
from modeleval.engine import metrics as M
from modeleval.engine.evaluate import Identity
from modeleval.runner import parse_manifest, run_manifest
from modeleval.settings import EngineSettings


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    train = make_letor(1500, 12, mean_group=30, seed=1)
    for name, rounds in (("strong", 20), ("weak", 1), ("mid", 4)):
        train_ranker(train, rounds=rounds).save_model(root / f"{name}.json")
    test = make_letor(3000, 12, mean_group=10, seed=2)
    (root / "dense.txt").write_bytes(letor_bytes(test))
    sparse = make_letor(3000, 12, mean_group=10, seed=2, sparse=0.3)
    (root / "sparse.txt").write_bytes(letor_bytes(sparse))
    zeros = make_letor(3000, 12, mean_group=10, seed=2, sparse=0.3)
    zeros.features[np.isnan(zeros.features)] = 0  # what SVMlight means by an omitted feature
    (root / "zeros.txt").write_bytes(letor_bytes(zeros))
    return root


def run(assets, tmp_path, body: str):
    """Runs a ranking evaluation whose spec is ``body`` (YAML; ROOT: the assets' folder)."""
    spec = {"task": "ranking", "metrics": ["ndcg@10", "map@10", "mrr"],
            **yaml.safe_load(body.replace("ROOT", assets.as_uri()))}
    manifest = parse_manifest(yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1",
                                              "kind": "ModelEvaluation",
                                              "metadata": {"name": "many"}, "spec": spec}))
    settings = EngineSettings(cache_uri=(tmp_path / "cache").as_uri(), results_dir=tmp_path / "r")
    return run_manifest(manifest, Identity(uuid.uuid4().hex[:12]), settings).document()


TOURNAMENT = """\
  model: {uri: ROOT/strong.json}
  baseline: {model: {uri: ROOT/weak.json}}
  challengers:
    - {name: mid, model: {uri: ROOT/mid.json}}
    - {name: weak-again, model: {uri: ROOT/weak.json}}
  dataset: {uri: ROOT/dense.txt}
  confidence: {resamples: 200, seed: 3}
  gate:
    - {metric: ndcg@10, requireSignificant: true}
"""


def test_challengers_get_their_own_table_intervals_and_gate(assets, tmp_path):
    doc = run(assets, tmp_path, TOURNAMENT)
    assert doc.confidence.unit == "queries" and doc.confidence.resamples == 200
    alone = run(assets, tmp_path, TOURNAMENT.replace("baseline: {model: {uri: ROOT/weak.json}}",
                                                     "baseline: {model: {uri: ROOT/mid.json}}"))
    mid = next(c for c in doc.challengers if c.name == "mid")
    assert mid.metrics == pytest.approx(alone.baseline.metrics, abs=1e-12)  # same model, same data
    assert mid.intervals == alone.baseline.intervals  # the same draws: the same intervals
    for name, value in doc.metrics.items():
        interval = doc.intervals[name]
        assert interval.lower <= value <= interval.upper
        assert doc.baseline.deltas[name] == pytest.approx(value - doc.baseline.metrics[name])
    # The strong model beats the weak baseline significantly; the baseline, rerun as a
    # challenger, is not better than itself: its paired deltas are exactly zero.
    assert doc.gate.passed is True
    again = next(c for c in doc.challengers if c.name == "weak-again")
    assert again.deltas == {n: 0.0 for n in doc.metrics}
    assert {(i.lower, i.upper) for i in again.delta_intervals.values()} == {(0.0, 0.0)}
    assert again.gate.passed is False and "not significant" in again.gate.rules[0].message
    assert [c.name for c in doc.challengers] == ["mid", "weak-again"]
    # Reproducible: the same seed gives the same intervals.
    assert run(assets, tmp_path, TOURNAMENT).intervals == doc.intervals


def test_omitted_features_are_missing_by_default_zero_on_request_and_warned(assets, tmp_path):
    model = "  model: {uri: ROOT/strong.json}\n"
    missing = run(assets, tmp_path, model + "  dataset: {uri: ROOT/sparse.txt}\n")
    zero = run(assets, tmp_path, model + "  dataset: {uri: ROOT/sparse.txt, missingFeatures: zero}\n")
    zeros = run(assets, tmp_path, model + "  dataset: {uri: ROOT/zeros.txt}\n")
    dense = run(assets, tmp_path, model + "  dataset: {uri: ROOT/dense.txt}\n")
    assert zero.metrics == pytest.approx(zeros.metrics, abs=1e-12)  # zero: as if written out
    assert missing.metrics != pytest.approx(zero.metrics, abs=1e-6)
    assert len(missing.warnings) == 1 and "omit some of the 12 features" in missing.warnings[0]
    assert "read as missing" in missing.warnings[0] and "read as 0" in zero.warnings[0]
    assert zeros.warnings == [] and dense.warnings == []
    # Warned on a cache hit too (the parsed dataset is cached; the check runs on every read).
    assert run(assets, tmp_path, model + "  dataset: {uri: ROOT/sparse.txt}\n").warnings == \
        missing.warnings


def test_metric_values_are_the_per_query_means():
    rng = np.random.default_rng(0)
    qids = np.repeat(np.arange(30), 5)
    labels = rng.integers(0, 3, len(qids)).astype(float)
    scores = rng.random(len(qids))
    per_query = M.ranking_per_query(["ndcg@3", "recall@2"], labels, scores, qids)
    metrics = M.ranking_metrics(["ndcg@3", "recall@2"], labels, scores, qids)
    assert metrics["ndcg@3"] == pytest.approx(per_query["ndcg@3"].mean())
    assert metrics["recall@2"] == pytest.approx(np.nanmean(per_query["recall@2"]))


@pytest.mark.parametrize("missing, reason", [
    ("model: {uri: ROOT/none.json}\n  dataset: {uri: ROOT/none.txt}", "ModelNotFound"),
    ("model: {uri: ROOT/strong.json}\n  challengers: [{name: c, model: {uri: ROOT/none.json}}]\n"
     "  dataset: {uri: ROOT/none.txt}", "ModelNotFound"),
    ("model: {uri: ROOT/strong.json}\n  dataset: {uri: ROOT/none.txt}", "DatasetNotFound"),
])
def test_models_are_fetched_beside_the_dataset_lookup_and_their_errors_come_first(
        assets, tmp_path, missing, reason):
    from modeleval.engine.errors import EvaluationError

    with pytest.raises(EvaluationError) as error:
        run(assets, tmp_path, "  " + missing)
    assert error.value.reason.value == reason and "none." in error.value.message
