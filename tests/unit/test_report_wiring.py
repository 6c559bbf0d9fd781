"""Where the report of an evaluation goes and how it is found: the runner writes it before the
result is stored (beside the result locally, to S3 in a cluster), a report that cannot be
written leaves the evaluation Succeeded with a warning, `modeleval run` prints its path,
`modeleval report UID` writes it again from the stored result."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import kopf
import pytest
import yaml
from click.testing import CliRunner

from modeleval.api.results import ResultDocument
from modeleval.api.spec import ModelEvaluationSpec
from modeleval.cli import main
from modeleval.controller.policy import InvalidSpec, parse_spec
from modeleval.controller.handlers import evaluation
from modeleval.controller.settings import OperatorSettings
from modeleval.demo import make_letor, train_ranker, write_letor
from modeleval.engine.evaluate import Identity
from modeleval.report_output import ReportNotWritten, report_uri
from modeleval.runner import parse_manifest, run_manifest
from modeleval.settings import EngineSettings
from modeleval.store import LocalResultStore


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """A small LETOR file and a ranker trained for it (inline-sized: no Ray)."""
    root = tmp_path_factory.mktemp("assets")
    write_letor(make_letor(300, 6, mean_group=20, seed=3), root / "data.txt")
    train_ranker(make_letor(300, 6, mean_group=20, seed=4), rounds=3).save_model(root / "model.json")
    return root


def manifest_text(assets: Path, name: str = "wired", labels: dict | None = None, **output) -> str:
    metadata = {"name": name, **({"labels": labels} if labels else {})}
    spec = {"task": "ranking", "metrics": ["ndcg@10"],
            "model": {"uri": (assets / "model.json").as_uri()},
            "dataset": {"uri": (assets / "data.txt").as_uri()}, **({"output": output} if output else {})}
    return yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
                           "metadata": metadata, "spec": spec})


def settings_in(tmp_path: Path, **extra) -> EngineSettings:
    """Local files whatever the environment says (in a full run the bed exports its MongoDB)."""
    return EngineSettings(results_dir=tmp_path / "results", cache_uri=(tmp_path / "cache").as_uri(),
                          mongodb_uri=None, **extra)


def stored(tmp_path: Path, uid: str) -> ResultDocument:
    document = LocalResultStore(tmp_path / "results").get(uid)
    assert document is not None
    return document


def test_a_local_evaluation_writes_its_report_beside_its_result(assets, tmp_path):
    text = manifest_text(assets, name="wired-x", labels={"modeleval.dev/schedule": "nightly"})
    result = run_manifest(parse_manifest(text), Identity("u-local", 2, "wired-x"), settings_in(tmp_path))
    path = tmp_path / "results" / "u-local-2.html"
    assert result.report_uri == path.resolve().as_uri() and result.report_error is None
    assert (tmp_path / "results" / "u-local-2.json").exists()
    html = path.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "wired-x" in html
    document = stored(tmp_path, "u-local")
    assert document.report_uri == result.report_uri and document.status == "Succeeded"
    assert document.schedule == "nightly"  # the label a schedule gives its children
    assert "writeReport" in document.timings


def test_reports_off_write_none(assets, tmp_path):
    result = run_manifest(parse_manifest(manifest_text(assets)), Identity("u-off"),
                          settings_in(tmp_path, report=False))
    assert result.report_uri is None and result.report_error is None
    assert not list((tmp_path / "results").glob("*.html"))
    assert stored(tmp_path, "u-off").report_uri is None and not result.warnings


def test_a_report_that_cannot_be_written_leaves_the_evaluation_succeeded(assets, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    text = manifest_text(assets, reportUri=(blocker / "reports").as_uri())
    result = run_manifest(parse_manifest(text), Identity("u-refused"), settings_in(tmp_path))
    document = stored(tmp_path, "u-refused")
    assert document.status == "Succeeded" and document.metrics["ndcg@10"] > 0
    assert document.report_uri is None and "Not a directory" in document.report_error
    assert document.warnings[-1] == f"the report was not written: {document.report_error}"
    assert result.metrics == document.metrics


def test_a_report_that_cannot_be_rendered_leaves_the_evaluation_succeeded(assets, tmp_path,
                                                                          monkeypatch):
    import modeleval.report

    def broken(document):
        raise KeyError("a chart the page does not know")

    monkeypatch.setattr(modeleval.report, "render", broken)
    run_manifest(parse_manifest(manifest_text(assets)), Identity("u-broken"), settings_in(tmp_path))
    document = stored(tmp_path, "u-broken")
    assert document.status == "Succeeded" and document.report_uri is None
    assert document.report_error.startswith("the report could not be rendered (KeyError")
    assert not list((tmp_path / "results").glob("*.html"))


def spec(**output) -> ModelEvaluationSpec:
    return ModelEvaluationSpec.model_validate({
        "task": "ranking", "model": {"uri": "s3://models/r.json"},
        "dataset": {"uri": "s3://data/mslr/t.txt"}, "metrics": ["ndcg@10"],
        **({"output": output} if output else {})})


DOC = ResultDocument(_id="u9:3", uid="u9", attempt=3, name="ev", namespace="team-a",
                     status="Succeeded")


@pytest.mark.parametrize("output, results_dir, expected", [
    ({"reportUri": "s3://reports/q/"}, None, "s3://reports/q/ev-u9-3.html"),
    ({"reportUri": "s3://reports/q"}, Path("/r"), "s3://reports/q/ev-u9-3.html"),
    ({"predictionsUri": "s3://out/preds"}, None, "s3://out/preds/ev-u9-3.html"),
    ({}, None, "s3://data/modeleval-reports/team-a/ev-u9-3.html"),
    ({"predictionsUri": "s3://out/preds"}, Path("/r"), "file:///r/u9-3.html"),
])
def test_where_the_report_goes(output, results_dir, expected):
    assert report_uri(spec(**output), DOC, results_dir) == expected


def test_a_cluster_report_needs_an_s3_place():
    local_data = ModelEvaluationSpec.model_validate({
        "task": "ranking", "model": {"uri": "file:///m.json"}, "dataset": {"uri": "file:///d.txt"},
        "metrics": ["ndcg@10"]})
    with pytest.raises(ReportNotWritten, match="set spec.output.reportUri"):
        report_uri(local_data, DOC, None)


def test_a_cluster_refuses_a_file_report_uri_naming_the_field():
    raw = spec(reportUri="file:///tmp/reports").model_dump(by_alias=True, exclude_none=True)
    refused = parse_spec(raw, OperatorSettings(mongodb_uri="mongodb://store", _env_file=None))
    assert isinstance(refused, InvalidSpec)
    assert refused.message.startswith("spec.output.reportUri: file://")


def test_the_operator_reads_the_schedule_from_its_childs_label():
    body = {"metadata": {"name": "n-1", "namespace": "ns", "uid": "u",
                         "labels": {"modeleval.dev/schedule": "nightly"}}}
    assert evaluation(kopf.Body(body)).schedule == "nightly"
    assert evaluation(kopf.Body({"metadata": {"name": "n", "namespace": "ns", "uid": "u"}})
                      ).schedule is None


# ------------------------------------------------------------------ the command line
@pytest.fixture()
def cli_env(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MODELEVAL_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MODELEVAL_CACHE_URI", (tmp_path / "cache").as_uri())
    monkeypatch.delenv("MODELEVAL_MONGODB_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path / "results"


def test_run_prints_the_reports_path(assets, tmp_path, cli_env):
    (tmp_path / "m.yaml").write_text(manifest_text(assets))
    result = CliRunner().invoke(main, ["run", str(tmp_path / "m.yaml"), "--uid", "u-cli"])
    assert result.exit_code == 0, result.output
    path = cli_env.resolve() / "u-cli-1.html"
    assert f"report: {path}" in result.output.splitlines() and path.exists()


def test_report_writes_again_from_the_stored_result(assets, tmp_path, cli_env, monkeypatch):
    run_manifest(parse_manifest(manifest_text(assets, name="again")), Identity("u-again", 1, "again"),
                 settings_in(tmp_path, report=False))
    beside = cli_env.resolve() / "u-again-1.html"
    result = CliRunner().invoke(main, ["report", "u-again"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(beside) and "again" in beside.read_text()

    # --open hands the file to the system's browser (here a command that records what it got).
    opened = tmp_path / "opened.txt"
    monkeypatch.setenv("BROWSER", f"/bin/sh -c 'echo \"$0\" > {opened}' %s")
    monkeypatch.setattr(webbrowser, "_tryorder", None)  # read BROWSER again
    out = tmp_path / "elsewhere" / "r.html"
    result = CliRunner().invoke(main, ["report", "u-again", "--attempt", "1", "--out", str(out),
                                       "--open"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out.resolve()) and out.exists()
    assert opened.read_text().strip() == out.resolve().as_uri()


@pytest.mark.parametrize("args, message", [
    (["report", "nobody"], "no result for uid nobody in "),
    (["report", "nobody", "--attempt", "2"], "no result for uid nobody attempt 2"),
    (["report", "../x"], "Invalid value for 'UID'"),
    (["report", "u", "--mongo-uri", "mongodb://127.0.0.1:1/", "--database", "admin"],
     "--database: admin, local and config are MongoDB's own databases"),
])
def test_report_of_an_unknown_uid_says_so(cli_env, args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("flag", [[], ["--no-report"]])
def test_the_runners_no_report_flag_writes_none(assets, tmp_path, monkeypatch, flag):
    """The operator passes --no-report when the platform turned reports off: no curves, no
    report, no report error. Without it, a job's report needs an S3 place (a file:// dataset
    has none), which the document says."""
    from modeleval.runner import main as runner_main

    monkeypatch.setenv("MODELEVAL_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MODELEVAL_CACHE_URI", (tmp_path / "cache").as_uri())
    monkeypatch.delenv("MODELEVAL_MONGODB_URI", raising=False)
    monkeypatch.delenv("MODELEVAL_REPORT", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "m.yaml").write_text(manifest_text(assets))
    assert runner_main(["--manifest", str(tmp_path / "m.yaml"), "--uid", "u-flag", *flag]) == 0
    document = stored(tmp_path, "u-flag")
    assert document.status == "Succeeded" and document.report_uri is None
    if flag:
        assert document.report_error is None and document.curves is None
    else:
        assert "reportUri" in document.report_error and document.curves
