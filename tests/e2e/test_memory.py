"""A tenant's largest schedule does not take the operator past its memory limit: a schedule at
`* * * * *` whose template is 1.3 MB (10,000 feature column names), with 100 children of that
size, while the operator watches them all, lists them every round (every 2 s) and makes a new
1.3 MB child at the next cron minute. The operator's resident memory, sampled throughout, stays under the chart's limit."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest
import yaml
from kubernetes import client

from modeleval.api.spec import parse_quantity

from .kube import eventually
from .operator_fixture import CRD, EVALUATIONS, ROOT, OperatorProcess, kubectl, new_namespace

pytestmark = pytest.mark.e2e
SCHEDULE_CRD = ROOT / "crds" / "evaluationschedules.modeleval.dev.yaml"
SCHEDULES = ("modeleval.dev", "v1alpha1", "evaluationschedules")
LABEL = "modeleval.dev/schedule"
CHILDREN = 100
FIGURES = Path("/tmp/modeleval-memory-figures.json")


def chart_memory_limit() -> float:
    values = yaml.safe_load((ROOT / "charts" / "modeleval" / "values.yaml").read_text())
    return parse_quantity(values["resources"]["limits"]["memory"])


def large_template() -> dict:
    """1.3 MB: a table dataset naming 10,000 feature columns. Suspended, so its children hold
    no RayCluster (the memory in question is the operator's, not Ray's)."""
    columns = [f"feature_{i:05d}_" + "x" * 112 for i in range(10_000)]
    return {"task": "ranking", "model": {"uri": "s3://models/ranker.json"},
            "dataset": {"uri": "s3://datasets/table.parquet", "format": "parquet",
                        "groupColumn": "qid", "featureColumns": columns},
            "metrics": ["ndcg@10"], "suspend": True}


class RssSampler(threading.Thread):
    """The operator's resident set size, every 0.25 s, until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.monotonic(), self.process.memory_info().rss))
            self.done.wait(0.25)



@pytest.fixture(scope="module")
def crds(bed):
    for path in (CRD, SCHEDULE_CRD):
        kubectl(bed, "apply", "--server-side", "--force-conflicts", "-f", str(path))
    kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev",
            "crd/evaluationschedules.modeleval.dev")


def make_children(api, namespace: str, schedule: dict, template: dict) -> None:
    """100 finished children, as the schedule's history would hold them."""
    custom = client.CustomObjectsApi(api)
    meta = schedule["metadata"]
    owner = {"apiVersion": "modeleval.dev/v1alpha1", "kind": "EvaluationSchedule",
             "name": meta["name"], "uid": meta["uid"], "controller": True}
    done = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for i in range(CHILDREN):
        name = f"{meta['name']}-h{i:03d}"
        custom.create_namespaced_custom_object(*EVALUATIONS[:2], namespace, EVALUATIONS[2], {
            "apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
            "metadata": {"name": name, "labels": {LABEL: meta["name"]},
                         "ownerReferences": [owner]},
            "spec": template})
        custom.patch_namespaced_custom_object_status(
            *EVALUATIONS[:2], namespace, EVALUATIONS[2], name,
            {"status": {"phase": "Succeeded", "attempt": 1, "completionTime": done,
                        "metrics": {"ndcg@10": 0.5 + i / 1000}}})


def retried(call, attempts: int = 5):
    """A read the API server may answer 504 while its watch cache catches up with a burst of
    1.3 MB writes (\"Too large resource version\"): asked again a second later."""
    for attempt in range(attempts):
        try:
            return call()
        except client.exceptions.ApiException as error:
            if error.status is None or error.status < 500 or attempt == attempts - 1:
                raise
            time.sleep(1)


def children(api, namespace: str, name: str) -> list[dict]:
    """The children's names and phases (read a page at a time: the test holds no 130 MB)."""
    custom, found, token = client.CustomObjectsApi(api), [], None
    while True:
        page = retried(lambda: custom.list_namespaced_custom_object(
            *EVALUATIONS[:2], namespace, EVALUATIONS[2], label_selector=f"{LABEL}={name}",
            limit=10, **({"_continue": token} if token else {})))
        found += [(o["metadata"]["name"], (o.get("status") or {}).get("phase"))
                  for o in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            return found


@pytest.mark.timeout(900)
def test_a_1_3_mb_schedule_with_100_children_stays_under_the_memory_limit(bed, api, crds,
                                                                          tmp_path):
    """The schedule and its history are in place before the operator starts (so no round of
    the operator races the test's status writes); then the operator lists and watches them all
    and makes a child at the next minute (one cron run: a second would add a minute of the same
    rounds to make test)."""
    namespace = new_namespace(bed, api)
    operator = None
    try:
        template = large_template()
        assert len(json.dumps(template)) > 1_300_000
        name = f"big-{uuid.uuid4().hex[:4]}"
        custom = client.CustomObjectsApi(api)
        schedule = custom.create_namespaced_custom_object(*SCHEDULES[:2], namespace, SCHEDULES[2], {
            "apiVersion": "modeleval.dev/v1alpha1", "kind": "EvaluationSchedule",
            "metadata": {"name": name},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Allow",
                     "successfulHistoryLimit": 100, "template": template}})
        make_children(api, namespace, schedule, template)
        history = {n for n, phase in children(api, namespace, name) if phase == "Succeeded"}
        assert len(history) == CHILDREN
        operator = OperatorProcess(bed, tmp_path / "operator.log",
                                   MODELEVAL_SCHEDULE_POLL_INTERVAL="2",
                                   MODELEVAL_POLL_INTERVAL="2")
        operator.start()
        sampler = RssSampler(operator.process.pid)
        sampler.start()
        try:
            # A new 1.3 MB child at the next minute, every child listed each round.
            eventually(lambda: len({n for n, _ in children(api, namespace, name)} - history) >= 1,
                       140, "a cron run of the large schedule", interval=5)
            time.sleep(20)
            assert operator.process.poll() is None, "the operator exited"
        finally:
            sampler.done.set()
            sampler.join()
            figures = report(sampler, len({n for n, _ in children(api, namespace, name)} - history))
    finally:
        # The namespace goes while the operator still runs: it takes its finalizers off the
        # 100 large children, so no later test's operator inherits them to clean up.
        core = client.CoreV1Api(api)
        core.delete_namespace(namespace)
        if operator is not None:
            try:
                eventually(lambda: namespace not in {n.metadata.name for n in
                                                     core.list_namespace().items},
                           300, f"namespace {namespace} to be deleted", interval=2)
            finally:
                operator.stop()
    assert figures["peak_rss_mib"] < figures["limit_mib"], figures


def report(sampler: RssSampler, runs: int) -> dict:
    """The figures, printed and written to FIGURES (also when the test fails)."""
    rss = [r for _, r in sampler.samples]
    figures = {"first_rss_mib": rss[0] / 2**20, "peak_rss_mib": max(rss) / 2**20,
               "last_rss_mib": rss[-1] / 2**20, "limit_mib": chart_memory_limit() / 2**20,
               "samples": len(rss), "seconds": sampler.samples[-1][0] - sampler.samples[0][0],
               "new_children": runs}
    FIGURES.write_text(json.dumps(figures, indent=1))
    print(f"operator RSS: {figures}")
    return figures
