"""Object storage before and after the move to pyarrow.fs, side by side in one run, against MinIO:
the boto3 Storage (operator/modeleval/engine/storage.py as of --before, read from git) and the
current one, on the same objects, the calls interleaved in each round.

  python bench/storage.py [--mib 256] [--runs 5] [--before 48d67a7]

What it measures (median seconds of --runs rounds, and MiB/s where bytes move):
  stat          HEAD of an object, 200 times one after another
  fetch         a 4 MiB object and its fingerprint (a model)
  read          a --mib object whole (a cached part read from the shared tier, the inline path)
  ranges        1 MiB ranged reads, 64 one after another and 64 on 16 threads (the group
                boundaries' search)
  stream        open_range of the --mib object in 2 MiB pieces, as the LETOR parser reads it;
                one stream, and four quarters side by side (a task of four CPUs); and, in the
                "now" column of its last row, the same read through pyarrow.fs alone (a
                read_at per piece), which open_range does not use: see its docstring
  boundaries    letor_ranges of a LETOR file of --mib: the group boundaries a plan looks for
  parse         that file streamed through open_range into the LETOR parser (a cold read),
                whole, and in two line-aligned pieces on two threads (a task of two CPUs)
  write         write() of 64 MiB and write_file() of a --mib file (a cached part's upload)

MinIO: the test bed's, where MODELEVAL_BED_DIR names a running bed (its state.json), else the bed's
own MinIO binary (from `make tools`) started on loopback for this run and stopped after it.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from testbed.bed import free_port  # noqa: E402
from testbed.tools import Tools, read_versions, tools_dir  # noqa: E402

from modeleval.engine import inference, sharding  # noqa: E402
from modeleval.engine import storage as after  # noqa: E402

MIB = 2**20
BEFORE = "48d67a7"  # the last commit whose storage.py is boto3's


def load_before(commit: str):
    """The storage module as it was at ``commit``, imported beside the current one."""
    text = subprocess.run(["git", "show", f"{commit}:operator/modeleval/engine/storage.py"],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout
    name = "modeleval.engine._storage_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "modeleval.engine"
    sys.modules[name] = module
    exec(compile(text, f"{commit}:storage.py", "exec"), module.__dict__)

    class Before(module.Storage):
        def local_path(self, uri):  # what sharding asks now; boto3's Storage read only S3 here
            return None

    return Before


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_minio(directory: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """The bed's MinIO binary on loopback, for this run only."""
    binary = Tools(tools_dir(), read_versions()).minio
    port, user, password = free_port(), "bench", secrets.token_hex(12)
    log = open(directory / "minio.log", "ab")
    process = subprocess.Popen(
        [str(binary), "server", str(directory / "data"), "--address", f"127.0.0.1:{port}",
         "--console-address", f"127.0.0.1:{free_port()}", "--quiet"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password,
             "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"}, preexec_fn=_die_with_parent)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"MinIO did not start; see {directory / 'minio.log'}")
            time.sleep(0.2)
    return process, {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": user,
                     "AWS_SECRET_ACCESS_KEY": password, "AWS_DEFAULT_REGION": "us-east-1"}


