"""What the report says, worked out from a result document as plain values (no HTML): the
models and their metrics, the verdict, the slices worst first, the dataset and run facts. The
template lays these out; charts.py plots them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..api.curves import ModelCurves
from ..api.direction import higher_is_better
from ..api.results import GateResult, Interval, ResultDocument

NOT_RECORDED = "not recorded"
# A slice's table lists at most its this many worst values: a slice of a high-cardinality column
# (the engine keeps up to 1,000 values) must not make the report large.
MAX_SLICE_ROWS = 200
# The candidate's name in curves and deltas ("model" in ModelCurves), as the report shows it.
CANDIDATE = "candidate"
BASELINE = "baseline"


@dataclass(frozen=True)
class Model:
    """One scored model: the candidate, the baseline (the champion) or a challenger."""

    name: str
    role: str
    uri: str | None
    fingerprint: str | None
    metrics: dict[str, float]
    intervals: dict[str, Interval]
    deltas: dict[str, float] = field(default_factory=dict)
    delta_intervals: dict[str, Interval] = field(default_factory=dict)
    gate: GateResult | None = None


def models(document: ResultDocument) -> list[Model]:
    """The candidate, then the baseline, then the challengers, in the order they were scored."""
    baseline = document.baseline
    found = [Model(CANDIDATE, "candidate", document.model.get("uri"),
                   document.model.get("fingerprint"), document.metrics, document.intervals,
                   baseline.deltas if baseline else {},
                   baseline.delta_intervals if baseline else {}, document.gate)]
    if baseline is not None:
        found.append(Model(BASELINE, "baseline (champion)", baseline.model.get("uri"),
                           baseline.model.get("fingerprint"), baseline.metrics,
                           baseline.intervals))
    found += [Model(c.name, "challenger", c.model.get("uri"), c.model.get("fingerprint"),
                    c.metrics, c.intervals, c.deltas, c.delta_intervals, c.gate)
              for c in document.challengers]
    return found


def best_models(scored: list[Model]) -> dict[str, str]:
    """Per metric, the model with the best value (whichever way the metric improves), when
    there is more than one model."""
    if len(scored) < 2:
        return {}
    best = {}
    for metric in dict.fromkeys(m for model in scored for m in model.metrics):
        values = [(model.metrics[metric], model.name) for model in scored
                  if is_number(model.metrics.get(metric))]
        if values:
            pick = max if higher_is_better(metric) else min
            best[metric] = pick(values, key=lambda pair: pair[0])[1]
    return best


def display_name(curves_model: str) -> str:
    """A ModelCurves.model as the report names it ("model" is the candidate)."""
    return CANDIDATE if curves_model == "model" else curves_model


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_names(document: ResultDocument) -> list[str]:
    """The candidate's metrics, the primary one first."""
    names = list(document.metrics)
    if document.primary_metric in names:
        names.remove(document.primary_metric)
        names.insert(0, document.primary_metric)
    return names


def primary_metric(document: ResultDocument) -> str | None:
    names = metric_names(document)
    return names[0] if names else None


def judgement(metric: str, delta: float | None, interval: Interval | None) -> str:
    """How sure a delta is better: "better" / "worse" when its interval lies wholly on one side
    of zero, "unclear" when it straddles zero, "better?" / "worse?" without an interval."""
    if delta is None or not is_number(delta):
        return "unknown"
    up = higher_is_better(metric)
    if interval is not None and is_number(interval.lower) and is_number(interval.upper):
        if (interval.lower > 0) if up else (interval.upper < 0):
            return "better"
        if (interval.upper < 0) if up else (interval.lower > 0):
            return "worse"
        return "unclear"
    if delta == 0:
        return "unchanged"
    return "better?" if (delta > 0) == up else "worse?"


@dataclass(frozen=True)
class Comparison:
    """A model's primary metric against the baseline's."""

    model: str
    metric: str
    delta: float
    interval: Interval | None
    verdict: str


def comparisons(document: ResultDocument) -> list[Comparison]:
    """The candidate's and each challenger's primary-metric delta versus the baseline."""
    metric = primary_metric(document)
    if document.baseline is None or metric is None:
        return []
    return [Comparison(m.name, metric, m.deltas[metric], m.delta_intervals.get(metric),
                       judgement(metric, m.deltas[metric], m.delta_intervals.get(metric)))
            for m in models(document) if metric in m.deltas]


@dataclass(frozen=True)
class SliceRow:
    value: str
    rows: int | None
    metrics: dict[str, float | None]
    intervals: dict[str, Interval]
    error: str | None


@dataclass(frozen=True)
class SliceTable:
    name: str
    metric: str | None  # the metric the rows are ordered by (worst first)
    metrics: list[str]
    rows: list[SliceRow]  # the worst MAX_SLICE_ROWS
    values: int  # how many values the slice has in all


def _slice_row(value: str, entry: dict[str, Any], intervals: dict[str, Interval]) -> SliceRow:
    rows = entry.get("rows")
    error = entry.get("error")
    metrics = {k: (v if is_number(v) else None) for k, v in entry.items()
               if k not in ("rows", "error")}
    return SliceRow(value, int(rows) if is_number(rows) else None, metrics, intervals,
                    str(error) if error is not None else None)


