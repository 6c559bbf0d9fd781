"""The committed CRD is exactly what the spec models generate."""

from __future__ import annotations

from pathlib import Path

from modeleval.api import crd

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "modelevaluations.modeleval.dev.yaml"


def test_crd_is_current():
    assert CRD_FILE.read_text() == crd.render(), (
        "crds/ is stale: run `make crds`")


def test_crd_is_structural():
    text = crd.render()
    for forbidden in ("$ref", "anyOf", "allOf", "$defs", "title:"):
        assert forbidden not in text
    version = crd.crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == ["Phase", "Model", "Metric", "Progress"]
    assert "evaluations" in crd.crd()["spec"]["names"]["shortNames"]
