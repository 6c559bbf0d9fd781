"""The dashboard's pages over a results directory, through FastAPI's TestClient: filters, sorts,
pages, authentication, bad parameters, missing and unreadable results, escaping."""

from __future__ import annotations

import re
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from dashboard_documents import ATTRIBUTE_CANARY, CANARY, START, document, failed, many
from modeleval.api.schedule import Degradation
from modeleval.cli import main as cli
from modeleval.store import LocalResultStore
from modeleval.ui.app import COOKIE, create_app
from modeleval.ui.cluster import ClusterView
from modeleval.ui.config import UIConfig
from modeleval.ui.listing import PAGE_SIZE
from modeleval.ui.sources import DirectorySource, Loaded
from modeleval.ui.views import compare_metrics, schedule_points


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("results")
    store = LocalResultStore(directory)
    for doc in many(120):
        store.upsert(doc.model_copy(update={"curves": None}))
    (directory / "broken-1.json").write_text("{not json")
    (directory / "typed-1.json").write_text('{"uid": "typed", "attempt": "one"}')
    return directory


@pytest.fixture(scope="module")
def client(results) -> TestClient:
    return TestClient(create_app(UIConfig(results_dir=results)))


def names(html: str) -> list[str]:
    return re.findall(r'<a class="name" href="[^"]*">([^<]*)</a>', html)


def column(html: str, cls: str) -> list[str]:
    return re.findall(rf'<td class="{cls}">([^<]*)</td>', html)


def test_filters_narrow_the_list(client):
    everything = client.get("/").text
    assert "120 stored attempts" not in everything and "122 stored attempts" in everything
    team = client.get("/", params={"namespace": "team-c"}).text
    assert set(column(team, "namespace")) == {"team-c"} and "15 stored attempts" in team
    failed_only = client.get("/", params={"status": "Failed"}).text
    assert "12 stored attempts" in failed_only and "Succeeded</span>" not in failed_only
    assert client.get("/", params={"phase": "Failed"}).text.count("ModelNotFound") == 12
    scheduled = client.get("/", params={"schedule": "nightly-0"}).text
    assert "20 stored attempts" in scheduled
    model = client.get("/", params={"model": "M3/"}).text  # part of the URI, any case
    assert set(column(model, "model")) == {"s3://models/m3/model.json"}


def test_sorts_by_finished_name_and_metric(client):
    newest = client.get("/").text
    finished = column(newest, "finished")
    # the two unreadable documents come first
    assert finished == sorted(finished, reverse=True) and len(finished) == PAGE_SIZE - 2
    by_name = names(client.get("/", params={"sort": "name"}).text)
    assert by_name == sorted(by_name)
    best = client.get("/", params={"sort": "metric", "metric": "auc", "status": "Succeeded"}).text
    values = [float(v) for v in column(best, "num metric")]
    assert values == sorted(values, reverse=True) and len(values) == PAGE_SIZE
    worst = client.get("/", params={"sort": "metric", "metric": "auc", "order": "asc",
                                    "status": "Succeeded"}).text
    assert [float(v) for v in column(worst, "num metric")][0] < values[-1]


def test_pages_hold_fifty_and_link_the_next(client):
    first, third = client.get("/").text, client.get("/", params={"page": 3}).text
    assert len(names(first)) == PAGE_SIZE - 2 and len(names(third)) == 122 - 2 * PAGE_SIZE
    assert 'id="next" href="/?page=2"' in first and 'id="next"' not in third
    assert not set(names(first)) & set(names(third))
    filtered = client.get("/", params={"namespace": "team-a", "sort": "name"}).text
    assert 'id="next"' not in filtered  # 15 rows: one page


@pytest.mark.parametrize("url, param", [("/?sort=size", "sort"), ("/?page=0", "page"),
                                        ("/?page=x", "page"), ("/?order=up", "order"),
                                        ("/?status=Running", "status"), ("/?colour=red", "colour"),
                                        ("/?metric=a.b", "metric"), ("/evaluations/bad_uid", "uid"),
                                        ("/evaluations/e000001?attempt=-1", "attempt"),
                                        ("/schedules/Team_A/x", "namespace"),
                                        ("/schedules/a/b?maxDrop=lots", "maxDrop"),
                                        ("/schedules/a/b?maxDrop=-1", "maxDrop"),
                                        ("/schedules/a/b?maxDrop=1&against=best", "against")])
