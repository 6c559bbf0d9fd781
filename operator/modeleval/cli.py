"""`modeleval`: evaluate models on a laptop with the same manifests the operator runs.

\b
modeleval demo               MSLR-shaped data, an XGBRanker, evaluated
modeleval run MANIFEST       evaluate a ModelEvaluation manifest on local Ray
modeleval results list|show  past results (MongoDB if configured, else local)
modeleval ui                 a read-only web dashboard of the results
modeleval report UID         write (or --open) a stored result's HTML report
modeleval publish-examples   upload the data and models examples/ reads
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
import webbrowser
from pathlib import Path
from typing import Any

if not os.environ.get("RAY_ADDRESS"):
    # A Ray started here serves this machine only: keep it on loopback (read when ray is imported).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Token auth on, said explicitly: Ray then starts it without a warning to opt out of it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")

import click  # noqa: E402
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.cells import cell_len
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .api.spec import MongoTarget, checked_uid, format_validation_error
from .engine.errors import EvaluationError, Reason
from .store import ResultsStoreError
from .engine.evaluate import EvaluationResult, Identity
from .engine.storage import file_path
from .files import atomic_write
from .report_output import ReportNotWritten, local_report_path, render_report
from .report.features_text import NoProfile, feature_lines, features_json
from .runner import ManifestError, parse_manifest, result_store, run_manifest
from .settings import EngineSettings
from .ui.command import ui as ui_command

# Output piped to a file or a CI log has no terminal width and rich would assume 80 columns,
# squeezing wide tables; there a line is as long as its content (COLUMNS still rules).
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
errors = Console(stderr=True)


def _checked_uid(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return checked_uid(value) if value is not None else None
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(1)


def _models(result: EvaluationResult) -> list[tuple[str, dict[str, Any]]]:
    """Every model of the run with its table: the candidate, the baseline, the challengers."""
    candidate = {"metrics": result.metrics, "intervals": result.intervals, "gate": result.gate,
                 **({k: result.baseline.get(k, {}) for k in ("deltas", "delta_intervals")}
                    if result.baseline else {})}
    baseline = [("baseline", {"metrics": result.baseline["metrics"],
                              "intervals": result.baseline.get("intervals", {})})] \
        if result.baseline else []
    return [("candidate", candidate), *baseline,
            *((c["name"], c) for c in result.challengers)]


def _interval(interval: Any, signed: bool = False) -> str:
    if interval is None:
        return ""
    number = "{:+.4f}" if signed else "{:.4f}"
    return f"[{number.format(interval.lower)}, {number.format(interval.upper)}]"


def _metrics_table(result: EvaluationResult) -> Table:
    """One row per model and metric: value, interval, and the (paired) delta to the baseline."""
    level = f"{result.confidence['level']:.0%} interval" if result.confidence else None
    # With intervals the table is wide: four decimals and no inner rules keep it in 80 columns.
    table = _titled_table(f"{result.identity.name}: {result.rows:,} rows"
                          + (f", {result.queries:,} queries" if result.queries else ""),
                          box=box.SIMPLE_HEAD if level else box.HEAVY_HEAD, pad_edge=not level,
                          collapse_padding=bool(level))
    digits = 4 if level else 6
    models = _models(result)
    if len(models) > 1:
        table.add_column("model", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    if level:
        table.add_column(level, justify="right", no_wrap=True)
    if result.baseline:
        table.add_column("delta", justify="right", no_wrap=True)
        if level:
            table.add_column(f"delta {level}", justify="right", no_wrap=True)
    for model, scores in models:
        for name, value in scores["metrics"].items():
            row = [model] if len(models) > 1 else []
            row += [name, f"{value:.{digits}f}"]
            if level:
                row.append(_interval(scores["intervals"].get(name)))
            if result.baseline:
                delta = scores.get("deltas", {}).get(name)
                row.append("" if delta is None else f"{delta:+.{digits}f}")
                if level:
                    row.append(_interval(scores.get("delta_intervals", {}).get(name), signed=True))
            table.add_row(*row)
        if len(models) > 1:
            table.add_section()
    return table


def _titled_table(title: str, **options: Any) -> Table:
    """A table at least as wide as its title: rich wraps a title to the table's width, which
    broke "queries" over two lines under a narrow table."""
    return Table(title=title, min_width=cell_len(title), **options)


def _evaluate(manifest, settings: EngineSettings, uid: str | None) -> EvaluationResult:
    identity = Identity(uid=uid or manifest.metadata.uid or uuid.uuid4().hex[:12],
                        name=manifest.metadata.name, namespace=manifest.metadata.namespace)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[unit]}"),
                  TimeElapsedColumn(),
                  console=errors, transient=True) as bar:
        task = bar.add_task(f"evaluating {identity.name}", total=0, unit="rows")

        def progress(done: int, total: int, unit: str) -> None:
            bar.update(task, completed=done, total=total, unit=unit)

        try:
            return run_manifest(manifest, identity, settings, progress)
        except EvaluationError as error:
            _fail(f"{Reason(error.reason).value}: {error.message}")
    raise AssertionError("unreachable")


def _show(result: EvaluationResult) -> None:
    console.print(_metrics_table(result))
    for name, groups in result.slices.items():
        table = _titled_table(f"slice {name}")
        table.add_column("group")
        table.add_column("rows", justify="right")
        for metric in result.metrics:
            table.add_column(metric, justify="right")
        for group, values in groups.items():
            table.add_row(group, str(values["rows"]),
                          *[f"{values[m]:.6f}" if m in values else values.get("error", "")
                            for m in result.metrics])
        console.print(table)
    models = _models(result)
    for model, scores in models:
        if scores.get("gate"):
            verdict = "[green]passed[/]" if scores["gate"]["passed"] else "[red]failed[/]"
            console.print(f"gate {model}: {verdict}" if len(models) > 1 else f"gate: {verdict}")
            for rule in scores["gate"]["rules"]:
                console.print(f"  {rule['metric']}: {rule['message']}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    cache = "cache hit" if result.cache_hit else "parsed"
    console.print(f"dataset {cache}; total {result.timings.get('total', 0):.2f}s "
                  f"(inference {result.timings.get('inference', 0):.2f}s)")
    if result.predictions_uri:
        console.print(f"predictions: {result.predictions_uri}")


@click.group(help=__doc__)
def main() -> None:
    """The command group; each subcommand does the work."""


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--uid", help="Result key (default: a new id).", callback=_checked_uid)
@click.option("--json", "as_json", is_flag=True, help="Print the result document as JSON.")
def run(manifest: Path, uid: str | None, as_json: bool) -> None:
    """Evaluate MANIFEST (the same YAML as `kubectl apply`) on local Ray."""
    if not manifest.exists():
        _fail(f"{manifest}: no such file")
    try:
        evaluation = parse_manifest(manifest.read_bytes(), str(manifest))
    except (ManifestError, OSError) as error:
        _fail(str(error))
    result = _evaluate(evaluation, EngineSettings(), uid)
    if as_json:
        click.echo(result.document().to_json())
    else:
        _show(result)
        _print_report(result.report_uri)


def _print_report(uri: str | None) -> None:
    """The report's path (a local file) or URI, on a line of its own to copy."""
    if uri:
        where = file_path(uri) if uri.startswith("file://") else uri
        console.print(f"report: {where}", soft_wrap=True, highlight=False)


