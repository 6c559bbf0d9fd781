"""Gate rules: MLflow MetricThreshold semantics, the old min/max/maxRegression, significance."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modeleval.api.results import Interval
from modeleval.api.spec import GateRule, format_validation_error
from modeleval.engine.gate import evaluate_gate


def rule(**fields) -> GateRule:
    return GateRule.model_validate(fields)


def passes(fields, value, baseline=None, delta=None, metric=None) -> bool:
    name = metric or fields.get("metric", "ndcg@10")
    gate = evaluate_gate([rule(metric=name, **{k: v for k, v in fields.items() if k != "metric"})],
                         {name: value}, None if baseline is None else {name: baseline},
                         None if delta is None else {name: Interval(lower=delta[0], upper=delta[1])})
    return gate["passed"]


@pytest.mark.parametrize("fields, value, baseline, expected", [
    # threshold: >= when higher is better, <= when lower is better (MLflow)
    ({"threshold": 0.5}, 0.5, None, True),
    ({"threshold": 0.5}, 0.49, None, False),
    ({"metric": "logloss", "threshold": 0.5}, 0.5, None, True),
    ({"metric": "logloss", "threshold": 0.5}, 0.51, None, False),
    ({"threshold": 0.5, "higherIsBetter": False}, 0.4, None, True),
    # minAbsoluteChange: value >= baseline + change (higher), value <= baseline - change (lower)
    ({"minAbsoluteChange": 0.05}, 0.76, 0.70, True),
    ({"minAbsoluteChange": 0.05}, 0.74, 0.70, False),
    ({"metric": "rmse", "minAbsoluteChange": 0.1}, 0.85, 1.0, True),
    ({"metric": "rmse", "minAbsoluteChange": 0.1}, 0.95, 1.0, False),
    # minRelativeChange: (value - baseline) / baseline >= change; lower: (baseline - value) / ...
    ({"minRelativeChange": 0.1}, 0.78, 0.70, True),
    ({"minRelativeChange": 0.1}, 0.76, 0.70, False),
    ({"metric": "mae", "minRelativeChange": 0.1}, 0.85, 1.0, True),
    ({"metric": "mae", "minRelativeChange": 0.1}, 0.95, 1.0, False),
    # a baseline of 0: the value must just be better
    ({"minRelativeChange": 0.5}, 0.01, 0.0, True),
    ({"minRelativeChange": 0.5}, 0.0, 0.0, False),
    ({"metric": "mae", "minRelativeChange": 0.5}, 0.1, 0.0, False),
    # the old rules keep their meaning
    ({"min": 0.3, "max": 0.9}, 0.95, None, False),
    ({"maxRegression": 0.01}, 0.695, 0.70, True),
    ({"maxRegression": 0.01}, 0.68, 0.70, False),
    ({"metric": "logloss", "maxRegression": 0.01}, 0.72, 0.70, False),
])
def test_rules(fields, value, baseline, expected):
    assert passes(fields, value, baseline) is expected


@pytest.mark.parametrize("fields, delta, expected", [
    ({"requireSignificant": True}, (0.001, 0.02), True),
    ({"requireSignificant": True}, (-0.001, 0.02), False),
    ({"requireSignificant": True}, (0.0, 0.02), False),
    ({"metric": "logloss", "requireSignificant": True}, (-0.02, -0.001), True),
    ({"metric": "logloss", "requireSignificant": True}, (0.001, 0.02), False),
    ({"requireSignificant": True, "higherIsBetter": False}, (-0.02, -0.001), True),
    ({"requireSignificant": True, "minAbsoluteChange": 0.05}, (0.001, 0.1), False),  # both apply
])
def test_significance_needs_the_delta_interval_on_the_better_side(fields, delta, expected):
    assert passes(fields, 0.72, 0.70, delta) is expected


def test_every_rule_must_hold_and_messages_say_why():
    gate = evaluate_gate([rule(metric="ndcg@10", threshold=0.5),
                          rule(metric="ndcg@10", minRelativeChange=0.1, requireSignificant=True)],
                         {"ndcg@10": 0.72}, {"ndcg@10": 0.70},
                         {"ndcg@10": Interval(lower=-0.01, upper=0.05)})
    assert gate["passed"] is False
    first, second = gate["rules"]
    assert first == {"metric": "ndcg@10", "value": 0.72, "baseline": 0.70, "passed": True,
                     "message": "ok"}
    assert "+2.8571% of the baseline" in second["message"]
    assert "not significant" in second["message"]


NAN = float("nan")
# One row per rule kind: each would pass with the numbers given, were the value a number.
EVERY_RULE_KIND = [
    {"min": 0.1}, {"max": 0.9}, {"threshold": 0.1}, {"metric": "logloss", "threshold": 0.9},
    {"maxRegression": 0.5}, {"minAbsoluteChange": 0.01}, {"minRelativeChange": 0.01},
    {"metric": "rmse", "minRelativeChange": 0.01}, {"requireSignificant": True},
]


@pytest.mark.parametrize("fields", EVERY_RULE_KIND, ids=lambda f: ",".join(f))
def test_a_nan_value_fails_every_rule_kind(fields):
    metric = fields.get("metric", "ndcg@10")
    base = 0.9 if metric in ("logloss", "rmse") else 0.2
    value = 0.5
    assert passes(fields, value, base, (0.01, 0.02) if metric == "ndcg@10" else (-0.02, -0.01))
    assert not passes(fields, NAN, base, (NAN, NAN))
    gate = evaluate_gate([rule(metric=metric, **{k: v for k, v in fields.items() if k != "metric"})],
                         {metric: NAN}, {metric: base}, {metric: Interval(lower=NAN, upper=NAN)})
    assert "NaN" in gate["rules"][0]["message"]


@pytest.mark.parametrize("fields", [f for f in EVERY_RULE_KIND
                                    if {"maxRegression", "minAbsoluteChange", "minRelativeChange",
                                        "requireSignificant"} & set(f)], ids=lambda f: ",".join(f))
def test_a_nan_baseline_fails_every_comparison(fields):
    metric = fields.get("metric", "ndcg@10")
    assert not passes(fields, 0.5, NAN, (0.01, 0.02) if metric == "ndcg@10" else (-0.02, -0.01))


@pytest.mark.parametrize("value, baseline, change, expected", [
    (-0.4, -0.5, 0.1, True),    # r2 up by 0.1 from -0.5: 20% of |baseline|
    (-0.6, -0.5, 0.1, False),   # r2 down: worse, refused (MLflow's baseline * 1.1 would pass it)
    (-0.54, -0.5, 0.1, False),  # down again, by less than the 10% MLflow's rule would allow
    (-0.47, -0.5, 0.1, False),  # up by 6% of |baseline|: not enough
    (0.55, 0.5, 0.1, True),     # a positive baseline: as MLflow
])
def test_relative_change_is_against_the_baselines_size(value, baseline, change, expected):
    assert passes({"metric": "r2", "minRelativeChange": change}, value, baseline) is expected


def test_min_absolute_change_must_be_positive_as_mlflow_requires():
    for bad in (0, 0.0, -0.1):
        with pytest.raises(ValidationError) as error:
            rule(metric="ndcg@10", minAbsoluteChange=bad)
        assert format_validation_error(error.value).startswith(
            "minAbsoluteChange: must be a positive number")
    assert rule(metric="ndcg@10", minAbsoluteChange=1e-9).min_absolute_change == 1e-9
