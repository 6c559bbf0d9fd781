"""The README's CRD field reference is the one the spec models generate."""

from __future__ import annotations

from pathlib import Path

from modeleval.api import docs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_field_reference_is_current():
    text = README.read_text()
    start, end = text.index(docs.BEGIN), text.index(docs.END) + len(docs.END)
    assert text[start:end] == docs.render(), "README is stale: paste `python -m modeleval.api.docs`"
