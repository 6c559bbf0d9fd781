"""What the schedule and compare pages show, as pure functions of stored documents, and the
schedule's chart (Vega-Lite through Altair)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..api.direction import improvement
from ..api.results import ResultDocument
from ..api.schedule import Against, Degradation, metric_drop
from .sources import Loaded

MIN_COMPARED, MAX_COMPARED = 2, 8


@dataclass
class RunPoint:
    """One run of a schedule on the chart and in its table."""

    uid: str
    attempt: int
    name: str
    finished: str
    model: str
    value: float
    lower: float | None
    upper: float | None
    reference: float | None = None
    drop: float | None = None
    degraded: bool | None = None  # None: no rule, or nothing to compare with


def _reference(document: ResultDocument, metric: str, value: float, previous: float | None,
               degradation: Degradation | None) -> float | None:
    """What the run is judged against, as the operator judges it: the run before, or the
    champion its own baseline scored (value minus the run's delta)."""
    if degradation is not None and degradation.against == Against.champion:
        delta = document.baseline.deltas.get(metric) if document.baseline else None
        return None if delta is None else value - delta
    return previous


def schedule_points(runs: list[Loaded], metric: str,
                    degradation: Degradation | None) -> list[RunPoint]:
    """The succeeded runs that scored ``metric``, oldest first, each marked degraded when its
    drop from its reference exceeds the rule's maxDrop."""
    points: list[RunPoint] = []
    previous: float | None = None
    for run in runs:
        doc = run.document
        if doc is None or not doc.succeeded or metric not in doc.metrics:
            continue
        value = doc.metrics[metric]
        interval = doc.intervals.get(metric)
        point = RunPoint(doc.uid, doc.attempt, doc.name, doc.finished_at,
                         str(doc.model.get("uri", "")), value,
                         interval.lower if interval else None, interval.upper if interval else None)
        point.reference = _reference(doc, metric, value, previous, degradation)
        if degradation is not None and point.reference is not None:
            point.drop = metric_drop(metric, value, point.reference)
            point.degraded = degradation.exceeded(point.drop)
        points.append(point)
        previous = value
    return points


def schedule_chart(points: list[RunPoint], metric: str) -> dict[str, Any]:
    """The metric over time: the interval as a band, the value as a line, each run a point
    (red when degraded) whose tooltip names the model it scored."""
    import altair as alt

    values = [{**asdict(p), "state": "degraded" if p.degraded else "ok"} for p in points]
    base = alt.Chart(alt.NamedData(name="runs")).encode(x=alt.X("finished:T", title="finished"))
    band = base.mark_area(opacity=0.25).encode(y=alt.Y("lower:Q", title=metric,
                                                       scale=alt.Scale(zero=False)),
                                               y2="upper:Q")
    line = base.mark_line().encode(y="value:Q")
    marks = base.mark_point(filled=True, size=80).encode(
        y="value:Q",
        color=alt.Color("state:N", scale=alt.Scale(domain=["ok", "degraded"],
                                                    range=["#1f77b4", "#d62728"]),
                        title="run"),
        shape=alt.Shape("state:N", scale=alt.Scale(domain=["ok", "degraded"],
                                                    range=["circle", "triangle-down"])),
        tooltip=[alt.Tooltip("name:N"), alt.Tooltip("model:N"), alt.Tooltip("value:Q", format=".4f"),
                 alt.Tooltip("lower:Q", format=".4f"), alt.Tooltip("upper:Q", format=".4f"),
                 alt.Tooltip("drop:Q", format=".4f"), alt.Tooltip("finished:T")])
    spec = alt.layer(band, line, marks).properties(width="container", height=320).to_dict()
    spec.pop("$schema", None)  # nothing to fetch: the page embeds it as Vega-Lite
    # Named, so a reader (and the browser tests) find the runs as view.data("runs").
    spec["datasets"] = {"runs": values}
    return spec


@dataclass
class ComparedMetric:
    """One metric across the compared evaluations: values (None: not scored) and the deltas
    against the first, with whether each is better."""

    name: str
    values: list[float | None]
    deltas: list[float | None]
    better: list[bool | None]
    intervals: list[tuple[float, float] | None]


def compare_metrics(documents: list[ResultDocument | None]) -> list[ComparedMetric]:
    """Every metric any readable document has, in the order first seen."""
    names: list[str] = []
    for doc in documents:
        for name in (doc.metrics if doc else {}):
            if name not in names:
                names.append(name)
    rows = []
    for name in names:
        values = [doc.metrics.get(name) if doc else None for doc in documents]
        first = values[0]
        deltas = [None if first is None or v is None else v - first for v in values]
        better = [None if first is None or v is None or v == first
                  else improvement(name, v, first) > 0 for v in values]
        intervals = [(doc.intervals[name].lower, doc.intervals[name].upper)
                     if doc and name in doc.intervals else None for doc in documents]
        rows.append(ComparedMetric(name, values, deltas, better, intervals))
    return rows