def test_a_bad_parameter_is_a_400_page_naming_it(client, url, param):
    answer = client.get(url)
    assert answer.status_code == 400 and f"Bad query parameter: {param}" in answer.text


def test_compare_needs_two_to_eight(client):
    for count in (1, 9):
        answer = client.get("/compare", params={"uid": [f"e{i:06d}" for i in range(count)]})
        assert answer.status_code == 400 and "Choose 2 to 8 evaluations" in answer.text
        assert f"{count} chosen" in answer.text


def test_compare_shows_deltas_against_the_first(client):
    a = document("ca", name="a", seed=1, auc=0.80)
    b = document("cb", name="b", seed=1, auc=0.75)
    rows = {m.name: m for m in compare_metrics([a, b, None])}
    assert rows["auc"].deltas == [0.0, pytest.approx(-0.05), None]
    assert rows["auc"].better == [None, False, None]
    assert rows["auc"].intervals[:2] == [(pytest.approx(0.79), pytest.approx(0.81)),
                                         (pytest.approx(0.74), pytest.approx(0.76))]
    html = client.get("/compare", params={"uid": ["e000000", "e000003", "nosuch"]}).text
    assert "result missing: no result for uid nosuch" in html
    assert html.count('class="metric"') == 2  # auc and accuracy


def test_missing_and_unreadable_results_are_said_never_a_500(client):
    listed = client.get("/").text
    assert "broken attempt 1: result missing/unreadable: not JSON: Expecting property name" \
        in listed
    assert "typed attempt 1: result missing/unreadable: attempt: Input should be a valid integer" in listed
    broken = client.get("/evaluations/broken")
    assert broken.status_code == 200 and "result missing/unreadable" in broken.text
    assert client.get("/evaluations/broken/report").status_code == 200
    missing = client.get("/evaluations/nosuch")
    assert missing.status_code == 404 and "result missing: no result for uid nosuch" in missing.text
    assert client.get("/evaluations/e000001?attempt=7").status_code == 404
    compared = client.get("/compare", params={"uid": ["e000000", "broken"]})
    assert compared.status_code == 200 and "result missing/unreadable: not JSON: Expecting property name" in compared.text


def test_one_evaluation_embeds_its_report_and_lists_its_attempts(tmp_path):
    store = LocalResultStore(tmp_path)
    for attempt in (1, 2):
        store.upsert(document("ev", name="retried", attempt=attempt, auc=0.7 + attempt / 100))
    client = TestClient(create_app(UIConfig(results_dir=tmp_path)))
    page = client.get("/evaluations/ev").text
    assert '<option value="2" selected>' in page and '<option value="1">' in page
    assert 'src="/evaluations/ev/report?attempt=2"' in page and 'sandbox="allow-scripts"' in page
    first = client.get("/evaluations/ev", params={"attempt": 1}).text
    assert '<option value="1" selected>' in first
    report = client.get("/evaluations/ev/report", params={"attempt": 1})
    assert report.status_code == 200 and "0.7100" in report.text


def test_an_evaluation_with_drift_shows_its_verdict_and_links_the_drift_table(tmp_path):
    from tests.report_documents import document as report_document
    from tests.report_profiles import feature_names, profiled

    names = feature_names(12)
    names[7] = ATTRIBUTE_CANARY  # a drifted feature: named among the most drifted
    store = LocalResultStore(tmp_path)
    drifted = profiled(report_document("binary", challengers=0), names=names)
    store.upsert(drifted)
    store.upsert(report_document("regression", challengers=0).model_copy(update={"uid": "plain"}))
    client = TestClient(create_app(UIConfig(results_dir=tmp_path)))
    page = client.get(f"/evaluations/{drifted.uid}").text
    verdict = page[page.index('<p id="drift">'):]
    verdict = " ".join(verdict[:verdict.index("</p>")].split())
    assert "data drift against <b>evaluation weekly-1</b>" in verdict
    assert '<span class="badge Failed">drifted</span> 3 of 12 features drifted (25%; the dataset ' \
        "drifts at 20%)" in verdict
    most = [f"{f.name} (PSI {f.psi:.3f})" for f in drifted.drift.most_drifted()]
    assert ATTRIBUTE_CANARY in [f.name for f in drifted.drift.most_drifted()]
    assert _raw_canary(page) is None and "&#34;&gt;&lt;img src=x" in verdict
    assert ", ".join(most).replace('"', "&#34;").replace(">", "&gt;").replace("<", "&lt;") in verdict
    assert f'href="/evaluations/{drifted.uid}/report?attempt=1#drift"' in verdict
    assert 'id="table-drift"' in client.get(f"/evaluations/{drifted.uid}/report").text
    assert 'id="drift"' not in client.get("/evaluations/plain").text


