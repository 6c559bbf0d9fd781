"""The report's charts as Vega-Lite specs, declared with Altair.

Each spec names its data (``{"data": {"name": "roc"}}``) and carries it in ``datasets``, so the
plotted values can be read back from the spec, or from the rendered view
(``view.data("roc")``). Altair validates each spec without its data (validating thousands of
data rows against the schema costs more than the rest of the report); the data is attached
after. Every dataset is already bounded by the curve aggregates (thinned curves, fixed bins).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import altair as alt

from ..api.curves import (BinaryCurves, ModelCurves, MulticlassCurves, RankingCurves,
                          RegressionCurves)
from ..api.direction import higher_is_better
from .content import Model, SliceTable, display_name, is_number, judgement

# At most this many classes in a confusion heatmap (the most frequent ones): a readable
# picture, and a bounded report whatever the class count.
MAX_HEATMAP_CLASSES = 40
# At most this many values of one slice in its chart (the worst ones); the table lists all.
MAX_SLICE_BARS = 60
VERDICT_COLOURS = alt.Scale(domain=["better", "worse", "unclear", "better?", "worse?", "unknown"],
                            range=["#1a7f37", "#cf222e", "#6e7781", "#57ab5a", "#e5534b",
                                   "#afb8c1"])


@dataclass(frozen=True)
class Chart:
    """A chart in the page: its element id, heading, a line saying how to read it, and the
    Vega-Lite spec (data included)."""

    id: str
    title: str
    caption: str
    spec: dict[str, Any]


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _spec(chart: alt.TopLevelMixin, datasets: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    spec = chart.to_dict(validate=False)
    spec.pop("$schema", None)  # nothing to fetch: vega-embed is told the mode
    spec["datasets"] = finite(datasets)
    return spec


def _stacked(panels: list[alt.TopLevelMixin], data: str) -> dict[str, Any]:
    """Panels (each naming its data) one above the other. Assembled as plain JSON: Altair's
    vconcat deep-copies every panel on each step, which costs more than all other charts."""
    specs = [panel.to_dict(validate=False) for panel in panels]
    config = specs[0].get("config", {})
    for spec in specs:
        spec.pop("$schema", None)
        spec.pop("config", None)
        assert spec.get("data") == {"name": data} and "datasets" not in spec, spec
    return {"config": config, "spacing": 14, "vconcat": specs}


def _data(name: str) -> alt.NamedData:
    return alt.NamedData(name=name)


def _model_colour(names: list[str]) -> alt.Scale:
    return alt.Scale(domain=names, scheme="tableau10")


# ------------------------------------------------------------------ comparisons
def forest(models: list[Model]) -> Chart | None:
    """Each model's delta versus the baseline, per metric, with its paired interval."""
    rows = []
    for model in models:
        for metric, delta in model.deltas.items():
            interval = model.delta_intervals.get(metric)
            rows.append({"metric": metric, "model": model.name, "delta": delta,
                         "lower": interval.lower if interval else None,
                         "upper": interval.upper if interval else None,
                         "verdict": judgement(metric, delta, interval),
                         "direction": "higher is better" if higher_is_better(metric)
                         else "lower is better"})
    if not rows:
        return None
    verdicts = [v for v in VERDICT_COLOURS.domain if any(r["verdict"] == v for r in rows)]
    panels = [_forest_panel(metric, models, verdicts)
              for metric in dict.fromkeys(r["metric"] for r in rows)]
    spec = _stacked(panels, "forest")
    return Chart("forest", "Against the baseline (the champion)",
                 "Each model's metric minus the baseline's; the bar is the paired bootstrap "
                 "interval. Green: better with the interval wholly on the better side of 0; red: "
                 "worse; grey: not distinguishable from the baseline.",
                 {**spec, "datasets": finite({"forest": rows})})


def _forest_panel(metric: str, models: list[Model], verdicts: list[str]) -> alt.LayerChart:
    """One metric's rows of the forest plot (its own x scale: metrics differ in size)."""
    direction = "higher is better" if higher_is_better(metric) else "lower is better"
    base = alt.Chart().transform_filter(
        alt.FieldOneOfPredicate(field="metric", oneOf=[metric])).encode(
        y=alt.Y("model:N", title=None, sort=[m.name for m in models]))
    colour = alt.Color("verdict:N", scale=VERDICT_COLOURS, title=None,
                       legend=alt.Legend(orient="top", values=verdicts))
    return alt.layer(
        alt.Chart().mark_rule(color="#8c959f", strokeDash=[4, 3]).encode(x=alt.XDatum(0)),
        base.mark_rule(strokeWidth=2).encode(x=alt.X("lower:Q", title=f"{metric} delta "
                                                      f"({direction})"),
                                             x2=alt.X2("upper"), color=colour),
        base.mark_point(filled=True, size=70).encode(
            x=alt.X("delta:Q"), color=colour,
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("metric:N"),
                     alt.Tooltip("delta:Q", format="+.4f"),
                     alt.Tooltip("lower:Q", format="+.4f"), alt.Tooltip("upper:Q", format="+.4f"),
                     alt.Tooltip("direction:N")]),
        data=_data("forest"), width=330, height=alt.Step(18))


