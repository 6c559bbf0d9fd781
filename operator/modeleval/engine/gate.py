"""A model's gate: every rule of spec.gate checked against its metrics (and the baseline's).

``threshold``, ``minAbsoluteChange`` and ``minRelativeChange`` follow MLflow's MetricThreshold
(mlflow.models.evaluation.validation): with higher is better a value passes ``threshold`` when
``value >= threshold``, ``minAbsoluteChange`` when ``value >= baseline + change``, and
``minRelativeChange`` when ``(value - baseline) / abs(baseline) >= change``; with lower is
better the comparisons turn round (``<=``, ``baseline - change``, ``(baseline - value) /
abs(baseline)``). Dividing by the baseline's size, not the baseline, keeps the sign of the change
for a metric that can be negative (r2): MLflow's ``value >= baseline * (1 + change)`` would pass
a worse model against a negative baseline. A baseline of exactly 0 has no relative change: the
value passes when it is better than 0. ``requireSignificant`` passes when the interval of the
paired delta (model minus baseline) lies wholly on the better side of zero.

A NaN (a metric undefined on this data) fails every rule: a gate that cannot judge says no.
"""

from __future__ import annotations

import math
from typing import Any

from ..api.results import Interval
from ..api.spec import GateRule, MetricName


def _compares(rule: GateRule) -> bool:
    """Whether the rule reads the baseline's value."""
    return rule.max_regression is not None or rule.needs_change


def _rule_failures(rule: GateRule, name: str, value: float, baseline: float | None,
                   delta: Interval | None) -> list[str]:
    up = rule.direction_up
    better = "above" if up else "below"
    if math.isnan(value):
        return [f"{name} is NaN (undefined on this data): no rule can pass"]
    if baseline is not None and math.isnan(baseline) and _compares(rule):
        return [f"the baseline's {name} is NaN (undefined on this data): no comparison can pass"]
    failures = []
    if rule.min is not None and not value >= rule.min:
        failures.append(f"{name} {value:.6g} < min {rule.min:g}")
    if rule.max is not None and not value <= rule.max:
        failures.append(f"{name} {value:.6g} > max {rule.max:g}")
    if rule.threshold is not None and not (value >= rule.threshold if up else value <= rule.threshold):
        failures.append(f"{name} {value:.6g} {'<' if up else '>'} threshold {rule.threshold:g}")
    if baseline is None:
        return failures
    gained = value - baseline if up else baseline - value
    if rule.max_regression is not None and not gained >= -rule.max_regression:
        failures.append(f"{name} regressed by {-gained:.6g} (> {rule.max_regression:g})")
    if rule.min_absolute_change is not None and not (
            value >= baseline + rule.min_absolute_change if up
            else value <= baseline - rule.min_absolute_change):
        failures.append(f"{name} changed by {gained:+.6g} versus the baseline (needs at least "
                        f"{rule.min_absolute_change:g} {'up' if up else 'down'})")
    if rule.min_relative_change is not None:
        if baseline == 0:
            if not gained > 0:
                failures.append(f"{name} {value:.6g} is not {better} the baseline's 0")
        elif not gained / abs(baseline) >= rule.min_relative_change:
            failures.append(f"{name} changed by {gained / abs(baseline):+.4%} of the baseline (needs "
                            f"at least {rule.min_relative_change:.4%})")
    if rule.require_significant:
        if delta is None:
            failures.append(f"{name}: the delta has no interval (undefined on every resample)")
        elif not (delta.lower > 0 if up else delta.upper < 0):
            failures.append(f"{name} delta interval [{delta.lower:+.6g}, {delta.upper:+.6g}] "
                            f"is not wholly {better} 0 (not significant)")
    return failures


def evaluate_gate(rules: list[GateRule], metrics: dict[str, float],
                  baseline: dict[str, float] | None = None,
                  deltas: dict[str, Interval] | None = None) -> dict[str, Any]:
    """Each rule checked against one model's ``metrics`` (and the baseline's metrics and the
    delta intervals, when there is a baseline); the gate passes when every rule holds."""
    checked = []
    for rule in rules:
        name = str(MetricName.parse(rule.metric))
        value = metrics[name]
        base = baseline[name] if baseline is not None else None
        failures = _rule_failures(rule, name, value, base, (deltas or {}).get(name))
        checked.append({"metric": name, "value": value, "baseline": base,
                        "passed": not failures, "message": "; ".join(failures) or "ok"})
    return {"passed": all(r["passed"] for r in checked), "rules": checked}