@main.command()
@click.option("--rows", default=20_000, show_default=True, help="Rows to generate.")
@click.option("--features", default=136, show_default=True, help="Features per row (MSLR: 136).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where data, model and manifest go (default: a temp dir).")
def demo(rows: int, features: int, workdir: Path | None) -> None:
    """Generate MSLR-shaped data, train an XGBRanker and evaluate it, all locally."""
    from .demo import make_letor, train_ranker, write_letor

    if rows < 100 or features < 1:
        _fail("--rows must be at least 100 and --features at least 1")
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="modeleval-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    errors.print(f"generating {rows:,} MSLR-shaped rows x {features} features in {workdir}")
    train = make_letor(rows, features, seed=1)
    test = make_letor(max(rows // 4, 100), features, seed=2)
    data_path = write_letor(test, workdir / "test.txt")
    errors.print("training an XGBRanker (rank:ndcg)")
    model_path, baseline_path = workdir / "ranker.json", workdir / "baseline.json"
    train_ranker(train).save_model(model_path)
    # A shallower model to compare with: the report then shows what the candidate gains.
    train_ranker(train, rounds=3, seed=2).save_model(baseline_path)
    manifest = workdir / "evaluation.yaml"
    manifest.write_text(DEMO_MANIFEST.format(model=model_path.as_uri(), data=data_path.as_uri(),
                                             baseline=baseline_path.as_uri(), features=features))
    evaluation = parse_manifest(manifest.read_bytes(), str(manifest))
    result = _evaluate(evaluation, EngineSettings(), None)
    _show(result)
    console.print(f"\nmanifest: {manifest}\nrun it again: modeleval run {manifest}",
                  soft_wrap=True, highlight=False)
    _print_report(result.report_uri)


DEMO_MANIFEST = """\
apiVersion: modeleval.dev/v1alpha1
kind: ModelEvaluation
metadata:
  name: demo-ranker
spec:
  task: ranking
  model:
    uri: {model}
    format: xgboost
  dataset:
    uri: {data}
    format: letor
    numFeatures: {features}
  baseline:
    model:
      uri: {baseline}
      format: xgboost
  metrics: [ndcg@10, map@10, mrr, ndcg@5, precision@10]
  confidence:
    resamples: 200
  slices:
    - name: feature-1
      feature: 0
      buckets: [1.0, 2.0, 4.0]
"""


@main.command("publish-examples")
@click.option("--bucket", default="modeleval-examples", show_default=True)
def publish_examples(bucket: str) -> None:
    """Upload the data and models that the manifests in examples/ read to s3://BUCKET."""
    from .demo import publish_example_assets
    from .engine.storage import Storage

    try:
        for uri in publish_example_assets(Storage.from_settings(EngineSettings()), bucket):
            console.print(uri)
    except EvaluationError as error:
        _fail(f"{Reason(error.reason).value}: {error.message}")


@main.group()
def results() -> None:
    """Past results (MongoDB if MODELEVAL_MONGODB_URI is set, else the local results dir)."""


def _store():
    return result_store(EngineSettings(), MongoTarget())


@results.command("list")
@click.option("--limit", default=20, show_default=True)
def results_list(limit: int) -> None:
    try:
        docs = _store().list(limit)
    except ResultsStoreError as error:
        _fail(error.message)
    table = Table()
    for column in ("uid", "attempt", "name", "status", "primary metric", "finished"):
        table.add_column(column)
    for doc in docs:
        primary = doc.primary_metric or ""
        value = doc.metrics.get(primary)
        table.add_row(doc.uid, str(doc.attempt), doc.name, doc.status,
                      f"{primary}={value:.4f}" if value is not None else (doc.reason or ""),
                      doc.finished_at[:19])
    console.print(table)


@results.command("show")
@click.argument("uid", callback=_checked_uid)
@click.option("--attempt", type=int, help="Default: the latest attempt.")
@click.option("--features", is_flag=True, help="Print the data's profile instead: a line per "
              "feature (its statistics, and its drift against the reference when there is one).")
@click.option("--json", "as_json", is_flag=True, help="With --features: the profile and drift "
              "as JSON. (Without it the whole document is JSON already.)")
def results_show(uid: str, attempt: int | None, features: bool, as_json: bool) -> None:
    """Print the stored result of evaluation UID as JSON, or its data's profile (--features)."""
    try:
        doc = _store().get(uid, attempt)
    except ResultsStoreError as error:
        _fail(error.message)
    if doc is None:
        _fail(f"no result for uid {uid}" + (f" attempt {attempt}" if attempt else ""))
    if not features:
        click.echo(doc.to_json())
        return
    try:
        click.echo(features_json(doc) if as_json else "\n".join(feature_lines(doc)))
    except NoProfile as error:
        _fail(str(error))


@main.command()
@click.argument("uid", callback=_checked_uid)
@click.option("--attempt", type=int, help="Default: the latest attempt.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it. Default: beside the result in the local results dir, "
              "./UID-ATTEMPT.html when the results are in MongoDB.")
@click.option("--open", "open_it", is_flag=True, help="Open it in the system's web browser.")
@click.option("--mongo-uri", envvar="MODELEVAL_MONGODB_URI", help="Read the result from this "
              "MongoDB (default: MODELEVAL_MONGODB_URI; unset: the local results dir).")
@click.option("--database", default="modeleval", show_default=True)
@click.option("--collection", default="results", show_default=True)
def report(uid: str, attempt: int | None, out: Path | None, open_it: bool, mongo_uri: str | None,
           database: str, collection: str) -> None:
    """Write the HTML report of the stored result of evaluation UID and print its path."""
    settings = EngineSettings(mongodb_uri=mongo_uri or None)
    try:
        target = MongoTarget(database=database, collection=collection)
    except ValidationError as error:
        _fail(f"--{format_validation_error(error)}")
    try:
        doc = result_store(settings, target).get(uid, attempt)
    except ResultsStoreError as error:
        _fail(error.message)
    if doc is None:
        where = f"MongoDB {database}.{collection}" if mongo_uri else str(settings.results_dir)
        _fail(f"no result for uid {uid}" + (f" attempt {attempt}" if attempt else "")
              + f" in {where}")
    path = (out.expanduser().resolve() if out else
            local_report_path(settings.results_dir if not mongo_uri else Path.cwd(), doc.uid,
                              doc.attempt))
    try:
        atomic_write(path, render_report(doc.model_copy(update={"report_uri": path.as_uri()})))
    except ReportNotWritten as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{path}: {error.strerror or error}")
    click.echo(str(path))
    if open_it and not webbrowser.open(path.as_uri()):
        errors.print(f"no web browser found here; open {path} in one", soft_wrap=True,
                     highlight=False)


# `modeleval ui` lives with the dashboard, apart from the engine's imports (the chart runs it as
# `python -m modeleval.ui` from the operator's image).
main.add_command(ui_command, name="ui")


if __name__ == "__main__":
    main()
