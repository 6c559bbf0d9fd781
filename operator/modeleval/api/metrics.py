"""Every metric, declared once: its name, the tasks that take it, its cut-off, which way it
improves, what it is, what the bootstrap resamples for it and what the report plots for it.

The spec (the names the CRD pattern and the CEL rules accept), the direction rule (gates,
baseline deltas, schedules' degradation), the docs' metric table and the engine read this
table. The engine binds each declaration to its implementation (``engine.metrics``'s
``IMPLEMENTATIONS``: the value on all rows and the value on each bootstrap resample) and a test
holds the two to the same set. Adding a metric: one declaration here, one entry there, and its
test in tests/unit/test_metrics.py.

Plain Python, no pydantic: Ray task workers import it (through the engine's metrics) and start
faster without the spec models.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

# Tasks, as spec.TaskType spells them (a test holds the two together).
RANKING, BINARY, MULTICLASS, REGRESSION = "ranking", "binary", "multiclass", "regression"
CLASSIFICATION = (BINARY, MULTICLASS)

# Whether a metric takes an "@k" cut-off. Cut-offs cut a ranked list per query, so only ranking
# metrics have them; without one a ranking metric reads the whole list.
OPTIONAL, REQUIRED, NONE = "optional", "required", "none"

# What a bootstrap resample draws: whole queries (a query's documents are not independent), and
# the metric is the mean of its per-query values; or rows, and the metric is a function of sums
# of per-row terms.
PER_QUERY, PER_ROW = "per query", "per row"


@dataclass(frozen=True)
class Metric:
    """One metric's declaration. ``plots``: the ids of the report's charts that draw it, in the
    tasks that have them (every metric also gets the forest plot against the baseline and the
    slice charts)."""

    name: str
    tasks: tuple[str, ...]
    cutoff: str
    higher_is_better: bool
    description: str
    terms: str
    plots: tuple[str, ...] = ()


METRICS: tuple[Metric, ...] = (
    Metric("ndcg", (RANKING,), OPTIONAL, True,
           "Normalised discounted cumulative gain, XGBoost's: gain 2^label - 1, discount "
           "1/log2(rank + 1), over the ideal ordering's DCG at the same cut-off; a query "
           "without a relevant document scores 1.", PER_QUERY,
           ("ndcg-at", "ndcg-distribution", "ndcg-by-length")),
    Metric("map", (RANKING,), OPTIONAL, True,
           "Mean average precision, XGBoost's: relevance is label > 0; the precision at each "
           "relevant rank within the top k, summed, over min(relevant documents, k); a query "
           "without a relevant document scores 1.", PER_QUERY),
    Metric("mrr", (RANKING,), NONE, True,
           "Mean reciprocal rank of the first relevant document (label > 0); 0 for a query "
           "without one.", PER_QUERY),
    Metric("precision", (RANKING,), REQUIRED, True,
           "Relevant documents in the top k over min(k, documents in the query), as XGBoost's "
           "pre@k.", PER_QUERY, ("precision-at",)),
    Metric("recall", (RANKING,), REQUIRED, True,
           "Relevant documents in the top k over all relevant documents of the query; a query "
           "without a relevant document is left out of the mean.", PER_QUERY),
    Metric("auc", CLASSIFICATION, NONE, True,
           "Area under the ROC curve, tied scores sharing ranks; multiclass: one-vs-rest, the "
           "macro average over the classes present with both outcomes.", PER_ROW, ("roc",)),
    Metric("logloss", CLASSIFICATION, NONE, False,
           "Mean log loss, probabilities clipped to [eps, 1 - eps] (eps of float64); a "
           "multiclass row renormalised after clipping.", PER_ROW),
    Metric("accuracy", CLASSIFICATION, NONE, True,
           "Share of rows whose predicted class (binary: probability > 0.5; multiclass: "
           "argmax) is the label.", PER_ROW, ("confusion",)),
    Metric("f1", CLASSIFICATION, NONE, True,
           "F1 of the predicted class (binary: of class 1; multiclass: macro average over the "
           "classes present); undefined counts 0.", PER_ROW, ("per-class",)),
    Metric("precision", CLASSIFICATION, NONE, True,
           "Precision of the predicted class (binary: of class 1; multiclass: macro average "
           "over the classes present); undefined counts 0.", PER_ROW, ("pr", "per-class")),
    Metric("recall", CLASSIFICATION, NONE, True,
           "Recall of the predicted class (binary: of class 1; multiclass: macro average over "
           "the classes present); undefined counts 0.", PER_ROW, ("pr", "per-class")),
    Metric("rmse", (REGRESSION,), NONE, False, "Root mean squared error.", PER_ROW,
           ("residuals",)),
    Metric("mae", (REGRESSION,), NONE, False, "Mean absolute error.", PER_ROW, ("residuals",)),
    Metric("r2", (REGRESSION,), NONE, True,
           "Coefficient of determination; for a constant target 1.0 on a perfect fit, else 0.0 "
           "(as scikit-learn).", PER_ROW, ("predicted-vs-actual",)),
)


class UnknownMetric(KeyError):
    """A metric name no declaration gives the task."""


def declared(task: str, name: str) -> Metric:
    """The declaration of metric ``name`` (no cut-off: ``ndcg``, not ``ndcg@10``) in ``task``."""
    for metric in METRICS:
        if metric.name == name and task in metric.tasks:
            return metric
    raise UnknownMetric(f"task {task} has no metric {name!r}")


def of_task(task: str) -> tuple[Metric, ...]:
    """The metrics a task takes, in declaration order."""
    return tuple(metric for metric in METRICS if task in metric.tasks)


def names() -> set[str]:
    """Every metric name any task takes."""
    return {metric.name for metric in METRICS}


def lower_is_better() -> tuple[str, ...]:
    """The names of the metrics that improve downwards, in declaration order."""
    return tuple(dict.fromkeys(m.name for m in METRICS if not m.higher_is_better))


def resampled_unit(task: str) -> str:
    """What a bootstrap resample of ``task`` draws: ``queries`` or ``rows`` (every metric of
    a task draws the same: all its models share the draws)."""
    metrics = of_task(task)
    if not metrics:
        raise UnknownMetric(f"no metric is declared for task {task!r}")
    return "queries" if metrics[0].terms == PER_QUERY else "rows"


_CUTOFF_SPELLING = {OPTIONAL: "optional (`{0}@10`; without it, the whole list)",
                    REQUIRED: "required (`{0}@10`)", NONE: "none"}


def markdown_table() -> str:
    """The metric reference as a Markdown table, one row per declaration."""
    lines = ["| metric | tasks | cut-off | better | what it is | bootstrap resamples | "
             "report plots |", "|---|---|---|---|---|---|---|"]
    for metric in METRICS:
        cells = [f"`{metric.name}`", ", ".join(metric.tasks),
                 _CUTOFF_SPELLING[metric.cutoff].format(metric.name),
                 "higher" if metric.higher_is_better else "lower",
                 metric.description.replace("|", "\\|"),
                 "queries (each query's value)" if metric.terms == PER_QUERY
                 else "rows (each row's terms)",
                 ", ".join(f"`{chart}`" for chart in metric.plots) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
