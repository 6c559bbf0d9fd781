"""Unit tests use no services. In a full run the bed's fixture exports its endpoints for the
whole session; a unit test that records a result must still write it to its own directory, not
to the bed's MongoDB (slow there, and not what the test reads back)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_results_database(monkeypatch):
    monkeypatch.delenv("MODELEVAL_MONGODB_URI", raising=False)
