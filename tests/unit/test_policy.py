"""The platform's policy on where Ray pods may run and how large they may be: tolerations and
node labels from an allowlist, CPU per pod bounded; and the chart bounds every active count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modeleval.api.reasons import Reason
from modeleval.api.spec import ModelEvaluationSpec
from modeleval.controller.policy import InvalidSpec, parse_spec
from modeleval.controller.settings import OperatorSettings

from .test_decide import SETTINGS, spec

CHART = Path(__file__).resolve().parents[2] / "charts" / "modeleval"
GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def answer(extra: dict, **settings) -> ModelEvaluationSpec | InvalidSpec:
    raw = {**spec().model_dump(by_alias=True, exclude_none=True), **extra}
    return parse_spec(raw, OperatorSettings(**{**SETTINGS.model_dump(), **settings}, _env_file=None))


@pytest.mark.parametrize("extra, settings, refused", [
    ({"tolerations": [GPU]}, {}, None),  # the default allows the GPU nodes' taint
    ({"tolerations": [{"operator": "Exists"}]}, {},  # tolerates every taint: control plane too
     "spec.tolerations[0]: <every key> (Exists) is not allowed by the operator's policy "
     "(allowedTolerations: nvidia.com/gpu (Exists))"),
    ({"tolerations": [GPU, {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]},
     {}, "spec.tolerations[1]: node-role.kubernetes.io/control-plane (Exists) is not allowed"),
    ({"tolerations": [GPU]}, {"allowed_tolerations": []}, "spec.tolerations[0]: nvidia.com/gpu:"
     "NoSchedule (Exists) is not allowed by the operator's policy (allowedTolerations: none)"),
    ({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]},
     {"allowed_tolerations": [{"key": "dedicated", "value": "ml"}]}, None),
    ({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "team-b"}]},
     {"allowed_tolerations": [{"key": "dedicated", "value": "ml"}]}, "spec.tolerations[0]: dedicated=team-b"),
    ({"nodeSelector": {"pool": "ml"}}, {},
     "spec.nodeSelector.pool: pool=ml is not allowed by the operator's policy "
     "(allowedNodeSelectors: none)"),
    ({"nodeSelector": {"pool": "ml"}}, {"allowed_node_selectors": {"pool": ["ml", "gpu"]}}, None),
    ({"nodeSelector": {"pool": "system"}}, {"allowed_node_selectors": {"pool": ["ml"]}},
     "spec.nodeSelector.pool: pool=system is not allowed"),
    ({"nodeSelector": {"zone": "a"}}, {"allowed_node_selectors": {"zone": ["*"]}}, None),
    ({"resources": {"cpu": "65"}}, {}, "spec.resources.cpu: 65 is above the operator's limit "
     "(maxWorkerCpu: 64)"),
    ({"resources": {"headCpu": "8"}}, {"max_worker_cpu": "4000m"}, "spec.resources.headCpu: 8 is "
     "above the operator's limit (maxWorkerCpu: 4000m)"),
    ({"resources": {"cpu": "500"}}, {"max_worker_cpu": ""}, None),  # no limit
])
def test_placement_and_cpu_are_bounded_by_the_policy(extra, settings, refused):
    result = answer(extra, **settings)
    if refused is None:
        assert isinstance(result, ModelEvaluationSpec), result
    else:
        assert isinstance(result, InvalidSpec) and result.reason == Reason.Forbidden
        assert result.message.startswith(refused), result.message


def test_settings_refuse_a_malformed_policy():
    with pytest.raises(ValueError, match="allowed_tolerations"):
        OperatorSettings(allowed_tolerations=[{"key": "x", "effect": "Sometimes"}], _env_file=None)
    with pytest.raises(ValueError, match="max_worker_cpu"):
        OperatorSettings(max_worker_cpu="lots", _env_file=None)


def test_the_policy_reaches_the_operator_from_the_chart(monkeypatch):
    """What the chart's values become (JSON in the environment) is what the settings read."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    policy = values["policy"]
    monkeypatch.setenv("MODELEVAL_ALLOWED_TOLERATIONS", json.dumps(policy["allowedTolerations"]))
    monkeypatch.setenv("MODELEVAL_ALLOWED_NODE_SELECTORS", json.dumps(policy["allowedNodeSelectors"]))
    monkeypatch.setenv("MODELEVAL_MAX_WORKER_CPU", str(policy["maxWorkerCpu"]))
    settings = OperatorSettings(_env_file=None)
    assert [t.key for t in settings.allowed_tolerations] == ["nvidia.com/gpu"]
    assert settings.max_worker_cpu == "64"
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    for env in ("MODELEVAL_ALLOWED_TOLERATIONS", "MODELEVAL_ALLOWED_NODE_SELECTORS",
                "MODELEVAL_MAX_WORKER_CPU", "MODELEVAL_MAX_ACTIVE_PER_SCHEDULE",
                "MODELEVAL_MAX_SCHEDULES_PER_NAMESPACE"):
        assert env in deployment


def test_the_chart_ships_a_finite_default_for_every_active_count():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    counts = {**{f"operator.{k}": v for k, v in values["operator"].items() if k.startswith("maxActive")},
              **{f"policy.{k}": v for k, v in values["policy"].items()
                 if k.startswith("maxActive") or k.startswith("maxSchedules")}}
    assert set(counts) >= {"operator.maxActiveEvaluations", "policy.maxActivePerNamespace",
                           "policy.maxActivePerSchedule", "policy.maxSchedulesPerNamespace"}
    assert all(isinstance(v, int) and v > 0 for v in counts.values()), counts
    schema = json.loads((CHART / "values.schema.json").read_text())
    policy = schema["properties"]["policy"]["properties"]
    for name in ("allowedTolerations", "allowedNodeSelectors", "maxWorkerCpu",
                 "maxActivePerSchedule", "maxSchedulesPerNamespace"):
        assert name in policy, name
