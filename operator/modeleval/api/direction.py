"""Which way each metric improves, as the metric declarations (api/metrics.py) say: the one rule
that gates, baseline deltas, the report and schedules' regression checks read. Plain Python, no
pydantic: Ray task workers import it (through the engine's metrics) and start faster without
the spec models."""

from __future__ import annotations

from .metrics import lower_is_better

# Metrics that improve downwards; every other metric improves upwards.
LOWER_IS_BETTER = frozenset(lower_is_better())


def higher_is_better(metric: str) -> bool:
    """The default direction of a metric (``ndcg@10``: higher; ``logloss``: lower)."""
    return metric.partition("@")[0] not in LOWER_IS_BETTER


def improvement(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` (negative: worse), whichever way the metric
    improves."""
    return new - old if higher_is_better(metric) else old - new
