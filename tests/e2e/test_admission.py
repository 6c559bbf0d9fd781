"""Malformed manifests are refused by the API server at admission (OpenAPI schema + CEL rules
generated from the spec models), each with a message naming the field."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

from testbed import Tools

from .operator_fixture import CRD, kubectl

pytestmark = pytest.mark.e2e

GOOD = {
    "apiVersion": "modeleval.dev/v1alpha1",
    "kind": "ModelEvaluation",
    "metadata": {"name": "ok"},
    "spec": {"task": "ranking", "model": {"uri": "s3://models/ranker.json"},
             "dataset": {"uri": "s3://datasets/test.txt"}, "metrics": ["ndcg@10", "mrr"]},
}


def mutate(path: str, value, name: str | None = None) -> dict:
    doc = copy.deepcopy(GOOD)
    target = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    if value is _DELETE:
        target.pop(keys[-1])
    else:
        target[keys[-1]] = value
    if name:
        doc["metadata"]["name"] = name
    return doc


_DELETE = object()

CASES = [
    (mutate("spec.task", "clustering"), "spec.task"),
    (mutate("spec.task", 3), "spec.task"),
    (mutate("spec.metrics", []), "spec.metrics"),
    (mutate("spec.metrics", ["ndcg@0"]), "spec.metrics[0]"),
    (mutate("spec.metrics", ["ndcg@-3"]), "spec.metrics[0]"),
    (mutate("spec.metrics", ["bleu"]), "spec.metrics[0]"),
    (mutate("spec.metrics", ["ndcg@10", "ndcg@10"]), "spec.metrics[1]"),
    (mutate("spec.metrics", ["auc"]), "spec.metrics"),
    (mutate("spec.metrics", ["mrr@5"]), "spec.metrics"),
    (mutate("spec.metrics", "ndcg@10"), "spec.metrics"),
    (mutate("spec.model.uri", "http://example.com/m.json"), "spec.model.uri"),
    (mutate("spec.model.uri", "s3://x/m.json"), "spec.model.uri"),
    (mutate("spec.model.uri", "s3://" + "a" * 2100), "spec.model.uri"),
    (mutate("spec.model.format", "tensorflow"), "spec.model.format"),
    (mutate("spec.model.format", "pickle"), "spec.model.allowPickle"),
    (mutate("spec.model", _DELETE), "spec.model"),
    (mutate("spec.dataset", _DELETE), "spec.dataset"),
    (mutate("spec.dataset.uri", "ftp://host/data"), "spec.dataset.uri"),
    (mutate("spec.dataset.format", "xlsx"), "spec.dataset.format"),
    (mutate("spec.dataset.format", "parquet"), "spec.dataset.groupColumn"),
    (mutate("spec.dataset.numFeatures", 0), "spec.dataset.numFeatures"),
    (mutate("spec.resources", {"workers": 0}), "spec.resources.workers"),
    (mutate("spec.resources", {"workers": 100000}), "spec.resources.workers"),
    (mutate("spec.resources", {"cpu": "-1"}), "spec.resources.cpu"),
    (mutate("spec.resources", {"memory": "lots"}), "spec.resources.memory"),
    (mutate("spec.resources", {"gpu": -1}), "spec.resources.gpu"),
    (mutate("spec.resources", {"gpu": 1000}), "spec.resources.gpu"),
    (mutate("spec.batchSize", 0), "spec.batchSize"),
    (mutate("spec.batchSize", 10**12), "spec.batchSize"),
    (mutate("spec.backoffLimit", -1), "spec.backoffLimit"),
    (mutate("spec.activeDeadlineSeconds", 0), "spec.activeDeadlineSeconds"),
    (mutate("spec.gate", [{"metric": "ndcg@10"}]), "spec.gate[0]"),
    (mutate("spec.gate", [{"metric": "map@10", "min": 0.1}]), "spec.gate"),
    (mutate("spec.gate", [{"metric": "ndcg@10", "maxRegression": 0.1}]), "spec.gate"),
    (mutate("spec.slices", [{"name": "s", "feature": 1}]), "spec.slices[0]"),
    (mutate("spec.slices", [{"name": "s"}]), "spec.slices[0]"),
    (mutate("spec.slices", [{"name": "Bad Name", "column": "c"}]), "spec.slices[0].name"),
    (mutate("spec.rayClusterName", "Not_A_Name"), "spec.rayClusterName"),
    (mutate("metadata.name", "x" * 300), "metadata.name"),
    (mutate("metadata.name", "évaluation-ü"), "metadata.name"),
]


@pytest.fixture(scope="module")
def crd(bed):
    kubectl(bed, "apply", "--server-side", "-f", str(CRD))
    kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev")


def server_dry_run(bed, manifest: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(Tools.locate().kubectl), f"--kubeconfig={bed.kubeconfig}", "apply",
                           "--dry-run=server", "-f", "-"], input=yaml.safe_dump(manifest),
                          capture_output=True, text=True, timeout=60)


def test_the_good_manifest_is_admitted(bed, crd):
    result = server_dry_run(bed, GOOD)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("manifest, field", CASES, ids=[f"{i:02d}-{f}" for i, (_, f) in enumerate(CASES)])
def test_malformed_manifest_is_refused_naming_the_field(bed, crd, manifest, field):
    result = server_dry_run(bed, manifest)
    assert result.returncode != 0, f"admitted: {manifest}"
    assert field in result.stderr, result.stderr
