"""Spec validation names the field that is wrong, and refuses what admission refuses.

The shared corpus (tests/manifest_corpus.py) is the contract between the CLI's parser and the
API server: test_admission.py runs the same cases through a server-side dry run.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from manifest_corpus import CASES, GOOD_YAML, RAW, REFUSED
from modeleval import runner
from modeleval.api import crd
from modeleval.api.spec import ModelEvaluationSpec
from modeleval.runner import ManifestError, parse_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOOD = GOOD_YAML.replace("name: ok", "name: ranker").replace("[ndcg@10, mrr]", "[ndcg@10, map@10, mrr]")


def with_spec(extra: str) -> str:
    return GOOD + "".join(f"  {line}\n" for line in extra.strip().splitlines())


def refusal(text: str | bytes) -> str:
    with pytest.raises(ManifestError) as error:
        parse_manifest(text)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_good_manifest_parses_with_defaults():
    m = parse_manifest(GOOD)
    assert m.spec.primary_metric == "ndcg@10"
    assert m.spec.resources.workers == 1 and m.spec.batch_size == 65536
    assert m.spec.dataset.format == "letor"


def test_secrets_in_the_same_file_are_skipped():
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n" + GOOD
    assert parse_manifest(text).metadata.name == "ranker"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_parses(path):
    text = path.read_bytes()
    if b"kind: ModelEvaluation" in text:
        assert parse_manifest(text, str(path)).metadata.name


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_case_is_judged_as_admission_judges_it(case):
    text = yaml.safe_dump(case.manifest, sort_keys=False)
    if case.accepted:
        parse_manifest(text)
    else:
        assert case.field in refusal(text)


@pytest.mark.parametrize("case", RAW, ids=[c.id for c in RAW])
def test_unreadable_input_gets_one_line_never_a_traceback(case):
    assert case.message in refusal(case.text)


def test_every_admission_rule_is_met_by_the_corpus_on_the_cli_too():
    """Each CEL rule in the generated CRD refuses some corpus case here with the same message:
    the rule exists on both sides (test_admission checks the server refuses the same cases)."""
    messages = " | ".join(refusal(yaml.safe_dump(c.manifest)) for c in REFUSED)
    # (the transition rules compare with the stored object: a create cannot meet them)
    rules = [r for r in crd.cel_rules() if not r["rule"].startswith("self.all(k,")
             and "oldSelf" not in r["rule"]]
    assert len(rules) >= 20
    missing = [r["message"] for r in rules if r["message"] not in messages]
    assert not missing, f"rules no corpus case meets on the CLI: {missing}"


@pytest.mark.parametrize("text, field", [
    (GOOD.replace("ndcg@10, ", "ndcg@0, "), "spec.metrics[0]"),
    (GOOD.replace("ndcg@10, ", "bleu, "), "spec.metrics[0]"),
    (GOOD.replace("s3://models/ranker.json", "http://x/y"), "spec.model.uri"),
    (GOOD.replace("task: ranking", "task: clustering"), "spec.task"),
    (GOOD.replace("  dataset: {uri: s3://datasets/test.txt}\n", ""), "spec.dataset"),
    (with_spec("resources: {cpu: '-1'}"), "spec.resources.cpu"),
    (with_spec("resources: {memory: 10Mi}"), "spec.resources.memory"),
    (with_spec("resources: {workers: 0}"), "spec.resources.workers"),
    (with_spec("resources: {gpu: 1000}"), "spec.resources.gpu"),
    (with_spec("batchSize: 0"), "spec.batchSize"),
    (with_spec("bogusField: 1"), "spec.bogusField"),
    (with_spec("gate: [{metric: auc, min: 0.5}]"), "spec.gate[0]"),
    (GOOD.replace("name: ranker", "name: Ranker_1"), "metadata.name"),
    (GOOD.replace("name: ranker", "name: ranker, uid: ../../etc"), "metadata.uid"),
    (GOOD.replace("name: ranker", "name: ranker, namespace: ../x"), "metadata.namespace"),
    (GOOD.replace("metrics: [ndcg@10, map@10, mrr]", "metrics: [precision]"), "spec.metrics[0]"),
    (GOOD.replace("metrics: [ndcg@10, map@10, mrr]", "metrics: [auc]"), "spec.metrics[0]"),
    (GOOD.replace("metrics: [ndcg@10, map@10, mrr]", "metrics: [ndcg@10, mrr@10]"),
     "spec.metrics[1]"),
    (GOOD.replace("metrics: [ndcg@10, map@10, mrr]", "metrics: [ndcg@10, ndcg@10]"),
     "spec.metrics[1]"),
    (with_spec("gate: [{metric: ndcg@10, min: 0.1}, {metric: map@10, maxRegression: 0.1}]"),
     "spec.gate[1]"),
    (GOOD.replace("apiVersion:", "api_version:"), "api_version: Extra inputs are not permitted"),
])
def test_bad_manifests_name_the_field(text, field):
    assert field in refusal(text)


def test_the_cli_names_the_exact_item_the_server_can_only_point_near():
    message = refusal(GOOD.replace("metrics: [ndcg@10, map@10, mrr]", "metrics: [ndcg@10, mrr@10]"))
    assert message == ("manifest: spec.metrics[1]: task ranking takes the metrics map[@k], mrr, "
                       "ndcg[@k], precision@k, recall@k")


def test_pickle_needs_explicit_permission():
    assert "spec.model.allowPickle" in refusal(GOOD.replace(
        "{uri: s3://models/ranker.json}", "{uri: s3://models/m.pkl, format: pickle}"))
    ok = parse_manifest(GOOD.replace("{uri: s3://models/ranker.json}",
                                     "{uri: s3://models/m.pkl, format: pickle, allowPickle: true}"))
    assert ok.spec.model.allow_pickle


def test_models_take_the_manifest_spelling_only():
    camel = {"task": "ranking", "model": {"uri": "s3://models/r.json"},
             "dataset": {"uri": "s3://datasets/t.txt", "labelColumn": "y"}, "metrics": ["ndcg@10"],
             "batchSize": 8}
    assert ModelEvaluationSpec.model_validate(camel).dataset.label_column == "y"
    snake = {**camel, "batch_size": 8}
    del snake["batchSize"]
    with pytest.raises(ValueError, match="batch_size"):
        ModelEvaluationSpec.model_validate(snake)


def test_what_the_operator_writes_reads_back():
    """builders.py dumps the spec by alias for the runner; strict parsing takes it back."""
    spec = parse_manifest(with_spec("slices: [{name: f, feature: 0, buckets: [1, 2]}]\n"
                                    "gate: [{metric: ndcg@10, min: 0}]")).spec
    dumped = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert ModelEvaluationSpec.model_validate(dumped) == spec


def test_not_yaml_and_wrong_kind():
    assert "not valid YAML" in refusal("a: [")
    assert "no document with kind: ModelEvaluation" in refusal("kind: Pod\n")


def test_runner_entry_point_answers_bad_bytes_with_one_result_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"kind: ModelEvaluation\nmetadata: {name: \xff}\n")
    for args in (["--manifest", str(path)],
                 ["--manifest-b64", base64.b64encode(path.read_bytes()).decode()],
                 ["--manifest-b64", "not base64!"]):
        result = subprocess.run([sys.executable, "-m", "modeleval.runner", *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert result.stdout.startswith(runner.RESULT_MARKER) and "InvalidSpec" in result.stdout


def test_a_uid_from_a_command_line_is_checked_like_metadata_uid():
    from modeleval.api.spec import checked_uid
    from modeleval.runner import main

    assert checked_uid("52ab7df4-b11b-48c3") == "52ab7df4-b11b-48c3"
    for bad in ("../../etc/passwd", "a/b", "-x", "", "x" * 65):
        with pytest.raises(ValueError):
            checked_uid(bad)
    with pytest.raises(SystemExit) as exited:  # argparse: a one-line usage error, exit 2
        main(["--manifest", "m.yaml", "--uid", "../x"])
    assert exited.value.code == 2


class _Tripwire:
    """Unpickling it writes a file: proof that a pickle was loaded (code ran)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "pickle code ran"))


