"""What the engine adds to a result document for its report besides the curves: no curves when
the report is off, each slice's bootstrap intervals, the dataset's feature and missing-value
counts, the resources and the library versions."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from modeleval.engine import rankingcurves as R
from modeleval.engine.evaluate import Identity
from modeleval.runner import parse_manifest, run_manifest
from modeleval.settings import EngineSettings


def _binary_files(root: Path, rows: int = 600, nan_every: int = 0) -> np.ndarray:
    """A binary model and a LETOR file of ``rows`` lines under ``root``; every
    ``nan_every``-th cell left out of its line (0: none). Returns the features (NaN where left
    out)."""
    import xgboost as xgb

    rng = np.random.default_rng(11)
    features = rng.normal(size=(rows, 4))
    labels = (features[:, 0] + rng.normal(0, 1, rows) > 0).astype(int)
    xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(features, labels) \
        .save_model(root / "m.json")
    if nan_every:
        features.reshape(-1)[::nan_every] = np.nan
    lines = [f"{y} " + " ".join(f"{j + 1}:{v:.5f}" for j, v in enumerate(row) if not np.isnan(v))
             for y, row in zip(labels, features)]
    (root / "data.txt").write_text("\n".join(lines) + "\n")
    return features


def _run(root: Path, spec: dict, **settings):
    manifest = parse_manifest(yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1",
                                              "kind": "ModelEvaluation",
                                              "metadata": {"name": "facts"}, "spec": spec}))
    engine = EngineSettings(_env_file=None, cache_uri=(root / "cache").as_uri(),
                            results_dir=root / "r", **settings)
    return run_manifest(manifest, Identity(uuid.uuid4().hex[:12]), engine).document()


def _binary_spec(root: Path, **more) -> dict:
    return {"task": "binary", "metrics": ["auc", "accuracy"],
            "model": {"uri": f"{root.as_uri()}/m.json"},
            "dataset": {"uri": f"{root.as_uri()}/data.txt"}, **more}


def test_the_report_setting_reads_from_the_environment(monkeypatch):
    assert EngineSettings(_env_file=None).report is True
    monkeypatch.setenv("MODELEVAL_REPORT", "false")
    assert EngineSettings(_env_file=None).report is False


def test_without_a_report_no_curves_are_computed(tmp_path):
    _binary_files(tmp_path)
    on = _run(tmp_path, _binary_spec(tmp_path))
    off = _run(tmp_path, _binary_spec(tmp_path), report=False)
    assert on.curves and "curves" in on.timings
    assert off.curves is None and "curves" not in off.timings
    assert off.metrics == on.metrics


def test_without_a_report_ranking_shards_compute_no_curve_states(tmp_path, monkeypatch):
    from modeleval.demo import letor_bytes, make_letor, train_ranker

    train_ranker(make_letor(400, 6, mean_group=10, seed=1), rounds=3).save_model(tmp_path / "m.json")
    (tmp_path / "data.txt").write_bytes(letor_bytes(make_letor(600, 6, mean_group=10, seed=2)))

    def computed(*_):
        raise AssertionError("a ranking curve state was computed without a report")

    monkeypatch.setattr(R.RankingState, "of", computed)
    spec = {"task": "ranking", "metrics": ["ndcg@10"], "model": {"uri": f"{tmp_path.as_uri()}/m.json"},
            "dataset": {"uri": f"{tmp_path.as_uri()}/data.txt"}}
    doc = _run(tmp_path, spec, report=False)
    assert doc.curves is None and 0 < doc.metrics["ndcg@10"] <= 1
