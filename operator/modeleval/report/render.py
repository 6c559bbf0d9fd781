"""Render a result document as one self-contained HTML page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from altair.utils.schemapi import debug_mode
from jinja2 import Environment
from markupsafe import Markup

from ..api.curves import ModelCurves
from ..api.direction import higher_is_better
from ..api.results import ResultDocument
from . import charts as chart_specs
from . import content, data
from . import datacharts
from .bundle import vega_bundle
from .page import SCRIPT, STYLE, TEMPLATE

TASK_TITLES = {"binary": "Binary classification", "multiclass": "Multiclass classification",
               "regression": "Regression", "ranking": "Ranking"}


def script_json(value: object) -> str:
    """JSON safe inside a <script> element: every "<" escaped, so no "</script" or "<!--" can
    close or confuse it (JSON.parse reads \\u003c back as "<"). NaN is refused: JSON has none."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.4g}"


def signed(value: Any) -> str:
    text = number(value)
    return f"+{text}" if isinstance(value, (int, float)) and value > 0 else text


def share(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else "–"


def _environment() -> Environment:
    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    # script_json's output is safe inside <script> by construction (every "<" escaped); the
    # HTML escaping autoescape would add is wrong there (JSON.parse does not undo "&#34;").
    environment.filters.update(num=number, signed=signed, share=share,
                               measures=data.measure_names, percent=data.percent,
                               script_json=lambda value: Markup(script_json(value)))
    return environment


_TEMPLATE = _environment().from_string(TEMPLATE)


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    marked: int | None = None  # the row drawn out (the sweep's row at the threshold)


def _binary_tables(curves: list[ModelCurves]) -> list[Table]:
    candidate = curves[0].binary
    sweep = candidate.sweep
    closest = min(range(len(sweep)),
                  key=lambda index: abs(sweep[index].threshold - candidate.threshold),
                  default=None)
    sweep_table = Table("sweep", f"Threshold sweep ({content.display_name(curves[0].model)})",
                        "Score > threshold is positive; the highlighted row is nearest the "
                        "threshold the metrics use.",
                        ["threshold", "TP", "FP", "TN", "FN", "precision", "recall", "F1"],
                        [[number(r.threshold), number(r.tp), number(r.fp), number(r.tn),
                          number(r.fn), number(r.precision), number(r.recall), number(r.f1)]
                         for r in sweep], closest)
    at_threshold = Table("confusion-by-model", "Confusion counts at the threshold, by model", "",
                         ["model", "threshold", "TP", "FP", "TN", "FN"],
                         [[content.display_name(c.model), number(c.binary.threshold),
                           *[number(c.binary.confusion.counts[t][p])
                             for t, p in ((1, 1), (0, 1), (0, 0), (1, 0))]]
                          for c in curves if len(c.binary.confusion.classes) == 2])
    return [sweep_table] + ([at_threshold] if len(curves) > 1 else [])


def _task_tables(task: str | None, curves: list[ModelCurves]) -> list[Table]:
    if not curves:
        return []
    name = content.display_name(curves[0].model)
    if task == "binary":
        return _binary_tables(curves)
    if task == "multiclass":
        return [Table("per-class", f"Per-class scores ({name})", "",
                      ["class", "precision", "recall", "F1", "support"],
                      [[str(c.label), number(c.precision), number(c.recall), number(c.f1),
                        number(c.support)] for c in curves[0].multiclass.per_class])]
    if task == "ranking":
        ranking = curves[0].ranking
        return [Table("worst-queries", f"Worst queries ({name})",
                      f"The queries with the lowest NDCG@{ranking.cutoff} (ties: lowest qid "
                      "first).",
                      ["qid", f"NDCG@{ranking.cutoff}", "documents"],
                      [[f"{q.qid:g}", number(q.ndcg), number(q.documents)]
                       for q in ranking.worst_queries])]
    return []


@dataclass(frozen=True)
class SliceSection:
    table: content.SliceTable
    chart: chart_specs.Chart | None = None


def _slices(document: ResultDocument) -> list[SliceSection]:
    sections = []
    for index, table in enumerate(content.slice_tables(document)):
        with_intervals = any(table.metric in r.intervals for r in table.rows)
        sections.append(SliceSection(table, chart_specs.slice_chart(index, table,
                                                                      with_intervals)))
    return sections


def _worst_slice(sections: list[SliceSection]) -> dict[str, Any] | None:
    """The single worst slice value of the primary metric across slices, for the summary."""
    found = [(s.table.name, s.table.metric, r) for s in sections for r in s.table.rows[:1]
             if s.table.metric and r.metrics.get(s.table.metric) is not None]
    if not found:
        return None
    metric = found[0][1]
    up = higher_is_better(metric)
    found = [f for f in found if f[1] == metric]
    name, metric, row = min(found, key=lambda entry: entry[2].metrics[metric] * (1 if up else -1))
    return {"slice": name, "name": row.value, "metric": metric, "value": row.metrics[metric]}


def _ordered_curves(document: ResultDocument) -> list[ModelCurves]:
    """The candidate's curves first, then the baseline's, then the challengers' (as scored)."""
    curves = content.curves_of(document)
    return sorted(curves, key=lambda curve: {"model": 0, "baseline": 1}.get(curve.model, 2))


@dataclass(frozen=True)
class DataSection:
    """The profile's facts, charts and every feature's row; the drift's verdict and rows."""

    facts: list[tuple[str, str]]
    charts: list[chart_specs.Chart]
    feature_charts: list[chart_specs.Chart]
    feature_charts_caption: str
    features: list[data.FeatureStats]
    drift: data.DriftVerdict | None


def _data_section(document: ResultDocument) -> DataSection | None:
    profile = document.profile
    drift = document.drift
    if profile is None:
        return DataSection([], [], [], "", [], data.drift_verdict(drift)) if drift else None
    charts, feature_charts = datacharts.data_charts(profile, drift)
    exact = all(column.histogram is None or column.histogram.exact for column in profile.features)
    return DataSection(data.data_facts(document), charts, feature_charts,
                       data.feature_charts_caption(drift, exact),
                       [data.feature_stats(column) for column in profile.features],
                       data.drift_verdict(drift) if drift else None)


def render(document: ResultDocument) -> str:
    """The whole report of ``document`` as an HTML string."""
    models = content.models(document)
    task = content.task_of(document)
    curves = _ordered_curves(document)
    # Altair checks every object against the schema as it is built (its debug mode), which
    # costs more than the rest of the report; the specs' validity is a unit test's job.
    with debug_mode(False):
        slices = _slices(document)
        forest = chart_specs.forest(models) if document.baseline else None
        task_charts = chart_specs.task_charts(task, curves)
        data_section = _data_section(document)
    return _TEMPLATE.render(
        d=document, models=models, primary=content.primary_metric(document),
        metric_names=content.metric_names(document), best=content.best_models(models),
        comparisons=content.comparisons(document),
        worst_slice=_worst_slice(slices), gates=[m for m in models if m.gate is not None],
        forest=forest,
        task_title=TASK_TITLES.get(task or "", "Curves"),
        task_charts=task_charts, tables=_task_tables(task, curves),
        slices=slices, data=data_section, dataset=content.dataset_summary(document),
        run=content.run_facts(document), style=STYLE, script=SCRIPT, bundle=vega_bundle())
