"""The documentation site's reference pages are what the code generates: the CRD field
references (from the spec models), the reasons (from the Reason enum), the metrics and the Helm
values (from values.yaml and its schema)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from modeleval.api import docs, reasons

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "operator" / "modeleval"
PAGES = docs.pages(ROOT)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_reference_page_is_current(page):
    assert (ROOT / page).exists(), f"{page} is missing: run `make docs`"
    assert (ROOT / page).read_text() == PAGES[page], f"{page} is stale: run `make docs`"


def test_no_page_under_reference_is_left_over():
    """A page the generator no longer writes (a renamed one) would be served stale."""
    assert sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs/reference").glob("*.md")) == sorted(PAGES)


def test_the_metric_table_names_every_metric_a_spec_takes():
    from modeleval.api.spec import ALL_METRICS

    page = PAGES["docs/reference/metrics.md"]
    assert set(re.findall(r"^\| `([a-z0-9]+)` \|", page, re.M)) == ALL_METRICS
    assert re.search(r"^\| `rmse` \| regression \| none \| lower \| Root mean squared", page, re.M)
    assert re.search(r"^\| `ndcg` \| ranking \| optional \(`ndcg@10`; .*\| higher \|", page, re.M)


def test_every_helm_value_has_a_row_with_its_default_and_comment():
    chart = ROOT / "charts/modeleval"
    text = (chart / "values.yaml").read_text()
    rows = {row[0]: row for row in docs.helm_rows(text, json.loads((chart / "values.schema.json").read_text()))}

    def leaves(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            yield from leaves(value, f"{path}.") if isinstance(value, dict) and value else [(path, value)]

    for path, value in leaves(yaml.safe_load(text)):
        assert path in rows, f"values.yaml's {path} is not in values.schema.json"
        assert rows[path][2] == f"`{json.dumps(value)}`"
    assert "the API server's endpoint addresses" in rows["networkPolicy.egress.apiServer"][3]
    assert rows["operator.maxJobsPerHead"][4] == ">= 0"


def test_values_comments_take_the_lines_above_and_the_trailing_comment():
    text = "# top\na:\n  # above b\n  # more\n  b: 1   # after\n\n  c: 2\n# orphan\n\nd: x\n"
    assert docs.values_comments(text) == {"a": "top", "a.b": "above b more after", "a.c": "", "d": ""}


def test_every_reason_written_anywhere_is_in_the_enum():
    """No free reason strings: every ``reason=`` and ``Reason.X`` in the code names a member."""
    names = set(reasons.Reason.__members__)
    for path in OPERATOR.rglob("*.py"):
        text = path.read_text()
        for used in re.findall(r"\bReason\.([A-Za-z]+)", text):
            assert used in names, f"{path.name}: Reason.{used} is not a member"
        for literal in re.findall(r"reason=\"([A-Za-z]+)\"", text):
            pytest.fail(f"{path.name}: free reason string {literal!r}; use the Reason enum")
