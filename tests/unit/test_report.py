"""The HTML report: self-contained (nothing fetched), plotting the document's own values, every
user-controlled string escaped, bounded in size, and rendering whatever the document holds
(failed, without curves, without a baseline)."""

from __future__ import annotations

import json
import re
from functools import cache
from html.parser import HTMLParser

import jsonschema
import pytest
from altair.vegalite.v6.schema.core import load_schema

from modeleval.api.results import ResultDocument
from modeleval.report import render, vega_bundle
from modeleval.report.render import script_json
from tests.report_documents import document, failed_document


class Page(HTMLParser):
    """The parts of a report the tests read: scripts (their attributes and text), every
    attribute of every element, the charts' specs, the tables' text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.elements: list[str] = []
        self.text: list[str] = []
        self._script: dict[str, str | None] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag == "script":
            self._script = dict(attrs)

    def handle_data(self, data):
        if self._script is not None:
            self.scripts.append((self._script, data))
            self._script = None
        else:
            self.text.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:  # an empty script
            self.scripts.append((self._script, ""))
            self._script = None

    @property
    def specs(self) -> dict[str, dict]:
        return {attrs["data-chart"]: json.loads(text) for attrs, text in self.scripts
                if attrs.get("type") == "application/json"}


@cache
def report(task: str, challengers: int = 1) -> tuple[ResultDocument, str, Page]:
    built = document(task, challengers=challengers, slices=2)
    html = render(built)
    return built, html, Page(html)


def rows_of(spec: dict, name: str) -> list[dict]:
    return spec["datasets"][name]


def by_model(rows: list[dict], model: str) -> list[dict]:
    return [r for r in rows if r["model"] == model]


# ------------------------------------------------------------------ what each task plots
def test_binary_charts_carry_every_models_curves():
    built, _, page = report("binary", challengers=2)
    specs = page.specs
    assert {"forest", "roc", "pr", "reliability", "confusion", "scores"} <= set(specs)
    for curves in built.curves:
        name = "candidate" if curves.model == "model" else curves.model
        roc = by_model(rows_of(specs["roc"], "roc"), name)
        assert [r["x"] for r in roc] == curves.binary.roc.x
        assert [r["y"] for r in roc] == curves.binary.roc.y
        assert roc[0]["legend"] == f"{name} · AUC {curves.binary.roc.area:.4f}"
        pr = by_model(rows_of(specs["pr"], "pr"), name)
        assert [(r["x"], r["y"]) for r in pr] == list(zip(curves.binary.pr.x, curves.binary.pr.y))
        reliability = by_model(rows_of(specs["reliability"], "reliability"), name)
        ece = curves.binary.reliability.expected_calibration_error
        assert [r["fractionPositive"] for r in reliability] == [
            b.fraction_positive for b in curves.binary.reliability.bins]
        assert reliability[0]["legend"].endswith(f"ECE {ece:.4f}")
    candidate = built.curves[0].binary
    confusion = {(r["actual"], r["predicted"]): r["count"]
                 for r in rows_of(specs["confusion"], "confusion")}
    assert confusion[("positive (1)", "positive (1)")] == candidate.confusion.counts[1][1]
    assert confusion[("negative (0)", "positive (1)")] == candidate.confusion.counts[0][1]
    scores = rows_of(specs["scores"], "scores")
    assert [r["count"] for r in scores if r["class"] == "positive"] == candidate.scores_positive.counts


def test_binary_sweep_table_lists_every_threshold():
    built, html, _ = report("binary", challengers=2)
    table = html[html.index('id="table-sweep"'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr") == len(built.curves[0].binary.sweep) + 1
    assert 'class="at-threshold"' in table


def test_the_forest_plot_rows_are_the_delta_intervals():
    built, _, page = report("binary", challengers=2)
    rows = rows_of(page.specs["forest"], "forest")
    expected = [("candidate", built.baseline)] + [(c.name, c) for c in built.challengers]
    for name, model in expected:
        mine = {r["metric"]: r for r in rows if r["model"] == name}
        assert set(mine) == set(model.deltas)
        for metric, interval in model.delta_intervals.items():
            assert (mine[metric]["delta"], mine[metric]["lower"], mine[metric]["upper"]) == (
                model.deltas[metric], interval.lower, interval.upper)
    verdicts = {(r["model"], r["metric"]): r["verdict"] for r in rows}
    # challenger0 is much better than the baseline, challenger1 much worse (report_documents).
    assert verdicts[("challenger0", "auc")] == "better"
    assert verdicts[("challenger1", "auc")] == "worse"


def test_multiclass_plots_the_normalised_confusion_and_per_class_scores():
    built, html, page = report("multiclass")
    multiclass = built.curves[0].multiclass
    cells = {(r["actual"], r["predicted"]): r["fraction"]
             for r in rows_of(page.specs["confusion"], "confusion")}
    normalised = multiclass.confusion.normalised("true")
    assert all(cells[(str(t), str(p))] == pytest.approx(normalised[t][p])
               for t in range(len(normalised)) for p in range(len(normalised)))
    per_class = rows_of(page.specs["per-class"], "per-class")
    assert [r["value"] for r in per_class if r["score"] == "recall"] == [
        c.recall for c in multiclass.per_class]
    assert 'id="table-per-class"' in html


def test_regression_plots_the_2d_histogram_residuals_and_error_by_slice():
    built, _, page = report("regression")
    regression = built.curves[0].regression
    cells = rows_of(page.specs["predicted-vs-actual"], "predicted-vs-actual")
    matrix = regression.predicted_vs_actual.matrix()
    assert sum(r["count"] for r in cells) == sum(map(sum, matrix)) == built.rows
    x_edges = regression.predicted_vs_actual.x_edges
    y_edges = regression.predicted_vs_actual.y_edges
    assert all(matrix[x_edges.index(r["actualLower"])][y_edges.index(r["predictedLower"])]
               == r["count"] for r in cells)
    residuals = rows_of(page.specs["residuals"], "residuals")
    assert [r["count"] for r in residuals] == regression.residuals.counts
    # Error by slice: rmse per slice value, worst (largest) first.
    errors = [r["metric"] for r in rows_of(page.specs["slice-0"], "slice-0")]
    assert errors == sorted(errors, reverse=True) and len(errors) == 6


def test_ranking_plots_every_cutoff_per_model_and_the_worst_queries():
    built, html, page = report("ranking", challengers=2)
    for curves in built.curves:
        name = "candidate" if curves.model == "model" else curves.model
        ndcg = by_model(rows_of(page.specs["ndcg-at"], "ndcg-at"), name)
        assert [(r["k"], r["value"]) for r in ndcg] == list(enumerate(curves.ranking.ndcg_at, 1))
        precision = by_model(rows_of(page.specs["precision-at"], "precision-at"), name)
        assert [r["value"] for r in precision] == curves.ranking.precision_at
        assert len(ndcg) == max(20, 10)  # k = 1..max(asked, 20)
    candidate = built.curves[0].ranking
    distribution = rows_of(page.specs["ndcg-distribution"], "ndcg-distribution")
    assert [r["queries"] for r in distribution] == candidate.ndcg_distribution.counts
    lengths = by_model(rows_of(page.specs["ndcg-by-length"], "ndcg-by-length"), "candidate")
    assert [r["meanNdcg"] for r in lengths] == [b.mean_ndcg for b in candidate.by_query_length]
    table = html[html.index('id="table-worst-queries"'):]
    table = table[:table.index("</table>")]
    assert [f"<td>{q.qid:g}</td>" in table for q in candidate.worst_queries] == [True] * len(
        candidate.worst_queries)


@cache
def vega_lite() -> jsonschema.Validator:
    schema = load_schema()
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression", "ranking"])
def test_every_spec_is_valid_vega_lite(task):
    """The specs are built unvalidated (for speed); the schema check happens here, on each spec
    with a few rows of each dataset (the rows' shape is all the schema can judge)."""
    for name, spec in report(task)[2].specs.items():
        sample = {**spec, "datasets": {k: v[:3] for k, v in spec["datasets"].items()}}
        error = jsonschema.exceptions.best_match(vega_lite().iter_errors(sample))
        assert error is None, f"{task} chart {name}: {error.message}"


# ------------------------------------------------------------------ slices, gate, facts
def test_slices_are_listed_worst_first_with_their_intervals():
    built, html, page = report("binary")
    name = next(iter(built.slices))
    plotted = rows_of(page.specs["slice-0"], "slice-0")
    aucs = [r["metric"] for r in plotted]
    assert aucs == sorted(aucs)  # auc: higher is better, so the lowest first
    for row in plotted:
        interval = built.slice_intervals[name][row["value"]]["auc"]
        assert (row["lower"], row["upper"]) == (interval.lower, interval.upper)
    table = html[html.index(f"<h3>{name}</h3>"):]
    table = table[:table.index("</table>")]
    positions = [table.index(f'<td class="text">{r["value"]}</td>') for r in plotted]
    assert positions == sorted(positions)


def test_the_gate_is_shown_rule_by_rule_with_why():
    built = report("binary", challengers=2)[0].model_copy(deep=True)
    built.challengers[1].gate.rules[0].message = "auc regressed by 0.05 (> 0.001)"
    html = render(built)
    section = html[html.index('id="gate"'):]
    section = section[:section.index("</table>")]
    for model in [built.gate, *[c.gate for c in built.challengers]]:
        for rule in model.rules:
            assert rule.metric in section
    assert "auc regressed by 0.05 (&gt; 0.001)" in section
    assert section.count('class="fail">fails') == sum(
        not r.passed for c in built.challengers for r in c.gate.rules) + sum(
        not r.passed for r in built.gate.rules)


def test_dataset_and_run_facts():
    built, html, _ = report("ranking")
    for fact in (f"{built.rows:,}", f"{built.queries:,}", "136", "17 (0.01% of",
                 "2.50 s", f"{built.rows / 2.5:,.0f}", "mode: local, cpus: 8",
                 "a" * 16, "d" * 16, "xgboost: 3.0.0", "hit", "s3://out/predictions/"):
        assert re.search(f"<dd>[^<]*{re.escape(fact)}", html), fact


def test_old_documents_say_what_was_not_recorded():
    old = report("binary")[0].model_copy(update={
        "curves": None, "dataset": {"uri": "s3://data/x"}, "resources": {}, "versions": {},
        "slice_intervals": {}, "timings": {}})
    html = render(old)
    page = Page(html)
    assert "no curves" in html
    assert "<dt>features</dt><dd>136" in html  # the model's feature count stands in
    assert "<dt>missing values</dt><dd>not recorded" in html
    assert "<dt>duration</dt><dd>not recorded" in html
    assert set(page.specs) == {"forest", "slice-0", "slice-1"}
    assert all(r["lower"] is None for r in rows_of(page.specs["slice-0"], "slice-0"))


def test_a_failed_document_shows_its_reason_and_message_first():
    failed = failed_document()
    html = render(failed)
    page = Page(html)
    failure = html[html.index('id="failure"'):]
    assert failure.index("ModelNotFound") < failure.index("no such key") < failure.index("</section>")
    assert failed.reason.doc.action.replace("'", "&#39;") in failure  # what to do about it
    assert html.index('id="failure"') < html.index('id="dataset"')
    assert page.specs == {}
    assert "s3://models/missing.json" in html


def test_a_document_without_baseline_or_confidence_renders():
    lone = document("regression", challengers=0, baseline=False).model_copy(
        update={"intervals": {}, "confidence": None, "slice_intervals": {}})
    page = Page(render(lone))
    assert "forest" not in page.specs
    assert {"predicted-vs-actual", "residuals", "slice-0"} <= set(page.specs)


# ------------------------------------------------------------------ self-contained, escaped
URL = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)