def slice_chart(index: int, table: SliceTable, intervals_present: bool) -> Chart | None:
    """One slice's values, worst first, by the metric the table is ordered by."""
    metric = table.metric
    if metric is None:
        return None
    rows = [{"value": r.value, "metric": r.metrics.get(metric), "rows": r.rows,
             "lower": r.intervals[metric].lower if metric in r.intervals else None,
             "upper": r.intervals[metric].upper if metric in r.intervals else None}
            for r in table.rows if r.metrics.get(metric) is not None][:MAX_SLICE_BARS]
    if not rows:
        return None
    name = f"slice-{index}"
    base = alt.Chart().encode(y=alt.Y("value:N", title=None, sort=None))
    tooltip = [alt.Tooltip("value:N"), alt.Tooltip("metric:Q", title=metric, format=".4f"),
               alt.Tooltip("rows:Q"),
               alt.Tooltip("lower:Q", format=".4f"), alt.Tooltip("upper:Q", format=".4f")]
    layers = [base.mark_point(filled=True, size=60, color="#0969da").encode(
        x=alt.X("metric:Q", title=metric, scale=alt.Scale(zero=False)), tooltip=tooltip)]
    if intervals_present:
        layers.insert(0, base.mark_rule(color="#54aeff", strokeWidth=2).encode(
            x=alt.X("lower:Q"), x2=alt.X2("upper")))
    chart = alt.layer(*layers, data=_data(name), width=520, height=alt.Step(16))
    return Chart(name, f"{table.name}: {metric} by value",
                 "Worst first" + (", with the bootstrap interval of each value's rows"
                                  if intervals_present else "") + ".",
                 _spec(chart, {name: rows}))


# ------------------------------------------------------------------ binary
def _legend(curves: list[ModelCurves], area: str, pick) -> dict[str, str]:
    return {c.model: f"{display_name(c.model)} · {area} {pick(c.binary).area:.4f}"
            for c in curves if pick(c.binary) is not None}


def _curve_chart(name: str, curves: list[ModelCurves], pick, area: str, x_title: str,
                 y_title: str, diagonal: bool) -> Chart | None:
    legend = _legend(curves, area, pick)
    rows = [{"model": display_name(c.model), "legend": legend[c.model], "x": x, "y": y,
             "threshold": t}
            for c in curves if c.model in legend
            for x, y, t in zip(pick(c.binary).x, pick(c.binary).y, pick(c.binary).thresholds)]
    if not rows:
        return None
    lines = alt.Chart().mark_line(interpolate="linear", strokeWidth=2).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("y:Q", title=y_title, scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("legend:N", title=f"model · {area}", sort=list(legend.values()),
                        legend=alt.Legend(orient="bottom-right", labelLimit=260)),
        order=alt.Order("order:Q"),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("x:Q", title=x_title, format=".4f"),
                 alt.Tooltip("y:Q", title=y_title, format=".4f"),
                 alt.Tooltip("threshold:Q", format=".4g")])
    layers = [lines.transform_window(order="row_number()", groupby=["model"])]
    if diagonal:
        layers.insert(0, alt.Chart().mark_rule(color="#d0d7de", strokeDash=[4, 3]).encode(
            x=alt.XDatum(0), y=alt.YDatum(0), x2=alt.X2Datum(1), y2=alt.Y2Datum(1)))
    chart = alt.layer(*layers, data=_data(name), width=330, height=330)
    title = "ROC" if name == "roc" else "Precision-recall"
    return Chart(name, title, f"Every model's curve over every row; {area} in the legend.",
                 _spec(chart, {name: rows}))


def roc(curves: list[ModelCurves]) -> Chart | None:
    return _curve_chart("roc", curves, lambda model: model.roc, "AUC", "false positive rate",
                        "true positive rate", True)


def precision_recall(curves: list[ModelCurves]) -> Chart | None:
    return _curve_chart("pr", curves, lambda model: model.pr, "AP", "recall", "precision", False)


