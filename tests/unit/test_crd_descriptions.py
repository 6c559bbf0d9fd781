"""`kubectl explain` describes every field of both CRDs, at every level, spec and status alike
(a nested model's field loses its description unless the field itself declares one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"


def undescribed(node: dict[str, Any], path: str) -> Iterator[str]:
    """The path of every property under ``node`` that has no description. The object's
    metadata is left out: the API server refuses any description in a CRD's metadata schema,
    and kubectl explain describes it from ObjectMeta."""
    for name, sub in node.get("properties", {}).items():
        if path.count(".") == 0 and name == "metadata":
            continue
        if not str(sub.get("description", "")).strip():
            yield f"{path}.{name}"
        yield from undescribed(sub, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            yield from undescribed(node[key], path + suffix)


def test_the_walk_finds_a_nested_field_without_description():
    schema = {"properties": {"spec": {"description": "s", "properties": {"tolerations": {
        "description": "t", "items": {"properties": {"key": {"type": "string"}}}}}}}}
    assert list(undescribed(schema, "X")) == ["X.spec.tolerations[].key"]


def test_metadata_says_nothing_the_api_server_refuses():
    """The API server takes only name (type and bounds) and generateName under metadata: a
    description there made every CRD apply fail ("must not specify anything other than name
    and generateName")."""
    for path in CRDS.glob("*.yaml"):
        (version,) = yaml.safe_load(path.read_text())["spec"]["versions"]
        metadata = version["schema"]["openAPIV3Schema"]["properties"]["metadata"]
        assert set(metadata) == {"type", "properties"}, path.name
        assert set(metadata["properties"]) <= {"name", "generateName"}
        for field in metadata["properties"].values():
            assert set(field) <= {"type", "maxLength", "pattern"}, path.name


@pytest.mark.parametrize("name", ["modelevaluations", "evaluationschedules"])
def test_every_crd_field_has_a_description(name):
    crd = yaml.safe_load((CRDS / f"{name}.modeleval.dev.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert {"spec", "status"} <= set(schema["properties"])
    missing = list(undescribed(schema, crd["spec"]["names"]["kind"]))
    assert not missing, f"no description (kubectl explain says <no description>): {missing}"
