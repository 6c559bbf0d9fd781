"""Mutated ModelEvaluation manifests that the CLI's parser and the API server must judge alike.

Each case is one change to a good manifest, and the field its refusal must name (``None``: both
sides must accept it). tests/unit/test_spec.py runs every case through ``runner.parse_manifest``
(what ``modeleval run`` and the runner read); tests/e2e/test_admission.py runs the same cases
through ``kubectl apply --dry-run=server`` against the generated CRD. A case one side accepts
and the other refuses fails one of the two, and every rule in the CRD must be met by some case.

``RAW`` holds what only exists as text (bytes that are not UTF-8, absurd nesting, a repeated
key): the CLI must answer each with one line, never a traceback.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

GOOD: dict[str, Any] = {
    "apiVersion": "modeleval.dev/v1alpha1",
    "kind": "ModelEvaluation",
    "metadata": {"name": "ok"},
    "spec": {"task": "ranking", "model": {"uri": "s3://models/ranker.json"},
             "dataset": {"uri": "s3://datasets/test.txt"}, "metrics": ["ndcg@10", "mrr"]},
}

DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def mutate(changes: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (default GOOD) with each ``path: value`` set; paths are dotted with
    list indexes (``spec.slices[0].buckets``); ``DELETE`` removes the key."""
    doc = copy.deepcopy(base or GOOD)
    for path, value in changes.items():
        steps = [int(i) if i else k for k, i in _STEP.findall(path)]
        target: Any = doc
        for step, following in zip(steps, steps[1:]):
            if isinstance(step, int):
                target = target[step]
            else:
                target = target.setdefault(step, [] if isinstance(following, int) else {})
        if value is DELETE:
            target.pop(steps[-1])
        elif isinstance(steps[-1], int) and steps[-1] == len(target):
            target.append(value)
        else:
            target[steps[-1]] = value
    return doc


@dataclass(frozen=True)
class Case:
    id: str
    manifest: dict[str, Any]
    field: str | None  # what the refusal names on both sides; None: both accept it

    @property
    def has_json(self) -> bool:
        """False for NaN and infinity: JSON cannot spell them, so kubectl refuses the manifest
        before the API server sees it (and cannot say which field)."""
        return _finite(self.manifest)

    @property
    def accepted(self) -> bool:
        return self.field is None


def _finite(node: Any) -> bool:
    if isinstance(node, dict):
        return all(_finite(v) for v in node.values())
    if isinstance(node, list):
        return all(_finite(v) for v in node)
    return not isinstance(node, float) or math.isfinite(node)


def refused(id: str, field: str, changes: dict[str, Any], base: dict[str, Any] | None = None) -> Case:
    return Case(id, mutate(changes, base), field)


def refused_each(field: str, values: dict[str, Any]) -> list[Case]:
    """One case per id: ``field`` set to the value, the refusal naming ``field``."""
    return [refused(id, field, {field: value}) for id, value in values.items()]


def accepted(id: str, changes: dict[str, Any], base: dict[str, Any] | None = None) -> Case:
    return Case(id, mutate(changes, base), None)


BINARY = mutate({"spec.task": "binary", "spec.metrics": ["auc", "precision", "recall"],
                 "spec.dataset": {"uri": "s3://datasets/clicks.parquet", "format": "parquet",
                                  "labelColumn": "clicked"}})
SLICED = mutate({"spec.slices": [{"name": "f1", "feature": 0, "buckets": [1.0, 2.0, 4.0]}]})
GATED = mutate({"spec.gate": [{"metric": "ndcg@10", "min": 0.2, "max": 0.9}]})
PICKLE = {"uri": "s3://models/champion.pkl", "format": "pickle"}
COMPARED = mutate({"spec.baseline.model.uri": "s3://models/champion.json",
                   "spec.confidence": {"level": 0.9, "resamples": 200, "seed": 7},
                   "spec.challengers": [{"name": "small", "model": {"uri": "s3://models/small.json"}}],
                   "spec.gate": [{"metric": "ndcg@10", "minAbsoluteChange": 0.01,
                                  "requireSignificant": True}]})
