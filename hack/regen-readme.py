"""Rewrites the README's generated sections (the CRD field references and the reasons table)
from the code; tests/unit/test_docs.py fails when they differ."""

from pathlib import Path

from modeleval.api import docs, reasons

README = Path(__file__).resolve().parents[1] / "README.md"

text = README.read_text()
for module in (docs, docs.ScheduleReference, reasons):
    start, end = text.index(module.BEGIN), text.index(module.END) + len(module.END)
    text = text[:start] + module.render() + text[end:]
README.write_text(text)