def bed_minio() -> dict[str, str] | None:
    directory = os.environ.get("MODELEVAL_BED_DIR")
    state = Path(directory or "/nonexistent") / "state.json"
    if not state.exists():
        return None
    bed = json.loads(state.read_text())
    return {"AWS_ENDPOINT_URL_S3": bed["s3_endpoint"], "AWS_ACCESS_KEY_ID": bed["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": bed["s3_secret_key"], "AWS_DEFAULT_REGION": "us-east-1"}


def letor_text(size: int) -> bytes:
    """About ``size`` bytes of MSLR-shaped lines (groups of 40), cheap to make."""
    line = " ".join(f"{i}:{(i * 37 % 100) / 100:.2f}" for i in range(1, 137))
    lines = [f"{i % 3} qid:{i // 40} {line}\n".encode() for i in range(-(-size // (len(line) + 16)))]
    return b"".join(lines)[:size].rsplit(b"\n", 1)[0] + b"\n"


def cases(store, bucket: str, scratch: Path, big: int) -> dict[str, tuple]:
    """name -> (callable, bytes moved), for one implementation."""
    obj, model, text = f"s3://{bucket}/big.bin", f"s3://{bucket}/model.bin", f"s3://{bucket}/d.txt"
    info = store.stat(text)
    ranges = [(i * MIB, (i + 1) * MIB) for i in range(min(64, big // MIB))]
    quarter = big // 4

    def stream(start: int, end: int) -> int:
        with store.open_range(obj, start, end) as read:
            return sum(len(piece) for piece in iter(lambda: read(2 * MIB), b""))

    def stream_pyarrow(start: int, end: int) -> int:
        """What open_range would be through pyarrow.fs alone (a read_at, one GET, per piece)."""
        if not isinstance(store, after.Storage):
            return stream(start, end)
        with store.s3.open_input_file(obj.removeprefix("s3://")) as handle:
            return sum(len(handle.read_at(min(2 * MIB, end - at), at))
                       for at in range(start, end, 2 * MIB))

    def streams() -> int:
        with ThreadPoolExecutor(4) as pool:
            return sum(pool.map(lambda q: stream(q * quarter, (q + 1) * quarter), range(4)))

    def parse(pieces: int) -> None:
        with ThreadPoolExecutor(pieces) as pool:
            cuts = sharding.line_pieces(store, text, 0, info.size, pieces, pool.map)
            list(pool.map(lambda cut: inference._parse_piece(store, text, *cut, 136), cuts))

    def ranged(threads: int) -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda r: store.read(obj, *r), ranges))

    out = f"s3://{bucket}/out-{uuid.uuid4().hex[:6]}"
    return {
        "stat x200": (lambda: [store.stat(obj) for _ in range(200)], 0),
        "fetch 4 MiB": (lambda: store.fetch(model), 4 * MIB),
        f"read {big // MIB} MiB": (lambda: store.read(obj), big),
        "ranges 64x1 MiB, 1 thread": (lambda: ranged(1), 64 * MIB),
        "ranges 64x1 MiB, 16 threads": (lambda: ranged(16), 64 * MIB),
        f"stream {big // MIB} MiB": (lambda: stream(0, big), big),
        f"stream {big // MIB} MiB, 4 side by side": (streams, big),
        f"stream {big // MIB} MiB, now: pyarrow read_at": (lambda: stream_pyarrow(0, big), big),
        "boundaries (letor_ranges, 16 MiB shards)": (
            lambda: sharding.letor_ranges(store, info, 16 * MIB, slots=2), 0),
        f"parse {big // MIB} MiB of LETOR, 1 thread": (lambda: parse(1), big),
        f"parse {big // MIB} MiB of LETOR, 2 pieces side by side": (lambda: parse(2), big),
        "write 64 MiB": (lambda: store.write(out + ".bin", os.urandom(64 * MIB)), 64 * MIB),
        f"write_file {big // MIB} MiB": (lambda: store.write_file(out + ".file", scratch), big),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the large object")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="commit of the boto3 storage.py")
    parser.add_argument("--only", default="", help="run only the calls whose name has this")
    args = parser.parse_args()
    big = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        directory = Path(tmp)
        env, minio = bed_minio(), None
        if env is None:
            minio, env = start_minio(directory)
        os.environ.update(env)
        try:
            run(args, big, directory, load_before(args.before))
        finally:
            if minio is not None:
                minio.terminate()
                minio.wait(30)


def run(args, big: int, directory: Path, before_class) -> None:
    stores = {"boto3 (before)": before_class(), "pyarrow.fs (now)": after.Storage()}
    bucket = f"bench-storage-{uuid.uuid4().hex[:6]}"
    now = stores["pyarrow.fs (now)"]
    now.create_bucket(bucket)
    scratch = directory / "part.bin"
    scratch.write_bytes(os.urandom(big))
    now.write_file(f"s3://{bucket}/big.bin", scratch)
    now.write(f"s3://{bucket}/model.bin", os.urandom(4 * MIB))
    now.write(f"s3://{bucket}/d.txt", letor_text(big))
    table = {name: {case: call for case, call in cases(store, bucket, scratch, big).items()
                    if args.only in case} for name, store in stores.items()}
    for name, store in stores.items():  # a first call each: clients made, connections open
        store.stat(f"s3://{bucket}/big.bin")
    times = {(impl, case): [] for impl in table for case in table[impl]}
    for round_ in range(args.runs):
        for case in table["boto3 (before)"]:
            # Each goes first in every other round: the second read of an object may find it
            # in MinIO's (and the kernel's) cache.
            for impl in (list(table) if round_ % 2 == 0 else list(table)[::-1]):
                call, _moved = table[impl][case]
                started = time.perf_counter()
                call()
                times[impl, case].append(time.perf_counter() - started)
    report(table, times, args)


def report(table, times, args) -> None:
    impls = list(table)
    print(f"MinIO at {os.environ['AWS_ENDPOINT_URL_S3']}, {os.cpu_count()} CPUs, "
          f"median of {args.runs} rounds (seconds; MiB/s where bytes move)")
    print(f"{'call':44} {impls[0]:>22} {impls[1]:>22} {'now/before':>10}")
    for case, (_, moved) in table[impls[0]].items():
        cells = []
        medians = [statistics.median(times[impl, case]) for impl in impls]
        for seconds in medians:
            rate = f" ({moved / MIB / seconds:.0f} MiB/s)" if moved else ""
            cells.append(f"{seconds:.3f}{rate}")
        print(f"{case:44} {cells[0]:>22} {cells[1]:>22} {medians[1] / medians[0]:>10.2f}")


if __name__ == "__main__":
    main()
