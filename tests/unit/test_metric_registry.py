"""One metric registry: every metric is declared once (api/metrics.py) and bound once to its
implementation (engine.metrics.IMPLEMENTATIONS), and everything else reads the two.

For each declaration: an implementation of the right kind, a point value and a bootstrap value
that agree (the resample that draws every unit once is the data itself), a row in the docs'
table, a name the spec, the CRD's pattern and the task's CEL rule accept with exactly the cut-off
it declares, the direction the gates read, the report's charts it names, and a test in
test_metrics.py. And no other module of the package spells a metric name.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import yaml

from modeleval.api import metrics as declared
from modeleval.api.direction import higher_is_better
from modeleval.api.spec import Confidence, METRIC_PATTERN, ModelEvaluationSpec, TaskType
from modeleval.engine import intervals
from modeleval.engine import metrics as M
from modeleval.report import charts
from tests.report_documents import document

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "modeleval"
CASES = [(metric, task) for metric in declared.METRICS for task in metric.tasks]
IDS = [f"{task}-{metric.name}" for metric, task in CASES]


def _spelled(metric: declared.Metric) -> str:
    """The metric as a spec names it: with a cut-off where it takes one."""
    return metric.name if metric.cutoff == declared.NONE else f"{metric.name}@5"


def test_every_declaration_has_exactly_one_implementation():
    assert len(set(declared.METRICS)) == len(declared.METRICS)
    assert set(M.IMPLEMENTATIONS) == set(declared.METRICS)
    assert len(M.IMPLEMENTATIONS) == len(declared.METRICS)


@pytest.mark.parametrize("metric", declared.METRICS, ids=lambda m: f"{m.tasks[0]}-{m.name}")
def test_a_declaration_is_well_formed(metric):
    assert metric.tasks and set(metric.tasks) <= {t.value for t in TaskType}
    assert metric.cutoff in (declared.OPTIONAL, declared.REQUIRED, declared.NONE)
    # A cut-off cuts a ranked list per query: only metrics whose resamples draw queries take one.
    assert metric.cutoff == declared.NONE or metric.terms == declared.PER_QUERY
    kind = M.QueryMetric if metric.terms == declared.PER_QUERY else M.RowMetric
    assert isinstance(M.IMPLEMENTATIONS[metric], kind)
    assert metric.description.endswith(".") and len(metric.description) > 10


def test_each_task_and_name_is_declared_once_with_one_direction_and_one_unit():
    for task in TaskType:
        names = [m.name for m in declared.of_task(task.value)]
        assert names and len(names) == len(set(names)), task
        assert len({m.terms for m in declared.of_task(task.value)}) == 1, task
    for name in declared.names():
        assert len({m.higher_is_better for m in declared.METRICS if m.name == name}) == 1, name


def _rows(task: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(labels, predictions, qids) of a small model that is neither perfect nor random."""
    n = 240
    if task == declared.RANKING:
        qids = np.repeat(np.arange(30), 8).astype(np.float64)
        labels = rng.integers(0, 4, n).astype(np.float64)
        return labels, labels + rng.normal(0, 1.5, n), qids
    if task == declared.BINARY:
        labels = rng.integers(0, 2, n).astype(np.float64)
        return labels, np.clip(0.3 * labels + rng.random(n) * 0.7, 0, 1), None
    if task == declared.MULTICLASS:
        labels = rng.integers(0, 3, n).astype(np.float64)
        scores = rng.random((n, 3)) + np.eye(3)[labels.astype(int)]
        return labels, scores / scores.sum(axis=1, keepdims=True), None
    labels = rng.normal(0, 1, n)
    return labels, labels + rng.normal(0, 0.5, n), None


@pytest.mark.parametrize("metric,task", CASES, ids=IDS)
def test_the_point_value_is_the_bootstrap_value_of_the_data_itself(metric, task):
    """The implementation's two halves agree: the terms the bootstrap sums, weighted by a draw
    of every unit once, give the metric's value on all rows."""
    labels, predictions, qids = _rows(task, np.random.default_rng(5))
    name = _spelled(metric)
    point = M.compute(task, [name], labels, predictions, qids)[name]
    if metric.terms == declared.PER_QUERY:
        units = len(np.unique(qids))
        statistic = intervals._ranking([name], labels, predictions, qids)
    else:
        units = len(labels)
        statistic = intervals._per_row(task, [name], labels, predictions)
    resampled = statistic(np.ones((1, units)))[name]
    assert 0 < abs(point) < np.inf
    assert resampled == pytest.approx([point], rel=1e-12, abs=1e-12)
    drawn = intervals.bootstrap(task, [name], labels, [predictions], qids,
                                Confidence(resamples=100, seed=1))
    assert drawn[0][name].shape == (100,) and np.isfinite(drawn[0][name]).all()


