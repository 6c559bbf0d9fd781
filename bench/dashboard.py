"""The dashboard's evaluations list at 10,000 stored evaluations: p50/p95 per source.

Stores N result documents (engine-made metrics, intervals, slices and curves; ~75 KB each, as
a binary evaluation writes them) in a MongoDB and in a results directory, serves each with
`modeleval ui`'s app (uvicorn on loopback) and requests the list page with random filters,
sorts and pages, over HTTP. Target: p95 < 1 s.

    .venv/bin/python bench/dashboard.py                 # starts its own FerretDB (the bed's)
    .venv/bin/python bench/dashboard.py --mongo-uri mongodb://host:27017/

With its own FerretDB the database gets the indexes the docs recommend (the dashboard never
creates them: it may run as a read-only user).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from dashboard_documents import ferretdb, free_port, many  # noqa: E402
from modeleval.store import LocalResultStore  # noqa: E402
from modeleval.ui.app import create_app, open_source  # noqa: E402
from modeleval.ui.config import UIConfig  # noqa: E402
from modeleval.ui.sources import RECOMMENDED_INDEXES  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def serving(config: UIConfig, source=None) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config, source), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def random_query(rng: random.Random) -> dict[str, str]:
    """A list request as people make them: mostly the newest first, often one filter."""
    query: dict[str, str] = {}
    if rng.random() < 0.4:
        query["namespace"] = f"team-{rng.choice('abcdefgh')}"
    if rng.random() < 0.2:
        query["status"] = rng.choice(["Succeeded", "Failed"])
    if rng.random() < 0.2:
        query["schedule"] = rng.choice(["nightly-0", "nightly-1"])
    if rng.random() < 0.15:
        query["model"] = f"m{rng.randrange(37)}/"
    query["sort"] = rng.choice(["finished", "finished", "name", "metric"])
    if query["sort"] == "metric":
        query["metric"] = "auc"
    query["order"] = rng.choice(["asc", "desc"])
    pages = 200 if len(query) <= 2 else 3
    query["page"] = str(rng.randint(1, pages))
    return query


def measure(base: str, requests: int, seed: int) -> tuple[float, list[float]]:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=120) as client:
        start = time.perf_counter()
        first = client.get("/")
        cold = time.perf_counter() - start
        first.raise_for_status()
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            answer = client.get("/", params=random_query(rng))
            times.append(time.perf_counter() - start)
            answer.raise_for_status()
    return cold, times


def store_in_mongo(uri: str, database: str, documents: list[dict]) -> float:
    from pymongo import MongoClient

    start = time.perf_counter()
    collection = MongoClient(uri)[database]["results"]
    for keys in RECOMMENDED_INDEXES:
        collection.create_index(keys)
    for i in range(0, len(documents), 200):
        collection.insert_many(documents[i:i + 200], ordered=False)
    return time.perf_counter() - start


def report(name: str, stored: float, cold: float, times: list[float]) -> None:
    print(f"{name:<22} stored in {stored:6.1f} s  first list {cold * 1000:7.0f} ms  "
          f"p50 {percentile(times, 50) * 1000:6.0f} ms  p95 {percentile(times, 95) * 1000:6.0f} ms  "
          f"max {max(times) * 1000:6.0f} ms  ({len(times)} requests)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--mongo-uri", help="a MongoDB to use (default: start FerretDB)")
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--sources", default="directory,mongodb",
                        help="which to measure (comma-separated: directory, mongodb)")
    args = parser.parse_args()

    documents = many(args.count, args.seed)
    bodies = [d.to_mongo() for d in documents]
    size = sum(len(d.to_json()) for d in documents[:100]) / 100
    print(f"{args.count:,} documents, {size / 1024:.0f} KB each on average")

    sources = set(args.sources.split(","))
    if "directory" in sources:
        measure_directory(documents, args.requests, args.seed)
    if "mongodb" in sources:
        measure_mongodb(args.mongo_uri, bodies, args.requests, args.seed)


def measure_directory(documents: list, requests: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-results-") as directory:
        start = time.perf_counter()
        store = LocalResultStore(Path(directory))
        for doc in documents:
            store.upsert(doc)
        stored = time.perf_counter() - start
        with serving(UIConfig(results_dir=Path(directory))) as base:
            cold, times = measure(base, requests, seed)
        report("results directory", stored, cold, times)


def measure_mongodb(mongo_uri: str | None, bodies: list[dict], requests: int, seed: int) -> None:
    database = f"bench{uuid.uuid4().hex[:8]}"
    with (nullcontext_uri(mongo_uri) if mongo_uri else ferretdb()) as uri:
        stored = store_in_mongo(uri, database, bodies)
        config = UIConfig(mongo_uri=uri, database=database)
        source = open_source(config)
        with serving(config, source) as base:
            start = time.perf_counter()
            while not source.indexed:
                time.sleep(0.5)
            indexed = time.perf_counter() - start
            cold, times = measure(base, requests, seed)
        print(f"(the list index of {len(bodies):,} documents was built in {indexed:.1f} s)")
        report("MongoDB" if mongo_uri else "FerretDB v1 (SQLite)", stored, cold, times)
        if mongo_uri:
            from pymongo import MongoClient

            MongoClient(uri).drop_database(database)


@contextmanager
def nullcontext_uri(uri: str) -> Iterator[str]:
    yield uri


if __name__ == "__main__":
    main()
