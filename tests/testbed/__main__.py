"""`python -m testbed up|down|status|images --dir DIR` (what `make cluster-up` / `cluster-down`
run; `images` loads what `make images` built last into a running bed's real node). The bed `up`
starts outlives the command. `watch --dir DIR --owner PID` is the watchdog a bed started from
Python runs: it stops the bed when PID exits (see watchdog.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import BedError, TestBed, ToolMissing, stop_recorded
from .node import NodeError, import_images
from .watchdog import watch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "images", "watch"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/modeleval-bed"))
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--mlflow", action="store_true", help="up: with an MLflow tracking "
                        "server (the tests of the registry and tracking integration need it)")
    parser.add_argument("--owner", type=int, help="watch: the pid whose exit stops the bed")
    args = parser.parse_args(argv)
    directory = args.dir.resolve()

    if args.command == "watch":
        if args.owner is None:
            parser.error("watch needs --owner PID")
        print(watch(directory, args.owner), flush=True)
        return 0
    if args.command == "down":
        stopped = stop_recorded(directory)
        print(f"stopped: {', '.join(stopped)}" if stopped else f"no test bed recorded in {directory}")
        return 0
    if args.command == "images":
        if not (directory / "state.json").exists():
            print(f"no test bed recorded in {directory}", file=sys.stderr)
            return 1
        try:
            import_images(TestBed(directory))
        except NodeError as error:
            print(f"images: {error}", file=sys.stderr)
            return 1
        print(f"images loaded into the real node of {directory}")
        return 0
    if args.command == "status":
        state = directory / "state.json"
        if not state.exists():
            print(f"no test bed recorded in {directory}")
            return 1
        print(state.read_text())
        return 0

    try:
        endpoints = TestBed(directory, ray_cpus=args.ray_cpus, mlflow=args.mlflow).up(die_with_caller=False)
    except (BedError, NodeError, ToolMissing) as error:
        print(f"cluster-up failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in endpoints.env().items() if "SECRET" not in k and "TOKEN" not in k},
                     indent=2))
    print(f"\ntest bed is up. Logs: {directory / 'logs'}\n"
          f"Use it:   source {directory / 'bed.env'} && kubectl get nodes\n"
          f"Stop it:  make cluster-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