def reliability(curves: list[ModelCurves]) -> Chart | None:
    legend = {c.model: f"{display_name(c.model)} · ECE "
              f"{c.binary.reliability.expected_calibration_error:.4f}"
              for c in curves if c.binary.reliability is not None}
    rows = [{"model": display_name(c.model), "legend": legend[c.model],
             "meanPredicted": b.mean_predicted, "fractionPositive": b.fraction_positive,
             "rows": b.rows, "lower": b.lower, "upper": b.upper}
            for c in curves if c.model in legend for b in c.binary.reliability.bins]
    if not rows:
        return None
    base = alt.Chart().encode(
        x=alt.X("meanPredicted:Q", title="mean predicted probability",
                scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("fractionPositive:Q", title="fraction of positives",
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("legend:N", title="model · ECE", sort=list(legend.values()),
                        legend=alt.Legend(orient="bottom-right", labelLimit=260)),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("lower:Q", format=".2f"),
                 alt.Tooltip("upper:Q", format=".2f"),
                 alt.Tooltip("rows:Q"), alt.Tooltip("meanPredicted:Q", format=".4f"),
                 alt.Tooltip("fractionPositive:Q", format=".4f")])
    chart = alt.layer(
        alt.Chart().mark_rule(color="#d0d7de", strokeDash=[4, 3]).encode(
            x=alt.XDatum(0), y=alt.YDatum(0), x2=alt.X2Datum(1), y2=alt.Y2Datum(1)),
        base.mark_line(point=True), data=_data("reliability"), width=330, height=330)
    return Chart("reliability", "Reliability",
                 "Fraction of positives against the mean predicted probability in uniform bins "
                 "(empty bins left out); on the diagonal is calibrated. ECE: expected "
                 "calibration error.", _spec(chart, {"reliability": rows}))


def binary_confusion(curve: ModelCurves) -> Chart:
    confusion = curve.binary.confusion
    names = {0: "negative (0)", 1: "positive (1)"}
    rows = [{"actual": names.get(t, str(t)), "predicted": names.get(p, str(p)),
             "count": confusion.counts[t][p]}
            for t in range(len(confusion.classes)) for p in range(len(confusion.classes))]
    return _heatmap("confusion", f"Confusion at threshold {curve.binary.threshold:g} "
                    f"({display_name(curve.model)})",
                    "Rows by actual class, columns by predicted class (score > threshold is "
                    "positive).", rows, "count", 130)


def _heatmap(name: str, title: str, caption: str, rows: list[dict[str, Any]], value: str,
             size: int) -> Chart:
    base = alt.Chart().encode(x=alt.X("predicted:O", title="predicted", sort=None),
                              y=alt.Y("actual:O", title="actual", sort=None))
    text_format = ".2f" if value == "fraction" else "d"
    chart = alt.layer(
        base.mark_rect().encode(color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="blues"),
                                                legend=None),
                                tooltip=[alt.Tooltip("actual:O"), alt.Tooltip("predicted:O"),
                                         alt.Tooltip("count:Q"),
                                         *([alt.Tooltip("fraction:Q")] if value == "fraction"
                                           else [])]),
        base.mark_text(fontSize=11).encode(
            text=alt.Text(f"{value}:Q", format=text_format),
            color=alt.ColorValue("#24292f", condition={
                "test": f"datum.{value} > 0.5 * {_max(rows, value)}", "value": "white"})),
        data=_data(name), width=size, height=size)
    return Chart(name, title, caption, _spec(chart, {name: rows}))


def _max(rows: list[dict[str, Any]], value: str) -> float:
    return max((r[value] for r in rows if is_number(r[value])), default=0) or 1


def score_distributions(curve: ModelCurves) -> Chart:
    binary = curve.binary
    rows = [{"class": label, "lower": a, "upper": b, "count": n}
            for label, histogram in (("positive", binary.scores_positive),
                                     ("negative", binary.scores_negative))
            for a, b, n in zip(histogram.edges, histogram.edges[1:], histogram.counts)]
    chart = alt.Chart(_data("scores"), width=330, height=220).mark_bar(
        opacity=0.6, binSpacing=0).encode(
        x=alt.X("lower:Q", title="score", bin="binned"), x2=alt.X2("upper"),
        y=alt.Y("count:Q", title="rows", stack=None),
        color=alt.Color("class:N", scale=alt.Scale(domain=["negative", "positive"],
                                                   range=["#8c959f", "#0969da"])),
        tooltip=[alt.Tooltip("class:N"), alt.Tooltip("lower:Q", format=".4g"),
                 alt.Tooltip("upper:Q", format=".4g"), alt.Tooltip("count:Q")],
    )
    return Chart("scores", f"Scores by class ({display_name(curve.model)})",
                 f"Rows per score bin, by actual class; the threshold is {binary.threshold:g}.",
                 _spec(chart, {"scores": rows}))


