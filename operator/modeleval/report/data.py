"""What the report says about the data an evaluation read (the document's ``profile``) and how
it compares with a reference (its ``drift``), as plain values: the summary facts, the verdict,
the features worth a chart, and each column's bars. The template lays them out (every feature
in a sortable table), datacharts.py plots the chosen few."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..api.profile import ColumnProfile, DataDrift, DatasetProfile, FeatureDrift
from ..api.profile_limits import CHARTED_FEATURES
from ..api.results import ResultDocument

# Histograms drawn for at most this many features (the most drifted, or the most missing): the
# table lists every feature, the charts stay a handful whatever the width (136 or 10,000).
MAX_FEATURE_CHARTS = CHARTED_FEATURES  # a compacted document keeps the drift counts of as many
MEDIAN, LOW, HIGH = "0.5", "0.01", "0.99"
# How each measure is named in the report, and how its threshold reads.
MEASURES = {"psi": "PSI", "jensenShannon": "Jensen-Shannon", "ks": "KS"}


@dataclass(frozen=True)
class FeatureStats:
    """One row of the feature table."""

    name: str
    rows: int
    missing: int
    missing_rate: float
    infinities: int
    zeros: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    distinct: float
    low: float | None  # the 1st percentile
    median: float | None
    high: float | None  # the 99th


def feature_stats(column: ColumnProfile) -> FeatureStats:
    quantiles = column.quantiles
    # The sketch's estimate may pass the finite values' count; the distinct values cannot.
    distinct = min(column.distinct, float(column.count))
    return FeatureStats(column.name, column.rows, column.missing, column.missing_rate,
                        column.infinities, column.zeros, column.min, column.max, column.mean,
                        column.std, distinct, quantiles.get(LOW), quantiles.get(MEDIAN),
                        quantiles.get(HIGH))


@dataclass(frozen=True)
class DriftVerdict:
    """The dataset's verdict: how many features drifted against the threshold share, what the
    reference was, and the thresholds as sentences."""

    reference: str
    drifted: bool
    drifted_features: int
    features: int
    share: float
    threshold: float
    thresholds: list[str]
    rows: list[FeatureDrift]  # every feature, the drifted first, the largest PSI first


def _threshold_texts(thresholds: dict[str, float | None]) -> list[str]:
    texts = [f"{MEASURES[key]} above {thresholds[key]:g}" for key in ("psi", "jensenShannon")
             if thresholds.get(key) is not None]
    if thresholds.get("ks") is not None:
        p_value = thresholds.get("ksPValue")
        texts.append(f"KS above {thresholds['ks']:g}"
                     + (f" with its p-value below {p_value:g}" if p_value is not None else ""))
    return texts or ["no measure has a threshold"]


def drift_verdict(drift: DataDrift) -> DriftVerdict:
    ordered = sorted(drift.features,
                     key=lambda feature: (not feature.drifted, -_finite(feature.psi)))
    return DriftVerdict(drift.reference, drift.drifted, sum(f.drifted for f in drift.features),
                        len(drift.features), drift.drifted_share,
                        float(drift.thresholds.get("driftShare") or 0.0),
                        _threshold_texts(drift.thresholds), ordered)


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else -math.inf


def measure_names(by: list[str]) -> str:
    return ", ".join(MEASURES.get(name, name) for name in by)


def charted_features(profile: DatasetProfile, drift: DataDrift | None,
                     count: int = MAX_FEATURE_CHARTS) -> list[tuple[ColumnProfile,
                                                                    FeatureDrift | None]]:
    """The features worth a histogram: with drift the most drifted (largest PSI first), else
    the most missing (the dataset's order among equals); only those with a histogram (a
    compacted profile keeps none)."""
    drawable = {c.name: c for c in profile.features if c.histogram is not None}
    if drift is not None:  # drawn from the drift's own counts where it kept them
        compared = {f.name for f in drift.features if drift_bars(f)}
        drawable.update({c.name: c for c in profile.features if c.name in compared})
        ranked = [(drawable[f.name], f) for f in drift_verdict(drift).rows if f.name in drawable]
        return ranked[:count]
    ordered = sorted(drawable.values(), key=lambda column: -column.missing_rate)
    return [(column, None) for column in ordered[:count]]


@dataclass(frozen=True)
class Bar:
    """One bar of a column's distribution: a value or a bin, in order."""

    label: str
    order: int
    rows: float


def _edge(value: float) -> str:
    return f"{value:.3g}"


