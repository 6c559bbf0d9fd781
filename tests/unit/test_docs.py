"""The README's generated sections are what the code generates: the CRD field reference (from
the spec models) and the troubleshooting table (from the Reason enum)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modeleval.api import docs, reasons

README = Path(__file__).resolve().parents[2] / "README.md"
OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "modeleval"


@pytest.mark.parametrize("module", [docs, reasons, docs.ScheduleReference],
                         ids=["field reference", "reasons", "schedule field reference"])
def test_readme_generated_section_is_current(module):
    text = README.read_text()
    start, end = text.index(module.BEGIN), text.index(module.END) + len(module.END)
    assert text[start:end] == module.render(), \
        f"README is stale: paste `python -m {module.__name__}` between its markers"


def test_every_reason_written_anywhere_is_in_the_enum():
    """No free reason strings: every ``reason=`` and ``Reason.X`` in the code names a member."""
    names = set(reasons.Reason.__members__)
    for path in OPERATOR.rglob("*.py"):
        text = path.read_text()
        for used in re.findall(r"\bReason\.([A-Za-z]+)", text):
            assert used in names, f"{path.name}: Reason.{used} is not a member"
        for literal in re.findall(r"reason=\"([A-Za-z]+)\"", text):
            pytest.fail(f"{path.name}: free reason string {literal!r}; use the Reason enum")