@pytest.mark.parametrize("task", ["binary", "ranking"])
def test_nothing_is_fetched(task):
    _, html, page = report(task)
    fetched = [(tag, name, value) for tag, name, value in page.attributes
               if name in ("src", "href", "srcset", "action", "data", "poster")
               and value and URL.match(value)]
    assert not fetched
    assert "link" not in page.elements and "iframe" not in page.elements
    styles = html[html.index("<style>"):html.index("</style>")]
    assert "@import" not in styles and "url(" not in styles
    assert all("src" not in attrs for attrs, _ in page.scripts)
    for spec in page.specs.values():
        assert "url" not in json.dumps({k: v for k, v in spec.items() if k != "datasets"})
        assert "$schema" not in spec


CANARY = '<script>alert("canary")</script><img src=x onerror=alert(1)>" onmouseover="alert(2)'


def canaried(value: str) -> str:
    return f"{value}{CANARY}"


def _plant_in_metric_names(built: ResultDocument) -> ResultDocument:
    """Metric names, label values and gate messages are checked by the spec's patterns, but a
    document is data from a store: plant the canary there too."""
    name = canaried("metric")
    built.metrics[name] = 0.5
    built.intervals[name] = built.intervals[next(iter(built.intervals))]
    built.baseline.metrics[name] = 0.4
    built.baseline.deltas[name] = 0.1
    built.baseline.delta_intervals[name] = built.baseline.delta_intervals["auc"]
    built.gate.rules[0].metric = name
    built.gate.rules[0].message = canaried("message")
    for values in built.slices.values():
        for entry in values.values():
            entry[name] = 0.25
    built.primary_metric = name
    built.message = canaried("message")
    built.versions[canaried("library")] = canaried("1.0")
    built.resources["node"] = canaried("node")
    return built


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression", "ranking", "failed"])
def test_a_planted_script_never_runs(task):
    built = failed_document(canaried) if task == "failed" else _plant_in_metric_names(
        document(task, challengers=2, slices=2, text=canaried)) if task == "binary" else document(
        task, challengers=2, slices=2, text=canaried)
    html = render(built)
    page = Page(html)
    assert "canary" in html  # it was planted, and shown
    ours = [attrs for attrs, _ in page.scripts]
    assert ours.count({}) == 2  # the Vega bundle and the embedding script
    assert all(a == {} or (a.get("type") == "application/json" and re.fullmatch(
        r"[a-z-]+(-\d+)?", a.get("data-chart") or "")) for a in ours)
    assert "img" not in page.elements
    assert not [(tag, name) for tag, name, _ in page.attributes if name.startswith("on")]
    for attrs, text in page.scripts:
        if attrs:
            assert "</script" not in text.lower() and "<!--" not in text
            json.loads(text)  # parses back to the same strings
    assert 'alert("canary")</script>' not in html.replace(vega_bundle(), "")


