"""A result document's profile and drift for the controller's tests, made by the engine's own
functions (profile, merge, compare) on generated data with drift planted in chosen features."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from modeleval.api.profile import DataDrift, DatasetProfile
from modeleval.api.spec import DriftThresholds
from modeleval.engine.drift import compare
from modeleval.engine.profile import profile_data, profile_predictions, merge_all, reference_cuts, to_profile
from modeleval.engine.shard import ParsedShard

FEATURES = 8
ROWS = 4_000


def shard(seed: int, planted: tuple[str, ...] = ()) -> ParsedShard:
    """LETOR-shaped rows (features named "1".."8"); each planted feature shifted by 1.5 sd."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (ROWS, FEATURES))
    for name in planted:
        x[:, int(name) - 1] += 1.5
    qids = np.repeat(np.arange(ROWS // 20), 20)
    return ParsedShard(rng.integers(0, 3, ROWS).astype(np.float32), qids, x.astype(np.float32))


@lru_cache(maxsize=None)
def reference() -> DatasetProfile:
    return to_profile(profile_data(shard(seed=1)))


@lru_cache(maxsize=None)
def profile(planted: tuple[str, ...] = ()) -> DatasetProfile:
    """The current data's profile on the reference's bins, with the model's predictions."""
    data = shard(seed=2, planted=planted)
    scores = np.nan_to_num(data.features[:, 0])
    cuts = reference_cuts(reference())
    return to_profile(merge_all([profile_data(data, cuts=cuts),
                                 profile_predictions({"model": scores})]))


@lru_cache(maxsize=None)
def data_drift(planted: tuple[str, ...] = (), drift_share: float = 0.3,
               name: str = "evaluation weekly-1") -> DataDrift:
    """The current data against the reference: the planted features drift, no other."""
    thresholds = DriftThresholds.model_validate({"driftShare": drift_share})
    return compare(profile(planted), reference(), thresholds, name)
