"""Side by side, in one run: Evidently's DataDriftPreset and modeleval's profile + drift on the
same two Parquet files, a reference and a current table of --rows rows x --features float
features of five shapes (issue 31's case: 500k x 50, 2 cores), drift planted in every sixth
feature (a shift by half a standard deviation or a doubled spread, by turns) and in no other.

  (a) evidently  pandas.read_parquet of both files, then, timed apart (pandas in memory, as the
                 issue measured it), Report([DataDriftPreset()]).run(current, reference); a
                 process of its own, in a virtualenv of its own (make bench installs it; the
                 versions are pinned in hack/versions.env)
  (b) modeleval  both files read and profiled per shard (a shard per Parquet row group, a
                 process per core), the shards' states merged, the current table counted on the
                 reference's bins, and drift.compare on the default thresholds; timed in all and
                 as the current table's part alone (the reference's profile is cached after its
                 first use)
  (c) run        `modeleval run` of a binary evaluation of the current table (an XGBoost model
                 of --trees trees) with spec.dataQuality.reference.uri the reference table: the
                 whole evaluation (predictions, metrics, report, profile, drift), a fresh
                 process with an empty cache each round (the reference profiled in it too)

Prints the median seconds of --runs rounds (the two interleaved in each round), CPU seconds,
peak memory, the ratio, and which features each flags as drifted against the planted ones.
Fails if modeleval's drifted features are not exactly the planted ones.

  python bench/data_drift.py [--rows 500000] [--features 50] [--runs 3] [--evidently PYTHON]
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLANT_EVERY = 6  # drift planted in features 2, 8, 14, ...: every sixth, so in each of the five shapes
SHARDS = 4  # Parquet row groups per table, a shard each (500k rows: 125k a shard)

EVIDENTLY_SCRIPT = """
import json, resource, sys, time
import pandas as pd, pyarrow.parquet as pq
import evidently
from evidently import Report
from evidently.presets import DataDriftPreset
columns = [name for name in pq.read_schema(sys.argv[1]).names if name != "label"]
started = time.perf_counter()
reference = pd.read_parquet(sys.argv[1], columns=columns)
current = pd.read_parquet(sys.argv[2], columns=columns)
read = time.perf_counter() - started
started, started_cpu = time.perf_counter(), time.process_time()
snapshot = Report([DataDriftPreset()]).run(current, reference)
run, cpu = time.perf_counter() - started, time.process_time() - started_cpu
drifted, scores, count, methods = [], {}, None, set()
for metric in snapshot.dict()["metrics"]:
    config = metric["config"]
    if config["type"].endswith("DriftedColumnsCount"):
        count = int(metric["value"]["count"])
    elif config["type"].endswith("ValueDrift"):
        # A test's p-value drifts below its threshold; a distance drifts at or above it.
        value, threshold, method = metric["value"], config["threshold"], config["method"]
        methods.add(method)
        scores[config["column"]] = value
        if (value < threshold) if "p_value" in method else (value >= threshold):
            drifted.append(config["column"])
