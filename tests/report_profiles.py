"""Profiles and drift for the report's and the command line's tests, made by the engine's own
functions: generated shards profiled (``profile_data``, ``profile_predictions``), merged and
made the document's profile (``to_profile``); a second dataset with drift planted in chosen
features compared with the first (``drift.compare``).

``names`` lets a test give the features hostile names (a Parquet or CSV header is user data).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modeleval.api.profile import DataDrift, DatasetProfile
from modeleval.api.results import ResultDocument
from modeleval.api.spec import DriftThresholds
from modeleval.engine.drift import compare
from modeleval.engine.profile import (merge_all, profile_data, profile_predictions,
                                      reference_cuts, to_profile)
from modeleval.engine.shard import ParsedShard

PLANTED = (3, 7, 11)  # the columns with drift planted


def feature_names(features: int) -> list[str]:
    return [f"f{index}" for index in range(features)]


def shard(rows: int, features: int, seed: int, planted: Sequence[int] = (),
          ranking: bool = True) -> ParsedShard:
    """Normal features (f1 with 30% missing, f2 constant, f5 holding infinities), drift planted
    as a shift of 1.5 sd in the columns ``planted``."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 1.0, (rows, features))
    for column in planted:
        matrix[:, column] += 1.5
    if features > 5:
        matrix[rng.random(rows) < 0.3, 1] = np.nan
        matrix[:, 2] = 4.0
        matrix[:3, 5] = np.inf
    qids = np.repeat(np.arange(rows // 10 + 1), rng.integers(5, 15, rows // 10 + 1))[:rows] \
        if ranking else None
    return ParsedShard(rng.integers(0, 5, rows).astype(np.float32),
                       None if qids is None else qids.astype(np.float64),
                       matrix.astype(np.float32))


def profile_of(data: ParsedShard, names: list[str], models: Sequence[str],
               cuts: dict | None = None) -> DatasetProfile:
    """Two shards' profiles merged, each with every model's predictions."""
    half = data.rows // 2
    states = []
    for start, stop in ((0, half), (half, data.rows)):
        piece = ParsedShard(data.labels[start:stop],
                            None if data.qids is None else data.qids[start:stop],
                            data.features[start:stop])
        scores = {model: np.nan_to_num(piece.features[:, 0]) * (1 + index * 0.5) + index
                  for index, model in enumerate(models)}
        states += [profile_data(piece, names, cuts), profile_predictions(scores)]
    return to_profile(merge_all(states))


def profiled(document: ResultDocument, features: int = 12, rows: int = 3_000,
             names: list[str] | None = None, drift: bool = True,
             planted: Sequence[int] = PLANTED, reference: str = "evaluation weekly-1"
             ) -> ResultDocument:
    """``document`` with a profile of generated data (and, with ``drift``, its comparison with a
    reference dataset without the drift ``planted``)."""
    names = names or feature_names(features)
    models = ["model"] + (["baseline"] if document.baseline else []) + [
        challenger.name for challenger in document.challengers]
    ranking = document.queries is not None
    reference_profile = profile_of(shard(rows, features, seed=1, ranking=ranking), names, models)
    current = profile_of(shard(rows, features, seed=2, planted=planted if drift else (),
                               ranking=ranking), names,
                         models, reference_cuts(reference_profile) if drift else None)
    data_drift: DataDrift | None = None
    if drift:
        thresholds = DriftThresholds.model_validate({"driftShare": 0.2})
        data_drift = compare(current, reference_profile, thresholds, reference)
    return document.model_copy(update={"profile": current, "drift": data_drift})
