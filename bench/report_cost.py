"""What the report costs an evaluation (issue 29, point 9), measured side by side in one run by
`make bench` (bench/engine.py calls :func:`report_cost` at its end; alone:
``python bench/report_cost.py [--rows 240000] [--report-rows 3000000] [--runs 3]``).

For each evaluation: warm (its parsed parts cached first, not timed), ``--runs`` rounds, each
round the evaluation with ``EngineSettings.report`` false, then true plus
``modeleval.report.render(document)`` and writing the HTML file (where the report package is
not there, the curves alone, and it says so). The evaluations:

  ranking   the bench's MSLR-shaped file (``--rows`` x 136 features, its shards compute the
            ranking curves beside the per-query metrics)
  binary    ``--rows`` and ``--report-rows`` rows x 8 features (the AUC's sort of every row
            on the driver, which the curves share)

It prints the medians, the added seconds and percent against the target (at most 0.5 s or 5%,
whichever is larger; and no more at ``--report-rows`` than at ``--rows``), the peak memory
(driver plus Ray workers, above the value at the start of each evaluation) with the report off
and on, and the size of the report of an evaluation of 8 models and 50 slice values (target
5 MB). A report, never a failure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ADDED_SECONDS, ADDED_FRACTION = 0.5, 0.05
EXTRA_PEAK_BYTES = 64 * 2**20
REPORT_BYTES = 5 * 2**20
BINARY_FEATURES = 8


def _renderer():
    """``modeleval.report.render``, or None where the report package is not there yet."""
    try:
        from modeleval.report import render
    except ImportError:
        return None
    return render


@dataclass
class Case:
    """One evaluation measured with the report off and on."""

    label: str
    rows: int
    manifest: object
    off: list[float]
    on: list[float]
    peak_off: int = 0
    peak_on: int = 0
    render_s: list[float] | None = None
    curves_s: list[float] | None = None
    cpu_off: list[float] | None = None
    cpu_on: list[float] | None = None

    @property
    def added(self) -> float:
        return statistics.median(self.on) - statistics.median(self.off)

    @property
    def added_cpu(self) -> float:
        """The driver's CPU seconds the report adds (medians): where a binary evaluation's
        report work all runs, and what another process on the machine disturbs least."""
        return statistics.median(self.cpu_on or [0.0]) - statistics.median(self.cpu_off or [0.0])

    @property
    def parts(self) -> float:
        """The report's own seconds: the engine's curves timing and rendering plus writing
        (medians): what the report adds by construction, less exposed to a busy machine than
        the difference of two evaluations' wall times. A ranking evaluation's shards compute
        their curve states in its tasks, beside the per-query metrics: not in these."""
        return (statistics.median(self.curves_s or [0.0])
                + statistics.median(self.render_s or [0.0]))

    @property
    def bound(self) -> float:
        return max(ADDED_SECONDS, ADDED_FRACTION * statistics.median(self.off))


def _manifest(text: str):
    from modeleval.runner import parse_manifest

    return parse_manifest(text)


def _binary_files(directory: Path, rows: int, seed: int) -> tuple[str, str, np.ndarray]:
    """A binary LETOR file of ``rows`` lines (the MSLR-shaped generator's, relevant or not), a
    small XGBoost classifier for it, and the file's first feature."""
    import xgboost as xgb

    from modeleval.demo import LetorData, letor_bytes, make_letor

    data = make_letor(rows, BINARY_FEATURES, mean_group=20, seed=seed)
    path = directory / f"binary-{rows}.txt"
    path.write_bytes(letor_bytes(LetorData(data.features, (data.labels > 0).astype(np.int64),
                                           data.qids)))
    model = directory / "binary.json"
    if not model.exists():
        train = make_letor(20_000, BINARY_FEATURES, mean_group=20, seed=seed + 1)
        xgb.XGBClassifier(n_estimators=50, max_depth=6).fit(
            train.features, (train.labels > 0).astype(int)).save_model(model)
    return model.as_uri(), path.as_uri(), data.features[:, 0]


def _binary_manifest(model_uri: str, data_uri: str, extra: str = ""):
    return _manifest(f"""
apiVersion: modeleval.dev/v1alpha1
kind: ModelEvaluation
metadata: {{name: report-cost}}
spec:
  task: binary
  model: {{uri: "{model_uri}"}}
  dataset: {{uri: "{data_uri}", numFeatures: {BINARY_FEATURES}}}
  metrics: [auc, logloss, f1]
{extra}""")


def _evaluate(manifest, directory: Path, report: bool, render) -> tuple[float, float, object]:
    """One warm evaluation: its seconds (with the report, rendering and writing it too), the
    seconds rendering and writing took, and its result (its ``driver_cpu``: the driver's CPU
    seconds for all of it)."""
    from modeleval.engine.evaluate import Evaluator, Identity
    from modeleval.settings import EngineSettings

    settings = EngineSettings(cache_uri=(directory / "cache").as_uri(),
                              node_cache_dir=directory / "parts",
                              results_dir=directory / "results", report=report)
    started, cpu = time.perf_counter(), time.process_time()
    result = Evaluator(manifest.spec, Identity(uuid.uuid4().hex), settings).run()
    rendered = time.perf_counter()
    if report and render is not None:
        (directory / f"report-{result.identity.uid}.html").write_text(render(result.document()))
    done = time.perf_counter()
    result.driver_cpu = time.process_time() - cpu
    return done - started, done - rendered, result


def _measure(case: Case, directory: Path, runs: int, render, peak_memory) -> None:
    _evaluate(case.manifest, directory, False, None)  # fills the cache (not timed)
    _evaluate(case.manifest, directory, True, render)  # imports, workers started
    for run in range(runs):
        for report in (False, True):
            with peak_memory() as memory:
                seconds, rendering, result = _evaluate(case.manifest, directory, report, render)
            if report:
                case.cpu_on = (case.cpu_on or []) + [result.driver_cpu]
                case.curves_s = (case.curves_s or []) + [result.timings.get("curves", 0.0)]
                case.on.append(seconds)
                case.peak_on = max(case.peak_on, memory.peak)
                case.render_s = (case.render_s or []) + [rendering]
            else:
                case.cpu_off = (case.cpu_off or []) + [result.driver_cpu]
                case.off.append(seconds)
                case.peak_off = max(case.peak_off, memory.peak)
        print(f"  report cost, run {run + 1} {case.label}: off {case.off[-1]:.2f}s, "
              f"on {case.on[-1]:.2f}s", flush=True)


def _report_size(directory: Path, render) -> tuple[int, int] | None:
    """The bytes of the report of a binary evaluation of 8 models (a candidate, a baseline and
    6 challengers) and 50 slice values, with intervals; and of its result document."""
    if render is None:
        return None
    model_uri, data_uri, first = _binary_files(directory, 20_000, seed=5)
    edges = ", ".join(f"{e:.4f}" for e in np.unique(np.quantile(first, np.linspace(0.02, 0.98, 49))
                                                    .round(4)))
    challengers = "\n".join(f"  - {{name: challenger-{i}, model: {{uri: \"{model_uri}\"}}}}"
                            for i in range(6))
    manifest = _binary_manifest(model_uri, data_uri, f"""  baseline: {{model: {{uri: "{model_uri}"}}}}
  challengers:
{challengers}
  confidence: {{resamples: 200}}
  slices: [{{name: first-feature, feature: 0, buckets: [{edges}]}}]""")
    _, _, result = _evaluate(manifest, directory, True, None)
    document = result.document()
    assert len(document.curves) == 8 and len(document.slices["first-feature"]) == 50
    return len(render(document).encode()), len(document.to_json().encode())


def report_cost(directory: Path, ranking_manifest, rows: int, report_rows: int, runs: int,
                peak_memory, seed: int = 42) -> list[str]:
    """Measures every case in the Ray session already started; returns the lines to print."""
    render = _renderer()
    started = time.perf_counter()
    cases = [Case(f"ranking {rows:,} x 136", rows, ranking_manifest, [], [])] \
        if ranking_manifest is not None else []
    for n in sorted({rows, report_rows} - {0}):
        model_uri, data_uri, _ = _binary_files(directory, n, seed)
        cases.append(Case(f"binary {n:,} x {BINARY_FEATURES}", n,
                          _binary_manifest(model_uri, data_uri), [], []))
    for case in cases:
        _measure(case, directory, runs, render, peak_memory)
    size = _report_size(directory, render)
    lines = [f"\nthe report's cost (medians of {runs} rounds; on = the evaluation with its "
             "curves" + (", modeleval.report.render and writing the HTML file)" if render else
                         " only: modeleval.report is not there yet)"),
             "| evaluation | report off s | report on s | added s | added % | target | curves s "
             "| render+write s | report's parts s | driver CPU added s | peak off MB | peak on MB "
             "| extra peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        off = statistics.median(c.off)
        lines.append(f"| {c.label} | {off:.2f} | {statistics.median(c.on):.2f} | {c.added:+.2f} | "
                     f"{100 * c.added / off:+.1f}% | {'met' if c.added <= c.bound else 'NOT met'} "
                     f"(<= {c.bound:.2f} s; parts: "
                     f"{'met' if c.parts <= c.bound else 'NOT met'}) | "
                     f"{statistics.median(c.curves_s or [0.0]):.3f} | "
                     f"{statistics.median(c.render_s or [0.0]):.3f} | {c.parts:.3f} | "
                     f"{c.added_cpu:+.3f} | "
                     f"{c.peak_off / 1e6:.0f} | "
                     f"{c.peak_on / 1e6:.0f} | {(c.peak_on - c.peak_off) / 1e6:+.0f} |")
    binary = [c for c in cases if c.label.startswith("binary")]
    if len(binary) == 2:
        small, large = binary
        lines.append(f"no more at {large.rows:,} rows than at {small.rows:,}: the report's parts "
                     f"{large.parts:.3f} s vs {small.parts:.3f} s: "
                     f"{'met' if large.parts <= small.parts else 'NOT met'}; driver CPU added "
                     f"{large.added_cpu:+.3f} s vs {small.added_cpu:+.3f} s: "
                     f"{'met' if large.added_cpu <= small.added_cpu else 'NOT met'}; added wall time "
                     f"{large.added:+.2f} s vs {small.added:+.2f} s: "
                     f"{'met' if large.added <= small.added else 'NOT met'}")
        extra = large.peak_on - large.peak_off
        lines.append(f"extra peak memory at {large.rows:,} rows: {extra / 2**20:+.0f} MiB: "
                     f"{'met' if extra <= EXTRA_PEAK_BYTES else 'NOT met'} (<= 64 MiB)")
    if size is not None:
        html, document = size
        lines.append(f"report of 8 models and 50 slice values: {html / 2**20:.2f} MiB (its result "
                     f"document {document / 2**20:.2f} MiB): "
                     f"{'met' if html <= REPORT_BYTES else 'NOT met'} (<= 5 MiB)")
    else:
        lines.append("report size: not measured (modeleval.report is not there yet)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"(the report's cost took {time.perf_counter() - started:.0f} s of this run; "
                 f"load average {load:.1f} on {os.cpu_count()} cores at its end)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=240_000)
    parser.add_argument("--report-rows", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ranking", action="store_true",
                        help="also the ranking case (generates --rows x 136 features)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import secrets

    from engine import PeakMemory, _manifest as ranking_manifest
    from testbed import RAY_LOOPBACK_ENV

    os.environ.update({**RAY_LOOPBACK_ENV, "RAY_AUTH_MODE": "token",
                       "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    import ray

    from modeleval.demo import letor_bytes, make_letor, train_ranker

    directory = Path(tempfile.mkdtemp(prefix="mebench-report-"))
    manifest = None
    if args.ranking:
        (directory / "test.txt").write_bytes(letor_bytes(make_letor(args.rows, 136, seed=42)))
        ranker = train_ranker(make_letor(20_000, 136, seed=43), rounds=100)
        ranker.get_booster().save_model(directory / "ranker.json")
        manifest = ranking_manifest((directory / "ranker.json").as_uri(),
                                    (directory / "test.txt").as_uri(), 136)
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, include_dashboard=False,
             configure_logging=False)
    try:
        for line in report_cost(directory, manifest, args.rows, args.report_rows, args.runs,
                                PeakMemory):
            print(line)
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
