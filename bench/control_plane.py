"""Control-plane load: N ModelEvaluations applied at once on the local test bed (tiny dataset).

Prints p50/p99 of apply -> RayCluster created (seen by a watch) and apply -> a terminal phase,
how many reached each phase, and the operator's peak RSS. Each evaluation asks for 50m CPU for
its head and its worker, so all 100 clusters fit the bed's kwok nodes (16 CPUs). Every Ray job
runs on the bed's one local Ray head, so apply -> Succeeded measures that head more than the
operator.

  python bench/control_plane.py [--count 100]        (make bench-control-plane)
"""

from __future__ import annotations

import argparse
from collections import Counter
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402

from testbed import RAY_LOOPBACK_ENV, TestBed  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    os.environ.update({**RAY_LOOPBACK_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})

    from kubernetes import client, watch

    from e2e.kube import api_client
    from e2e.operator_fixture import CRD, OperatorProcess, kubectl
    from modeleval.demo import letor_bytes, make_letor, train_ranker
    from modeleval.engine.storage import Storage

    directory = Path(tempfile.mkdtemp(prefix="mecp-", dir="/tmp"))
    bed = TestBed(directory, ray_auth_token=os.environ["RAY_AUTH_TOKEN"])
    endpoints = bed.up()
    os.environ.update(endpoints.env())
    operator = None
    try:
        kubectl(endpoints, "apply", "--server-side", "-f", str(CRD))
        kubectl(endpoints, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev")
        storage = Storage()
        storage.create_bucket("cp-bench")
        storage.write("s3://cp-bench/tiny.txt", letor_bytes(make_letor(200, 10, mean_group=20, seed=1)))
        storage.write("s3://cp-bench/model.json", bytes(
            train_ranker(make_letor(500, 10, seed=2), rounds=5).get_booster().save_raw("json")))
        # The chart's default timeouts, not the short ones of the e2e tests.
        operator = OperatorProcess(endpoints, directory / "operator.log", MODELEVAL_POLL_INTERVAL="2",
                                   MODELEVAL_PENDING_TIMEOUT="300", MODELEVAL_BACKOFF_BASE="10").start()
        api = api_client(endpoints.kubeconfig)
        custom = client.CustomObjectsApi(api)
        namespace = "cp-bench"
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))

        applied: dict[str, float] = {}
        cluster_seen: dict[str, float] = {}
        finished: dict[str, tuple[float, str]] = {}
        stop = threading.Event()

        def watch_clusters() -> None:
            while not stop.is_set():
                for event in watch.Watch().stream(custom.list_namespaced_custom_object, "ray.io", "v1",
                                                  namespace, "rayclusters", timeout_seconds=5):
                    name = event["object"]["metadata"]["labels"].get("modeleval.dev/evaluation")
                    if name and name not in cluster_seen:
                        cluster_seen[name] = time.monotonic()

        def watch_evaluations() -> None:
            while not stop.is_set():
                for event in watch.Watch().stream(custom.list_namespaced_custom_object, "modeleval.dev",
                                                  "v1alpha1", namespace, "modelevaluations", timeout_seconds=5):
                    obj = event["object"]
                    phase = (obj.get("status") or {}).get("phase")
                    if phase in ("Succeeded", "Failed") and obj["metadata"]["name"] not in finished:
                        finished[obj["metadata"]["name"]] = (time.monotonic(), phase)

        rss_peak = 0
        process = psutil.Process(operator.process.pid)

        def sample_rss() -> None:
            nonlocal rss_peak
            while not stop.is_set():
                rss_peak = max(rss_peak, process.memory_info().rss)
                stop.wait(0.2)

        threads = [threading.Thread(target=f, daemon=True) for f in (watch_clusters, watch_evaluations, sample_rss)]
        for t in threads:
            t.start()
        time.sleep(1)
        body = lambda name: {  # noqa: E731
            "apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation", "metadata": {"name": name},
            "spec": {"task": "ranking", "model": {"uri": "s3://cp-bench/model.json"},
                     "dataset": {"uri": "s3://cp-bench/tiny.txt", "numFeatures": 10},
                     "metrics": ["ndcg@10"], "resources": {"workers": 1, "cpu": "50m", "memory": "256Mi",
                                                           "headCpu": "50m", "headMemory": "256Mi"}}}
        names = [f"e{i:04d}-{uuid.uuid4().hex[:4]}" for i in range(args.count)]
        first_apply = time.monotonic()
        for name in names:
            custom.create_namespaced_custom_object("modeleval.dev", "v1alpha1", namespace,
                                                   "modelevaluations", body(name))
            applied[name] = time.monotonic()
        print(f"applied {args.count} evaluations in {time.monotonic() - first_apply:.1f}s (one create "
              "call after another, as kubectl apply does)", flush=True)
        deadline = time.monotonic() + args.timeout
        reported = False
        while len(finished) < len(names) and time.monotonic() < deadline:
            time.sleep(2)
            print(f"  {len(cluster_seen)} clusters created, {len(finished)} finished", flush=True)
            if not reported and len(cluster_seen) == len(names):
                created = [cluster_seen[n] - applied[n] for n in names]
                print(f"all RayClusters created: p50 {percentile(created, 50):.2f}s, "
                      f"p99 {percentile(created, 99):.2f}s after apply; operator RSS so far "
                      f"{rss_peak / 2**20:.0f} MB", flush=True)
                reported = True
        stop.set()

        to_cluster = [cluster_seen[n] - applied[n] for n in names if n in cluster_seen]
        to_done = [finished[n][0] - applied[n] for n in names if n in finished]
        phases = [finished[n][1] for n in names if n in finished]
        items = custom.list_namespaced_custom_object("modeleval.dev", "v1alpha1", namespace,
                                                     "modelevaluations")["items"]
        print("\n| count | p50 apply->RayCluster | p99 apply->RayCluster | p50 apply->terminal | "
              "p99 apply->terminal | Succeeded | Failed | not finished | operator peak RSS |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| {args.count} | {percentile(to_cluster, 50):.2f}s | {percentile(to_cluster, 99):.2f}s | "
              f"{percentile(to_done, 50):.1f}s | {percentile(to_done, 99):.1f}s | {phases.count('Succeeded')} | "
              f"{phases.count('Failed')} | {len(names) - len(finished)} | {rss_peak / 2**20:.0f} MB |")
        print(f"evaluation objects: {len(items)} (none lost or duplicated: {len(items) == args.count})")
        reasons = Counter((i.get("status") or {}).get("reason") for i in items
                          if (i.get("status") or {}).get("phase") == "Failed")
        for reason, count in reasons.most_common():
            example = next(i["status"]["message"] for i in items
                           if (i.get("status") or {}).get("reason") == reason)
            print(f"  Failed {count}x {reason}: {example[:200]}")
        return 0 if len(finished) == len(names) and len(items) == args.count else 1
    finally:
        if operator:
            operator.stop()
        bed.down()


if __name__ == "__main__":
    sys.exit(main())
