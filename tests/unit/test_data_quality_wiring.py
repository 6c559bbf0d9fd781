"""Data quality wired into evaluations: every evaluation records its data's profile from the
pass that reads every row (cold and warm, the data's part cached by the dataset's fingerprint),
compares it with spec.dataQuality.reference (a dataset, a previous evaluation, a schedule's
first or previous run) and applies the rules before its metrics are recorded."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from modeleval.api.reasons import Reason
from modeleval.api.schedule import SCHEDULE_LABEL
from modeleval.engine.errors import EvaluationError
from modeleval.engine.evaluate import Identity
from modeleval.runner import parse_manifest, run_manifest
from modeleval.settings import EngineSettings

FEATURES = 4


def _write_letor(path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    """A LETOR file (float32 values written to read back exactly); NaN cells are left out."""
    lines = [f"{y} " + " ".join(f"{j + 1}:{v}" for j, v in enumerate(row) if not np.isnan(v))
             for y, row in zip(labels, features)]
    path.write_text("\n".join(lines) + "\n")


def _data(seed: int, rows: int, shift: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    for column, by in (shift or {}).items():
        features[:, column] += np.float32(by)
    labels = (features[:, 0] + rng.normal(0, 1, rows) > 0).astype(int)
    return features, labels


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A binary model, a dataset with omitted cells, a reference like it, and one whose
    features 2 and 4 (1-based) moved by two standard deviations."""
    import xgboost as xgb

    root = tmp_path_factory.mktemp("dq")
    features, labels = _data(1, 800)
    xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(features, labels).save_model(root / "m.json")
    features.reshape(-1)[::7] = np.nan
    _write_letor(root / "data.txt", features, labels)
    np.save(root / "features.npy", features)
    _write_letor(root / "same.txt", *_data(2, 5000))
    _write_letor(root / "moved.txt", *_data(3, 5000, {1: 2.0, 3: -2.0}))
    return root


def _run(root: Path, data: str, quality: dict | None = None, name: str = "dq",
         labels: dict | None = None, results: str = "r", namespace: str | None = None,
         **settings):
    spec = {"task": "binary", "metrics": ["auc"], "model": {"uri": f"{root.as_uri()}/m.json"},
            "dataset": {"uri": f"{root.as_uri()}/{data}"}}
    if quality is not None:
        spec["dataQuality"] = quality
    manifest = parse_manifest(yaml.safe_dump({
        "apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
        "metadata": {"name": name, **({"labels": labels} if labels else {})}, "spec": spec}))
    engine = EngineSettings(_env_file=None, **{"cache_uri": (root / "cache").as_uri(), **settings},
                            results_dir=root / results)
    identity = Identity(uuid.uuid4().hex[:12], name=name, namespace=namespace)
    return run_manifest(manifest, identity, engine).document()


def test_every_evaluation_records_its_profile_cold_and_warm_from_the_cache(root):
    """The exact statistics equal numpy's on the parsed values (omitted cells missing, not 0),
    the model's predictions and the labels are profiled, and a warm read takes the data's
    profile from the cache: an entry edited in the cache shows up in the next document."""
    features = np.load(root / "features.npy")
    cold = _run(root, "data.txt", results="r-cold")
    assert cold.profile is not None and cold.profile.rows == 800
    for j, column in enumerate(cold.profile.features):
        values = features[:, j][~np.isnan(features[:, j])].astype(np.float64)
        assert column.name == str(j + 1) and column.missing == int(np.isnan(features[:, j]).sum())
        assert column.mean == pytest.approx(values.mean(), rel=1e-9)
        assert column.std == pytest.approx(values.std(), rel=1e-9)
        assert (column.min, column.max) == (values.min(), values.max())
    assert set(cold.profile.predictions) == {"model"} and cold.profile.predictions["model"].count == 800
    assert cold.profile.label.value_counts == {"0": int((cold.profile.label.value_counts or {})["0"]),
                                               "1": 800 - int(cold.profile.label.value_counts["0"])}
    cached = list((root / "cache").rglob("profile-deciles.json"))
    assert len(cached) == 1
    edited = json.loads(cached[0].read_text())
    edited["features"][0]["zeros"] = 12345
    cached[0].write_text(json.dumps(edited))
    warm = _run(root, "data.txt", results="r-warm")
    assert warm.cache_hit and warm.profile.features[0].zeros == 12345
    assert warm.profile.predictions["model"].mean == pytest.approx(
        cold.profile.predictions["model"].mean, rel=1e-12)
    cached[0].write_text(json.dumps({**edited, "features": cold.profile.model_dump(
        by_alias=True)["features"]}))