def binary_charts(curves: list[ModelCurves]) -> list[Chart]:
    candidate = curves[0]
    found = [roc(curves), precision_recall(curves), reliability(curves),
             binary_confusion(candidate), score_distributions(candidate)]
    return [c for c in found if c is not None]


# ------------------------------------------------------------------ multiclass
def multiclass_charts(curve: ModelCurves) -> list[Chart]:
    multiclass: MulticlassCurves = curve.multiclass
    counts = multiclass.confusion.counts
    normalised = multiclass.confusion.normalised("true")
    shown = sorted(range(len(counts)), key=lambda label: -sum(counts[label]))[:MAX_HEATMAP_CLASSES]
    shown.sort()
    labels = multiclass.confusion.classes
    rows = [{"actual": str(labels[t]), "predicted": str(labels[p]), "count": counts[t][p],
             "fraction": normalised[t][p]} for t in shown for p in shown]
    note = (f" Showing the {len(shown)} most frequent of {len(counts)} classes."
            if len(shown) < len(counts) else "")
    size = max(160, min(520, 26 * len(shown)))
    heatmap = _heatmap("confusion", f"Normalised confusion ({display_name(curve.model)})",
                       "Each actual class's rows as fractions by predicted class." + note,
                       rows, "fraction", size)
    per_class = [{"label": str(c.label), "score": score, "value": getattr(c, score),
                  "support": c.support}
                 for c in multiclass.per_class for score in ("precision", "recall", "f1")]
    width = max(200, min(900, 36 * len(multiclass.per_class)))
    bars = alt.Chart(_data("per-class"), width=width, height=220).mark_bar().encode(
        x=alt.X("label:N", title="class", sort=None), xOffset=alt.XOffset("score:N"),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("score:N", sort=["precision", "recall", "f1"]),
        tooltip=[alt.Tooltip("label:N"), alt.Tooltip("score:N"),
                 alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("support:Q")],
    )
    return [heatmap, Chart("per-class", f"Per-class precision, recall and F1 "
                           f"({display_name(curve.model)})", "0 where undefined.",
                           _spec(bars, {"per-class": per_class}))]


# ------------------------------------------------------------------ regression
def regression_charts(curve: ModelCurves) -> list[Chart]:
    regression: RegressionCurves = curve.regression
    grid = regression.predicted_vs_actual
    cells = [{"actualLower": grid.x_edges[i], "actualUpper": grid.x_edges[i + 1],
              "predictedLower": grid.y_edges[j], "predictedUpper": grid.y_edges[j + 1],
              "count": n}
             for i, row in enumerate(grid.matrix()) for j, n in enumerate(row) if n]
    low = min(grid.x_edges[0], grid.y_edges[0]) if grid.x_edges and grid.y_edges else 0
    high = max(grid.x_edges[-1], grid.y_edges[-1]) if grid.x_edges and grid.y_edges else 1
    heat = alt.layer(
        alt.Chart().mark_rect().encode(
            x=alt.X("actualLower:Q", title="actual", scale=alt.Scale(domain=[low, high])),
            x2=alt.X2("actualUpper"),
            y=alt.Y("predictedLower:Q", title="predicted", scale=alt.Scale(domain=[low, high])),
            y2=alt.Y2("predictedUpper"),
            color=alt.Color("count:Q", scale=alt.Scale(type="log", scheme="blues"), title="rows"),
            tooltip=[alt.Tooltip("actualLower:Q", format=".4g"),
                     alt.Tooltip("actualUpper:Q", format=".4g"),
                     alt.Tooltip("predictedLower:Q", format=".4g"),
                     alt.Tooltip("predictedUpper:Q", format=".4g"), alt.Tooltip("count:Q")]),
        alt.Chart().mark_rule(color="#cf222e", strokeDash=[4, 3]).encode(
            x=alt.XDatum(low), y=alt.YDatum(low), x2=alt.X2Datum(high), y2=alt.Y2Datum(high)),
        data=_data("predicted-vs-actual"), width=360, height=360)
    residuals = [{"lower": a, "upper": b, "count": n}
                 for a, b, n in zip(regression.residuals.edges, regression.residuals.edges[1:],
                                    regression.residuals.counts)]
    bars = alt.Chart(_data("residuals"), width=360, height=240).mark_bar(
        binSpacing=0, color="#0969da").encode(
        x=alt.X("lower:Q", bin="binned", title="residual (actual - predicted)"), x2=alt.X2("upper"),
        y=alt.Y("count:Q", title="rows"),
        tooltip=[alt.Tooltip("lower:Q", format=".4g"), alt.Tooltip("upper:Q", format=".4g"),
                 alt.Tooltip("count:Q")])
    dropped = (f" {regression.dropped:,} rows without a finite label or prediction are left out."
               if regression.dropped else "")
    name = display_name(curve.model)
    return [Chart("predicted-vs-actual", f"Predicted against actual ({name})",
                  "Rows per cell (log colour scale); on the dashed line the prediction is "
                  "exact." + dropped, _spec(heat, {"predicted-vs-actual": cells})),
            Chart("residuals", f"Residuals ({name})", "Rows per residual bin." + dropped,
                  _spec(bars, {"residuals": residuals}))]


