"""What the engine adds to a result document for its report besides the curves: no curves when
the report is off, each slice's bootstrap intervals, the dataset's feature and missing-value
counts, the resources and the library versions."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
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


def test_the_dataset_counts_its_features_and_missing_values_cold_and_warm(tmp_path):
    """missingValues is numpy's count of NaN cells in the parsed matrix (here: the cells sparse
    LETOR lines leave out), the same whether parsed (cold) or read from the cache (warm)."""
    features = _binary_files(tmp_path, nan_every=7)
    cold = _run(tmp_path, _binary_spec(tmp_path))
    warm = _run(tmp_path, _binary_spec(tmp_path))
    assert not cold.cache_hit and warm.cache_hit
    for doc in (cold, warm):
        assert doc.dataset["features"] == 4
        assert doc.dataset["missingValues"] == np.count_nonzero(np.isnan(features)) > 0


def test_a_part_without_its_missing_values_recorded_is_counted_when_read(tmp_path):
    import pyarrow as pa

    from modeleval.engine.cache import decode_part, encode_part
    from modeleval.engine.shard import ParsedShard

    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    features[[0, 0, 2], [0, 2, 1]] = np.nan
    data = encode_part(ParsedShard(np.zeros(4), None, features))
    table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    assert decode_part(pa.py_buffer(data), 3, [], "p").missing == 3
    older = table.replace_schema_metadata({k: v for k, v in table.schema.metadata.items()
                                           if k != b"missing"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, older.schema) as writer:
        writer.write_table(older)
    read = decode_part(sink.getvalue(), 3, [], "p")
    assert read.missing is None and read.counted().missing == 3 and read.counted().incomplete == 2


def _sliced_spec(root: Path, resamples: int = 200) -> dict:
    return _binary_spec(root, confidence={"level": 0.9, "resamples": resamples, "seed": 4},
                        slices=[{"name": "first", "feature": 0, "buckets": [-0.5, 0.0, 0.5]}],
                        output={"predictionsUri": f"{root.as_uri()}/predictions"})


def test_slice_intervals_are_a_bootstrap_of_each_slice_values_rows(tmp_path):
    """Each slice value's interval is what the headline machinery gives on that value's rows
    alone, with the spec's level, resamples and seed."""
    import pyarrow.parquet as pq

    from modeleval.api.spec import Confidence
    from modeleval.engine import intervals as bootstrap

    features = _binary_files(tmp_path)
    doc = _run(tmp_path, _sliced_spec(tmp_path))
    written = pq.read_table(doc.predictions_uri.removeprefix("file://"))
    labels = written.column("label").to_numpy()
    predictions = written.column("prediction").to_numpy()
    bucket = np.digitize(features[:, 0].astype(np.float32), [-0.5, 0.0, 0.5])
    names = ["auc", "accuracy"]
    confidence = Confidence(level=0.9, resamples=200, seed=4)
    values = doc.slice_intervals["first"]
    assert set(values) == set(doc.slices["first"]) and len(values) == 4
    for b, value in enumerate(["< -0.5", "[-0.5, 0)", "[0, 0.5)", ">= 0.5"]):
        mask = bucket == b
        direct = bootstrap.intervals(bootstrap.bootstrap(
            "binary", names, labels[mask], [predictions[mask]], None, confidence)[0], 0.9)
        assert values[value] == direct and set(direct) == set(names)
        assert direct["accuracy"].lower <= doc.slices["first"][value]["accuracy"] \
            <= direct["accuracy"].upper


def test_a_slice_of_many_values_gets_intervals_for_its_largest_and_says_so(tmp_path, monkeypatch):
    from modeleval.engine import evaluate

    monkeypatch.setattr(evaluate, "SLICE_INTERVAL_VALUES", 2)
    _binary_files(tmp_path)
    doc = _run(tmp_path, _sliced_spec(tmp_path, resamples=100))
    sizes = {value: entry["rows"] for value, entry in doc.slices["first"].items()}
    largest = sorted(sizes, key=lambda v: -sizes[v])[:2]
    assert sorted(doc.slice_intervals["first"]) == sorted(largest)
    assert any("slice first: bootstrap intervals for its 2 values with the most rows only, of 4"
               in w for w in doc.warnings)


def test_resources_and_versions_say_what_scored_the_evaluation(tmp_path):
    import importlib.metadata
    import platform

    _binary_files(tmp_path)
    doc = _run(tmp_path, _binary_spec(tmp_path))
    assert doc.resources["mode"] == "local" and doc.resources["inline"] is True
    assert doc.resources["cpus"] >= 1 and doc.resources["shards"] == doc.dataset["shards"]
    assert doc.versions["python"] == platform.python_version()
    for name in ("modeleval", "numpy", "pyarrow", "xgboost"):
        assert doc.versions[name] == importlib.metadata.version(name)


def test_a_slice_value_where_a_metric_is_undefined_leaves_out_that_metric(tmp_path):
    """One row beyond the last bucket edge: its AUC is undefined (one class), its accuracy is
    not; the document stores the accuracy, leaves out the AUC and says why."""
    _binary_files(tmp_path)
    with open(tmp_path / "data.txt", "a") as data:
        data.write("1 1:20.0 2:0.0 3:0.0 4:0.0\n")
    spec = _binary_spec(tmp_path, slices=[{"name": "far", "feature": 0, "buckets": [10.0]}],
                        confidence={"resamples": 100})
    doc = _run(tmp_path, spec)
    far = doc.slices["far"][">= 10"]
    assert far["rows"] == 1 and far["accuracy"] in (0.0, 1.0) and "auc" not in far
    assert set(doc.slices["far"]["< 10"]) == {"rows", "auc", "accuracy"}
    assert set(doc.slice_intervals["far"][">= 10"]) == {"accuracy"}
    assert any(w.startswith("slice far: auc is left out where it is undefined: AUC needs both")
               for w in doc.warnings)