_NAN, _INF = float("nan"), float("inf")

CASES: list[Case] = [
    # Size: the feature columns' names are bounded in all (6,000 names of 221 characters, 1.3 MB
    # in all; the whole manifest stays under what the API server reads).
    refused("featureColumns-too-long-in-all", "spec.dataset.featureColumns", {"spec.dataset": {
        "uri": "s3://datasets/t.parquet", "format": "parquet", "groupColumn": "qid",
        "featureColumns": [f"f{i:05d}" + "x" * 215 for i in range(6000)]}}),
    # Loose types: a string is not a number or a boolean, a number is not a boolean.
    refused("allowPickle-yes", "spec.model.allowPickle", {"spec.model.allowPickle": "yes"}),
    refused("allowPickle-1", "spec.model.allowPickle", {"spec.model.allowPickle": 1}),
    refused("workers-string", "spec.resources.workers", {"spec.resources.workers": "2"}),
    refused("workers-bool", "spec.resources.workers", {"spec.resources.workers": True}),
    refused("numFeatures-string", "spec.dataset.numFeatures", {"spec.dataset.numFeatures": "136"}),
    refused("keepCluster-no", "spec.keepCluster", {"spec.keepCluster": "no"}),
    refused("gate-min-string", "spec.gate[0].min", {"spec.gate[0].min": "0.5"}, GATED),
    refused("bucket-string", "spec.slices[0].buckets[1]", {"spec.slices[0].buckets[1]": "2"}, SLICED),
    refused("nodeSelector-int", "spec.nodeSelector.disktype", {"spec.nodeSelector": {"disktype": 1}}),
    # Only the camelCase spelling the CRD has.
    refused("snake-label_column", "spec.dataset.label_column", {"spec.dataset.label_column": "y"}),
    refused("snake-batch_size", "spec.batch_size", {"spec.batch_size": 1024}),
    refused("snake-head_cpu", "spec.resources.head_cpu", {"spec.resources.head_cpu": "2"}),
    # Quantities the CLI always refused, now refused at admission too.
    *refused_each("spec.resources.cpu", {"cpu-0": "0", "cpu-0m": "0m"}),
    *refused_each("spec.resources.memory", {"memory-255Mi": "255Mi", "memory-100M": "100M"}),
    refused("headCpu-0", "spec.resources.headCpu", {"spec.resources.headCpu": "0.0"}),
    refused("headMemory-128Mi", "spec.resources.headMemory", {"spec.resources.headMemory": "128Mi"}),
    # Slices and gates that were accepted but meant nothing.
    refused("buckets-unsorted", "spec.slices[0].buckets", {"spec.slices[0].buckets": [2.0, 1.0]},
            SLICED),
    refused("buckets-repeated", "spec.slices[0].buckets",
            {"spec.slices[0].buckets": [1.0, 1.0, 2.0]}, SLICED),
    refused("slice-neither", "spec.slices[0]", {"spec.slices[0]": {"name": "s"}}, SLICED),
    refused("slice-both", "spec.slices[0]", {"spec.slices[0].column": "country"}, SLICED),
    refused("slice-feature-no-buckets", "spec.slices[0].buckets",
            {"spec.slices[0].buckets": DELETE}, SLICED),
    refused("slices-same-name", "spec.slices[1]", {"spec.slices[1]": {"name": "f1", "column": "c"}},
            SLICED),
    refused("gate-min-above-max", "spec.gate[0].min", {"spec.gate[0].min": 0.95}, GATED),
    # NaN and infinity have no JSON spelling: kubectl cannot send them (see test_admission).
    refused("bucket-nan", "spec.slices[0].buckets", {"spec.slices[0].buckets[1]": _NAN}, SLICED),
    refused("gate-max-inf", "spec.gate[0].max", {"spec.gate[0].max": _INF}, GATED),
    # Metrics: the message names spec.metrics; @k cut-offs are for ranking only.
    refused("binary-precision@5", "spec.metrics", {"spec.metrics": ["auc", "precision@5"]}, BINARY),
    refused("binary-auc@10", "spec.metrics", {"spec.metrics": ["auc@10"]}, BINARY),
    refused("regression-rmse@3", "spec.metrics", {"spec.task": "regression",
                                                   "spec.metrics": ["rmse@3"]}, BINARY),
    refused("ranking-mrr@10", "spec.metrics", {"spec.metrics": ["mrr@10"]}),
    refused("ranking-precision-no-k", "spec.metrics", {"spec.metrics": ["ndcg@10", "precision"]}),
    refused("ranking-auc", "spec.metrics", {"spec.metrics": ["auc"]}),
    refused("multiclass-ndcg@5", "spec.metrics", {"spec.task": "multiclass",
                                                  "spec.metrics": ["accuracy", "ndcg@5"]}, BINARY),
    refused("gate-no-bound", "spec.gate[0]", {"spec.gate[0]": {"metric": "ndcg@10"}}, GATED),
    refused("gate-metric-not-listed", "spec.gate", {"spec.gate[0].metric": "map@10"}, GATED),
    refused("gate-maxRegression-no-baseline", "spec.gate",
            {"spec.gate": [{"metric": "ndcg@10", "maxRegression": 0.01}]}),
    # Promotion: a registered candidate and a gate.
    refused("promote-s3-model", "spec.promote", {"spec.promote": {"alias": "champion"}}, GATED),
    refused("promote-no-gate", "spec.promote", {"spec.model.uri": "models:/ranker@candidate",
                                                "spec.promote": {"alias": "champion"}}),
    accepted("promote-registered-gated", {"spec.model.uri": "models:/ranker@candidate",
                                          "spec.promote": {"alias": "champion"}}, GATED),
    refused("models-uri-no-version", "spec.model.uri", {"spec.model.uri": "models:/ranker"}),
    # MLflow-style gate rules, intervals and challengers.
    refused("gate-minAbsoluteChange-no-baseline", "spec.gate",
            {"spec.gate": [{"metric": "ndcg@10", "minAbsoluteChange": 0.01}]}),
    refused("gate-minRelativeChange-no-baseline", "spec.gate",
            {"spec.gate": [{"metric": "ndcg@10", "minRelativeChange": 0.01}]}),
    refused("gate-significant-no-baseline", "spec.gate",
            {"spec.baseline": DELETE, "spec.gate[0].minAbsoluteChange": DELETE}, COMPARED),
    refused("gate-significant-no-confidence", "spec.gate", {"spec.confidence": DELETE}, COMPARED),
    refused("gate-significant-false-only", "spec.gate[0]",
            {"spec.gate[0]": {"metric": "ndcg@10", "requireSignificant": False}}, COMPARED),
    refused("gate-minAbsoluteChange-negative", "spec.gate[0].minAbsoluteChange",
            {"spec.gate[0].minAbsoluteChange": -0.01}, COMPARED),
    # MLflow's MetricThreshold refuses a min_absolute_change <= 0 (0 is no change).
    refused("gate-minAbsoluteChange-0", "spec.gate[0].minAbsoluteChange",
            {"spec.gate[0].minAbsoluteChange": 0}, COMPARED),
    refused("gate-minAbsoluteChange-0.0", "spec.gate[0].minAbsoluteChange",
            {"spec.gate[0].minAbsoluteChange": 0.0}, COMPARED),
    refused("gate-minRelativeChange-above-1", "spec.gate[0].minRelativeChange",
            {"spec.gate[0].minRelativeChange": 1.5}, COMPARED),
    refused("gate-higherIsBetter-string", "spec.gate[0].higherIsBetter",
            {"spec.gate[0].higherIsBetter": "yes"}, COMPARED),
    refused("confidence-level-1", "spec.confidence.level", {"spec.confidence.level": 1.0}, COMPARED),
    refused("confidence-level-string", "spec.confidence.level",
            {"spec.confidence.level": "0.95"}, COMPARED),
    refused("confidence-resamples-10", "spec.confidence.resamples",
            {"spec.confidence.resamples": 10}, COMPARED),
    refused("confidence-seed-negative", "spec.confidence.seed", {"spec.confidence.seed": -1}, COMPARED),
    refused("challengers-same-name", "spec.challengers[1]",
            {"spec.challengers[1]": {"name": "small", "model": {"uri": "s3://models/b.json"}}},
            COMPARED),
    refused("challengers-nine", "spec.challengers",
            {"spec.challengers": [{"name": f"c{i}", "model": {"uri": f"s3://models/{i}.json"}}
                                  for i in range(9)]}, COMPARED),
    refused("challenger-pickle", "spec.challengers[0].model.allowPickle",
            {"spec.challengers[0].model": PICKLE}, COMPARED),
    refused("challenger-name-dot", "spec.challengers[0].name",
            {"spec.challengers[0].name": "v1.2"}, COMPARED),
    refused("challenger-named-baseline", "spec.challengers[0].name",
            {"spec.challengers[0].name": "baseline"}, COMPARED),
    refused("missingFeatures-nan", "spec.dataset.missingFeatures",
            {"spec.dataset.missingFeatures": "nan"}),
    refused("missingFeatures-zero-parquet", "spec.dataset.missingFeatures",
            {"spec.dataset.missingFeatures": "zero"}, BINARY),
    refused("ranking-parquet-no-group", "spec.dataset.groupColumn",
            {"spec.dataset": {"uri": "s3://datasets/q.parquet", "format": "parquet"}}),
    # A pickle runs code when loaded: refused unless allowed, for the baseline too.
    refused("baseline-pickle", "spec.baseline.model.allowPickle", {"spec.baseline.model": PICKLE}),
    refused("model-pickle", "spec.model.allowPickle", {"spec.model": PICKLE}),
    # Storage keys: no walking out with '..'; predictionsUri has the model's URI rules.
    refused("model-dotdot", "spec.model.uri", {"spec.model.uri": "s3://models/../secrets/m.json"}),
    refused("dataset-dotdot", "spec.dataset.uri", {"spec.dataset.uri": "s3://datasets/a/../../b"}),
    refused("baseline-dotdot", "spec.baseline.model.uri",
            {"spec.baseline.model.uri": "s3://models/x/.."}),
    *refused_each("spec.output.predictionsUri", {"predictions-dotdot": "s3://out/../other-team/",
                                                 "predictions-no-bucket": "s3:///predictions/",
                                                 "predictions-bad-bucket": "s3://Bad_Bucket/p/"}),
    *refused_each("spec.pendingTimeoutSeconds", {"pending-9s": 9, "pending-2d": 2 * 86400,
                                                 "pending-text": "60s"}),
    # MongoDB names that are MongoDB's, the engine's, or that pymongo refuses at run time.
    *refused_each("spec.output.mongodb.database", {"db-admin": "admin", "db-local": "local",
                                                   "db-Config": "Config"}),
    *refused_each("spec.output.mongodb.collection", {
        "coll-system": "system.users", "coll-progress": "progress", "coll-double-dot": "a..b",
        "coll-leading-dot": ".results", "coll-trailing-dot": "results.", "coll-dollar": "a$b"}),
    # Names that become other objects' names and label values.
    refused("name-64", "metadata.name", {"metadata.name": "n" * 64}),
    refused("name-dot", "metadata.name", {"metadata.name": "team.ranker"}),
    # Labels and annotations as the API server checks them (api/metadata.py).
    *refused_each("metadata.labels", {"label-key-space": {"bad key": "x"},
                                      "label-key-two-slashes": {"a/b/c": "x"},
                                      "label-key-prefix-upper": {"Example.com/team": "x"},
                                      "label-key-prefix-254": {"a" * 254 + "/x": "y"},
                                      "label-key-name-64": {"n" * 64: "x"},
                                      "label-value-space": {"app": "a b"},
                                      "label-value-64": {"app": "v" * 64},
                                      "label-value-number": {"app": 1},
                                      "label-value-nul": {"app": "a\0"}}),
    *refused_each("metadata.annotations", {"annotation-key-space": {"bad key": "x"},
                                           "annotation-key-empty-prefix": {"/x": "y"},
                                           "annotation-value-number": {"note": 1},
                                           "annotations-over-256KiB": {"big": "x" * 2**18}}),
    # Pod fields Kubernetes or the container runtime would refuse later.
    *refused_each("spec.rayImage", {"image-space": "ray image:2.9", "image-upper": "Team/Ray:2.9",
                                    "image-empty-tag": "rayproject/ray:",
                                    "image-bad-digest": "ray@sha256:xyz"}),
    refused("nodeSelector-key-space", "spec.nodeSelector", {"spec.nodeSelector": {"disk type": "ssd"}}),
    refused("nodeSelector-key-slashes", "spec.nodeSelector", {"spec.nodeSelector": {"a/b/c": "x"}}),
    refused("nodeSelector-key-long", "spec.nodeSelector", {"spec.nodeSelector": {"k" * 64: "x"}}),
    refused("nodeSelector-value-space", "spec.nodeSelector.disktype",
            {"spec.nodeSelector": {"disktype": "fast ssd"}}),
    refused("nodeSelector-value-long", "spec.nodeSelector.zone",
            {"spec.nodeSelector": {"zone": "z" * 64}}),
    refused("toleration-exists-value", "spec.tolerations[0].value",
            {"spec.tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]}),
    refused("toleration-key-space", "spec.tolerations[0].key",
            {"spec.tolerations": [{"key": "my key", "operator": "Exists"}]}),
    refused("toleration-empty-key-equal", "spec.tolerations[0].operator",
            {"spec.tolerations": [{"operator": "Equal", "value": "x"}]}),
    refused("toleration-seconds-no-noexecute", "spec.tolerations[0].tolerationSeconds",
            {"spec.tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule",
                                   "tolerationSeconds": 60}]}),
    refused("toleration-value-invalid", "spec.tolerations[0].value",
            {"spec.tolerations": [{"key": "k", "operator": "Equal", "value": "a b"}]}),
    # Kueue: a queue admits a cluster the evaluation creates, never a shared one.
    refused("queueName-with-rayClusterName", "spec.queueName",
            {"spec.queueName": "team-a", "spec.rayClusterName": "shared"}),
    refused("queueName-not-a-name", "spec.queueName", {"spec.queueName": "Team_A"}),

    # Good variants: both sides accept each.
    accepted("good", {}),
    accepted("pending-60s", {"spec.pendingTimeoutSeconds": 60}),
    accepted("queued-in-kueue", {"spec.queueName": "team-a"}),
    accepted("ranking-precision@5", {"spec.metrics": ["ndcg@10", "precision@5", "recall@5"],
                                     "spec.gate": [{"metric": "precision@5", "min": 0.1}]}),
    accepted("binary-untruncated", {}, BINARY),
    accepted("regression", {"spec.task": "regression", "spec.metrics": ["rmse", "mae", "r2"]},
             BINARY),
    accepted("buckets-sorted-ints", {"spec.slices[0].buckets": [1, 2, 4]}, SLICED),
    accepted("slices-distinct", {"spec.slices[1]": {"name": "country", "column": "country"}}, SLICED),
    accepted("gate-min-equals-max", {"spec.gate[0].min": 0.5, "spec.gate[0].max": 0.5}, GATED),
    accepted("gate-int-bounds", {"spec.gate[0].min": 0, "spec.gate[0].max": 1}, GATED),
    accepted("pickle-allowed", {"spec.model": {**PICKLE, "allowPickle": True},
                                "spec.baseline.model": {**PICKLE, "allowPickle": True},
                                "spec.gate": [{"metric": "ndcg@10", "maxRegression": 0.01}]}),
    accepted("compared", {}, COMPARED),
    accepted("mlflow-gate", {"spec.gate": [
        {"metric": "ndcg@10", "threshold": 0.3, "minRelativeChange": 0.02, "higherIsBetter": True},
        {"metric": "mrr", "minAbsoluteChange": 0.001, "requireSignificant": False, "max": 1}]},
             COMPARED),
    accepted("confidence-defaults", {"spec.confidence": {}}),
    accepted("confidence-bounds", {"spec.confidence": {"level": 0.5, "resamples": 10000,
                                                       "seed": 4294967295}}),
    accepted("challengers-eight", {"spec.challengers": [
        {"name": f"c{i}", "model": {"uri": f"s3://models/{i}.json"}} for i in range(8)]}, COMPARED),
    accepted("missingFeatures-letor", {"spec.dataset.missingFeatures": "zero",
                                       "spec.dataset.format": "letor"}),
    accepted("missingFeatures-missing-parquet", {"spec.dataset.missingFeatures": "missing"}, BINARY),
    accepted("small-resources", {"spec.resources": {"cpu": "100m", "memory": "256Mi",
                                                    "headCpu": "0.5", "headMemory": "0.25Gi"}}),
    accepted("mongo-names", {"spec.output.mongodb": {"database": "team_a",
                                                      "collection": "eval.results-v2"}}),
    accepted("dots-in-a-name", {"spec.model.uri": "s3://models/v1..2/ranker.json",
                                "spec.output.predictionsUri": "s3://out-bucket/preds/"}),
    accepted("name-63", {"metadata.name": "n" * 63}),
    accepted("labels-and-annotations", {
        "metadata.labels": {"app.kubernetes.io/name": "ranker", "team": "", "a" * 63: "b" * 63,
                            "x" * 253 + "/y": "z"},
        "metadata.annotations": {"Example.com/Note": "annotation keys are checked lowercased",
                                 "note": "free text: spaces, 'quotes', a newline\nand a tab\t",
                                 "big": "x" * 100_000}}),
    # Data quality: one reference, one check per rule, bounds with something in them.
    refused("dataQuality-two-references", "spec.dataQuality.reference",
            {"spec.dataQuality": {"reference": {"evaluation": "weekly-1", "schedule": "first"}}}),
    refused("dataQuality-rule-two-checks", "spec.dataQuality.rules[0]",
            {"spec.dataQuality": {"rules": [{"maxMissingRate": 0.1, "rows": {"min": 10}}]}}),
    refused("dataQuality-features-without-rate", "spec.dataQuality.rules[0].features",
            {"spec.dataQuality": {"rules": [{"features": ["1"], "noConstantFeatures": True}]}}),
    refused("dataQuality-empty-bounds", "spec.dataQuality.rules[0].rows",
            {"spec.dataQuality": {"rules": [{"rows": {}}]}}),
    refused("dataQuality-bounds-reversed", "spec.dataQuality.rules[0].labelRange",
            {"spec.dataQuality": {"rules": [{"labelRange": {"min": 4, "max": 0}}]}}),
    accepted("dataQuality", {"spec.dataQuality": {
        "reference": {"uri": "s3://datasets/train.txt"},
        "thresholds": {"psi": 0.25, "jensenShannon": None, "ks": 0.1, "ksPValue": 0.01,
                       "driftShare": 0.3},
        "rules": [{"maxMissingRate": 0.05, "features": ["1", "2"], "action": "warn"},
                  {"noConstantFeatures": True}, {"labelRange": {"min": 0, "max": 4}},
                  {"rows": {"min": 1000}}, {"queries": {"min": 10, "max": 100000}},
                  {"sliceValuesSeen": True, "action": "warn"}]}}),
    accepted("image-references", {"spec.rayImage": "registry.example.com:5000/team/ray:2.9.0-py311"
                                  "@sha256:" + "a" * 64}),
    accepted("image-short", {"spec.rayImage": "modeleval/ray:0.1.0"}),
    accepted("nodeSelector-labels", {"spec.nodeSelector": {"kubernetes.io/arch": "amd64",
                                                           "pool.example.com/name": "gpu-a",
                                                           "empty": ""}}),
    accepted("tolerations", {"spec.tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "team", "operator": "Equal", "value": "search"},
        {"operator": "Exists"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}),
]

ACCEPTED = [c for c in CASES if c.accepted]
REFUSED = [c for c in CASES if not c.accepted]

GOOD_YAML = """\
apiVersion: modeleval.dev/v1alpha1
kind: ModelEvaluation
metadata: {name: ok}
spec:
  task: ranking
  model: {uri: s3://models/ranker.json}
  dataset: {uri: s3://datasets/test.txt}
  metrics: [ndcg@10, mrr]
"""


@dataclass(frozen=True)
class RawCase:
    id: str
    text: bytes
    message: str  # what the CLI's one-line error says
    kubectl_refuses: bool = True  # False: kubectl keeps the last of repeated keys, silently


RAW: list[RawCase] = [
    RawCase("not-utf8", GOOD_YAML.replace("name: ok}", "name: ok, labels: {a: \"\xff\"}}")
            .encode("latin-1"), "not UTF-8"),
    RawCase("not-utf8-bom16", "\ufeffkind: ModelEvaluation\n".encode("utf-16"), "not UTF-8"),
    RawCase("deep-flow", (GOOD_YAML + "  slices: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
            "nested more than"),
    RawCase("deep-block", (GOOD_YAML.replace("metadata: {name: ok}", "metadata:\n  name: ok\n"
            "  annotations:\n" + "".join("    " + " " * i + f"k{i}:\n" for i in range(1000))
            + "    " + " " * 1000 + "v\n")).encode(), "nested more than"),
    RawCase("repeated-key", GOOD_YAML.replace("  task: ranking\n", "  task: binary\n"
                                               "  task: ranking\n").encode(),
            "line 6: key 'task' is repeated", kubectl_refuses=False),
    RawCase("repeated-nested-key", GOOD_YAML.replace("{uri: s3://models/ranker.json}",
            "{uri: s3://models/ranker.json, uri: s3://models/other.json}").encode(),
            "key 'uri' is repeated", kubectl_refuses=False),
    RawCase("alias-bomb", (GOOD_YAML + "  x: &a [1, 1]\n" + "".join(
        f"  x{i}: &a{i} [*{'a' if i == 0 else f'a{i - 1}'}, *{'a' if i == 0 else f'a{i - 1}'}]\n"
        for i in range(200))).encode(), "YAML aliases"),
    RawCase("not-yaml", b"kind: [", "not valid YAML"),
    # Control characters: as bytes YAML refuses them (kubectl too); written as escapes they
    # reach the server, which keeps one in a free string (a URI): the CLI refuses them anywhere.
    RawCase("nul-byte", GOOD_YAML.replace("task: ranking", "task: rank\0ing").encode(),
            "line 5, column 13: control character U+0000 is not allowed"),
    RawCase("escape-byte", GOOD_YAML.replace("ndcg@10", "ndcg\x1b@10").encode(),
            "line 8, column 17: control character U+001B is not allowed"),
    RawCase("escaped-nul-in-a-uri", GOOD_YAML.replace("{uri: s3://datasets/test.txt}",
                                                      '{uri: "s3://datasets/test\\0.txt"}').encode(),
            "spec.dataset.uri (line 7): control character U+0000 is not allowed",
            kubectl_refuses=False),
    RawCase("escaped-bell-in-a-label", GOOD_YAML.replace("{name: ok}",
                                                          '{name: ok, labels: {"a\\a": x}}').encode(),
            "metadata.labels: a key (line 3): control character U+0007 is not allowed"),
]
