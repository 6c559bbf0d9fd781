"""What the data profile costs a whole evaluation (issue 31, point 5), side by side in one run:
the bench's MSLR-shaped LETOR file (--rows x 136 features) and XGBRanker, file:// URIs and a
local Ray of every CPU, each evaluation with profiling off (EngineSettings.profile false, as
MODELEVAL_PROFILE=0 sets it) and on, interleaved in each round:

  cold        an empty parsed-dataset cache (the pass parses, predicts and profiles)
  warm        the cache filled by a profiling evaluation first (the pass reads the parts; with
              profiling on, the data's profile comes from the cache and only the predictions
              are profiled)
  warm+drift  warm, compared with a reference file of the same shape
              (spec.dataQuality.reference.uri: profiled once and cached; the data's profile on
              its bins cached after the first use): what the comparison adds

each under both of the plan's executions (inline: the job's own process; ray: tasks on the
local Ray). Every path runs once before the rounds (workers and imports started, caches
filled). Prints the median wall and CPU seconds (this process and the Ray workers) of --runs
rounds and what profiling adds against issue 31's targets (cold at most 25%, warm nothing
measurable). Then the peak memory (the private resident memory of the driver and every Ray
worker above the value at the start of each evaluation: PrivateMemory below) of two cold and
two warm evaluations (--memory-runs) of --memory-rows rows each way (off, on, on, off; each on
fresh Ray workers), under the plan's own choice (target: the median on within 10% of off).
Fails if NDCG@10 differs between the paths, or profiling on records no profile.

  python bench/profile_cost.py [--rows 240000] [--runs 7] [--memory-rows 3000000]
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from engine import PeakMemory  # noqa: E402
from testbed import RAY_LOOPBACK_ENV  # noqa: E402

K = 10
COLD_TARGET, MEMORY_TARGET = 0.25, 0.10
SLOWER_P = 0.05  # a warm evaluation is measurably slower below this p (measurable())
CHUNK_ROWS = 250_000  # the LETOR file is written in pieces of this many rows


@dataclass
class Case:
    """One evaluation as the rounds repeat it (where it runs, the cache state, profiling on or
    off) and its measurements."""

    execution: str
    kind: str  # cold, warm or warm+drift
    profile: bool
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    ndcg: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    shards: int = 0

    @property
    def name(self) -> str:
        return f"{self.execution} {self.kind} {'on' if self.profile else 'off'}"


def write_letor(path: Path, rows: int, features: int, seed: int) -> int:
    """The bench's MSLR-shaped LETOR text, written in pieces of ``CHUNK_ROWS`` rows (bounded
    memory at millions of rows; each piece's query ids offset past the last's): its bytes."""
    from modeleval.demo import LetorData, letor_bytes, make_letor

    with path.open("wb") as out:
        for n, start in enumerate(range(0, rows, CHUNK_ROWS)):
            data = make_letor(min(CHUNK_ROWS, rows - start), features, seed=seed + n)
            out.write(letor_bytes(LetorData(data.features, data.labels,
                                            data.qids + n * 10_000_000)))
    return path.stat().st_size


def manifest(ctx, data_uri: str, reference_uri: str | None):
    from modeleval.runner import parse_manifest

    quality = f'\n  dataQuality: {{reference: {{uri: "{reference_uri}"}}}}' if reference_uri else ""
    return parse_manifest(f"""
apiVersion: modeleval.dev/v1alpha1
kind: ModelEvaluation
metadata: {{name: profile-cost}}
spec:
  task: ranking
  model: {{uri: "{ctx.model_uri}"}}
  dataset: {{uri: "{data_uri}", numFeatures: {ctx.features}}}
  metrics: [ndcg@{K}]{quality}