print(json.dumps({"version": evidently.__version__, "pandas": pd.__version__, "read": read,
                  "run": run, "cpu": cpu, "drifted": drifted, "count": count, "scores": scores,
                  "methods": sorted(methods),
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def planted_features(features: int) -> dict[str, str]:
    """The features with drift planted, and how: a shift by half a standard deviation and a
    doubled spread around the mean, by turns."""
    return {f"f{j}": ("shift" if n % 2 == 0 else "spread")
            for n, j in enumerate(range(2, features, PLANT_EVERY))}


def column(rng: np.random.Generator, j: int, rows: int, drift: str | None) -> np.ndarray:
    """Feature ``j``'s values: one of five shapes by ``j`` (normal, log-normal, exponential,
    uniform, counts), 1% of them missing, with ``drift`` applied."""
    shape = j % 5
    if shape == 0:
        values = rng.normal(j * 0.1, 1 + j % 3, rows)
    elif shape == 1:
        values = rng.lognormal(0, 0.5, rows)
    elif shape == 2:
        values = rng.exponential(1 + j % 4, rows)
    elif shape == 3:
        values = rng.uniform(0, 10, rows)
    else:
        values = rng.poisson(3, rows).astype(np.float64)
    if drift == "shift":
        values = values + 0.5 * values.std()
    elif drift == "spread":
        values = values.mean() + 2 * (values - values.mean())
    values[rng.random(rows) < 0.01] = np.nan
    return values.astype(np.float32)


def write_tables(directory: Path, rows: int, features: int) -> tuple[Path, Path]:
    """reference.parquet and current.parquet: the same shapes, independent draws, the planted
    features' drift in the current only; a 0/1 label in both (the engine's tables have one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    planted = planted_features(features)
    paths = []
    for name, seed, drifted in (("reference", 1, False), ("current", 2, True)):
        rng = np.random.default_rng(seed)
        columns = {f"f{j}": column(rng, j, rows, planted.get(f"f{j}") if drifted else None)
                   for j in range(features)}
        # A label that depends on two features without drift, as in both tables.
        signal = np.nan_to_num(columns["f0"]) - np.nan_to_num(columns["f3"]) / 5
        columns["label"] = (signal + rng.standard_normal(rows) > 0.5).astype(np.int8)
        path = directory / f"{name}.parquet"
        pq.write_table(pa.table(columns), path, row_group_size=-(-rows // SHARDS))
        paths.append(path)
    return paths[0], paths[1]


def write_run(directory: Path, reference: Path, current: Path, trees: int) -> Path:
    """(c)'s manifest and model: an XGBoost binary:logistic model of ``trees`` trees trained on
    a sample of the reference; the current table evaluated against the reference table."""
    import pyarrow.parquet as pq
    import xgboost as xgb

    table = pq.read_table(reference).slice(0, 50_000)
    features = np.stack([table.column(name).to_numpy() for name in table.column_names
                         if name != "label"], axis=1)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 0},
                        xgb.DMatrix(features, label=table.column("label").to_numpy()),
                        num_boost_round=trees)
    model = directory / "model.json"
    booster.save_model(model)
    manifest = directory / "evaluation.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
        "metadata": {"name": "drift-bench"},
        "spec": {"task": "binary", "model": {"uri": model.as_uri()},
                 "dataset": {"uri": current.as_uri(), "format": "parquet", "labelColumn": "label"},
                 "metrics": ["auc"], "dataQuality": {"reference": {"uri": reference.as_uri()}}}}))
    return manifest


def run_whole(directory: Path, manifest: Path) -> dict:
    """(c): one `modeleval run --json` in a fresh process, with an empty cache (and node-local
    parts) and results directory of its own."""
    home = directory / "round"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "MODELEVAL_CACHE_URI": (home / "datasets").as_uri(),
           "MODELEVAL_NODE_CACHE_DIR": str(home / "parts"),
           "MODELEVAL_RESULTS_DIR": str(home / "results")}
    env.pop("MODELEVAL_MONGODB_URI", None)
    env.pop("RAY_ADDRESS", None)  # no Ray running: the plan's own choice on this machine
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run([str(Path(sys.executable).parent / "modeleval"), "run", "--json",
                           str(manifest)], check=True, capture_output=True, text=True, env=env)
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    document = json.loads(done.stdout)
    drift = document.get("drift") or {}
    return {"run": seconds, "cpu": cpu, "timings": document.get("timings", {}),
            "inline": document.get("resources", {}).get("inline"),
            "drifted": [f["name"] for f in drift.get("features", []) if f["drifted"]],
            "compared": len(drift.get("features", []))}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def profile_row_groups(path: str, groups: list[int], cuts: dict | None):
    """A worker's shard: the row groups read as the engine reads a table, then profiled; its
    state and the process's peak resident memory."""
    import pyarrow.parquet as pq

    from modeleval.engine.profile import profile_data
    from modeleval.engine.tables import table_to_shard

    table = pq.ParquetFile(path).read_row_groups(groups)
    shard = table_to_shard(table, "label", None, None, [], path)
    state = profile_data(shard, shard.feature_names, cuts)
    return state, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warm_worker() -> None:
    import pyarrow.parquet  # noqa: F401

    import modeleval.engine.profile  # noqa: F401
    import modeleval.engine.tables  # noqa: F401


def profile_file(pool: ProcessPoolExecutor, path: Path, cuts: dict | None):
    """The file's profile: a shard per row group, profiled in the pool, merged here."""
    import pyarrow.parquet as pq

    from modeleval.engine.profile import merge_all, to_profile

    groups = pq.ParquetFile(path).metadata.num_row_groups
    done = list(pool.map(profile_row_groups, [str(path)] * groups, [[g] for g in range(groups)],
                         [cuts] * groups))
    return to_profile(merge_all([state for state, _ in done])), max(rss for _, rss in done)


def run_modeleval(pool: ProcessPoolExecutor, reference: Path, current: Path) -> dict:
    """Both files profiled and compared: the seconds in all, of the current table's part (its
    profile on the reference's bins, and the comparison), and of the comparison alone."""
    from modeleval.api.spec import DriftThresholds
    from modeleval.engine.drift import compare
    from modeleval.engine.profile import reference_cuts

    started, cpu = time.perf_counter(), _all_cpu()
    reference_profile, rss = profile_file(pool, reference, None)
    middle = time.perf_counter()
    current_profile, current_rss = profile_file(pool, current, reference_cuts(reference_profile))
    compared = time.perf_counter()
    drift = compare(current_profile, reference_profile, DriftThresholds(), reference.name)
    ended = time.perf_counter()
    return {"run": ended - started, "current": ended - middle, "compare": ended - compared,
            "cpu": _all_cpu() - cpu,
            "drifted": [f.name for f in drift.features if f.drifted],
            "measures": {f.name: f for f in drift.features},
            "maxrss": max(rss, current_rss)}


def _all_cpu() -> float:
    """This process's CPU seconds and its live workers' (the pool's processes, by /proc)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def run_evidently(python: str, reference: Path, current: Path) -> dict:
    done = subprocess.run([python, "-c", EVIDENTLY_SCRIPT, str(reference), str(current)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def evidently_python(given: str | None) -> str:
    """The Evidently virtualenv's interpreter: --evidently, or the one make bench installs."""
    if given:
        return given
    pins = dict(line.split("=", 1) for line in (ROOT / "hack/versions.env").read_text().splitlines()
                if line.startswith("EVIDENTLY_"))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = (cache / "modeleval/bench" /
            f"evidently-{pins['EVIDENTLY_VERSION']}-pandas-{pins['EVIDENTLY_PANDAS_VERSION']}")
    if not (venv / ".installed").exists():
        raise SystemExit(f"Evidently is not installed in {venv}: run `make bench` (it installs it "
                         "there) or pass --evidently PYTHON")
    return str(venv / "bin/python")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--trees", type=int, default=100, help="(c)'s model")
    parser.add_argument("--evidently", help="the Python of a virtualenv with Evidently")
    args = parser.parse_args()
    python = evidently_python(args.evidently)
    directory = Path(tempfile.mkdtemp(prefix="modeleval-drift-bench-"))
    try:
        reference, current = write_tables(directory, args.rows, args.features)
        size = (reference.stat().st_size + current.stat().st_size) / 2**20
        print(f"{args.rows:,} rows x {args.features} features, two tables (Parquet, {size:.0f} MiB "
              f"together), drift planted in {len(planted_features(args.features))} features; "
              f"{os.cpu_count()} CPUs, {args.workers} profiling processes; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        manifest = write_run(directory, reference, current, args.trees)
        theirs, ours, whole = [], [], []
        with ProcessPoolExecutor(args.workers, initializer=_warm_worker) as pool:
            for run in range(args.runs):
                theirs.append(run_evidently(python, reference, current))
                ours.append(run_modeleval(pool, reference, current))
                whole.append(run_whole(directory, manifest))
                print(f"  run {run + 1}: evidently {theirs[-1]['run']:.2f}s (+ {theirs[-1]['read']:.2f}s "
                      f"read), modeleval {ours[-1]['run']:.2f}s, modeleval run "
                      f"{whole[-1]['run']:.2f}s", flush=True)
        return report(theirs, ours, whole, planted_features(args.features), args.features)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def report(theirs: list[dict], ours: list[dict], whole: list[dict], planted: dict[str, str],
           features: int) -> int:
    def median(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    last = theirs[-1]
    print(f"\nEvidently {last['version']} (pandas {last['pandas']}), drift methods: "
          f"{', '.join(last['methods'])}")
    print("| path | median s | CPU s | peak RSS MB | runs (s) |")
    print("|---|---|---|---|---|")
    rows = [("evidently DataDriftPreset (in memory)", theirs, "run"),
            ("evidently read_parquet", theirs, "read"),
            ("modeleval profile both + drift", ours, "run"),
            ("modeleval current only + drift", ours, "current"),
            ("modeleval drift.compare alone", ours, "compare"),
            ("modeleval run (whole evaluation + drift)", whole, "run")]
    for name, runs, key in rows:
        cpu = f"{median(runs, 'cpu'):.2f}" if key == "run" else ""
        rss = f"{max(r['maxrss'] for r in runs) / 1e6:.0f}" if "maxrss" in runs[0] and key == "run" else ""
        print(f"| {name} | {median(runs, key):.2f} | {cpu} | {rss} | "
              f"{', '.join(f'{r[key]:.2f}' for r in runs)} |")
    ratio = median(theirs, "run") / median(ours, "run")
    print(f"Evidently / modeleval: {ratio:.1f}x wall ({median(theirs, 'run') / median(ours, 'current'):.1f}x "
          f"against the current table's part alone), {median(theirs, 'cpu') / median(ours, 'cpu'):.1f}x "
          f"CPU; modeleval's peak RSS is its largest worker's; load average {os.getloadavg()[0]:.1f}")
    timings = ", ".join(f"{k} {v:.2f}" for k, v in whole[-1]["timings"].items() if k != "total")
    print(f"Evidently / modeleval run: {median(theirs, 'run') / median(whole, 'run'):.1f}x wall; "
          f"modeleval run ran {'inline' if whole[-1]['inline'] else 'on Ray'}, its last round's "
          f"stages (s): {timings}")
    if set(whole[-1]["drifted"]) != set(ours[-1]["drifted"]) or whole[-1]["compared"] != features:
        print(f"modeleval run flagged {sorted(whole[-1]['drifted'])} of {whole[-1]['compared']} "
              "features, not what the profile and drift.compare flagged", file=sys.stderr)
        return 1
    return agreement(last, ours[-1], planted, features)


def agreement(theirs: dict, ours: dict, planted: dict[str, str], features: int) -> int:
    """Which features each flagged against the planted ones; non-zero where modeleval's differ."""
    expected = set(planted)
    print(f"\nplanted: {len(expected)} of {features} features "
          f"({', '.join(f'{name} {how}' for name, how in planted.items())})")
    for name, flagged in (("evidently", theirs["drifted"]), ("modeleval", ours["drifted"])):
        flagged = set(flagged)
        print(f"{name}: {len(flagged)} flagged, {len(flagged & expected)} of {len(expected)} planted "
              f"found; missed: {', '.join(sorted(expected - flagged)) or 'none'}; "
              f"flagged without drift: {', '.join(sorted(flagged - expected)) or 'none'}")
    if theirs["count"] is not None and theirs["count"] != len(theirs["drifted"]):
        print(f"  (Evidently's own DriftedColumnsCount says {theirs['count']})")
    differ = sorted(set(theirs["drifted"]) ^ set(ours["drifted"]))
    print(f"the two agree on {features - len(differ)} of {features} features"
          f"{'; differ on ' + ', '.join(differ) if differ else ''}")
    print("| feature | planted | modeleval PSI | JS | KS (p) | by | evidently score |")
    print("|---|---|---|---|---|---|---|")
    for name in sorted(expected | set(ours["drifted"]) | set(theirs["drifted"]),
                       key=lambda n: int(n[1:])):
        m = ours["measures"][name]
        print(f"| {name} | {planted.get(name, 'no')} | {m.psi:.3f} | {m.jensen_shannon:.3f} | "
              f"{m.ks:.3f} ({m.ks_p_value:.1e}) | {','.join(m.by) or '-'} | "
              f"{theirs['scores'].get(name, float('nan')):.3g} |")
    calm = [m for name, m in ours["measures"].items() if name not in expected]
    print(f"features without drift, modeleval's largest: PSI {max(m.psi for m in calm):.4f}, JS "
          f"{max(m.jensen_shannon for m in calm):.4f}, KS {max(m.ks for m in calm):.4f}; "
          f"evidently's largest score {max(theirs['scores'][m.name] for m in calm):.3g}")
    if set(ours["drifted"]) != expected:
        print("modeleval's drifted features are not the planted ones", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
