"""Drift against a reference profile on generated data with drift planted in chosen features
(detected = planted), its measures against reference computations, the schema check, and the
quality rules' warnings and failures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modeleval.api.spec import DataQuality, DriftThresholds
from modeleval.engine.drift import compare, jensen_shannon, ks_error, psi
from modeleval.engine.errors import DatasetError, Reason
from modeleval.engine.profile import (decoded_kll, merge_all, profile_data, reference_cuts,
                                      to_profile)
from modeleval.engine.quality import check, enforce
from modeleval.engine.shard import ParsedShard

FEATURES = 10
PLANTED = {"3": "shift", "7": "scale", "9": "shift"}


def data(rows: int, seed: int, planted: dict[str, str] | None = None) -> ParsedShard:
    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 1.0, (rows, FEATURES))
    x[:, 4] = rng.integers(0, 4, rows)  # a discrete feature
    for name, kind in (planted or {}).items():
        j = int(name) - 1
        if kind == "scale":
            x[:, j] = 5.0 + (x[:, j] - 5.0) * 2.0
        else:
            x[:, j] += 0.6
    x[rng.random(x.shape) < 0.02] = np.nan
    qids = np.repeat(np.arange(rows // 20 + 1), 20)[:rows]
    return ParsedShard(rng.integers(0, 3, rows).astype(np.float32), qids, x.astype(np.float32),
                       {"market": np.array(["us", "uk", "de"])[rng.integers(0, 3, rows)]})


@pytest.fixture(scope="module")
def profiles():
    reference_data = data(30_000, seed=1)
    reference = to_profile(profile_data(reference_data, slice_columns=["market"]))
    cuts = reference_cuts(reference)
    current_data = data(20_000, seed=2, planted=PLANTED)
    pieces = [ParsedShard(current_data.labels[a:b], current_data.qids[a:b],
                          current_data.features[a:b], {"market": current_data.extra["market"][a:b]})
              for a, b in ((0, 8_000), (8_000, 20_000))]
    current = to_profile(merge_all([profile_data(piece, cuts=cuts, slice_columns=["market"])
                                    for piece in pieces]))
    return reference_data, reference, current_data, current


def test_detected_drift_is_the_planted_drift(profiles):
    _, reference, _, current = profiles
    drift = compare(current, reference, DriftThresholds(), "evaluation weekly-1")
    assert {f.name for f in drift.features if f.drifted} == set(PLANTED)
    assert drift.drifted_share == pytest.approx(len(PLANTED) / FEATURES)
    assert not drift.drifted  # 30% drifted, below the default share of 50%
    assert compare(current, reference, DriftThresholds.model_validate({"driftShare": 0.3}),
                   "r").drifted
    most = drift.most_drifted(3)
    assert {f.name for f in most} == set(PLANTED) and most[0].psi >= most[1].psi >= most[2].psi
    for feature in drift.features:
        if feature.name in PLANTED:
            assert feature.ks_p_value < 1e-6 and set(feature.by) >= {"psi", "ks"}
        else:
            assert feature.psi < 0.05 and feature.ks < 0.05 and not feature.by


def test_psi_and_jensen_shannon_equal_a_reference_computation(profiles):
    _, reference, current_data, current = profiles
    drift = {f.name: f for f in compare(current, reference, DriftThresholds(), "r").features}
    for j, column in enumerate(reference.features):
        values = current_data.features[:, j]
        edges = np.concatenate([[-np.inf], column.histogram.cuts, [np.inf]])
        actual, _ = np.histogram(values[~np.isnan(values)], edges)  # the bins, counted apart
        expected = np.array(column.histogram.counts)
        p, q = expected / expected.sum(), actual / actual.sum()
        p_floor, q_floor = np.maximum(p, 1e-6), np.maximum(q, 1e-6)
        assert drift[column.name].psi == pytest.approx(
            np.sum((q_floor - p_floor) * np.log(q_floor / p_floor)), rel=1e-9, abs=1e-12)
        assert drift[column.name].jensen_shannon == pytest.approx(
            jensenshannon(p, q, base=2), rel=1e-9, abs=1e-12)


def test_ks_is_within_the_sketches_error_of_scipys(profiles):
    reference_data, reference, current_data, current = profiles
    drift = {f.name: f for f in compare(current, reference, DriftThresholds(), "r").features}
    for j, column in enumerate(reference.features):
        first, second = reference_data.features[:, j], current_data.features[:, j]
        exact = stats.ks_2samp(first[~np.isnan(first)], second[~np.isnan(second)])
        error = ks_error(decoded_kll(column.sketch), decoded_kll(current.features[j].sketch))
        feature = drift[column.name]
        assert abs(feature.ks - exact.statistic) <= error, column.name
        n, m = reference.features[j].count, current.features[j].count
        effective = round(n * m / (n + m))
        # the exact distribution's; past 10,000 samples the limiting one's, within 0.3 / sqrt(n)
        # of it (measured: 0.0027 at 10,000, 0.0006 at 100,000; the sketched statistic's own
        # error moves the p-value far more)
        exact = stats.kstwo.sf(feature.ks, effective)
        if effective <= 10_000:
            assert feature.ks_p_value == pytest.approx(exact, rel=1e-9)
        else:
            assert abs(feature.ks_p_value - exact) <= 0.3 / np.sqrt(effective)


def test_past_ten_thousand_samples_the_p_value_is_the_limit_distributions_and_fast():
    """Where SciPy's exact distribution is slow (about 0.1 s a call), the limiting one is read
    instead: within 1% relative of the exact p-value, and 136 features in well under a second."""
    import time

    from modeleval.engine.drift import ks_p_value

    started = time.perf_counter()
    for _ in range(136):
        value = ks_p_value(0.01, 120_000)
    assert time.perf_counter() - started < 0.5
    assert value == pytest.approx(stats.kstwo.sf(0.01, 120_000), rel=0.01)
    assert ks_p_value(0.05, 5_000) == stats.kstwo.sf(0.05, 5_000)


def test_the_measures_on_known_shares():
    assert psi([1, 1], [1, 1]) == 0.0 and jensen_shannon([3, 1], [6, 2]) == 0.0
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * np.log(0.9 / 0.5) - 0.4 * np.log(0.1 / 0.5))


def test_a_reference_with_other_features_is_a_schema_mismatch_naming_them(profiles):
    _, reference, _, current = profiles
    other = reference.model_copy(update={"features": [
        *reference.features[:8], reference.features[8].model_copy(update={"name": "clicks"})]})
    with pytest.raises(DatasetError) as raised:
        compare(current, other, DriftThresholds(), "s3://bucket/train.txt")
    assert raised.value.reason == Reason.SchemaMismatch
    assert "not in the reference: 9, 10" in raised.value.message
    assert "only in the reference: clicks" in raised.value.message


def rules(*items: dict) -> DataQuality:
    return DataQuality.model_validate({"rules": list(items)}).quality_rules


@pytest.fixture(scope="module")
def altered(profiles):
    """The current data with a constant 11th feature and a slice value the reference lacks."""
    _, _, current_data, _ = profiles
    features = np.column_stack([current_data.features,
                                np.full(current_data.rows, 3.0, np.float32)])
    market = np.where(np.arange(current_data.rows) == 7, "fr", current_data.extra["market"])
    shard = ParsedShard(current_data.labels, current_data.qids, features, {"market": market})
    return to_profile(profile_data(shard, slice_columns=["market"]))


@pytest.mark.parametrize("holding, breached, named, on", [
    ({"maxMissingRate": 0.05}, {"maxMissingRate": 0.01}, "missing rate above 1.0%: 1 (", "current"),
    ({"maxMissingRate": 0.05, "features": ["5"]}, {"maxMissingRate": 0.01, "features": ["5"]},
     "missing rate above 1.0%: 5 (", "current"),
    ({"noConstantFeatures": True}, {"noConstantFeatures": True}, "constant features: 11",
     "altered"),
    ({"labelRange": {"min": 0, "max": 2}}, {"labelRange": {"max": 1}},
     "labels outside [-inf, 1]: min 0, max 2", "current"),
    ({"rows": {"min": 20_000}}, {"rows": {"min": 1, "max": 19_999}}, "20,000 rows", "current"),
    ({"queries": {"max": 1000}}, {"queries": {"min": 1001}}, "1,000 queries", "current"),
    ({"sliceValuesSeen": True}, {"sliceValuesSeen": True}, "market=fr", "altered"),
])
def test_each_rule_holds_warns_or_fails(profiles, altered, holding, breached, named, on):
    _, reference, _, current = profiles
    assert check(rules(holding), current, reference) == []
    breaching = current if on == "current" else altered
    found = check(rules({**breached, "action": "warn"}), breaching, reference)
    assert len(found) == 1 and named in found[0].message
    assert named in enforce(found)[0]  # warn: a warning, the evaluation goes on
    with pytest.raises(DatasetError) as raised:
        enforce(check(rules(breached), breaching, reference))  # fail is the default
    assert raised.value.reason == Reason.DataQualityFailed and named in raised.value.message


def test_a_relayed_document_drops_the_profile_over_the_line_limit_and_keeps_the_drift(profiles):
    from modeleval.api.results import MAX_DOCUMENT_LINE, ResultDocument

    _, reference, _, current = profiles
    wide = current.model_copy(update={"features": current.features * 40})  # 400 columns
    drift = compare(current, reference, DriftThresholds(), "r")
    doc = ResultDocument(_id="u:1", uid="u", attempt=1, name="n", namespace="ns",
                         status="Succeeded", metrics={"ndcg@10": 0.5}, profile=wide, drift=drift)
    assert len(doc.to_json()) > MAX_DOCUMENT_LINE
    relayed = ResultDocument.from_log(doc.log_line(), "u", 1, "n", "ns")
    assert relayed.profile is None and relayed.drift == drift
    assert "profile was left out" in relayed.warnings[-1]
    fits = doc.model_copy(update={"profile": current})
    assert ResultDocument.from_log(fits.log_line(), "u", 1, "n", "ns").profile == current
