"""Result documents for the dashboard's tests and benchmark, made by the engine's own metric,
interval and curve functions on generated rows (as an evaluation makes them), so the pages are
tested on documents shaped exactly like stored ones."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import numpy as np

from modeleval.api.curves import ModelCurves
from modeleval.api.results import (BaselineResult, ConfidenceResult, GateResult, GateRuleResult,
                                   Interval, ResultDocument, document_id)
from modeleval.engine import curves as C
from modeleval.engine import metrics as M

CANARY = "<script>window.__pwned=1</script>"
ATTRIBUTE_CANARY = '"><img src=x onerror="window.__pwned=1">'
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


@cache
def binary_rows(seed: int, rows: int = 2_000, signal: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    scores = np.clip(rng.normal(0.5 + signal * (labels - 0.5), 0.25), 0, 1)
    return labels, scores


@cache
def binary_curves(seed: int, model: str = "model") -> ModelCurves:
    labels, scores = binary_rows(seed)
    return ModelCurves(model=model, binary=C.binary_curves(labels, scores))


def binary_metrics(seed: int) -> dict[str, float]:
    labels, scores = binary_rows(seed)
    return {"auc": float(M.roc_auc(labels, scores)),
            "accuracy": float(np.mean((scores > 0.5) == labels))}


def document(uid: str, *, name: str, namespace: str = "team-a", seed: int = 1,
             model_uri: str = "s3://models/churn/v1.json", schedule: str | None = None,
             finished: datetime | None = None, attempt: int = 1, curves: bool = True,
             slice_value: str = "mobile", metric_name: str | None = None,
             label: str = "fraud", auc: float | None = None) -> ResultDocument:
    """A succeeded binary evaluation: metrics with intervals, a baseline, a gate, one slice and
    the candidate's curves. ``auc`` overrides the measured AUC (a schedule's trend)."""
    metrics = binary_metrics(seed)
    if auc is not None:
        metrics["auc"] = auc
    if metric_name is not None:
        metrics[metric_name] = 0.5
    intervals = {k: Interval(lower=v - 0.01, upper=min(v + 0.01, 1.0)) for k, v in metrics.items()}
    baseline = {k: v - 0.02 for k, v in metrics.items()}
    return ResultDocument(
        _id=document_id(uid, attempt), uid=uid, attempt=attempt, name=name, namespace=namespace,
        status="Succeeded", primary_metric="auc", metrics=metrics, intervals=intervals,
        confidence=ConfidenceResult(level=0.95, resamples=200, seed=seed, unit="rows"),
        slices={"device": {slice_value: {"rows": 1000, **metrics}}},
        slice_intervals={"device": {slice_value: intervals}},
        baseline=BaselineResult(model={"uri": "s3://models/churn/champion.json"}, metrics=baseline,
                                deltas={k: metrics[k] - baseline[k] for k in metrics}),
        gate=GateResult(passed=True, rules=[GateRuleResult(metric="auc", value=metrics["auc"],
                                                           passed=True, message="auc >= 0.5")]),
        rows=2_000, model={"uri": model_uri, "format": "xgboost", "labels": {"team": label}},
        dataset={"uri": "s3://data/churn.parquet", "format": "parquet", "features": 12},
        timings={"total": 1.5, "inference": 0.2}, schedule=schedule,
        versions={"modeleval": "0.1"}, curves=[binary_curves(seed % 8)] if curves else None,
        finished_at=(finished or START).isoformat())


def failed(uid: str, name: str, namespace: str = "team-a",
           finished: datetime | None = None) -> ResultDocument:
    from modeleval.api.reasons import Reason

    return ResultDocument.failure(uid, 1, name, namespace, Reason.ModelNotFound,
                                  "no object at s3://models/missing.json", False,
                                  "s3://models/missing.json", "s3://data/churn.parquet",
                                  finished_at=(finished or START).isoformat())


def many(count: int, seed: int = 29) -> list[ResultDocument]:
    """``count`` documents over a few namespaces, models and schedules, a month apart at most;
    one in ten failed."""
    rng = np.random.default_rng(seed)
    found = []
    for i in range(count):
        finished = START + timedelta(minutes=int(rng.integers(0, 43_200)))
        namespace = f"team-{'abcdefgh'[i % 8]}"
        uid = f"e{i:06d}"
        if i % 10 == 9:
            found.append(failed(uid, f"eval-{i}", namespace, finished))
            continue
        found.append(document(uid, name=f"eval-{i}", namespace=namespace, seed=i % 8,
                              model_uri=f"s3://models/m{i % 37}/model.json",
                              schedule=f"nightly-{i % 2}" if i % 3 == 0 else None,
                              finished=finished, auc=float(rng.uniform(0.6, 0.9))))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def ferretdb() -> Iterator[str]:
    """The test bed's FerretDB (v1, SQLite backend) alone, on a free loopback port, its data
    in a temp dir removed afterwards; yields its URI."""
    from testbed.tools import Tools, read_versions, tools_dir

    binary = Tools(tools_dir(), read_versions()).ferretdb
    data = Path(tempfile.mkdtemp(prefix="ferretdb-"))
    port = free_port()
    process = subprocess.Popen([str(binary), "--handler=sqlite", f"--sqlite-url=file:{data}/",
                                f"--listen-addr=127.0.0.1:{port}"], cwd=data,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"FerretDB ({binary}) did not start") from None
                time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(data, ignore_errors=True)
