"""The report in a real browser, opened from disk with the network off: every chart draws, and
its view holds the document's values. Screenshots go to the test artefacts; with
MODELEVAL_UPDATE_DOCS_IMAGES=1 the binary report's top (1400 x 1000) is also written to
docs/images/report.png (the README's picture)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modeleval.report import render
from tests.report_documents import document, failed_document
from tests.report_profiles import PLANTED, feature_names, profiled

HOSTILE = "</script><img src=x onerror=alert(1)>"

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "report.png"
# Each task's charts and, for one of them, the dataset its view must hold.
CHARTS = {
    "binary": {"forest", "roc", "pr", "reliability", "confusion", "scores", "slice-0", "slice-1"},
    "multiclass": {"forest", "confusion", "per-class", "slice-0", "slice-1"},
    "regression": {"forest", "predicted-vs-actual", "residuals", "slice-0", "slice-1"},
    "ranking": {"forest", "ndcg-at", "precision-at", "ndcg-distribution", "ndcg-by-length",
                "slice-0", "slice-1",
                # its document has a profile and drift: the Data section's charts
                "label", "predictions", "query-lengths", *(f"feature-{i}" for i in range(8))},
}


# A Parquet or CSV header is user data: a script in it would open a dialog (a page problem).
FEATURES = [HOSTILE if index == PLANTED[0] else name
            for index, name in enumerate(feature_names(12))]


def open_offline(page, path: Path) -> list[str]:
    """Opens ``path`` with every non-file request refused; returns the URLs refused."""
    refused: list[str] = []

    def only_files(route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_files)
    page.context.set_offline(True)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_selector('body[data-ready="1"]', state="attached", timeout=15_000)
    return refused + [url for url in requested if not url.startswith("file://")]


def drawn_charts(page) -> dict[str, list[float]]:
    """Each chart's id and its drawn SVG's size."""
    return page.evaluate("""() => Object.fromEntries(
        Array.from(document.querySelectorAll('.chart')).map(el => {
            const svg = el.querySelector('svg');
            const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
            return [el.dataset.chartId, [box.width, box.height]];
        }))""")


@pytest.mark.parametrize("task", sorted(CHARTS))
def test_a_report_opened_from_disk_offline_draws_every_chart(task, page, screenshot, tmp_path):
    built = document(task, challengers=2, slices=2)
    if task == "ranking":  # with a profile and drift, a drifted feature's name hostile
        built = profiled(built, names=FEATURES)
    path = tmp_path / "report.html"
    path.write_text(render(built), encoding="utf-8")
    assert open_offline(page, path) == []
    drawn = drawn_charts(page)
    assert set(drawn) == CHARTS[task]
    assert all(w > 50 and h > 50 for w, h in drawn.values()), drawn
    assert set(page.evaluate("Object.keys(window.modelevalViews)")) == CHARTS[task]
    forest = page.evaluate("""window.modelevalViews.forest.data("forest")
        .filter(d => d.model === "candidate").map(d => [d.metric, [d.delta, d.lower, d.upper]])""")
    # Doubles survive JSON both ways exactly: the view holds the document's very numbers.
    assert dict(forest) == {m: [built.baseline.deltas[m], i.lower, i.upper]
                            for m, i in built.baseline.delta_intervals.items()}
    check_task_view(page, task, built)
    screenshot(task, full_page=task == "binary")  # one full page is enough to look at
    if task == "ranking":
        check_drift_table(page, screenshot)
    if task == "binary":  # the README's picture: the top of the page, as a reader first sees it
        picture = screenshot("readme", full_page=False)
        assert picture.stat().st_size < 400 * 1024
        if os.environ.get("MODELEVAL_UPDATE_DOCS_IMAGES") == "1":
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, DOCS_IMAGE)


def check_task_view(page, task: str, built) -> None:
    """One dataset per task, read back from the drawn view, against the document."""
    candidate = built.curves[0]
    if task == "binary":
        roc = page.evaluate("""window.modelevalViews.roc.data("roc")
            .filter(d => d.model === "candidate").map(d => [d.x, d.y])""")
        assert roc == [list(p) for p in zip(candidate.binary.roc.x, candidate.binary.roc.y)]
    elif task == "ranking":
        ndcg = page.evaluate("""window.modelevalViews["ndcg-at"].data("ndcg-at")
            .filter(d => d.model === "candidate").map(d => d.value)""")
        assert ndcg == candidate.ranking.ndcg_at
    elif task == "regression":
        counts = page.evaluate("""window.modelevalViews["residuals"].data("residuals")
            .map(d => d.count)""")
        assert counts == candidate.regression.residuals.counts
    else:
        recall = page.evaluate("""window.modelevalViews["per-class"].data("per-class")
            .filter(d => d.score === "recall").map(d => d.value)""")
        assert recall == [c.recall for c in candidate.multiclass.per_class]


def check_drift_table(page, screenshot) -> None:
    """The drift table is on screen with the planted features first; its PSI heading sorts it
    (smallest first on a second click), and the feature table sorts by its missing share."""
    page.locator("#drift").scroll_into_view_if_needed()
    assert page.is_visible("#table-drift") and page.is_visible("#drift-verdict")
    screenshot("drift", full_page=False)
    first = """s => Array.from(document.querySelectorAll(s + ' tbody tr'))
        .map(r => r.cells[0].textContent)"""
    planted = {FEATURES[column] for column in PLANTED}
    assert HOSTILE in planted
    assert set(page.evaluate(first, "#table-drift")[:3]) == planted
    psi = page.locator("#table-drift th", has_text="PSI")
    psi.click()  # largest first
    assert set(page.evaluate(first, "#table-drift")[:3]) == planted
    psi.click()  # smallest first
    assert set(page.evaluate(first, "#table-drift")[-3:]) == planted
    page.locator("#table-features th", has_text="missing").click()
    assert page.evaluate(first, "#table-features")[0] == "f1"  # the one with missing values
    page.locator("#data").scroll_into_view_if_needed()
    screenshot("data", full_page=False)


def test_a_failed_report_renders_offline(page, screenshot, tmp_path):
    path = tmp_path / "failed.html"
    path.write_text(render(failed_document()), encoding="utf-8")
    assert open_offline(page, path) == []
    assert "ModelNotFound" in page.inner_text("#failure")
    screenshot("failed", full_page=False)


def test_the_offline_check_sees_a_fetch(page, tmp_path):
    """The check above can fail: a page that loads an image over the network is caught."""
    path = tmp_path / "fetching.html"
    path.write_text('<img src="https://example.invalid/x.png">'
                    '<script>document.body.dataset.ready = "1"</script>')
    page.on("console", lambda m: None)
    refused = open_offline(page, path)
    page.problems.clear()  # the refused image logs a console error, expected here
    assert "https://example.invalid/x.png" in refused