def column_bars(column: ColumnProfile) -> list[Bar]:
    """A column's counts: each value where the profile kept exact value counts (labels,
    predictions and query lengths with few values), else its histogram's bins, the outer
    bins left out when they hold nothing and lie outside the values seen."""
    if column.value_counts:
        ordered = sorted(column.value_counts.items(), key=lambda item: _as_number(item[0]))
        return [Bar(value, index, float(rows)) for index, (value, rows) in enumerate(ordered)]
    if column.histogram is None:
        return []
    cuts, counts = column.histogram.cuts, column.histogram.counts
    labels = [f"< {_edge(cuts[0])}"] + [f"[{_edge(low)}, {_edge(high)})"
                                        for low, high in zip(cuts, cuts[1:])] + \
        [f"≥ {_edge(cuts[-1])}"]
    bars = [Bar(label, index, count) for index, (label, count) in enumerate(zip(labels, counts))]
    if bars and not bars[-1].rows and (column.max is None or column.max < cuts[-1]):
        bars.pop()
    if bars and not bars[0].rows and (column.min is None or column.min >= cuts[0]):
        bars.pop(0)
    return bars


@dataclass(frozen=True)
class DriftBar:
    """One of the reference's bins: its rows in the reference and in this data."""

    label: str
    order: int
    reference: float
    current: float


def drift_bars(drift: FeatureDrift) -> list[DriftBar]:
    """A feature's counts in the reference's bins, the reference's and this data's (empty for a
    drift recorded before the document kept them); outer bins empty on both sides left out."""
    cuts = drift.cuts
    if not cuts or len(drift.reference_counts) != len(cuts) + 1 or \
            len(drift.counts) != len(cuts) + 1:
        return []
    labels = [f"< {_edge(cuts[0])}"] + [f"[{_edge(low)}, {_edge(high)})"
                                        for low, high in zip(cuts, cuts[1:])] + \
        [f"≥ {_edge(cuts[-1])}"]
    bars = [DriftBar(label, index, reference, current) for index, (label, reference, current)
            in enumerate(zip(labels, drift.reference_counts, drift.counts))]
    while bars and not bars[-1].reference and not bars[-1].current:
        bars.pop()
    while bars and not bars[0].reference and not bars[0].current:
        bars.pop(0)
    return bars


def _as_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def bars_caption(column: ColumnProfile) -> str:
    if column.value_counts:
        return "Rows per value (exact counts)."
    if column.histogram is not None and column.histogram.exact:
        return "Rows per bin, counted exactly on the reference's bins."
    return ("Rows per bin; the bins are the values' deciles, read off the quantile sketch "
            "(within its rank error), so a skew shows in the bins' widths.")


def feature_charts_caption(drift: DataDrift | None, exact: bool) -> str:
    """How to read the features' histograms (one sentence for them all)."""
    if drift is not None:
        return ("The share of the reference's rows (grey) and of this data's (blue; red where "
                "the feature drifted) in each of the reference's bins: the bins PSI and "
                "Jensen-Shannon were computed on. The reference's bins are its own deciles, so "
                "about a tenth of its rows each.")
    return ("The share of the rows in each bin. The bins are the values' deciles (read off the "
            "quantile sketch), so each holds about a tenth of the rows: where the values "
            "crowd, the bins are narrow.")


def quantile_points(column: ColumnProfile) -> list[tuple[float, float]]:
    """(rank, value) from the smallest value through the sketch's quantiles to the largest."""
    if column.min is None or column.max is None:
        return []
    inner = sorted((float(rank), value) for rank, value in column.quantiles.items())
    return [(0.0, column.min), *inner, (1.0, column.max)]


def percent(value: float) -> str:
    """A share in prose: 25%, 12.5%, 0.03%."""
    return f"{round(value * 100, 2):g}%"


def data_facts(document: ResultDocument) -> list[tuple[str, str]]:
    """The profile's summary: what was profiled and what stands out."""
    profile = document.profile
    assert profile is not None
    features = profile.features
    with_missing = [c for c in features if c.missing]
    constant = [c for c in features if c.count and c.min == c.max]
    cells = sum(c.rows for c in features)
    facts = [("rows profiled", f"{profile.rows:,}"),
             ("features", f"{len(features):,}"),
             ("features with missing values",
              f"{len(with_missing):,} ({sum(c.missing for c in features) / cells:.2%} of all "
              "feature values missing)" if cells else f"{len(with_missing):,}"),
             ("constant features", _listed([c.name for c in constant])),
             ("features with infinities", _listed([c.name for c in features if c.infinities]))]
    if profile.queries is not None:
        facts.insert(1, ("queries", f"{profile.queries:,}"))
    for name, values in profile.slice_values.items():
        more = " (more not kept)" if name in profile.slice_values_truncated else ""
        facts.append((f"slice column {name}", f"{len(values):,} values{more}"))
    if profile.stored_at:
        facts.append(("whole profile", f"kept at {profile.stored_at} (this document keeps each "
                      "column's numbers, without its histogram)"))
    return facts


def _listed(names: list[str], shown: int = 10) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown:,} more" if len(names) > shown else ""
    return f"{len(names):,}: " + ", ".join(names[:shown]) + more