def _worst_first(rows: list[SliceRow], metric: str | None) -> list[SliceRow]:
    """Worst value of ``metric`` first (whichever way it improves); slices where it is
    undefined last."""
    if metric is None:
        return rows
    sign = 1.0 if higher_is_better(metric) else -1.0

    def key(row: SliceRow) -> tuple[bool, float, str]:
        value = row.metrics.get(metric)
        return (value is None, sign * value if value is not None else 0.0, row.value)

    return sorted(rows, key=key)


def slice_tables(document: ResultDocument) -> list[SliceTable]:
    """Each slice's values, worst first by the primary metric."""
    wanted = metric_names(document)
    tables = []
    for name, values in document.slices.items():
        intervals = document.slice_intervals.get(name, {})
        rows = [_slice_row(value, entry, intervals.get(value, {}))
                for value, entry in values.items()]
        present = [m for m in wanted if any(m in r.metrics for r in rows)]
        present += sorted({m for r in rows for m in r.metrics} - set(present))
        metric = primary_metric(document)
        order_by = metric if metric in present else (present[0] if present else None)
        tables.append(SliceTable(name, order_by, present,
                                 _worst_first(rows, order_by)[:MAX_SLICE_ROWS], len(rows)))
    return tables


def _count(value: Any) -> str:
    """A recorded count, or "not recorded"."""
    if value is None:
        return NOT_RECORDED
    if is_number(value):
        return f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"
    return str(value)


def _missing(missing: Any, features: Any, rows: int) -> str:
    """The absent feature values, and their share of all feature cells when that is known."""
    text = _count(missing)
    if is_number(missing) and is_number(features) and features and rows:
        text += f" ({missing / (features * rows):.2%} of {features * rows:,} feature values)"
    return text


def dataset_summary(document: ResultDocument) -> dict[str, Any]:
    dataset = document.dataset
    return {
        "facts": [("rows", f"{document.rows:,}"),
                  ("queries", f"{document.queries:,}" if document.queries is not None
                   else "none (not a ranking dataset)" if document.rows else NOT_RECORDED),
                  ("features", _count(dataset.get("features", document.model.get("features")))),
                  ("missing values", _missing(dataset.get("missingValues"),
                                              dataset.get("features"), document.rows)),
                  ("format", str(dataset.get("format") or NOT_RECORDED)),
                  ("size", _bytes(dataset.get("bytes"))),
                  ("shards", _count(dataset.get("shards"))),
                  ("URI", str(dataset.get("uri") or NOT_RECORDED)),
                  ("fingerprint", str(dataset.get("fingerprint") or NOT_RECORDED))],
    }


def _bytes(value: Any) -> str:
    if not is_number(value):
        return NOT_RECORDED
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return NOT_RECORDED


def _flat(value: Any) -> str:
    """A small recorded structure as one readable line."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat(v)}" for k, v in value.items()) or NOT_RECORDED
    if isinstance(value, (list, tuple)):
        return ", ".join(_flat(v) for v in value)
    return str(value)


def run_facts(document: ResultDocument) -> list[tuple[str, str]]:
    """Duration, throughput, what it ran on, what it scored, with which versions."""
    total = document.timings.get("total")
    facts = [("duration", f"{total:,.2f} s" if is_number(total) else NOT_RECORDED),
             ("rows/s", f"{document.rows / total:,.0f}" if is_number(total) and total > 0
              and document.rows else NOT_RECORDED),
             ("resources", _flat(document.resources) if document.resources else NOT_RECORDED),
             ("model", str(document.model.get("uri") or NOT_RECORDED)),
             ("model format", str(document.model.get("format") or NOT_RECORDED)),
             ("model fingerprint", str(document.model.get("fingerprint") or NOT_RECORDED)),
             ("dataset fingerprint", str(document.dataset.get("fingerprint") or NOT_RECORDED)),
             ("parsed-dataset cache", "hit" if document.cache_hit else "miss"),
             ("predictions", document.predictions_uri or "not written"),
             ("versions", _flat(document.versions) if document.versions else NOT_RECORDED),
             ("finished", document.finished_at),
             ("attempt", str(document.attempt)),
             ("uid", document.uid)]
    if document.schedule:
        facts.insert(0, ("schedule", document.schedule))
    stages = [(k, v) for k, v in document.timings.items() if k != "total" and is_number(v)]
    if stages:
        facts.insert(1, ("stages", ", ".join(f"{k} {v:,.2f} s" for k, v in stages)))
    return facts


def curves_of(document: ResultDocument) -> list[ModelCurves]:
    return list(document.curves or [])


def task_of(document: ResultDocument) -> str | None:
    """The task, read from the curves (None for a document without them)."""
    for curves in curves_of(document):
        for task in ("binary", "multiclass", "regression", "ranking"):
            if getattr(curves, task) is not None:
                return task
    return None
