"""Every model a spec names passes the same rules: a table over every model slot x (pickle,
file://), through the operator's check (parse_spec, parse_schedule_spec) and the CLI's parser."""

from __future__ import annotations

import copy
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from modeleval.api.reasons import Reason
from modeleval.api.schedule import EvaluationScheduleSpec
from modeleval.api.spec import ModelEvaluationSpec, ModelSource
from modeleval.controller.policy import InvalidSpec, parse_spec
from modeleval.controller.observed import ObjectIdentity
from modeleval.controller.schedule import build_child, parse_schedule_spec
from modeleval.controller.settings import OperatorSettings
from modeleval.runner import ManifestError, parse_manifest

SETTINGS = OperatorSettings(_env_file=None)  # the chart's defaults: no pickle, no file://
PICKLE_OK = OperatorSettings(allow_pickle=True, _env_file=None)

SPEC: dict[str, Any] = {
    "task": "ranking", "metrics": ["ndcg@10"],
    "model": {"uri": "s3://models/candidate.json"},
    "dataset": {"uri": "s3://datasets/test.txt"},
    "baseline": {"model": {"uri": "s3://models/champion.json"}},
    "challengers": [{"name": "small", "model": {"uri": "s3://models/small.json"}},
                    {"name": "large", "model": {"uri": "s3://models/large.json"}}],
}
# Where each model slot of a ModelEvaluation is, as a path of keys and indices.
EVALUATION_SLOTS = {"spec.model": ("model",), "spec.baseline.model": ("baseline", "model"),
                    "spec.challengers[0].model": ("challengers", 0, "model"),
                    "spec.challengers[1].model": ("challengers", 1, "model")}
PICKLE = {"uri": "s3://models/m.pkl", "format": "pickle", "allowPickle": True}
FILE = {"uri": "file:///home/someone/m.json"}
# (what the slot gets, the field the refusal names below the slot, the reason)
BAD_MODELS = {"pickle": (PICKLE, "format: pickle models run code", Reason.Forbidden),
              "file": (FILE, "uri: file:// URIs are refused in a cluster", Reason.InvalidSpec)}


def put(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    place = body
    for step in path[:-1]:
        place = place[step]
    place[path[-1]] = value
    return body


@pytest.mark.parametrize("bad", BAD_MODELS)
@pytest.mark.parametrize("slot", EVALUATION_SLOTS)
def test_every_model_slot_of_an_evaluation_is_checked_by_the_operator(slot, bad):
    model, message, reason = BAD_MODELS[bad]
    raw = put(SPEC, EVALUATION_SLOTS[slot], model)
    refused = parse_spec(raw, SETTINGS)
    assert isinstance(refused, InvalidSpec), f"{slot} with {bad} got through"
    assert refused.message.startswith(f"{slot}.{message}") and refused.reason == reason
    if bad == "pickle":  # a platform that allows pickle lets the same spec through
        assert isinstance(parse_spec(raw, PICKLE_OK), ModelEvaluationSpec)


def test_the_slots_listed_are_every_model_the_spec_names():
    """A new model field must join named_models (and this table): the spec's ModelSource
    fields are found by walking the models, not by a list kept by hand."""
    spec = ModelEvaluationSpec.model_validate(SPEC)
    assert [where for where, _ in spec.named_models()] == list(EVALUATION_SLOTS)
    assert {f"{where}.uri" for where in EVALUATION_SLOTS} | {"spec.dataset.uri"} == \
        {where for where, _ in spec.named_uris()}
    assert _model_fields(ModelEvaluationSpec) == {"model", "baseline.model", "challengers.model"}


def _model_fields(cls: type, prefix: str = "") -> set[str]:
    """The dotted paths (list items without an index) of every ModelSource field below cls."""
    found = set()
    for name, info in cls.model_fields.items():
        kinds = [info.annotation, *get_args(info.annotation)]
        kinds += [a for k in list(kinds) for a in get_args(k)]
        for kind in kinds:
            if kind is ModelSource:
                found.add(prefix + name)
            elif isinstance(kind, type) and issubclass(kind, BaseModel) and kind is not cls:
                found |= _model_fields(kind, f"{prefix}{name}.")
    return found


SCHEDULE: dict[str, Any] = {"schedule": "@daily", "template": SPEC}
SCHEDULE_SLOTS = {f"spec.template.{k.removeprefix('spec.')}": ("template", *v)
                  for k, v in EVALUATION_SLOTS.items()}


@pytest.mark.parametrize("bad", BAD_MODELS)
@pytest.mark.parametrize("slot", [*SCHEDULE_SLOTS, "spec.degradation.championModel"])
def test_every_model_slot_of_a_schedule_is_checked_before_a_child_is_made(slot, bad):
    model, message, reason = BAD_MODELS[bad]
    if slot == "spec.degradation.championModel":
        raw = {**SCHEDULE, "degradation": {"maxDrop": 0.01, "against": "champion",
                                           "championModel": model}}
    else:
        raw = put(SCHEDULE, SCHEDULE_SLOTS[slot], model)
    refused = parse_schedule_spec(raw, SETTINGS)
    assert isinstance(refused, InvalidSpec), f"{slot} with {bad} got through"
    assert refused.message.startswith(f"{slot}.{message}") and refused.reason == reason
    # Its child would be refused by the operator as well (the second line of defence).
    child = build_child(ObjectIdentity("s", "team-a", "u1"), EvaluationScheduleSpec.model_validate(raw),
                        "s-1", {})
    assert isinstance(parse_spec(child["spec"], SETTINGS), InvalidSpec)


def test_a_trigger_for_pickle_models_is_checked_like_any_model():
    raw = {"trigger": {"newModel": {"prefix": "s3://models/new/", "format": "pickle"}},
           "template": put(SPEC, ("model",), {**SPEC["model"], "allowPickle": True})}
    refused = parse_schedule_spec(raw, SETTINGS)
    assert isinstance(refused, InvalidSpec) and refused.reason == Reason.Forbidden
    assert refused.message.startswith("spec.trigger.newModel.format: pickle")
    assert isinstance(parse_schedule_spec(raw, PICKLE_OK), EvaluationScheduleSpec)


@pytest.mark.parametrize("slot", EVALUATION_SLOTS)
def test_the_cli_refuses_a_pickle_without_allow_pickle_in_every_slot(slot):
    """Locally the user's own choice stands (allowPickle: true, file://); without allowPickle
    every slot is refused, naming it."""
    manifest = {"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
                "metadata": {"name": "m"}}
    no_permission = {"uri": "s3://models/m.pkl", "format": "pickle"}
    with pytest.raises(ManifestError) as refused:
        parse_manifest(yaml.safe_dump({**manifest, "spec": put(SPEC, EVALUATION_SLOTS[slot],
                                                                 no_permission)}))
    assert f"{slot}.allowPickle: format pickle is refused" in str(refused.value)
    local = parse_manifest(yaml.safe_dump({**manifest, "spec": put(
        put(SPEC, EVALUATION_SLOTS[slot], PICKLE), ("dataset",), {"uri": "file:///tmp/d.txt"})}))
    assert local.spec.named_models()[list(EVALUATION_SLOTS).index(slot)][1].allow_pickle