def test_script_json_cannot_close_its_element():
    text = script_json({"a": "</script><!-- <b>"})
    assert "<" not in text and json.loads(text) == {"a": "</script><!-- <b>"}
    with pytest.raises(ValueError):
        script_json({"a": float("nan")})


# ------------------------------------------------------------------ size
@pytest.mark.parametrize("task", ["binary", "ranking"])
def test_eight_models_and_fifty_slices_stay_under_five_megabytes(task):
    built = document(task, challengers=6, slices=5, slice_values=10, rows=8_000,
                     bootstrapped=False)
    assert len(built.curves) == 8 and sum(len(v) for v in built.slices.values()) == 50
    size = len(render(built).encode())
    print(f"{task} report, 8 models, 50 slices: {size / 1e6:.2f} MB "
          f"(the Vega bundle: {len(vega_bundle().encode()) / 1e6:.2f} MB)")
    assert size <= 5 * 1024 * 1024


def test_many_classes_keep_the_heatmap_readable_and_small():
    import numpy as np

    from modeleval.api.curves import ModelCurves
    from modeleval.engine.curves import multiclass_curves

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 200, 5000).astype(np.float64)
    labels[:2000] = 7  # one frequent class
    probabilities = rng.dirichlet(np.ones(200), 5000)
    built = report("multiclass")[0].model_copy(update={"curves": [
        ModelCurves(model="model", multiclass=multiclass_curves(labels, probabilities))]})
    specs = Page(render(built)).specs
    shown = {r["actual"] for r in rows_of(specs["confusion"], "confusion")}
    assert len(shown) == 40 and "7" in shown
    assert len(rows_of(specs["confusion"], "confusion")) == 40 * 40
    assert len(rows_of(specs["per-class"], "per-class")) == 200 * 3


