"""The `modeleval` command line and the runner entry point, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("modeleval")


def run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args] if args[0] != "-m" else [sys.executable, *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def cli_env(bed, tmp_path):
    env = {**os.environ, "MODELEVAL_RESULTS_DIR": str(tmp_path / "results"),
           "MODELEVAL_CACHE_URI": (tmp_path / "cache").as_uri(), "COLUMNS": "200"}
    env.pop("MODELEVAL_MONGODB_URI", None)
    return env


def test_demo_then_results(cli_env, tmp_path):
    # A newcomer's machine: no Ray to join, no Ray settings, output piped (no terminal, no
    # COLUMNS); the evaluation runs on Ray tasks as a full-size demo's does.
    newcomer = {k: v for k, v in cli_env.items()
                if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "COLUMNS")}
    demo = run(["demo", "--rows", "3000", "--features", "136", "--workdir", str(tmp_path / "demo")],
               {**newcomer, "MODELEVAL_INLINE_BYTES": "0"})
    assert demo.returncode == 0, demo.stderr
    assert "ndcg@10" in demo.stdout and "map@10" in demo.stdout and "mrr" in demo.stdout
    assert (tmp_path / "demo" / "evaluation.yaml").exists()
    # Nothing a newcomer must learn to ignore: no Ray notice, a table title on one line.
    said = demo.stdout + demo.stderr
    assert "Token authentication" not in said and "RAY_AUTH_MODE" not in said, said
    assert re.search(r"^ *demo-ranker: 750 rows, \d+ queries *$", demo.stdout, re.M), demo.stdout
    # It ends with the report's path.
    last = demo.stdout.rstrip().splitlines()[-1]
    assert last.startswith("report: "), demo.stdout
    report = Path(last.removeprefix("report: "))
    assert report.parent == Path(cli_env["MODELEVAL_RESULTS_DIR"]).resolve()
    assert "demo-ranker" in report.read_text()
    listed = run(["results", "list"], cli_env)
    assert listed.returncode == 0 and "demo-ranker" in listed.stdout and "Succeeded" in listed.stdout
    again = run(["run", str(tmp_path / "demo" / "evaluation.yaml"), "--json", "--uid", "u1"], cli_env)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["cacheHit"] is True and doc["uid"] == "u1" and doc["metrics"]["ndcg@10"] > 0.5
    shown = run(["results", "show", "u1"], cli_env)
    assert json.loads(shown.stdout)["metrics"] == doc["metrics"]


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("apiVersion: modeleval.dev/v1alpha1\nkind: ModelEvaluation\nmetadata: {name: x}\nspec:\n"
     "  task: ranking\n  model: {uri: s3://m/x.json}\n  dataset: {uri: s3://d/x.txt}\n  metrics: [ndcg@0]\n",
     "spec.metrics[0]"),
    ("kind: [", "not valid YAML"),
])
def test_bad_input_exits_nonzero_with_one_message(cli_env, tmp_path, content, message):
    path = tmp_path / "m.yaml"
    if content is not None:
        path.write_text(content)
    result = run(["run", str(path)], cli_env)
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.strip().startswith("error:")
    assert "Traceback" not in result.stderr


def test_runtime_failure_exits_nonzero_with_reason(cli_env, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("apiVersion: modeleval.dev/v1alpha1\nkind: ModelEvaluation\nmetadata: {name: gone}\n"
                    "spec:\n  task: ranking\n  model: {uri: 's3://nobucket-x/none.json'}\n"
                    "  dataset: {uri: 's3://nobucket-x/d.txt'}\n  metrics: [ndcg@10]\n")
    result = run(["run", str(path)], cli_env)
    assert result.returncode == 1 and "ModelNotFound" in result.stderr and "Traceback" not in result.stderr


def test_runner_entry_point_records_to_mongodb(bed, cli_env, tmp_path):
    from pymongo import MongoClient

    from modeleval.demo import make_letor, train_ranker, write_letor

    data = write_letor(make_letor(1500, 20, mean_group=25, seed=3), tmp_path / "d.txt")
    model = tmp_path / "m.json"
    train_ranker(make_letor(1500, 20, seed=4), rounds=5).save_model(model)
    path = tmp_path / "m.yaml"
    path.write_text("apiVersion: modeleval.dev/v1alpha1\nkind: ModelEvaluation\nmetadata: {name: runner}\n"
                    f"spec:\n  task: ranking\n  model: {{uri: '{model.as_uri()}'}}\n"
                    f"  dataset: {{uri: '{data.as_uri()}'}}\n  metrics: [ndcg@10, mrr]\n")
    uid = uuid.uuid4().hex
    env = {**cli_env, "MODELEVAL_MONGODB_URI": bed.mongodb_uri}
    result = run(["-m", "modeleval.runner", "--manifest", str(path), "--uid", uid, "--attempt", "3"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    last = [l for l in result.stdout.splitlines() if l.startswith("MODELEVAL_RESULT ")][-1]
    summary = json.loads(last.removeprefix("MODELEVAL_RESULT "))
    progress = [json.loads(l.split(" ", 1)[1]) for l in result.stdout.splitlines()
                if l.startswith("MODELEVAL_PROGRESS ")]
    # The first (cold) pass parses and predicts in one go, so it counts bytes of the source.
    size = data.stat().st_size
    assert progress[-1] == {"done": size, "total": size, "unit": "bytes"}
    with MongoClient(bed.mongodb_uri) as mongo:
        doc = mongo["modeleval"]["results"].find_one({"_id": f"{uid}:3"})
    assert doc["metrics"] == summary["metrics"] and doc["attempt"] == 3