def test_schedule_marks_the_runs_its_rule_calls_degraded():
    runs = [Loaded(str(i), document(f"r{i}", name=f"run-{i}", auc=auc, schedule="nightly",
                                    finished=START + timedelta(days=i), curves=False))
            for i, auc in enumerate([0.80, 0.79, 0.70, 0.72])]
    rule = Degradation(maxDrop=0.05)
    points = schedule_points(runs, "auc", rule)
    assert [p.degraded for p in points] == [None, False, True, False]
    assert points[2].drop == pytest.approx(0.09)
    against = schedule_points(runs, "auc", Degradation(maxDrop=0.01, against="champion"))
    # each run's baseline (the champion) scored 0.02 less: no run is worse than its champion
    assert [p.degraded for p in against] == [False] * 4
    assert [p.degraded for p in schedule_points(runs, "auc", None)] == [None] * 4


def test_schedule_page_plots_its_runs_and_links_them(client):
    page = client.get("/schedules/team-a/nightly-0")
    assert page.status_code == 200
    assert '<script src="/static/vega.js"></script>' in page.text
    spec = re.search(r"var spec = (\{.*?\});\n", page.text).group(1)
    assert '"name": "runs"' in spec and spec.count('"uid"') == 5  # team-a's runs of nightly-0
    assert "no kubeconfig given" in page.text
    assert len(re.findall(r'<a href="/evaluations/e\d+\?attempt=1">', page.text)) == 5
    marked = client.get("/schedules/team-a/nightly-0", params={"maxDrop": "0"}).text
    assert "rule from the URL&#39;s maxDrop" in marked and 'class="run degraded"' in marked
    empty = client.get("/schedules/team-a/none")
    assert empty.status_code == 200 and "no run with a metric yet" in empty.text


def test_the_vega_bundle_is_served_from_here(client):
    bundle = client.get("/static/vega.js")
    assert bundle.status_code == 200 and "window.vegaEmbed" in bundle.text


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> TestClient:
    directory = tmp_path_factory.mktemp("planted")
    store = LocalResultStore(directory)
    for i, canary in enumerate((CANARY, ATTRIBUTE_CANARY)):
        store.upsert(document(f"p{i}", name=f"name{canary}", namespace=f"ns{canary}",
                              model_uri=f"s3://m/{canary}", schedule=f"s{canary}",
                              slice_value=f"v{canary}", metric_name=f"m{canary}",
                              label=canary, curves=False))
        store.upsert(document(f"q{i}", name="plain", namespace="team-a", schedule="night",
                              metric_name=f"m{canary}", curves=False))
    return TestClient(create_app(UIConfig(results_dir=directory)))


def _raw_canary(html: str) -> str | None:
    for raw in ("<script>window.__pwned", "<img src=x", 'onerror="window'):
        if raw in html:
            return raw
    return None


PLANTED_METRIC = "m%3Cscript%3Ewindow.__pwned%3D1%3C%2Fscript%3E"


@pytest.mark.parametrize("url", ["/", "/?metric=m%3Cimg%20src%3Dx%3E",
                                 "/?namespace=%3Cscript%3E", "/evaluations/p0",
                                 "/evaluations/p1", "/evaluations/p0/report",
                                 "/evaluations/p1/report", "/compare?uid=p0&uid=p1&uid=q0",
                                 f"/schedules/team-a/night?metric={PLANTED_METRIC}",
                                 "/?sort=%3Cscript%3E"])
