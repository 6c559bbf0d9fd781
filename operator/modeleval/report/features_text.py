"""The profile and drift of a result document as text for a terminal (``modeleval results show
UID --features``): a heading, the drift's verdict, then one aligned line per feature (its
drift's measures beside its statistics when the document has drift) and a line each for the
labels, the query lengths and each model's predictions.

Plain aligned columns, no box drawing: the lines read in a terminal and pass through ``grep``,
``sort`` and ``column``. A name a dataset chose (a Parquet or CSV header) is printed with its
control characters escaped, so none can move a terminal's cursor or change its colours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.cells import cell_len

from ..api.profile import ColumnProfile, DataDrift, FeatureDrift
from ..api.results import ResultDocument
from . import data
from .content import display_name

STATS = ("rows", "missing", "inf", "zeros", "min", "max", "mean", "std", "distinct", "p1",
         "median", "p99")
DRIFT = ("psi", "js", "ks", "ks_p", "drifted")


class NoProfile(Exception):
    """The document holds no profile (nor drift) to show."""


def printable(text: str) -> str:
    """``text`` with every non-printable character (ESC, newlines, other controls) escaped."""
    return "".join(character if character.isprintable()
                   else character.encode("unicode_escape").decode("ascii")
                   for character in text)


def _number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _stats(column: ColumnProfile) -> list[str]:
    stats = data.feature_stats(column)
    return [str(stats.rows), f"{stats.missing_rate:.2%}", str(stats.infinities),
            str(stats.zeros), *(_number(value) for value in (stats.min, stats.max, stats.mean,
                                                              stats.std)),
            str(round(stats.distinct)), *(_number(value) for value in (stats.low, stats.median,
                                                                        stats.high))]


def _drift_cells(found: FeatureDrift | None) -> list[str]:
    if found is None:
        return ["-"] * len(DRIFT)
    verdict = f"yes ({data.measure_names(found.by)})" if found.drifted else "no"
    return [_number(found.psi), _number(found.jensen_shannon), _number(found.ks),
            _number(found.ks_p_value), verdict]


def _aligned(rows: Sequence[Sequence[str]], text_columns: Sequence[int] = (0,)) -> list[str]:
    """Columns padded to their widest cell: numbers to the right, the ``text_columns`` (the
    names, the drift's verdict) to the left."""
    widths = [max(cell_len(row[index]) for row in rows) for index in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell + " " * (width - cell_len(cell)) if index in text_columns
                 else " " * (width - cell_len(cell)) + cell
                 for index, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _verdict(drift: DataDrift) -> str:
    verdict = data.drift_verdict(drift)
    return (f"drift against {printable(drift.reference)}: "
            f"{'drifted' if drift.drifted else 'no drift'}, {verdict.drifted_features} of "
            f"{verdict.features} features drifted ({data.percent(verdict.share)}; the dataset "
            f"drifts at {data.percent(verdict.threshold)}); thresholds: "
            + "; ".join(verdict.thresholds))


def feature_lines(document: ResultDocument) -> list[str]:
    """The whole text, line by line (NoProfile without a profile or drift)."""
    profile, drift = document.profile, document.drift
    if profile is None and drift is None:
        raise NoProfile(f"result {document.uid} attempt {document.attempt} has no data profile: "
                        "it was written before evaluations recorded one, or the evaluation "
                        "did not read its data (it failed first, or profiling was off)")
    lines = [f"{printable(document.name)} (uid {document.uid}, attempt {document.attempt})"]
    if drift is not None:
        lines.append(_verdict(drift))
    if profile is None:
        lines.append("the profile is not in this document (left out for its size); each "
                     "feature's drift:")
        rows = [["feature", *DRIFT]] + [[printable(found.name), *_drift_cells(found)]
                                        for found in drift.features]
        return lines + [""] + _aligned(rows, (0, len(DRIFT)))
    lines.append(f"{profile.rows} rows" + (f", {profile.queries} queries"
                                           if profile.queries is not None else "")
                 + f", {len(profile.features)} features")
    by_name = {found.name: found for found in drift.features} if drift else {}
    header = ["feature", *STATS, *(DRIFT if drift else ())]
    rows = [header] + [[printable(column.name), *_stats(column),
                        *(_drift_cells(by_name.get(column.name)) if drift else ())]
                       for column in profile.features]
    lines += [""] + _aligned(rows, (0, len(header) - 1) if drift else (0,))
    return lines + _other_columns(document)


def _other_columns(document: ResultDocument) -> list[str]:
    profile = document.profile
    assert profile is not None
    named = [("label", profile.label), ("query length", profile.query_lengths),
             *((f"prediction {printable(display_name(model))}", column)
               for model, column in profile.predictions.items())]
    rows = [[name, *_stats(column)] for name, column in named if column is not None]
    if not rows:
        return []
    return [""] + _aligned([["column", *STATS]] + rows)


def features_json(document: ResultDocument) -> str:
    """The profile and drift as the document holds them, for scripts."""
    if document.profile is None and document.drift is None:
        feature_lines(document)  # raises NoProfile with the reason
    return json.dumps({"uid": document.uid, "attempt": document.attempt,
                       "profile": document.profile.model_dump(mode="json", by_alias=True)
                       if document.profile else None,
                       "drift": document.drift.model_dump(mode="json", by_alias=True)
                       if document.drift else None}, indent=2)
