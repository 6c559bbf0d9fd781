"""The Data section's charts, declared with Altair like charts.py's: a few features' histograms,
the labels', each model's predictions' and the query lengths' distributions. Every name a user
chose (features, models) travels in the charts' data only, never in a spec's expressions."""

from __future__ import annotations

from typing import Any

import altair as alt

from ..api.profile import ColumnProfile, DataDrift, DatasetProfile, FeatureDrift
from . import data
from .charts import Chart, _data, _model_colour, _spec
from .content import display_name


def _bar_rows(column: ColumnProfile) -> list[dict[str, Any]]:
    bars = data.column_bars(column)
    total = sum(bar.rows for bar in bars) or 1.0
    return [{"bin": bar.label, "order": bar.order, "rows": bar.rows, "share": bar.rows / total}
            for bar in bars]


def _bars(name: str, rows: list[dict[str, Any]], x_title: str, width: int = 280,
          colour: str = "#0969da") -> dict[str, Any]:
    chart = alt.Chart(_data(name), width=width, height=150).mark_bar(color=colour).encode(
        x=alt.X("bin:N", title=x_title, sort=alt.EncodingSortField("order", op="min"),
                axis=alt.Axis(labelAngle=-40, labelLimit=110)),
        y=alt.Y("share:Q", title="share of rows", axis=alt.Axis(format="%")),
        tooltip=[alt.Tooltip("bin:N", title=x_title), alt.Tooltip("rows:Q", format=",.0f"),
                 alt.Tooltip("share:Q", format=".2%")])
    return _spec(chart, {name: rows})


def _compared_rows(drift: FeatureDrift) -> list[dict[str, Any]]:
    """The reference's and this data's shares of rows in each of the reference's bins."""
    bars = data.drift_bars(drift)
    totals = {"reference": sum(bar.reference for bar in bars) or 1.0,
              "this data": sum(bar.current for bar in bars) or 1.0}
    return [{"bin": bar.label, "order": bar.order, "data": side, "rows": rows,
             "share": rows / totals[side]}
            for bar in bars for side, rows in (("reference", bar.reference),
                                               ("this data", bar.current))]


def _compared_bars(name: str, rows: list[dict[str, Any]], colour: str) -> dict[str, Any]:
    chart = alt.Chart(_data(name), width=220, height=150).mark_bar().encode(
        x=alt.X("bin:N", title="value", sort=alt.EncodingSortField("order", op="min"),
                axis=alt.Axis(labelAngle=-40, labelLimit=110)),
        xOffset=alt.XOffset("data:N", sort=["reference", "this data"]),
        y=alt.Y("share:Q", title="share of rows", axis=alt.Axis(format="%")),
        color=alt.Color("data:N", scale=alt.Scale(domain=["reference", "this data"],
                                                  range=["#8c959f", colour]),
                        legend=alt.Legend(orient="top", title=None)),
        tooltip=[alt.Tooltip("data:N"), alt.Tooltip("bin:N", title="value"),
                 alt.Tooltip("rows:Q", format=",.0f"), alt.Tooltip("share:Q", format=".2%")])
    return _spec(chart, {name: rows})


def feature_chart(index: int, column: ColumnProfile, drift: FeatureDrift | None) -> Chart | None:
    """A feature's histogram; under drift, the reference's beside this data's on its bins."""
    name = f"feature-{index}"
    title = column.name
    if drift is not None:
        title += f" · PSI {drift.psi:.3f}" + (" · drifted" if drift.drifted else "")
    colour = "#cf222e" if drift is not None and drift.drifted else "#0969da"
    compared = _compared_rows(drift) if drift is not None else []
    if compared:
        return Chart(name, title, "", _compared_bars(name, compared, colour))
    rows = _bar_rows(column)
    if not rows:
        return None
    # No caption of its own: the section says once how to read these bars.
    return Chart(name, title, "", _bars(name, rows, "value", width=220, colour=colour))


def column_chart(name: str, title: str, column: ColumnProfile | None, x_title: str
                 ) -> Chart | None:
    """The labels' or the query lengths' distribution."""
    rows = _bar_rows(column) if column is not None else []
    if not rows:
        return None
    return Chart(name, title, data.bars_caption(column),
                 _bars(name, rows, x_title, width=max(200, min(560, 24 * len(rows)))))


def predictions_chart(predictions: dict[str, ColumnProfile]) -> Chart | None:
    """Every model's predictions as a quantile curve (value at each rank), one line a model:
    curves of different shapes, or shifted, are models that score differently."""
    # The candidate first, then the baseline, then the challengers (as the metrics table).
    ordered = sorted(predictions.items(),
                     key=lambda item: {"model": 0, "baseline": 1}.get(item[0], 2))
    rows = [{"model": display_name(model), "rank": rank, "value": value}
            for model, column in ordered for rank, value in data.quantile_points(column)]
    if not rows:
        return None
    models = list(dict.fromkeys(row["model"] for row in rows))
    chart = alt.Chart(_data("predictions"), width=330, height=220).mark_line(
        point=alt.OverlayMarkDef(size=20)).encode(
        x=alt.X("rank:Q", title="rank (share of rows at or below)", axis=alt.Axis(format="%")),
        y=alt.Y("value:Q", title="prediction", scale=alt.Scale(zero=False)),
        color=alt.Color("model:N", scale=_model_colour(models),
                        legend=alt.Legend(orient="top-left", labelLimit=200)),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("rank:Q", format=".0%"),
                 alt.Tooltip("value:Q", format=".4g")])
    return Chart("predictions", "Predictions, by model",
                 "Each model's quantiles: the smallest prediction, the 1st to 99th percentiles "
                 "from the quantile sketch, the largest.", _spec(chart, {"predictions": rows}))


def data_charts(profile: DatasetProfile, drift: DataDrift | None) -> tuple[list[Chart],
                                                                           list[Chart]]:
    """(the distributions of the labels, predictions and query lengths; the features' charts)."""
    overview = [column_chart("label", "Labels", profile.label, "label"),
                predictions_chart(profile.predictions),
                column_chart("query-lengths", "Query lengths", profile.query_lengths,
                             "documents in the query")]
    features = [feature_chart(index, column, feature_drift) for index, (column, feature_drift)
                in enumerate(data.charted_features(profile, drift))]
    return ([chart for chart in overview if chart is not None],
            [chart for chart in features if chart is not None])