def test_a_dataset_reference_finds_the_drift_planted_and_no_other(root):
    """Features 2 and 4 moved: exactly they drift; the reference is profiled once, cached."""
    moved = _run(root, "moved.txt", {"reference": {"uri": f"{root.as_uri()}/same.txt"}})
    assert moved.drift is not None and moved.drift.reference.endswith("same.txt")
    assert [f.name for f in moved.drift.features if f.drifted] == ["2", "4"]
    assert moved.drift.drifted_share == 0.5 and moved.drift.drifted
    same = _run(root, "data.txt", {"reference": {"uri": f"{root.as_uri()}/same.txt"}})
    assert not [f.name for f in same.drift.features if f.drifted] and not same.drift.drifted
    # the current pass counted into the reference's bins, exactly
    reference_cuts = same.drift.features[0]
    assert same.profile.features[0].histogram.exact and reference_cuts.psi < 0.2


def test_a_previous_evaluation_is_a_reference_by_name_in_its_namespace_only(root):
    first = _run(root, "same.txt", name="monday", results="r-named", namespace="team-a")
    later = _run(root, "moved.txt", {"reference": {"evaluation": "monday"}}, name="tuesday",
                 results="r-named", namespace="team-a")
    assert later.drift.reference == f"evaluation monday (uid {first.uid}, attempt 1)"
    assert [f.name for f in later.drift.features if f.drifted] == ["2", "4"]
    elsewhere = _run(root, "moved.txt", {"reference": {"evaluation": "monday"}}, name="tuesday",
                     results="r-named", namespace="team-b")
    assert elsewhere.drift is None
    assert any("no succeeded evaluation with a recorded profile in namespace team-b" in w
               for w in elsewhere.warnings)


def test_a_missing_reference_fails_with_its_reason_only_when_a_rule_fails(root):
    gone = {"reference": {"evaluation": "never-ran"}}
    warned = _run(root, "data.txt", gone, results="r-missing")
    assert warned.drift is None and "auc" in warned.metrics
    assert any("ReferenceNotFound" in w and "never-ran" in w for w in warned.warnings)
    strict = {**gone, "rules": [{"rows": {"min": 1}, "action": "fail"}]}
    with pytest.raises(EvaluationError) as failed:
        _run(root, "data.txt", strict, results="r-missing")
    assert failed.value.reason == Reason.ReferenceNotFound
    missing_file = {"reference": {"uri": f"{root.as_uri()}/nowhere.txt"}, **{"rules": strict["rules"]}}
    with pytest.raises(EvaluationError) as failed:
        _run(root, "data.txt", missing_file, results="r-missing")
    assert failed.value.reason == Reason.ReferenceNotFound and "nowhere.txt" in failed.value.message


def test_rules_warn_with_the_metrics_recorded_or_fail_before_them(root):
    rules = [{"maxMissingRate": 0.05, "action": "warn"}, {"rows": {"max": 100}, "action": "warn"}]
    warned = _run(root, "data.txt", {"rules": rules}, results="r-rules")
    texts = [w for w in warned.warnings if w.startswith("data quality")]
    assert len(texts) == 2 and "800 rows" in texts[1] and "auc" in warned.metrics
    with pytest.raises(EvaluationError) as failed:
        _run(root, "data.txt", {"rules": [{"maxMissingRate": 0.05}]}, results="r-rules")
    assert failed.value.reason == Reason.DataQualityFailed and "1 (" in failed.value.message


