"""The report's Data and Drift sections, from profiles the engine computes (generated shards
profiled, merged, compared with a reference that lacks the drift planted in three features):
every feature listed with its statistics, the drift table and verdict, the charts holding the
profile's own counts, a bounded page at 10,000 features, and every feature name escaped."""

from __future__ import annotations

import json
import re
from functools import cache

import pytest

from modeleval.api.results import ResultDocument
from modeleval.report import render, vega_bundle
from modeleval.report.render import number
from tests.report_documents import document
from tests.report_profiles import PLANTED, feature_names, profiled
from tests.unit.test_report import Page, rows_of, vega_lite

import jsonschema

HOSTILE = '</script><img src=x onerror=alert(1)>'


@cache
def drifted() -> tuple[ResultDocument, str, Page]:
    built = profiled(document("ranking", challengers=1, slices=1))
    html = render(built)
    return built, html, Page(html)


@cache
def undrifted() -> tuple[ResultDocument, str, Page]:
    built = profiled(document("binary", challengers=0, slices=1), drift=False)
    html = render(built)
    return built, html, Page(html)


def table(html: str, table_id: str) -> list[list[str]]:
    """The body rows of a table, as the cells' text."""
    part = html[html.index(f'id="{table_id}"'):]
    body = part[part.index("<tbody>"):part.index("</tbody>")]
    return [[re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_every_feature_is_listed_with_its_statistics():
    built, html, _ = drifted()
    rows = table(html, "table-features")
    assert [row[0] for row in rows] == [c.name for c in built.profile.features]
    for row, column in zip(rows, built.profile.features):
        assert row[1:] == [number(column.rows), f"{column.missing_rate:.2%}",
                           number(column.infinities), number(column.zeros),
                           *(number(v) for v in (column.min, column.max, column.mean, column.std)),
                           number(int(round(min(column.distinct, column.count)))),
                           *(number(column.quantiles[q]) for q in ("0.01", "0.5", "0.99"))]
    by_name = {row[0]: row for row in rows}
    assert by_name["f1"][2] == f"{built.profile.feature('f1').missing_rate:.2%}" != "0.00%"
    assert by_name["f5"][3] == "3"  # the planted infinities
    facts = html[html.index('id="data"'):html.index('id="table-features"')]
    assert "<dt>constant features</dt><dd>1: f2</dd>" in facts
    assert "<dt>features with infinities</dt><dd>1: f5</dd>" in facts
    assert f"<dt>queries</dt><dd>{built.profile.queries:,}</dd>" in facts


def test_the_drift_table_and_verdict_name_the_planted_features():
    built, html, _ = drifted()
    rows = table(html, "table-drift")
    planted = {feature_names(12)[column] for column in PLANTED}
    assert {row[0] for row in rows[:3]} == planted  # the drifted first
    assert [row[5] for row in rows] == ["yes"] * 3 + ["no"] * 9
    psi = [float(row[1]) for row in rows[:3]]
    assert psi == sorted(psi, reverse=True)
    by_name = {f.name: f for f in built.drift.features}
    for row in rows:
        found = by_name[row[0]]
        assert row[1:5] == [number(found.psi), number(found.jensen_shannon), number(found.ks),
                            number(found.ks_p_value)]
    drift = html[html.index('id="drift"'):html.index('id="table-drift"')]
    assert "3 of 12 features drifted (25%); the dataset drifts when 20% or more do." in drift
    assert "Reference: <b>evaluation weekly-1</b>" in drift
    assert "PSI above 0.2; Jensen-Shannon above 0.1; KS above 0.1 with its p-value below 0.05" \
        in drift
    body = html[html.index('id="table-drift"'):]
    marked = re.findall(r'class="(?:text )?fail"', body[:body.index("</table>")])
    assert len(marked) == 3 * 4  # each drifted feature's 3 measures and its "yes"
    card = html[html.index('id="drift-card"'):]
    assert "drifted" in card[:card.index("</div>\n</div>")]


def test_the_charts_plot_the_profiles_counts():
    built, _, page = drifted()
    specs = page.specs
    profile = built.profile
    features = [name for name in specs if name.startswith("feature-")]
    assert len(features) == 8
    titles = re.findall(r'<h3>([^<]*)</h3>\n<div id="chart-feature-', drifted()[1])
    planted = {feature_names(12)[column] for column in PLANTED}
    assert {title.split(" · ")[0] for title in titles[:3]} == planted
    assert all(title.endswith("· drifted") for title in titles[:3])
    first = profile.feature(titles[0].split(" · ")[0])
    bars = rows_of(specs["feature-0"], "feature-0")
    ours = [bar["rows"] for bar in bars if bar["data"] == "this data"]
    assert ours == first.histogram.counts  # exact, on the reference's bins
    theirs = [bar["rows"] for bar in bars if bar["data"] == "reference"]
    reference = built.drift.features[[f.name for f in built.drift.features].index(first.name)]
    assert theirs == reference.reference_counts and len(theirs) == len(reference.cuts) + 1
    for side in ("reference", "this data"):
        assert sum(bar["share"] for bar in bars if bar["data"] == side) == pytest.approx(1.0)
    labels = rows_of(specs["label"], "label")
    assert {bar["bin"]: bar["rows"] for bar in labels} == profile.label.value_counts
    lengths = rows_of(specs["query-lengths"], "query-lengths")
    assert sum(bar["rows"] for bar in lengths) == profile.queries
    predictions = rows_of(specs["predictions"], "predictions")
    assert {row["model"] for row in predictions} == {"candidate", "baseline", "challenger0"}
    candidate = [row for row in predictions if row["model"] == "candidate"]
    column = profile.predictions["model"]
    assert [(row["rank"], row["value"]) for row in candidate] == [
        (0.0, column.min), *sorted((float(k), v) for k, v in column.quantiles.items()),
        (1.0, column.max)]


def test_without_drift_the_most_missing_features_are_charted_and_no_drift_is_shown():
    built, html, page = undrifted()
    assert 'id="drift"' not in html and 'id="drift-card"' not in html
    titles = re.findall(r'<h3>([^<]*)</h3>\n<div id="chart-feature-', html)
    assert titles[0] == "f1"  # the one feature with missing values
    assert titles[1:] == ["f0", "f2", "f3", "f4", "f5", "f6", "f7"]  # then the dataset's order
    assert "the values&#39; deciles" in html
    assert "query-lengths" not in page.specs  # not a ranking dataset
    assert set(rows_of(page.specs["predictions"], "predictions")[0]) == {"model", "rank", "value"}


def test_a_compacted_profile_lists_its_numbers_and_charts_the_drifts_kept_counts():
    """A compacted document keeps no histogram; its drift keeps the bins and counts of the
    largest PSIs (engine.dataquality), and those are charted; a drift without counts (written
    before they were kept) charts nothing."""
    from modeleval.engine.dataquality import _charted_counts

    built = drifted()[0]
    compacted = built.model_copy(update={"profile": built.profile.compacted("s3://cache/p.json"),
                                         "drift": _charted_counts(built.drift)})
    html = render(compacted)
    charted = [name for name in Page(html).specs if name.startswith("feature-")]
    assert len(charted) == 8 and len(table(html, "table-features")) == 12
    assert "kept at s3://cache/p.json" in html
    bare = compacted.drift.model_copy(update={"features": [
        f.model_copy(update={"cuts": [], "reference_counts": [], "counts": []})
        for f in compacted.drift.features]})
    html = render(compacted.model_copy(update={"drift": bare}))
    assert not [name for name in Page(html).specs if name.startswith("feature-")]


def test_a_document_whose_profile_was_left_out_still_shows_its_drift():
    built = drifted()[0].model_copy(update={"profile": None})
    html = render(built)
    assert 'id="data"' not in html and len(table(html, "table-drift")) == 12


def test_a_document_without_a_profile_has_no_data_section():
    html = render(document("regression", challengers=0))
    assert 'id="data"' not in html and 'id="drift"' not in html


def test_the_data_charts_are_valid_vega_lite():
    for name, spec in drifted()[2].specs.items():
        if name.startswith(("feature-", "label", "predictions", "query-lengths")):
            sample = {**spec, "datasets": {k: v[:3] for k, v in spec["datasets"].items()}}
            error = jsonschema.exceptions.best_match(vega_lite().iter_errors(sample))
            assert error is None, f"chart {name}: {error.message}"


def test_hostile_feature_and_model_names_are_escaped_everywhere():
    names = feature_names(12)
    names[3] = HOSTILE  # drifted: in the drift table, a chart's title and data, the card
    names[2] = '" onmouseover="alert(2)'  # the constant feature: named in the facts too
    built = profiled(document("ranking", challengers=1, slices=1), names=names,
                     reference='evaluation <b onclick="alert(3)">x</b>')
    built.profile.predictions[HOSTILE] = built.profile.predictions.pop("challenger0")
    html = render(built)
    page = Page(html)
    assert "img" not in page.elements and "b" in page.elements  # our own <b>s only: see below
    assert not [(tag, name) for tag, name, _ in page.attributes if name.startswith("on")]
    assert HOSTILE.replace("<", "&lt;").replace(">", "&gt;") in html  # shown, as text
    assert "evaluation &lt;b onclick=&#34;alert(3)&#34;&gt;x&lt;/b&gt;" in html
    assert HOSTILE not in html.replace(vega_bundle(), "")  # nowhere raw
    for attrs, text in page.scripts:
        if attrs:
            assert "</script" not in text.lower() and "<!--" not in text
            json.loads(text)
    plotted = [row["model"] for row in rows_of(page.specs["predictions"], "predictions")]
    assert HOSTILE in plotted  # read back intact from the escaped JSON
    text = "".join(page.text)
    assert HOSTILE in text and '" onmouseover="alert(2)' in text


def test_ten_thousand_features_keep_the_page_bounded():
    """Every feature in the tables, charts for eight: 10,000 columns (copies of real profiled
    columns under new names) stay under 5 MB, the Vega bundle included."""
    built = drifted()[0]
    columns, drifts = built.profile.features, built.drift.features
    width = 10_000
    wide = built.model_copy(update={
        "profile": built.profile.model_copy(update={"features": [
            columns[index % 12].model_copy(update={"name": f"feature_{index}"})
            for index in range(width)]}),
        "drift": built.drift.model_copy(update={"features": [
            drifts[index % 12].model_copy(update={"name": f"feature_{index}"})
            for index in range(width)]})})
    html = render(wide)
    assert len(re.findall(r'<script type="application/json" data-chart="feature-', html)) == 8
    assert html.count("<tr><td>feature_") == 2 * width
    size = len(html.encode())
    print(f"report at {width:,} features: {size / 1e6:.2f} MB")
    assert size <= 5 * 1024 * 1024
