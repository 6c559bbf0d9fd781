"""What a data profile costs beside the parse it rides on, side by side in one run: the same
MSLR-shaped LETOR text (make_letor, 136 features) parsed cold, then profiled (features, labels,
query lengths, and one model's scores), without and with a reference's bins; and the profile's
size in the result document.

  python bench/profile.py [--rows 240000] [--features 136] [--runs 3]

Prints the median seconds of --runs rounds of each step (the steps interleaved in each round),
both CPU seconds (the process's own time: on a machine others share, what the step costs) and
wall seconds, and the profile's share of the parse in each. One process, one core: a Ray task
parses and profiles its shard on the one CPU it holds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=240_000)
    parser.add_argument("--features", type=int, default=136)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from modeleval.demo import letor_bytes, make_letor
    from modeleval.engine.letor import parse_letor
    from modeleval.engine.profile import (merge_all, profile_data, profile_predictions,
                                          reference_cuts, to_profile)

    data = make_letor(args.rows, args.features, seed=11)
    text = letor_bytes(data)
    scores = np.random.default_rng(1).normal(size=args.rows).astype(np.float32)
    shard = parse_letor(text)
    reference = to_profile(profile_data(shard))
    cuts = reference_cuts(reference)
    steps = {
        "parse (cold)": lambda: parse_letor(text),
        "profile": lambda: to_profile(merge_all([profile_data(shard),
                                                 profile_predictions({"model": scores})])),
        "profile, reference bins": lambda: merge_all(
            [profile_data(shard, cuts=cuts), profile_predictions({"model": scores}, cuts)]),
    }
    cpu: dict[str, list[float]] = {step: [] for step in steps}
    wall: dict[str, list[float]] = {step: [] for step in steps}
    for _ in range(args.runs):
        for step, run in steps.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            cpu[step].append(time.process_time() - started_cpu)
            wall[step].append(time.perf_counter() - started)
    document = steps["profile"]()
    parse_cpu = statistics.median(cpu["parse (cold)"])
    parse_wall = statistics.median(wall["parse (cold)"])
    print(f"{args.rows:,} rows x {args.features} features, {len(text) / 1e6:.0f} MB of LETOR text, "
          f"median of {args.runs}")
    print(f"{'step':<26}{'CPU s':>8}{'of parse':>10}{'wall s':>9}{'of parse':>10}")
    for step in steps:
        seconds, elapsed = statistics.median(cpu[step]), statistics.median(wall[step])
        print(f"{step:<26}{seconds:>8.3f}{seconds / parse_cpu:>10.0%}{elapsed:>9.3f}"
              f"{elapsed / parse_wall:>10.0%}")
    print(f"profile in the result document: {len(document.model_dump_json(by_alias=True)):,} bytes")

if __name__ == "__main__":
    main()