def test_a_schedules_runs_compare_with_its_first_run(root):
    """The first run has no earlier run: a profile, no drift and no warning; the next compares
    with it."""
    labels = {SCHEDULE_LABEL: "nightly"}
    quality = {"reference": {"schedule": "first"}}
    first = _run(root, "same.txt", quality, name="nightly-1", labels=labels, results="r-sched")
    assert first.drift is None and not [w for w in first.warnings if "reference" in w]
    second = _run(root, "moved.txt", quality, name="nightly-2", labels=labels, results="r-sched")
    assert second.drift.reference.startswith("the first run of schedule nightly (uid "
                                              f"{first.uid}")
    assert [f.name for f in second.drift.features if f.drifted] == ["2", "4"]


def test_table_features_keep_their_names_and_another_schema_is_named(root):
    import xgboost as xgb

    rng = np.random.default_rng(5)
    table = {"label": rng.integers(0, 2, 300), "price": rng.normal(size=300),
             "clicks": rng.poisson(3, 300).astype(float)}
    pq.write_table(pa.table(table), root / "t.parquet")
    pq.write_table(pa.table({"label": table["label"], "price": table["price"],
                             "views": table["clicks"]}), root / "other.parquet")
    xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(
        np.column_stack([table["price"], table["clicks"]]), table["label"]).save_model(root / "t.json")
    spec = {"task": "binary", "metrics": ["auc"], "model": {"uri": f"{root.as_uri()}/t.json"},
            "dataset": {"uri": f"{root.as_uri()}/t.parquet", "format": "parquet"},
            "dataQuality": {"reference": {"uri": f"{root.as_uri()}/other.parquet"},
                            "rules": [{"noConstantFeatures": True}]}}
    manifest = parse_manifest(yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1",
                                              "kind": "ModelEvaluation",
                                              "metadata": {"name": "t"}, "spec": spec}))
    engine = EngineSettings(_env_file=None, cache_uri=(root / "cache").as_uri(),
                            results_dir=root / "r-t")
    with pytest.raises(EvaluationError) as failed:
        run_manifest(manifest, Identity("t1", name="t"), engine)
    assert failed.value.reason == Reason.SchemaMismatch
    assert "not in the reference: clicks" in failed.value.message
    assert "only in the reference: views" in failed.value.message


def test_a_profile_too_large_for_the_document_is_kept_whole_beside_it(root, monkeypatch):
    """Past the document's bound, the whole profile goes to the dataset's cache entry and the
    document keeps each column's numbers; a later evaluation naming it as its reference reads
    the whole one (its sketches and bins) and finds the drift."""
    from modeleval.engine import dataquality

    monkeypatch.setattr(dataquality, "DOCUMENT_PROFILE_BYTES", 4_000)
    first = _run(root, "same.txt", name="wide", results="r-wide")
    assert first.profile.stored_at and not first.profile.features[0].sketch
    assert first.profile.features[0].mean is not None
    whole = json.loads(Path(first.profile.stored_at.removeprefix("file://")).read_text())
    assert whole["features"][0]["sketch"] and whole["storedAt"] is None
    later = _run(root, "moved.txt", {"reference": {"evaluation": "wide"}}, name="wider",
                 results="r-wide")
    assert [f.name for f in later.drift.features if f.drifted] == ["2", "4"]


def test_stored_documents_escape_every_key_mongodb_refuses_and_read_back_exactly(root):
    """Quantile ranks, label values, slice buckets and column names become map keys: stored,
    none has a "." or "$" (FerretDB refuses them), and the document reads back equal."""
    from modeleval.api.results import ResultDocument

    document = _run(root, "data.txt", results="r-keys")
    document.slices = {"price.band": {"[0.5, 1)": {"rows": 3.0}, "$100%": {"rows": 1.0}}}
    stored = document.to_stored()

    def keys(value):
        if isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from keys(item)
        elif isinstance(value, list):
            for item in value:
                yield from keys(item)

    assert not [key for key in keys(stored) if "." in key or "$" in key]
    assert ResultDocument.from_stored(stored) == document