@cache
def _crd_metric_rules() -> tuple[str, dict[str, str]]:
    """The CRD's pattern for spec.metrics items, and each task's CEL regex for its metrics."""
    crd = yaml.safe_load((ROOT / "crds" / "modelevaluations.modeleval.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    by_task = {}
    for rule in spec["x-kubernetes-validations"]:
        found = re.fullmatch(r"self\.task != '(\w+)' \|\| self\.metrics\.all\(m, m\.matches\("
                             r"r?'(.*)'\)\)", rule["rule"])
        if found:
            by_task[found.group(1)] = found.group(2)
    return spec["properties"]["metrics"]["items"]["pattern"], by_task


@pytest.mark.parametrize("metric,task", CASES, ids=IDS)
def test_the_spec_and_the_crd_accept_the_metric_with_its_cutoff_only(metric, task):
    pattern, by_task = _crd_metric_rules()
    assert pattern == METRIC_PATTERN
    accepted = [_spelled(metric)] + ([metric.name] if metric.cutoff == declared.OPTIONAL else [])
    refused = [f"{metric.name}@5"] if metric.cutoff == declared.NONE else (
        [metric.name] if metric.cutoff == declared.REQUIRED else [])
    base = {"task": task, "model": {"uri": "s3://models/m.json"},
            "dataset": {"uri": "s3://datasets/d.txt"}}
    for name in accepted:
        assert re.fullmatch(pattern, name) and re.fullmatch(by_task[task], name), name
        assert ModelEvaluationSpec.model_validate({**base, "metrics": [name]}).metrics == [name]
    for name in refused:
        assert not re.fullmatch(by_task[task], name), name
        with pytest.raises(ValueError):
            ModelEvaluationSpec.model_validate({**base, "metrics": [name]})


def test_the_crd_takes_no_metric_that_is_not_declared():
    _, by_task = _crd_metric_rules()
    assert set(by_task) == {t.value for t in TaskType}
    for task, regex in by_task.items():
        for name in declared.names() - {m.name for m in declared.of_task(task)}:
            assert not re.fullmatch(regex, name) and not re.fullmatch(regex, f"{name}@5"), name


@pytest.mark.parametrize("metric", declared.METRICS, ids=lambda m: f"{m.tasks[0]}-{m.name}")
def test_the_direction_rule_reads_the_declaration(metric):
    assert higher_is_better(_spelled(metric)) is metric.higher_is_better
    assert higher_is_better(metric.name) is metric.higher_is_better


def test_the_docs_table_has_a_row_per_declaration():
    table = declared.markdown_table()
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == len(declared.METRICS)
    for metric, row in zip(declared.METRICS, rows):
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[0] == f"`{metric.name}`" and cells[1] == ", ".join(metric.tasks)
        assert cells[3] == ("higher" if metric.higher_is_better else "lower")
        assert cells[4] == metric.description
    assert table in (ROOT / "docs" / "reference" / "metrics.md").read_text()


@cache
def _drawn(task: str) -> frozenset[str]:
    """The ids of the charts the report draws for a result of ``task``."""
    return frozenset(chart.id for chart in charts.task_charts(task, document(task).curves))


@pytest.mark.parametrize("metric", [m for m in declared.METRICS if m.plots],
                         ids=lambda m: f"{m.tasks[0]}-{m.name}")
def test_the_charts_a_declaration_names_are_drawn(metric):
    """Each chart is drawn for at least one of the metric's tasks (ROC: binary, not
    multiclass)."""
    for chart in metric.plots:
        assert any(chart in _drawn(task) for task in metric.tasks), chart


def test_every_declared_metric_has_a_test_in_test_metrics():
    tree = ast.parse((ROOT / "tests" / "unit" / "test_metrics.py").read_text())
    spelled = {node.value.partition("@")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert declared.names() <= spelled, declared.names() - spelled


# Strings that spell a metric's name outside the registry, and why each is not a metric list.
NOT_METRIC_LISTS = {
    ("api/spec.py", "map"): "Kubernetes' x-kubernetes-list-type",
    ("api/status.py", "map"): "Kubernetes' x-kubernetes-list-type",
    ("api/docs.py", "map"): "Kubernetes' x-kubernetes-list-type",
    ("demo.py", "ndcg@10"): "XGBoost's own eval_metric, training the demo's ranker",
    ("engine/rankingcurves.py", "ndcg"): "the ranking curves are NDCG's, at the first ndcg@k",
    ("report/charts.py", "precision"): "the PR curve's axis; the per-class scores' fields",
    ("report/charts.py", "recall"): "the PR curve's axis; the per-class scores' fields",
    ("report/charts.py", "f1"): "the per-class scores' field",
    ("report/render.py", "precision"): "a column of the threshold and per-class tables",
    ("report/render.py", "recall"): "a column of the threshold and per-class tables",
}


def _implementation_lines(tree: ast.Module) -> range:
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "IMPLEMENTATIONS":
            return range(node.lineno, node.end_lineno + 1)  # type: ignore[operator]
    raise AssertionError("engine/metrics.py has no IMPLEMENTATIONS table")


def test_no_module_outside_the_registry_spells_a_metric_name():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE))
        if where == "api/metrics.py":
            continue
        tree = ast.parse(path.read_text())
        allowed = _implementation_lines(tree) if where == "engine/metrics.py" else range(0)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and re.fullmatch(METRIC_PATTERN, node.value) and node.lineno not in allowed
                    and (where, node.value) not in NOT_METRIC_LISTS):
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    assert not found, ("metric names outside api/metrics.py and IMPLEMENTATIONS:\n"
                       + "\n".join(found))
