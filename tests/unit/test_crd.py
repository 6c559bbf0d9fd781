"""The committed CRD is exactly what the spec models generate."""

from __future__ import annotations

from pathlib import Path

from typing import get_args

from modeleval.api import crd, spec

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "modelevaluations.modeleval.dev.yaml"
SCHEDULE_CRD_FILE = ROOT / "crds" / "evaluationschedules.modeleval.dev.yaml"


def test_crd_is_current():
    assert CRD_FILE.read_text() == crd.render(), (
        "crds/ is stale: run `make crds`")


def test_schedule_crd_is_current_and_the_chart_ships_both():
    assert SCHEDULE_CRD_FILE.read_text() == crd.render("evaluationschedules"), (
        "crds/ is stale: run `make crds`")
    for path in (CRD_FILE, SCHEDULE_CRD_FILE):
        assert (ROOT / "charts" / "modeleval" / "crds" / path.name).read_text() == path.read_text()


def test_schedule_crd_shape():
    text = crd.render("evaluationschedules")
    for forbidden in ("$ref", "anyOf", "allOf", "$defs", "title:"):
        assert forbidden not in text
    schedule = crd.schedule_crd()
    assert schedule["metadata"]["name"] == "evaluationschedules.modeleval.dev"
    assert schedule["spec"]["names"]["shortNames"] == ["evalsched"]
    version = schedule["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Schedule", "Last Run", "Last Metric", "Change", "Degraded", "Drifted",
                       "Age"]
    properties = version["schema"]["openAPIV3Schema"]["properties"]
    # The template is a ModelEvaluation spec, with the same schema and rules.
    assert properties["spec"]["properties"]["template"] == {
        **crd.spec_schema(), **{k: v for k, v in properties["spec"]["properties"]["template"].items()
                                if k == "description"}}
    conditions = properties["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_crd_is_structural():
    text = crd.render()
    for forbidden in ("$ref", "anyOf", "allOf", "$defs", "title:", "patternProperties",
                      "propertyNames"):
        assert forbidden not in text
    version = crd.crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == ["Phase", "Model", "Metric", "Progress"]
    assert "evaluations" in crd.crd()["spec"]["names"]["shortNames"]


def _bounds(node, path=""):
    """(path, key, value, the node) of every exclusiveMinimum/exclusiveMaximum in a schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("exclusiveMinimum", "exclusiveMaximum"):
                yield path, key, value, node
            else:
                yield from _bounds(value, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from _bounds(item, path)


def test_exclusive_bounds_are_flags_on_minimum_and_maximum():
    """OpenAPI v3 (what the API server decodes a CRD with) has exclusiveMinimum as a flag beside
    minimum; JSON Schema's number there made the API server refuse both CRDs."""
    found = [*_bounds(crd.crd()), *_bounds(crd.schedule_crd())]
    assert found, "no exclusive bound left to check (pydantic's gt/lt)"
    for path, key, value, node in found:
        assert value is True and key.replace("exclusiveM", "m") in node, (path, key, value)


def test_rules_come_from_the_models_and_nothing_else():
    """Every CEL rule in the CRD is one a spec model declares (a Rule) or the key rule generated
    from a constrained map key; none is written in crd.py."""
    declared = {rule.cel for model in _models(spec.ModelEvaluationSpec) for rule in model.rules}
    declared |= {m.cel for model in _models(spec.ModelEvaluationSpec)
                 for field in model.model_fields.values()
                 for m in [*field.metadata, *_constraints(field.annotation)]
                 if isinstance(m, spec.Rule)}
    declared |= {r["rule"] for r in spec.transition_rules()}
    generated = [r["rule"] for r in crd.cel_rules()]
    assert set(generated) - declared == {r for r in generated if r.startswith("self.all(k, ")}
    assert declared <= set(generated)


def test_metadata_name_is_a_dns_label_at_admission():
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"]
    assert schema["properties"]["name"]["maxLength"] == 63
    assert schema["properties"]["name"]["pattern"] == spec.NAME_PATTERN


def _models(model: type) -> set[type]:
    found = {model}
    for field in model.model_fields.values():
        for arg in _types(field.annotation):
            if isinstance(arg, type) and issubclass(arg, spec.SpecModel) and arg not in found:
                found |= _models(arg)
    return found


def _types(annotation) -> list:
    return [annotation, *(t for arg in get_args(annotation) for t in _types(arg))]


def _constraints(annotation) -> list:
    """Annotated metadata at any depth (``Annotated[list[X], Rule] | None`` and the like)."""
    found = list(getattr(annotation, "__metadata__", ()))
    for arg in get_args(annotation):
        found += _constraints(arg)
    return found
