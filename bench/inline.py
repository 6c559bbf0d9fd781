"""Side by side, in one run: a plain pandas + scikit-learn script and `modeleval run` on the same
binary Parquet table and XGBoost model (issue 30's laptop case: 500k rows x 50 features, 100
trees), each a fresh process, as a user would run them.

  (a) script     pandas.read_parquet, XGBoost predict, scikit-learn's AUC, log loss, accuracy,
                 F1, precision and recall
  (b) modeleval  `modeleval run MANIFEST` on the same file, an empty parsed-dataset cache each
                 round (what a first run costs; its report written as usual)

Prints the median seconds of --runs rounds (the two interleaved in each round), the ratio
modeleval / script, where the plan ran the evaluation (inline or on Ray) and the plan's cost
estimates. Fails if the two disagree on the AUC.

  python bench/inline.py [--rows 500000] [--features 50] [--trees 100] [--runs 3]   (make bench)

--execution ray|inline forces the plan's choice (MODELEVAL_EXECUTION) for a comparison with
the path the cost model did not take.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
METRICS = ["auc", "logloss", "accuracy", "f1", "precision", "recall"]

SCRIPT = """
import sys, time
import numpy as np, pandas as pd, xgboost as xgb
from sklearn import metrics
table = pd.read_parquet(sys.argv[1])
labels = table.pop("label").to_numpy()
booster = xgb.Booster()
booster.load_model(sys.argv[2])
scores = booster.inplace_predict(table.to_numpy(dtype=np.float32))
decided = scores >= 0.5
print(metrics.roc_auc_score(labels, scores), metrics.log_loss(labels, scores),
      metrics.accuracy_score(labels, decided), metrics.f1_score(labels, decided),
      metrics.precision_score(labels, decided), metrics.recall_score(labels, decided))
"""


def make_data(directory: Path, rows: int, features: int, trees: int) -> tuple[Path, Path]:
    """A Parquet table of ``rows`` x ``features`` float32 values and a 0/1 label that depends
    on a few of them, and an XGBoost binary:logistic model of ``trees`` trees trained on a
    sample of it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    rng = np.random.default_rng(30)
    values = rng.standard_normal((rows, features), dtype=np.float32)
    signal = values[:, :5] @ np.array([1.0, -0.8, 0.6, 0.4, -0.2], dtype=np.float32)
    labels = (signal + rng.standard_normal(rows, dtype=np.float32) > 0).astype(np.int8)
    columns = {f"f{j}": values[:, j] for j in range(features)}
    data = directory / "table.parquet"
    pq.write_table(pa.table({**columns, "label": labels}), data)
    sample = slice(0, min(rows, 50_000))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 0},
                        xgb.DMatrix(values[sample], label=labels[sample]), num_boost_round=trees)
    model = directory / "model.json"
    booster.save_model(model)
    return data, model


def write_manifest(directory: Path, data: Path, model: Path) -> Path:
    manifest = directory / "evaluation.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
        "metadata": {"name": "inline-bench"},
        "spec": {"task": "binary", "model": {"uri": model.as_uri()},
                 "dataset": {"uri": data.as_uri(), "format": "parquet", "labelColumn": "label"},
                 "metrics": METRICS}}))
    return manifest


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Runs ``command``: its wall seconds, the CPU seconds of the process and the children it
    waited for (a Ray path's workers, started by Ray's own processes, are not counted), and
    its standard output."""
    cpu, started = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - started, _children_cpu() - cpu, done.stdout


def run_script(data: Path, model: Path) -> tuple[float, float, float]:
    seconds, cpu, out = timed([sys.executable, "-c", SCRIPT, str(data), str(model)])
    return seconds, cpu, float(out.split()[0])


def run_modeleval(directory: Path, manifest: Path,
                  execution: str | None) -> tuple[float, float, dict]:
    """One `modeleval run --json` with an empty parsed-dataset cache and results directory of
    its own (the user's cache of the report's Vega bundle stays, as on a laptop after the
    first report)."""
    home = directory / "round"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "MODELEVAL_CACHE_URI": (home / "datasets").as_uri(),
           "MODELEVAL_RESULTS_DIR": str(home / "results")}
    env.pop("MODELEVAL_MONGODB_URI", None)  # results in the round's own directory
    env.pop("RAY_ADDRESS", None)  # the laptop case: no Ray running
    if execution:
        env["MODELEVAL_EXECUTION"] = execution
    seconds, cpu, out = timed([str(VENV_BIN / "modeleval"), "run", "--json", str(manifest)], env)
    return seconds, cpu, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--execution", choices=["inline", "ray"], default=None)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="modeleval-inline-bench-"))
    try:
        data, model = make_data(directory, args.rows, args.features, args.trees)
        manifest = write_manifest(directory, data, model)
        print(f"{args.rows:,} rows x {args.features} features, {args.trees} trees: Parquet "
              f"{data.stat().st_size / 2**20:.0f} MiB, model {model.stat().st_size / 2**10:.0f} KiB; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        script, ours, document = [], [], {}
        for _ in range(args.runs):
            seconds, cpu, script_auc = run_script(data, model)
            script.append((seconds, cpu))
            seconds, cpu, document = run_modeleval(directory, manifest, args.execution)
            ours.append((seconds, cpu))
            if abs(document["metrics"]["auc"] - script_auc) > 1e-6:
                raise SystemExit(f"AUC differs: script {script_auc}, modeleval "
                                 f"{document['metrics']['auc']}")
        report(script, ours, document)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def report(script: list[tuple[float, float]], ours: list[tuple[float, float]],
           document: dict) -> None:
    resources = document.get("resources", {})
    where = "inline" if resources.get("inline") else f"Ray ({resources.get('cpus')} CPUs)"
    plan = resources.get("plan", {})
    print(f"{'path':<12}{'median s':>10}{'CPU s':>8}  runs (wall s)")
    for name, runs in (("script", script), ("modeleval", ours)):
        print(f"{name:<12}{statistics.median(t for t, _ in runs):>10.2f}"
              f"{statistics.median(c for _, c in runs):>8.2f}  "
              f"{', '.join(f'{t:.2f}' for t, _ in runs)}")
    ratio = statistics.median(t for t, _ in ours) / statistics.median(t for t, _ in script)
    cpu_ratio = statistics.median(c for _, c in ours) / statistics.median(c for _, c in script)
    print(f"modeleval / script: {ratio:.2f}x wall (target <= 1.5x), {cpu_ratio:.2f}x CPU; "
          f"load average {os.getloadavg()[0]:.1f}; ran {where}; "
          f"plan: {json.dumps(plan)}; engine timings: {json.dumps(document.get('timings', {}))}")


if __name__ == "__main__":
    main()
