"""`modeleval results show UID --features`: the stored profile as aligned lines (and as JSON),
drift beside it, names that cannot drive the terminal, and a clear error without a profile.
The documents' profiles are the engine's own (tests/report_profiles.py), stored in the local
result store the command reads."""

from __future__ import annotations

import json
import re
from functools import cache

import pytest
from click.testing import CliRunner

from modeleval.api.results import ResultDocument
from modeleval.cli import main
from modeleval.store import LocalResultStore
from tests.report_documents import document, failed_document
from tests.report_profiles import PLANTED, feature_names, profiled


@pytest.fixture()
def store(tmp_path, monkeypatch) -> LocalResultStore:
    monkeypatch.setenv("MODELEVAL_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("MODELEVAL_MONGODB_URI", raising=False)
    return LocalResultStore(tmp_path / "results")


@cache
def drifted() -> ResultDocument:
    names = feature_names(12)
    names[4] = "price\x1b[2J\x1b[31m"  # a CSV header with terminal escapes in it
    return profiled(document("ranking", challengers=1, slices=1), names=names)


def show(*args: str):
    return CliRunner().invoke(main, ["results", "show", *args])


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_features_prints_every_feature_with_its_statistics_and_drift(store):
    built = drifted()
    store.upsert(built)
    shown = show(built.uid, "--features")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == "ranking-eval (uid uid-1, attempt 1)"
    assert lines[1].startswith("drift against evaluation weekly-1: drifted, 3 of 12 features "
                               "drifted (25%; the dataset drifts at 20%)")
    assert lines[2] == f"{built.profile.rows} rows, {built.profile.queries} queries, 12 features"
    header = lines[4]
    assert columns(header) == ["feature", "rows", "missing", "inf", "zeros", "min", "max", "mean",
                               "std", "distinct", "p1", "median", "p99", "psi", "js", "ks",
                               "ks_p", "drifted"]
    table = lines[5:17]
    # Aligned: every numeric column ends where its heading ends.
    ends = [match.end() for match in re.finditer(r"\S+", header)]
    for line in table:
        assert [match.end() for match in re.finditer(r"\S+", line)][1:17] == ends[1:17], line
    by_name = {columns(line)[0]: columns(line) for line in table}
    planted = {built.profile.features[column].name for column in PLANTED}
    assert {name for name, cells in by_name.items() if cells[-1].startswith("yes")} == planted
    drift = {f.name: f for f in built.drift.features}
    for column in built.profile.features:
        cells = by_name[column.name.replace("\x1b", "\\x1b")]
        assert cells[1:5] == [str(column.rows), f"{column.missing_rate:.2%}",
                              str(column.infinities), str(column.zeros)]
        assert float(cells[5]) == pytest.approx(column.min, rel=1e-3)
        assert float(cells[7]) == pytest.approx(column.mean, rel=1e-3, abs=1e-9)
        assert float(cells[13]) == pytest.approx(drift[column.name].psi, rel=1e-3, abs=1e-9)
    assert by_name["f7"][-1] == "yes (PSI, Jensen-Shannon, KS)"
    others = {columns(line)[0] for line in lines[18:]}
    assert others >= {"column", "label", "query length", "prediction candidate",
                      "prediction baseline", "prediction challenger0"}


def test_a_names_control_characters_are_escaped(store):
    built = drifted()
    store.upsert(built)
    output = show(built.uid, "--features").output
    assert "\x1b" not in output
    assert "price\\x1b[2J\\x1b[31m" in output


def test_features_json_is_the_documents_profile_and_drift(store):
    built = drifted()
    store.upsert(built)
    shown = show(built.uid, "--features", "--json")
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.output)
    assert printed["profile"] == built.profile.model_dump(mode="json", by_alias=True)
    assert printed["drift"] == built.drift.model_dump(mode="json", by_alias=True)
    assert (printed["uid"], printed["attempt"]) == (built.uid, built.attempt)


def test_without_drift_the_table_has_no_drift_columns(store):
    built = profiled(document("binary", challengers=0), drift=False)
    store.upsert(built)
    lines = show(built.uid, "--features").output.splitlines()
    assert not lines[1].startswith("drift") and "queries" not in lines[1]
    assert columns(lines[3])[-1] == "p99" and len(lines[4:16]) == 12


@pytest.mark.parametrize("stored", ["old", "failed"])
def test_a_result_without_a_profile_says_so(store, stored):
    built = document("binary", challengers=0) if stored == "old" else failed_document()
    store.upsert(built)
    shown = show(built.uid, "--features")
    assert shown.exit_code == 1 and "Traceback" not in shown.output
    assert f"result {built.uid} attempt 1 has no data profile: it was written before " \
        "evaluations recorded one" in " ".join(shown.output.split())
    assert show(built.uid, "--features", "--json").exit_code == 1
    assert json.loads(show(built.uid).output)["uid"] == built.uid  # the plain show is unchanged


def test_a_result_whose_profile_was_left_out_prints_its_drift(store):
    built = drifted().model_copy(update={"profile": None})
    store.upsert(built)
    lines = show(built.uid, "--features").output.splitlines()
    assert "the profile is not in this document" in lines[2]
    assert columns(lines[4]) == ["feature", "psi", "js", "ks", "ks_p", "drifted"]
    assert len(lines[5:]) == 12


def test_an_unknown_uid_fails_as_before(store):
    shown = show("nobody", "--features")
    assert shown.exit_code == 1 and "no result for uid nobody" in shown.output