def _pickle_manifest(tmp_path: Path) -> tuple[Path, Path]:
    import pickle

    marker = tmp_path / "ran"
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(_Tripwire(marker)))
    (tmp_path / "d.txt").write_text("1 qid:1 1:0.5\n0 qid:1 1:0.1\n")
    path = tmp_path / "m.yaml"
    path.write_text(GOOD.replace("{uri: s3://models/ranker.json}",
                                 f"{{uri: '{(tmp_path / 'm.pkl').as_uri()}', format: pickle, "
                                 "allowPickle: true}").replace(
        "{uri: s3://datasets/test.txt}", f"{{uri: '{(tmp_path / 'd.txt').as_uri()}'}}"))
    return path, marker


@pytest.mark.parametrize("permission", [[], ["--allow-pickle"]])
def test_the_cluster_runner_loads_a_pickle_only_with_the_platforms_permission(tmp_path, permission):
    """A manifest that slipped past the operator (format pickle, allowPickle: true) still loads
    no pickle unless the operator passed --allow-pickle."""
    path, marker = _pickle_manifest(tmp_path)
    env = {**__import__("os").environ, "MODELEVAL_RESULTS_DIR": str(tmp_path / "results"),
           "MODELEVAL_ALLOW_PICKLE": "true"}  # the environment cannot grant it
    result = subprocess.run([sys.executable, "-m", "modeleval.runner", "--manifest", str(path),
                             "--uid", "u1", *permission], capture_output=True, text=True,
                            timeout=300, env=env)
    if permission:
        assert marker.exists(), result.stdout + result.stderr
    else:
        assert result.returncode == 1 and not marker.exists(), result.stdout + result.stderr
        assert '"reason": "PickleRefused"' in result.stdout
        assert "this platform does not allow them" in result.stdout


def test_a_local_run_keeps_the_users_own_choice_of_pickle(tmp_path):
    from modeleval.engine.errors import EvaluationError
    from modeleval.engine.evaluate import Identity
    from modeleval.settings import EngineSettings

    path, marker = _pickle_manifest(tmp_path)
    with pytest.raises(EvaluationError):  # the tripwire is no model; loading it ran its code
        runner.run_manifest(parse_manifest(path.read_bytes()), Identity("u1"),
                            EngineSettings(results_dir=tmp_path / "results"))
    assert marker.exists()