# ------------------------------------------------------------------ ranking
def _at_k(name: str, curves: list[ModelCurves], pick, title: str, cutoff_caption: str) -> Chart:
    models = [display_name(c.model) for c in curves]
    rows = [{"model": display_name(c.model), "k": k, "value": v}
            for c in curves for k, v in enumerate(pick(c.ranking), start=1)]
    chart = alt.Chart(_data(name), width=330, height=260).mark_line(
        point=alt.OverlayMarkDef(size=18)).encode(
        x=alt.X("k:Q", title="cut-off k", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("value:Q", title=title, scale=alt.Scale(zero=False)),
        color=alt.Color("model:N", scale=_model_colour(models),
                        legend=alt.Legend(orient="bottom-right", labelLimit=200)),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("k:Q"), alt.Tooltip("value:Q", format=".4f")],
    )
    return Chart(name, f"{title} by cut-off", cutoff_caption, _spec(chart, {name: rows}))


def ranking_charts(curves: list[ModelCurves]) -> list[Chart]:
    candidate: RankingCurves = curves[0].ranking
    caption = "The mean over queries at every cut-off k, one line per model."
    found = [_at_k("ndcg-at", curves, lambda ranking: ranking.ndcg_at, "NDCG@k", caption),
             _at_k("precision-at", curves, lambda ranking: ranking.precision_at, "precision@k",
                   caption)]
    histogram = candidate.ndcg_distribution
    rows = [{"lower": a, "upper": b, "queries": n}
            for a, b, n in zip(histogram.edges, histogram.edges[1:], histogram.counts)]
    at = f"NDCG@{candidate.cutoff}"
    distribution = alt.Chart(_data("ndcg-distribution"), width=330, height=220).mark_bar(
        binSpacing=1, color="#0969da").encode(
        x=alt.X("lower:Q", bin="binned", title=f"per-query {at}"), x2=alt.X2("upper"),
        y=alt.Y("queries:Q", title="queries"),
        tooltip=[alt.Tooltip("lower:Q", format=".2f"), alt.Tooltip("upper:Q", format=".2f"),
                 alt.Tooltip("queries:Q")])
    found.append(Chart("ndcg-distribution", f"Per-query {at} ({display_name(curves[0].model)})",
                       "Queries per NDCG bin.", _spec(distribution, {"ndcg-distribution": rows})))
    length_rows = [{"model": display_name(c.model),
                    "length": f"{b.min_documents}-{b.max_documents}", "queries": b.queries,
                    "meanNdcg": b.mean_ndcg, "order": b.min_documents}
                   for c in curves for b in c.ranking.by_query_length]
    models = [display_name(c.model) for c in curves]
    by_length = alt.Chart(_data("ndcg-by-length"), width=330, height=220).mark_line(
        point=True).encode(
        x=alt.X("length:O", title="documents in the query",
                sort=alt.EncodingSortField("order", op="min")),
        y=alt.Y("meanNdcg:Q", title=f"mean {at}", scale=alt.Scale(zero=False)),
        color=alt.Color("model:N", scale=_model_colour(models),
                        legend=alt.Legend(orient="bottom-right")),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("length:O"), alt.Tooltip("queries:Q"),
                 alt.Tooltip("meanNdcg:Q", format=".4f")],
    )
    found.append(Chart("ndcg-by-length", f"{at} by query length",
                       "Queries bucketed by their number of documents (powers of two).",
                       _spec(by_length, {"ndcg-by-length": length_rows})))
    return found


def task_charts(task: str | None, curves: list[ModelCurves]) -> list[Chart]:
    """The task's charts; the candidate's curves come first in ``curves``."""
    if not curves:
        return []
    if task == "binary":
        return binary_charts(curves)
    if task == "multiclass":
        return multiclass_charts(curves[0])
    if task == "regression":
        return regression_charts(curves[0])
    if task == "ranking":
        return ranking_charts(curves)
    return []
