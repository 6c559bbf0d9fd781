"""The dashboard in a real browser: `modeleval ui`'s app served by uvicorn on a free port over a
results directory of engine-made documents; Chromium clicks through it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import uvicorn

from dashboard_documents import ATTRIBUTE_CANARY, CANARY, START, document, failed
from modeleval.store import LocalResultStore
from modeleval.ui.app import create_app
from modeleval.ui.config import UIConfig

# A schedule's runs: the third falls by 0.09 (> maxDrop 0.05): degraded.
TREND = [0.80, 0.79, 0.70, 0.72, 0.74]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _documents() -> list:
    docs = [document(f"run{i}", name=f"nightly-{i}", namespace="team-a", schedule="nightly",
                     seed=i, auc=auc, model_uri=f"s3://models/churn/v{i}.json",
                     finished=START + timedelta(days=i))
            for i, auc in enumerate(TREND)]
    docs += [document(f"b{i}", name=f"other-{i}", namespace="team-b", seed=i + 5,
                      finished=START + timedelta(days=10 + i)) for i in range(3)]
    docs.append(failed("gone", "missing-model", "team-b", START + timedelta(days=20)))
    docs.append(document("evil", name=f"x{CANARY}", namespace=f"n{ATTRIBUTE_CANARY}",
                         model_uri=f"s3://m/{CANARY}", schedule=f"s{ATTRIBUTE_CANARY}",
                         slice_value=CANARY, metric_name=f"m{CANARY}", label=ATTRIBUTE_CANARY,
                         finished=START + timedelta(days=30)))
    return docs


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> Iterator[str]:
    results = tmp_path_factory.mktemp("results")
    store = LocalResultStore(results)
    for doc in _documents():
        store.upsert(doc)
    (results / "torn-1.json").write_text('{"uid": "torn", "attem')
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(UIConfig(results_dir=results)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _ready(target) -> None:
    target.wait_for_selector('body[data-ready="1"]', timeout=15_000)


def test_list_filter_open_an_evaluation_and_back(page, dashboard, screenshot):
    page.goto(dashboard + "/")
    _ready(page)
    assert page.locator("tr.evaluation").count() == 10
    assert "torn attempt 1: result missing/unreadable" in page.locator("tr.unreadable").inner_text()
    screenshot("list")
    page.fill('input[name="namespace"]', "team-b")
    page.click("#apply")
    page.wait_for_url("**namespace=team-b**")
    namespaces = page.locator("td.namespace").all_inner_texts()
    assert namespaces == ["team-b"] * 4
    page.click("text=other-1")
    page.wait_for_url("**/evaluations/b1?attempt=1")
    report = page.frame_locator("#report")
    report.locator('body[data-ready="1"]').wait_for(timeout=20_000)
    frame = page.frame(url=lambda url: "/report" in url)
    assert frame.evaluate("Object.keys(window.modelevalViews).length") > 0
    assert frame.locator("svg").count() > 0
    roc = frame.evaluate("window.modelevalViews.roc ? window.modelevalViews.roc.data('roc') : []")
    assert roc, "the report's ROC chart has no data"
    screenshot("evaluation")
    page.go_back()
    page.wait_for_url("**namespace=team-b**")
    assert page.locator("tr.evaluation").count() == 4


def test_schedule_chart_carries_the_runs_and_marks_the_degraded_one(page, dashboard, screenshot):
    page.goto(dashboard + "/schedules/team-a/nightly?maxDrop=0.05")
    _ready(page)
    runs = page.evaluate("window.modelevalViews.schedule.data('runs')")
    assert [round(r["value"], 6) for r in runs] == TREND
    assert [r["model"] for r in runs] == [f"s3://models/churn/v{i}.json" for i in range(5)]
    assert [r["state"] for r in runs] == ["ok", "ok", "degraded", "ok", "ok"]
    assert all(r["lower"] < r["value"] <= r["upper"] for r in runs)
    assert page.locator("#chart-schedule svg").count() == 1
    assert page.locator("tr.run.degraded").count() == 1
    screenshot("schedule")
    page.click("text=nightly-2")
    page.wait_for_url("**/evaluations/run2?attempt=1")


def test_compare_two_chosen_in_the_list(page, dashboard, screenshot):
    page.goto(dashboard + "/?namespace=team-a&sort=name")
    _ready(page)
    page.check('input[value="run0"]')
    page.check('input[value="run2"]')
    page.click("#compare-button")
    page.wait_for_url("**/compare?uid=run0&uid=run2")
    auc = page.locator('tr.metric[data-metric="auc"] td').all_inner_texts()
    assert auc[1].split() == ["0.8000", "[0.7900,", "0.8100]"]
    assert auc[2].split() == ["0.7000", "(-0.1000)", "[0.6900,", "0.7100]"]
    assert page.locator('tr.metric[data-metric="auc"] .delta.worse').count() == 1
    screenshot("compare")


def test_a_planted_script_never_runs(page, dashboard):
    for path in ("/", "/evaluations/evil", "/compare?uid=evil&uid=run0",
                 "/schedules/team-a/nightly?metric=m%3Cscript%3Ewindow.__pwned%3D1%3C%2Fscript%3E"):
        page.goto(dashboard + path)
        _ready(page)
        assert page.evaluate("typeof window.__pwned") == "undefined", path
        assert "__pwned" in page.content(), path  # shown as text
    page.goto(dashboard + "/evaluations/evil")
    page.frame_locator("#report").locator('body[data-ready="1"]').wait_for(timeout=20_000)
    frame = page.frame(url=lambda url: "/report" in url)
    assert frame.evaluate("typeof window.__pwned") == "undefined"
    assert not page.problems
