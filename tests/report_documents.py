"""Result documents for the report's tests, built the way the engine builds them: metrics,
paired bootstrap intervals, gates and curves all come from the engine's own functions, on
generated rows where the candidate is better than the baseline and challengers vary.

``text`` decorates every user-controlled string (names, namespace, slice names and values,
model URIs, warnings, challenger names), so the escaping test can plant a canary in each.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from modeleval.api.curves import ModelCurves
from modeleval.api.results import ResultDocument
from modeleval.api.spec import Confidence, GateRule
from modeleval.engine import curves as C
from modeleval.engine import intervals as bootstrap
from modeleval.engine import metrics as M
from modeleval.engine.gate import evaluate_gate

METRICS = {"binary": ["auc", "logloss", "accuracy", "f1"],
           "multiclass": ["accuracy", "logloss", "f1"],
           "regression": ["rmse", "mae", "r2"],
           "ranking": ["ndcg@10", "map@10", "precision@5"]}
PRIMARY = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse", "ranking": "ndcg@10"}
CLASSES = 4


def _plain(value: str) -> str:
    return value


def _rows(task: str, rows: int, rng: np.random.Generator):
    """(labels, qids, a function giving one model's predictions at a noise level)."""
    if task == "ranking":
        sizes = rng.integers(2, 40, max(rows // 20, 10))
        qids = np.repeat(np.arange(len(sizes)) * 2 + 1, sizes).astype(np.float64)
        labels = rng.integers(0, 5, len(qids)).astype(np.float64)
        return labels, qids, lambda noise: labels * 0.4 + rng.normal(0, noise, len(labels))
    if task == "binary":
        labels = rng.integers(0, 2, rows).astype(np.float64)
        return labels, None, lambda noise: 1 / (1 + np.exp(-(labels - 0.5) * 3
                                                           - rng.normal(0, noise * 2, rows)))
    if task == "multiclass":
        labels = rng.integers(0, CLASSES, rows).astype(np.float64)

        def probabilities(noise: float) -> np.ndarray:
            logits = np.eye(CLASSES)[labels.astype(int)] * 2 + rng.normal(0, noise * 2,
                                                                           (rows, CLASSES))
            e = np.exp(logits)
            return e / e.sum(axis=1, keepdims=True)
        return labels, None, probabilities
    labels = rng.normal(10, 3, rows)
    return labels, None, lambda noise: labels + rng.normal(0, noise * 2, rows)


def _curves(task: str, name: str, labels, prediction, qids) -> ModelCurves:
    if task == "binary":
        return ModelCurves(model=name, binary=C.binary_curves(labels, prediction))
    if task == "multiclass":
        return ModelCurves(model=name, multiclass=C.multiclass_curves(labels, prediction))
    if task == "regression":
        return ModelCurves(model=name, regression=C.RegressionState.of(labels, prediction).curves())
    state = C.RankingState.of(METRICS["ranking"], labels, prediction, qids)
    return ModelCurves(model=name, ranking=C.ranking_curves(state))


def _slices(task, labels, prediction, qids, slices, values, text, rng, resampled_slices):
    """``slices`` slice columns of ``values`` values each: metrics and intervals per value."""
    out, out_intervals = {}, {}
    unit = qids if qids is not None else np.arange(len(labels))
    for s in range(slices):
        group = rng.integers(0, values, int(unit.max()) + 1)[unit.astype(int)]
        name = text(f"slice{s}")
        out[name], out_intervals[name] = {}, {}
        for v in range(values):
            mask = group == v
            if not mask.any():
                continue
            value = text(f"v{v}")
            entry = M.compute(task, METRICS[task], labels[mask], prediction[mask],
                              None if qids is None else qids[mask])
            out[name][value] = {"rows": int(mask.sum()), **entry}
            if resampled_slices:
                out_intervals[name][value] = {
                    k: {"lower": x - 0.02, "upper": x + 0.02} for k, x in entry.items()}
    return out, out_intervals


def document(task: str, challengers: int = 1, baseline: bool = True, slices: int = 1,
             slice_values: int = 6, rows: int = 2000, text: Callable[[str], str] = _plain,
             seed: int = 29, resamples: int = 100, bootstrapped: bool = True) -> ResultDocument:
    """A succeeded evaluation of ``task``: the candidate, a baseline, ``challengers``.
    ``bootstrapped=False`` puts intervals of the same shape at +-0.01 (for tests of size, where
    the bootstrap's values do not matter and its time does)."""
    rng = np.random.default_rng(seed)
    labels, qids, predict = _rows(task, rows, rng)
    names = ["model"] + (["baseline"] if baseline else []) + [
        text(f"challenger{i}") for i in range(challengers)]
    # A better, a worse and an indistinguishable challenger, then more of the same.
    noise = [0.6] + ([0.8] if baseline else []) + [(0.5, 1.0, 0.79, 0.65, 0.9, 0.7)[i % 6]
                                                   for i in range(challengers)]
    predictions = [predict(n) for n in noise]
    metric_names = METRICS[task]
    scored = [M.compute(task, metric_names, labels, p, qids) for p in predictions]
    confidence = Confidence(level=0.95, resamples=resamples, seed=1)
    if bootstrapped:
        resampled = bootstrap.bootstrap(task, metric_names, labels, predictions, qids, confidence)
    else:
        resampled = [{n: np.array([v - 0.01, v + 0.01]) for n, v in s.items()} for s in scored]
    intervals = [bootstrap.intervals(r, 0.95) for r in resampled]
    rules = [GateRule.model_validate({"metric": PRIMARY[task], "maxRegression": 0.001}),
             GateRule.model_validate({"metric": metric_names[1], "requireSignificant": True})]

    def compared(m: int) -> dict:
        if not baseline:
            return {}
        return {"deltas": {n: scored[m][n] - scored[1][n] for n in scored[m]},
                "delta_intervals": bootstrap.delta_intervals(resampled[m], resampled[1], 0.95)}

    def gate(m: int) -> dict:
        return evaluate_gate(rules, scored[m], scored[1] if baseline else None,
                             compared(m).get("delta_intervals"))

    first = 2 if baseline else 1
    slice_metrics, slice_intervals = _slices(task, labels, predictions[0], qids, slices,
                                             slice_values, text, rng, True)
    return ResultDocument.model_validate({
        "_id": "uid-1:1", "uid": "uid-1", "attempt": 1, "name": text(f"{task}-eval"),
        "namespace": text("team"), "status": "Succeeded", "primaryMetric": PRIMARY[task],
        "metrics": scored[0], "intervals": intervals[0],
        "confidence": {"level": 0.95, "resamples": resamples, "seed": 1,
                       "unit": "queries" if task == "ranking" else "rows"},
        "slices": slice_metrics, "sliceIntervals": slice_intervals,
        "baseline": {"model": {"uri": text("s3://models/baseline.json"), "fingerprint": "b" * 16},
                     "metrics": scored[1], "intervals": intervals[1], **compared(0)}
        if baseline else None,
        "gate": gate(0),
        "challengers": [{"name": names[m], "model": {"uri": text(f"s3://models/{names[m]}.json"),
                                                     "fingerprint": f"{m}" * 16},
                         "metrics": scored[m], "intervals": intervals[m], **compared(m),
                         "gate": gate(m)} for m in range(first, len(names))],
        "warnings": [text("3 rows had no label")],
        "rows": int(len(labels)), "queries": int(len(np.unique(qids))) if qids is not None else None,
        "model": {"uri": text("s3://models/candidate.json"), "format": "xgboost",
                  "fingerprint": "a" * 16, "features": 136},
        "dataset": {"uri": text("s3://data/test.parquet"), "format": "parquet",
                    "fingerprint": "d" * 16, "bytes": 123_456_789, "shards": 4,
                    "features": 136, "missingValues": 17},
        "timings": {"prepareDataset": 1.2, "inference": 0.8, "metrics": 0.1, "total": 2.5},
        "resources": {"mode": "local", "cpus": 8, "gpus": 0, "actors": 2},
        "versions": {"modeleval": "0.1.0", "python": "3.11.2", "xgboost": "3.0.0"},
        "cacheHit": True, "predictionsUri": text("s3://out/predictions/"),
        "schedule": text("nightly"), "finishedAt": "2026-12-06T08:00:00+00:00",
        "curves": [_curves(task, n, labels, p, qids).model_dump(by_alias=True, mode="json")
                   for n, p in zip(names, predictions)],
    })


def failed_document(text: Callable[[str], str] = _plain) -> ResultDocument:
    from modeleval.api.reasons import Reason

    return ResultDocument.failure("uid-2", 1, text("broken-eval"), text("team"),
                                  Reason.ModelNotFound, text("s3://models/missing.json: no such key"),
                                  False, text("s3://models/missing.json"),
                                  text("s3://data/test.parquet"),
                                  finished_at="2026-12-06T08:00:00+00:00")
