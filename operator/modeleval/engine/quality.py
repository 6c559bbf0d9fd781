"""``spec.dataQuality.rules`` checked on a profile (pure functions): each rule that does not
hold gives a finding, a warning or a failure as the rule says; :func:`enforce` turns failures
into DataQualityFailed, before the evaluation's metrics are trusted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..api.profile import DatasetProfile
from ..api.spec import Bounds, QualityRule
from .errors import DatasetError, Reason

SHOWN = 10  # names listed in a message at most


@dataclass(frozen=True)
class Finding:
    """A rule that did not hold."""

    check: str  # the rule's check, as the spec names it
    action: str  # warn or fail
    message: str


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _outside(value: float, bounds: Bounds) -> bool:
    return (bounds.min is not None and value < bounds.min) or \
        (bounds.max is not None and value > bounds.max)


def _range_text(bounds: Bounds) -> str:
    low = "-inf" if bounds.min is None else f"{bounds.min:g}"
    high = "inf" if bounds.max is None else f"{bounds.max:g}"
    return f"[{low}, {high}]"


def max_missing_rate(rule: QualityRule, profile: DatasetProfile,
                     reference: DatasetProfile | None) -> str | None:
    chosen = profile.features if rule.features is None else \
        [column for column in profile.features if column.name in set(rule.features)]
    unknown = sorted(set(rule.features or ()) - {column.name for column in profile.features})
    if unknown:
        return f"maxMissingRate names features the data does not have: {_listed(unknown)}"
    over = [f"{column.name} ({column.missing_rate:.1%})" for column in chosen
            if column.missing_rate > rule.max_missing_rate]
    return f"missing rate above {rule.max_missing_rate:.1%}: {_listed(over)}" if over else None


def no_constant_features(rule: QualityRule, profile: DatasetProfile,
                         reference: DatasetProfile | None) -> str | None:
    # Constant: no two distinct finite values (min == max is exact; the HLL estimate is not).
    constant = [column.name for column in profile.features
                if column.count == 0 or column.min == column.max]
    return f"constant features: {_listed(constant)}" if constant else None


def label_range(rule: QualityRule, profile: DatasetProfile,
                reference: DatasetProfile | None) -> str | None:
    label, bounds = profile.label, rule.label_range
    if label is None or not label.count:
        return None
    outside = [value for value in (label.min, label.max) if _outside(value, bounds)]
    if label.infinities or label.missing or outside:
        return (f"labels outside {_range_text(bounds)}: min {label.min:g}, max {label.max:g}"
                + (f", {label.infinities} infinite" if label.infinities else "")
                + (f", {label.missing} missing" if label.missing else ""))
    return None


def rows(rule: QualityRule, profile: DatasetProfile,
         reference: DatasetProfile | None) -> str | None:
    if _outside(profile.rows, rule.rows):
        return f"{profile.rows:,} rows, outside {_range_text(rule.rows)}"
    return None


def queries(rule: QualityRule, profile: DatasetProfile,
            reference: DatasetProfile | None) -> str | None:
    count = profile.queries or 0
    if _outside(count, rule.queries):
        return f"{count:,} queries, outside {_range_text(rule.queries)}"
    return None


def slice_values_seen(rule: QualityRule, profile: DatasetProfile,
                      reference: DatasetProfile | None) -> str | None:
    if reference is None:
        return "sliceValuesSeen needs dataQuality.reference"
    unseen = []
    for column, values in profile.slice_values.items():
        known = set(reference.slice_values.get(column, ()))
        unseen += [f"{column}={value}" for value in values if value not in known]
    return f"slice values the reference never had: {_listed(unseen)}" if unseen else None


CHECKS: dict[str, Callable[[QualityRule, DatasetProfile, DatasetProfile | None], str | None]] = {
    "maxMissingRate": max_missing_rate, "noConstantFeatures": no_constant_features,
    "labelRange": label_range, "rows": rows, "queries": queries,
    "sliceValuesSeen": slice_values_seen,
}


def check(rules: Sequence[QualityRule], profile: DatasetProfile,
          reference: DatasetProfile | None = None) -> list[Finding]:
    """The rules that do not hold on ``profile`` (a ``noConstantFeatures: false`` or
    ``sliceValuesSeen: false`` asks for nothing)."""
    findings = []
    for rule in rules:
        name = rule.checks()[0]
        if name in ("noConstantFeatures", "sliceValuesSeen") and \
                not (rule.no_constant_features or rule.slice_values_seen):
            continue
        message = CHECKS[name](rule, profile, reference)
        if message is not None:
            findings.append(Finding(name, rule.action, message))
    return findings


def enforce(findings: Sequence[Finding]) -> list[str]:
    """DataQualityFailed naming every failing rule, if any fails; else the warnings' texts."""
    failures = [f"{finding.check}: {finding.message}" for finding in findings
                if finding.action == "fail"]
    if failures:
        raise DatasetError("data quality: " + "; ".join(failures), Reason.DataQualityFailed)
    return [f"data quality ({finding.check}): {finding.message}" for finding in findings]