def test_the_bundle_cache_keeps_only_a_whole_bundle(tmp_path, monkeypatch):
    from modeleval.report import bundle

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = bundle.cache_path()
    assert path.is_relative_to(tmp_path) and not path.exists()
    assert bundle._read_cached(path) is None
    path.parent.mkdir(parents=True)
    path.write_text("alert(1)")  # a truncated or foreign file is not taken
    assert bundle._read_cached(path) is None
    bundle._write_cached(path, vega_bundle())
    assert bundle._read_cached(path) == vega_bundle()


def test_a_bundle_that_cannot_be_written_leaves_no_partial_file(tmp_path, monkeypatch):
    """A full disk (or any write error) leaves neither the cached file nor its temporary one."""
    from modeleval.report import bundle

    target = tmp_path / "modeleval" / "vega-bundle-x.js"
    monkeypatch.setattr(bundle.tempfile, "NamedTemporaryFile", _failing_on_write(
        bundle.tempfile.NamedTemporaryFile))
    bundle._write_cached(target, "window.vegaEmbed=1")
    assert list(target.parent.iterdir()) == []


def _failing_on_write(make):
    """NamedTemporaryFile whose write fails as a full disk's does, after the file exists."""
    def opened(*args, **kwargs):
        handle = make(*args, **kwargs)

        def write(_text):
            raise OSError(28, "No space left on device")

        handle.write = write
        return handle
    return opened


def test_a_slice_of_many_values_lists_its_worst_ones():
    built = report("regression")[0].model_copy(deep=True)
    values = {f"v{i}": {"rows": 10, "rmse": float(i)} for i in range(1000)}
    built.slices = {"user": values}
    built.slice_intervals = {}
    html = render(built)
    page = Page(html)
    assert "The 200 worst of its 1,000 values." in html
    table = html[html.index("<h3>user</h3>"):]
    table = table[:table.index("</table>")]
    assert table.count('<td class="text">') == 200
    assert '<td class="text">v999</td>' in table and '<td class="text">v799</td>' not in table
    plotted = rows_of(page.specs["slice-0"], "slice-0")
    assert [r["value"] for r in plotted[:2]] == ["v999", "v998"]  # rmse: the largest first
