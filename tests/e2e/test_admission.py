"""Malformed manifests are refused by the API server at admission (OpenAPI schema + CEL rules
generated from the spec models), each with a message naming the field; and the server and the
CLI's parser judge the shared corpus (tests/manifest_corpus.py) alike."""

from __future__ import annotations

import copy
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from manifest_corpus import CASES as CORPUS
from manifest_corpus import RAW
from modeleval.api import crd as crd_module
from modeleval.runner import ManifestError, parse_manifest
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


# kubectl apply keeps the whole manifest in an annotation, which the API server bounds at 256 KiB
# (and then checks no CEL rule): a larger manifest is sent as kubectl create sends it.
APPLY_LIMIT = 200_000


def server_dry_run(bed, manifest: dict | bytes) -> subprocess.CompletedProcess:
    text = manifest if isinstance(manifest, bytes) else yaml.safe_dump(manifest).encode()
    verb = "apply" if len(text) < APPLY_LIMIT else "create"
    result = subprocess.run([str(Tools.locate().kubectl), f"--kubeconfig={bed.kubeconfig}", verb,
                             "--dry-run=server", "-f", "-"], input=text, capture_output=True,
                            timeout=60)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))


def test_the_good_manifest_is_admitted(bed, crd):
    result = server_dry_run(bed, GOOD)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("manifest, field", CASES, ids=[f"{i:02d}-{f}" for i, (_, f) in enumerate(CASES)])
def test_malformed_manifest_is_refused_naming_the_field(bed, crd, manifest, field):
    result = server_dry_run(bed, manifest)
    assert result.returncode != 0, f"admitted: {manifest}"
    assert field in result.stderr, result.stderr


@pytest.fixture(scope="module")
def verdicts(bed, crd) -> dict[str, subprocess.CompletedProcess]:
    """The server's answer to every corpus case (dry runs are independent: run eight at once)."""
    with ThreadPoolExecutor(8) as pool:
        answers = pool.map(lambda case: server_dry_run(bed, case.manifest), CORPUS)
        return {case.id: answer for case, answer in zip(CORPUS, answers)}


def cli_verdict(manifest: dict) -> str | None:
    """The CLI parser's refusal (one line), or None when it accepts the manifest."""
    try:
        parse_manifest(yaml.safe_dump(manifest))
    except ManifestError as error:
        return str(error)
    return None


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_server_and_cli_judge_the_corpus_alike(verdicts, case):
    server, cli = verdicts[case.id], cli_verdict(case.manifest)
    if case.accepted:
        assert server.returncode == 0, f"refused at admission: {server.stderr}"
        assert cli is None, f"refused by the CLI: {cli}"
        return
    assert server.returncode != 0, f"admitted: {case.manifest}"
    assert cli is not None, f"accepted by the CLI: {case.manifest}"
    assert case.field in cli, cli
    if case.has_json:
        assert case.field in server.stderr, server.stderr
    else:  # NaN or infinity: JSON has no spelling for it, so kubectl stops before the server
        assert "unsupported value" in server.stderr, server.stderr


def test_every_rule_in_the_crd_is_met_by_the_corpus_at_admission(verdicts):
    """Every CEL rule the models generate refuses some corpus case on the server (the unit test
    checks the same messages come from the CLI for the same corpus)."""
    said = " | ".join(v.stderr for v in verdicts.values())
    rules = [r for r in crd_module.cel_rules() if "oldSelf" not in r["rule"]]  # updates only
    assert len(rules) >= 20
    missing = [r["message"] for r in rules if r["message"] not in said]
    assert not missing, f"rules no corpus case meets at admission: {missing}"
    assert "Duplicate value" in said  # the list types: metrics and buckets sets, slices map


@pytest.mark.parametrize("case", RAW, ids=[c.id for c in RAW])
def test_unreadable_text_through_kubectl(bed, crd, case):
    """The CLI refuses each of these with one line (test_spec). kubectl refuses them too, except
    a repeated key: it converts YAML to JSON on the client and keeps the last value silently, so
    the server never sees the repetition (see the next test for when it does). Bytes that are
    not UTF-8 kubectl turns into U+FFFD; the corpus puts them in a label, which cannot hold it."""
    result = server_dry_run(bed, case.text)
    assert (result.returncode != 0) == case.kubectl_refuses, result.stdout + result.stderr


def test_the_server_refuses_a_repeated_key_it_receives(bed, crd):
    """A client that sends the repeated key (JSON text as written) with strict field validation,
    as kubectl does for what it sends, is refused naming the field."""
    body = json.dumps(GOOD)[:-2] + ', "task": "binary"}}'
    assert body.count('"task"') == 2
    url = "/apis/modeleval.dev/v1alpha1/namespaces/default/modelevaluations"
    result = subprocess.run(
        [str(Tools.locate().kubectl), f"--kubeconfig={bed.kubeconfig}", "create", "--raw",
         f"{url}?dryRun=All&fieldValidation=Strict", "-f", "-"],
        input=body, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout
    assert 'duplicate field "spec.task"' in result.stderr, result.stderr


@pytest.mark.parametrize("field, value", [("rayClusterName", "platform-cluster"),
                                          ("keepCluster", True)])
def test_the_cluster_fields_cannot_change_after_creation(bed, crd, field, value):
    """Whose RayCluster an evaluation runs on, and whether it is deleted after, is fixed when it
    is created: the API server refuses an edit (the operator refuses one it sees anyway)."""
    name = f"fixed-{field.lower()}"
    manifest = copy.deepcopy(GOOD)
    manifest["metadata"]["name"] = name
    manifest["spec"]["suspend"] = True  # nothing runs: only the edit is judged
    kubectl(bed, "create", "-n", "default", "-f", "-", input=yaml.safe_dump(manifest))
    try:
        patch = json.dumps({"spec": {field: value}})
        edited = kubectl(bed, "patch", "-n", "default", "modelevaluation", name, "--type=merge",
                         "-p", patch, check=False)
        assert f"spec.{field}: Invalid value" in edited and \
            f"{field} cannot change after creation" in edited, edited
        # Any other field still may (the rules compare only these two).
        kubectl(bed, "patch", "-n", "default", "modelevaluation", name, "--type=merge",
                "-p", json.dumps({"spec": {"batchSize": 1024}}))
    finally:
        kubectl(bed, "delete", "-n", "default", "modelevaluation", name, "--wait=false", check=False)