def test_no_page_carries_a_planted_script(planted, url):
    html = planted.get(url).text
    assert _raw_canary(html) is None, f"{url} carries {_raw_canary(html)!r}"
    assert "script&gt;" in html or "&lt;img" in html or "\\u003cscript" in html


def test_a_token_guards_every_page(results):
    client = TestClient(create_app(UIConfig(results_dir=results, token="s3cret")))
    refused = client.get("/")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/static/vega.js").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/login", params={"token": "nope"}).status_code == 401
    signed = client.get("/login", params={"token": "s3cret"}, follow_redirects=False)
    assert signed.status_code == 303 and COOKIE in signed.cookies
    assert "httponly" in signed.headers["set-cookie"].lower()
    assert client.get("/evaluations/e000001").status_code == 200  # the cookie now


def test_every_response_carries_the_security_headers(client):
    """No framing by other sites, no sniffing, no Referer; a report opened on its own still runs
    in an opaque origin (the sandbox its frame gives it)."""
    for path in ("/", "/evaluations/e000001", "/compare?uid=x", "/healthz", "/nowhere"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["content-security-policy"] == "frame-ancestors 'self'", path
    report = client.get("/evaluations/e000001/report")
    assert report.headers["content-security-policy"] == "sandbox allow-scripts; frame-ancestors 'self'"


def test_only_reads(client):
    assert client.post("/").status_code == 405
    assert client.delete("/evaluations/e000001").status_code == 405


def test_the_index_reads_only_new_or_changed_files(tmp_path):
    store = LocalResultStore(tmp_path)
    store.upsert(document("a1", name="first", curves=False))
    store.upsert(document("a2", name="second", curves=False))
    source = DirectorySource(tmp_path)
    source.refresh()
    before = dict(source._index)
    store.upsert(document("a3", name="third", curves=False))
    store.upsert(document("a2", name="second-renamed", curves=False, auc=0.99))
    source.refresh()
    assert source._index["a1-1.json"] is before["a1-1.json"]  # unchanged: not read again
    rows = {r.uid: r for r in source._rows()}
    assert rows["a3"].name == "third" and rows["a2"].name == "second-renamed"
    (tmp_path / "a1-1.json").unlink()
    source.refresh()
    assert "a1" not in {r.uid for r in source._rows()}


def test_a_cluster_that_does_not_answer_leaves_phase_unknown(results, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
""")
    client = TestClient(create_app(UIConfig(results_dir=results, kubeconfig=kubeconfig)))
    page = client.get("/")
    assert page.status_code == 200 and page.text.count("phase unknown: ") == PAGE_SIZE - 2
    assert "MaxRetryError" in page.text or "Connection refused" in page.text
    broken = tmp_path / "broken"
    broken.write_text("not: [a kubeconfig")
    view = ClusterView(broken)
    assert view.phases(["team-a"]).of("x", "team-a").phase is None
    assert view.schedule_rule("team-a", "s").unknown_because


def test_ui_command_says_a_read_only_user_suffices_and_refuses_two_sources(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(cli, ["ui", "--help"]).output
    assert "read-only" in help_text and "--kubeconfig" in help_text
    both = runner.invoke(cli, ["ui", "--mongo-uri", "mongodb://x", "--results-dir", str(tmp_path)])
    assert both.exit_code == 1
    empty = tmp_path / "token"
    empty.write_text("\n")
    refused = runner.invoke(cli, ["ui", "--results-dir", str(tmp_path), "--token-file", str(empty)])
    assert refused.exit_code == 1


def test_a_results_store_that_does_not_answer_is_a_503_page_saying_so():
    app = create_app(UIConfig(mongo_uri="mongodb://127.0.0.1:9/", mongo_timeout_ms=200))
    with TestClient(app) as client:  # its shutdown stops the list index's retries
        page = client.get("/")
    assert page.status_code == 503 and "Results store unavailable" in page.text
    assert "MongoDB read failed" in page.text


def test_the_list_columns_are_result_document_fields():
    """The list's projection reads ResultDocument's own fields, by the same names."""
    from modeleval.api.results import ResultDocument
    from modeleval.ui.listing import _ListColumns

    documents = ResultDocument.model_fields
    for name, field in _ListColumns.model_fields.items():
        assert name in documents, name
        assert field.alias == documents[name].alias, name
