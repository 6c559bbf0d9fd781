"""Spec validation names the field that is wrong."""

from __future__ import annotations

import pytest

from modeleval.runner import ManifestError, parse_manifest

GOOD = """
apiVersion: modeleval.dev/v1alpha1
kind: ModelEvaluation
metadata: {name: ranker}
spec:
  task: ranking
  model: {uri: s3://models/ranker.json}
  dataset: {uri: s3://data/test.txt}
  metrics: [ndcg@10, map@10, mrr]
"""


def with_spec(extra: str) -> str:
    return GOOD + "".join(f"  {line}\n" for line in extra.strip().splitlines())


def test_good_manifest_parses_with_defaults():
    m = parse_manifest(GOOD)
    assert m.spec.primary_metric == "ndcg@10"
    assert m.spec.resources.workers == 1 and m.spec.batch_size == 65536
    assert m.spec.dataset.format == "letor"


def test_secrets_in_the_same_file_are_skipped():
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n" + GOOD
    assert parse_manifest(text).metadata.name == "ranker"


@pytest.mark.parametrize("text, field", [
    (GOOD.replace("ndcg@10, ", "ndcg@0, "), "spec.metrics.0"),
    (GOOD.replace("ndcg@10, ", "bleu, "), "spec.metrics.0"),
    (GOOD.replace("s3://models/ranker.json", "http://x/y"), "spec.model.uri"),
    (GOOD.replace("task: ranking", "task: clustering"), "spec.task"),
    (GOOD.replace("  dataset: {uri: s3://data/test.txt}\n", ""), "spec.dataset"),
    (with_spec("resources: {cpu: '-1'}"), "spec.resources.cpu"),
    (with_spec("resources: {memory: 10Mi}"), "spec.resources.memory"),
    (with_spec("resources: {workers: 0}"), "spec.resources.workers"),
    (with_spec("resources: {gpu: 1000}"), "spec.resources.gpu"),
    (with_spec("batchSize: 0"), "spec.batchSize"),
    (with_spec("bogusField: 1"), "spec.bogusField"),
    (with_spec("gate: [{metric: auc, min: 0.5}]"), "spec: gate"),
    (GOOD.replace("name: ranker", "name: Ranker_1"), "metadata.name"),
    (GOOD.replace("metrics: [ndcg@10, map@10, mrr]", "metrics: [precision]"), "spec: metrics"),
    (GOOD.replace("metrics: [ndcg@10, map@10, mrr]", "metrics: [auc]"), "spec: metrics"),
])
def test_bad_manifests_name_the_field(text, field):
    with pytest.raises(ManifestError) as error:
        parse_manifest(text)
    assert f"{field}" in str(error.value)


def test_pickle_needs_explicit_permission():
    with pytest.raises(ManifestError, match="allowPickle"):
        parse_manifest(GOOD.replace("{uri: s3://models/ranker.json}",
                                    "{uri: s3://models/m.pkl, format: pickle}"))
    ok = parse_manifest(GOOD.replace("{uri: s3://models/ranker.json}",
                                     "{uri: s3://models/m.pkl, format: pickle, allowPickle: true}"))
    assert ok.spec.model.allow_pickle


def test_not_yaml_and_wrong_kind():
    with pytest.raises(ManifestError, match="not valid YAML"):
        parse_manifest("a: [")
    with pytest.raises(ManifestError, match="no document with kind: ModelEvaluation"):
        parse_manifest("kind: Pod\n")