""")


def cpu_seconds() -> float:
    """CPU seconds of this process and of every Ray worker process (user and system)."""
    total = sum(psutil.Process().cpu_times()[:2])
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::"):
            try:
                total += sum(proc.cpu_times()[:2])
            except psutil.Error:
                pass
    return total


def evaluate(ctx, data_uri: str, cache: str, execution: str, profile: bool,
             reference_uri: str | None = None):
    """One evaluation of ``data_uri`` with the cache named ``cache`` (a directory of the run's,
    the node-local copies of its parts beside it): its result, wall and CPU seconds."""
    from modeleval.engine.dataquality import Reference
    from modeleval.engine.evaluate import Evaluator, Identity
    from modeleval.settings import EngineSettings

    settings = EngineSettings(cache_uri=(ctx.dir / cache).as_uri(),
                              node_cache_dir=ctx.dir / f"{cache}-parts",
                              results_dir=ctx.dir / "results", execution=execution,
                              profile=profile)
    reference = Reference(name=reference_uri, uri=reference_uri) if reference_uri else None
    spec = manifest(ctx, data_uri, reference_uri).spec
    cpu, started = cpu_seconds(), time.perf_counter()
    result = Evaluator(spec, Identity(uuid.uuid4().hex), settings, reference=reference).run()
    return result, time.perf_counter() - started, cpu_seconds() - cpu


def drop_cache(ctx, cache: str) -> None:
    shutil.rmtree(ctx.dir / cache, ignore_errors=True)
    shutil.rmtree(ctx.dir / f"{cache}-parts", ignore_errors=True)


def run_case(ctx, case: Case) -> None:
    """One round of ``case``; checks that profiling on recorded a profile (and drift) and off
    none."""
    cold = case.kind == "cold"
    cache = f"cold-{uuid.uuid4().hex[:8]}" if cold else "warm"
    reference = ctx.reference_uri if case.kind == "warm+drift" else None
    try:
        result, seconds, cpu = evaluate(ctx, ctx.data_uri, cache, case.execution, case.profile,
                                        reference)
    finally:
        if cold:
            drop_cache(ctx, cache)
    inline = bool(result.resources.get("inline"))
    if inline != (case.execution == "inline"):
        raise SystemExit(f"{case.name} ran {'inline' if inline else 'on Ray'}")
    if (result.profile is not None) != case.profile or (reference and result.drift is None):
        raise SystemExit(f"{case.name}: profile {result.profile is not None}, drift "
                         f"{result.drift is not None}")
    case.seconds.append(seconds)
    case.cpu.append(cpu)
    case.ndcg, case.timings = result.metrics[f"ndcg@{K}"], dict(result.timings)
    case.shards = int(result.resources.get("shards") or 0)


def rounds(ctx, runs: int) -> list[Case]:
    """Every case once untimed (the warm cache filled, with its profile, and the reference
    profiled), then ``runs`` rounds of them all, interleaved."""
    cases = [Case(execution, kind, profile) for execution in ("ray", "inline")
             for kind, profile in (("cold", False), ("cold", True), ("warm", False),
                                   ("warm", True), ("warm+drift", True))]
    evaluate(ctx, ctx.data_uri, "warm", "ray", True)
    for case in cases:
        run_case(ctx, case)
        case.seconds.clear()
        case.cpu.clear()
    for run in range(runs):
        for case in cases:
            run_case(ctx, case)
        print(f"  round {run + 1}: " + ", ".join(f"{c.name} {c.seconds[-1]:.2f}s" for c in cases),
              flush=True)
    return cases


def report(cases: list[Case]) -> list[str]:
    """The table of medians and what profiling (and the comparison) adds to each path."""
    by_name = {case.name: case for case in cases}

    def median(name: str, what: str = "seconds") -> float:
        return statistics.median(getattr(by_name[name], what))

    lines = ["| path | median s | CPU s | runs (s) |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {median(c.name):.2f} | {median(c.name, 'cpu'):.2f} | "
              f"{', '.join(f'{s:.2f}' for s in c.seconds)} |" for c in cases]
    lines.append("")
    for execution in ("ray", "inline"):
        for kind in ("cold", "warm"):
            off, on = f"{execution} {kind} off", f"{execution} {kind} on"
            added, added_cpu = median(on) - median(off), median(on, "cpu") - median(off, "cpu")
            met = "met" if added / median(off) <= COLD_TARGET else "NOT met"
            target = (f"target <= {COLD_TARGET:.0%}: {met}" if kind == "cold"
                      else f"target: nothing measurable: {measurable(by_name[on], by_name[off])}")
            lines.append(f"{execution} {kind}: profiling adds {added:+.2f} s ({added / median(off):+.0%}) "
                         f"wall, {added_cpu:+.2f} s ({added_cpu / median(off, 'cpu'):+.0%}) CPU; "
                         f"{target}")
        drift = f"{execution} warm+drift on"
        lines.append(f"{execution} warm+drift: the comparison adds "
                     f"{median(drift) - median(f'{execution} warm on'):+.2f} s wall to warm on")
    for case in cases:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in case.timings.items() if k != "total")
        lines.append(f"  {case.name} (last round's stages, s): {parts}")
    return lines


def measurable(on: Case, off: Case) -> str:
    """Whether profiling made ``on`` measurably slower than ``off``: a one-sided Mann-Whitney U
    test of their wall seconds (scipy), slower when p < ``SLOWER_P``. With too few runs even
    every on run slower than every off run would not reach it: then it says so."""
    from scipy.stats import mannwhitneyu

    runs = len(on.seconds), len(off.seconds)
    if 1 / math.comb(sum(runs), runs[0]) >= SLOWER_P:
        return f"too few runs to tell ({runs[0]} and {runs[1]}; a Mann-Whitney U test needs 4 each)"
    p = mannwhitneyu(on.seconds, off.seconds, alternative="greater").pvalue
    return f"{'slower' if p < SLOWER_P else 'not slower'} (Mann-Whitney U, p = {p:.2f}, " \
           f"{runs[0]} runs each)"


def predictions_profile_cpu(rows: int, shards: int, repeats: int = 5) -> float:
    """The CPU seconds (median of ``repeats``) of what a warm evaluation profiles: one model's
    predictions (float64, as every adapter returns them), ``rows`` in ``shards`` shards."""
    from modeleval.engine.profile import profile_predictions

    rng = np.random.default_rng(7)
    pieces = [rng.normal(size=len(part)) for part in np.array_split(np.arange(rows), shards)]
    seconds = []
    for _ in range(repeats):
        started = time.process_time()
        for piece in pieces:
            profile_predictions({"model": piece})
        seconds.append(time.process_time() - started)
    return statistics.median(seconds)


class PrivateMemory(PeakMemory):
    """bench/engine.py's PeakMemory less the machine's shared memory: the private resident
    memory of the driver and every Ray worker. An evaluation's tasks return predictions only,
    so its own use of Ray's object store is small, while the machine-wide Shmem that PeakMemory
    adds moves with whatever else runs here (other Ray sessions' object stores)."""

    @classmethod
    def _sample(cls) -> int:
        total = cls._size(psutil.Process())
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and cmdline[0].startswith("ray::"):
                total += cls._size(proc)
        return total


def fresh_ray() -> None:
    """A new local Ray session whose workers (one per CPU) have started and imported what a
    task imports, then idle: each peak below is measured from there, on workers that have held
    no data yet."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=os.cpu_count() or 2, log_to_driver=False,
             include_dashboard=False, configure_logging=False)

    @ray.remote(num_cpus=1)
    def start_worker() -> int:
        import modeleval.engine.inference, pyarrow, xgboost  # noqa: E401, F401
        time.sleep(1)
        return os.getpid()

    ray.get([start_worker.remote() for _ in range(os.cpu_count() or 2)])


def memory(ctx, rows: int, seed: int, runs: int) -> list[str]:
    """Peak memory of cold and warm evaluations of ``rows`` rows, ``runs`` each with profiling
    off and on (off, on, on, off, ...), each in a fresh Ray session, under the plan's own choice
    (each cold one on a new cache; the warm ones read a cache a profiling evaluation filled):
    the median and the largest of each."""
    path = ctx.dir / "memory.txt"
    started = time.perf_counter()
    size = write_letor(path, rows, ctx.features, seed)
    lines = [f"peak memory at {rows:,} rows ({size / 1e6:,.0f} MB of LETOR text, written in "
             f"{time.perf_counter() - started:.0f} s), each evaluation on fresh Ray workers:",
             "| path | s | peak MB above idle | ran |", "|---|---|---|---|"]
    peaks: dict[str, list[int]] = {}
    order = [(kind, profile) for kind in ("cold", "warm") for run in range(runs)
             for profile in ((False, True) if run % 2 == 0 else (True, False))]
    for kind, profile in order:
        cache = "memory-warm" if kind == "warm" else f"memory-{uuid.uuid4().hex[:8]}"
        if kind == "warm" and not (ctx.dir / cache).exists():
            evaluate(ctx, path.as_uri(), cache, "auto", True)  # filled, its profile with it
        fresh_ray()
        with PrivateMemory() as peak:
            result, seconds, _ = evaluate(ctx, path.as_uri(), cache, "auto", profile)
        name = f"{kind} {'on' if profile else 'off'}"
        peaks.setdefault(name, []).append(peak.peak)
        where = "inline" if result.resources.get("inline") else f"Ray, {result.resources.get('tasks')} tasks"
        lines.append(f"| {name} | {seconds:.2f} | {peak.peak / 1e6:.0f} | {where} |")
        print(f"  {name}: {seconds:.2f}s, peak {peak.peak / 1e6:.0f} MB", flush=True)
        if kind == "cold":
            drop_cache(ctx, cache)
    for kind in ("cold", "warm"):
        off, on = statistics.median(peaks[f"{kind} off"]), statistics.median(peaks[f"{kind} on"])
        lines.append(f"{kind}: profiling on {on / 1e6:.0f} MB against off {off / 1e6:.0f} MB "
                     f"(medians of {runs}), {on / max(off, 1) - 1:+.0%} (target within "
                     f"{MEMORY_TARGET:.0%}: {'met' if on <= off * (1 + MEMORY_TARGET) else 'NOT met'}); "
                     f"largest: on {max(peaks[f'{kind} on']) / 1e6:.0f} MB, off "
                     f"{max(peaks[f'{kind} off']) / 1e6:.0f} MB")
    path.unlink()
    drop_cache(ctx, "memory-warm")
    return lines


def setup(args) -> SimpleNamespace:
    """The run's directory, the LETOR file and a reference of the same shape, and the model."""
    from modeleval.demo import make_letor, train_ranker

    ctx = SimpleNamespace(features=args.features,
                          dir=Path(tempfile.mkdtemp(prefix="modeleval-profile-cost-")))
    size = write_letor(ctx.dir / "test.txt", args.rows, args.features, args.seed)
    write_letor(ctx.dir / "reference.txt", args.rows, args.features, args.seed + 1000)
    booster = train_ranker(make_letor(20_000, args.features, seed=args.seed + 1),
                           rounds=100).get_booster()
    (ctx.dir / "ranker.json").write_bytes(bytes(booster.save_raw("json")))
    ctx.data_uri, ctx.model_uri = (ctx.dir / "test.txt").as_uri(), (ctx.dir / "ranker.json").as_uri()
    ctx.reference_uri = (ctx.dir / "reference.txt").as_uri()
    print(f"dataset: {args.rows:,} rows x {args.features} features, {size / 1e6:.0f} MB of LETOR "
          f"text, a reference file of the same shape; model: 100 trees; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return ctx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=240_000)
    parser.add_argument("--features", type=int, default=136)
    parser.add_argument("--runs", type=int, default=7, help="rounds of the timed cases (0: "
                        "none, the peak memory case only)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory-rows", type=int, default=3_000_000, help="rows of the peak "
                        "memory case (0: not measured)")
    parser.add_argument("--memory-runs", type=int, default=2, help="evaluations of each "
                        "memory case each way (off and on alternate: off, on, on, off, ...)")
    args = parser.parse_args()
    # Ray reads these once, when first imported: set them before anything imports it.
    os.environ.update({**RAY_LOOPBACK_ENV, "RAY_AUTH_MODE": "token",
                       "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    import ray

    ctx = setup(args)
    try:
        if args.runs:
            ray.init(address="local", num_cpus=os.cpu_count() or 2, log_to_driver=False,
                     include_dashboard=False, configure_logging=False)
            cases = rounds(ctx, args.runs)
            for line in report(cases):
                print(line)
            warm = next(c for c in cases if c.name == "ray warm off")
            alone = predictions_profile_cpu(args.rows, warm.shards)
            print(f"what a warm evaluation profiles (the predictions, {warm.shards} shards), "
                  f"alone: {alone * 1e3:.0f} ms of CPU, {alone / statistics.median(warm.cpu):.1%} "
                  f"of ray warm off's CPU")
            ndcg = {case.name: case.ndcg for case in cases}
            if max(ndcg.values()) - min(ndcg.values()) > 1e-6:
                print(f"NDCG@{K} differs between paths: {ndcg}", file=sys.stderr)
                return 1
            print(f"every path computed NDCG@{K} = {cases[0].ndcg:.6f}; load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
        if args.memory_rows:
            for line in memory(ctx, args.memory_rows, args.seed, args.memory_runs):
                print(line)
        return 0
    finally:
        ray.shutdown()
        shutil.rmtree(ctx.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