def test_shards_profiles_merge_to_the_whole_files(root, tmp_path, monkeypatch):
    """Read in many shards (inline: each profiled on a thread beside the next shards, at most
    PROFILES_ASIDE of them waiting; merged on the driver as each comes in), the profile's
    exact numbers equal the one-shard read's, its quantiles within the sketch's error."""
    from modeleval.engine import datapaths

    waiting: list[int] = []
    took = datapaths.ShardScoring.took_profile

    def counted(self, result):
        taken = took(self, result)
        waiting.append(len(self.aside))
        return taken

    monkeypatch.setattr(datapaths.ShardScoring, "took_profile", counted)
    whole = _run(root, "same.txt", results="r-one").profile
    document = _run(root, "same.txt", results="r-many", shard_bytes=16_384,
                    cache_uri=(tmp_path / "many").as_uri())
    many = document.profile
    assert document.dataset["shards"] > 5 and many.rows == whole.rows == 5000
    assert max(waiting) == datapaths.PROFILES_ASIDE  # computed aside, and no more held
    for ours, theirs in zip(many.features, whole.features):
        assert (ours.count, ours.missing, ours.zeros, ours.min, ours.max) == \
            (theirs.count, theirs.missing, theirs.zeros, theirs.min, theirs.max)
        assert ours.mean == pytest.approx(theirs.mean, rel=1e-9, abs=1e-12)
        assert ours.std == pytest.approx(theirs.std, rel=1e-9)
        assert ours.quantiles["0.5"] == pytest.approx(theirs.quantiles["0.5"], abs=0.1)
    assert many.predictions["model"].mean == pytest.approx(whole.predictions["model"].mean, rel=1e-9)


def test_slice_values_the_reference_never_had_are_named(root):
    """sliceValuesSeen compares the slice column's values with the reference's (profiled with
    the same options, its slice columns included)."""
    import xgboost as xgb

    rng = np.random.default_rng(8)

    def table(regions: list[str], path: str) -> None:
        rows = 400
        pq.write_table(pa.table({"label": rng.integers(0, 2, rows), "x": rng.normal(size=rows),
                                 "region": rng.choice(regions, rows)}), root / path)

    table(["north", "south"], "before.parquet")
    table(["north", "south", "</b>east"], "after.parquet")
    xgb.XGBClassifier(n_estimators=2, max_depth=2).fit(
        rng.normal(size=(50, 1)), rng.integers(0, 2, 50)).save_model(root / "x.json")
    spec = {"task": "binary", "metrics": ["auc"], "model": {"uri": f"{root.as_uri()}/x.json"},
            "dataset": {"uri": f"{root.as_uri()}/after.parquet", "format": "parquet",
                        "featureColumns": ["x"]},
            "slices": [{"name": "by-region", "column": "region"}],
            "dataQuality": {"reference": {"uri": f"{root.as_uri()}/before.parquet"},
                            "rules": [{"sliceValuesSeen": True, "action": "warn"}]}}
    manifest = parse_manifest(yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1",
                                              "kind": "ModelEvaluation",
                                              "metadata": {"name": "s"}, "spec": spec}))
    engine = EngineSettings(_env_file=None, cache_uri=(root / "cache").as_uri(),
                            results_dir=root / "r-s")
    document = run_manifest(manifest, Identity("s1", name="s"), engine).document()
    assert document.profile.slice_values == {"region": ["</b>east", "north", "south"]}
    assert [w for w in document.warnings if w.startswith("data quality")] == [
        "data quality (sliceValuesSeen): slice values the reference never had: region=</b>east"]
