"""The dashboard over a real MongoDB wire server (the bed's FerretDB, started alone): filters,
sorts and pages done by the server, a malformed document shown as such."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pymongo import MongoClient

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from dashboard_documents import START, document, failed, ferretdb
from modeleval.ui.app import create_app
from modeleval.ui.config import UIConfig
from modeleval.ui.listing import ListQuery
from modeleval.ui.sources import MongoSource

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mongo() -> Iterator[str]:
    with ferretdb() as uri:
        collection = MongoClient(uri)["dash"]["results"]
        docs = [document(f"m{i}", name=f"eval-{i:02d}", namespace=f"team-{'ab'[i % 2]}",
                         schedule="nightly" if i % 3 == 0 else None, auc=0.5 + i / 100,
                         model_uri=f"s3://models/v{i % 4}.json", curves=False,
                         finished=START + timedelta(hours=i)) for i in range(60)]
        docs += [failed("f1", "broken-model", "team-a", START + timedelta(days=9)),
                 document("m7", name="eval-07", attempt=2, namespace="team-b", curves=False,
                          finished=START + timedelta(days=10))]
        collection.insert_many([d.to_mongo() for d in docs])
        collection.insert_one({"_id": "odd:1", "uid": "odd", "attempt": "first",
                               "status": "Succeeded", "finishedAt": "2026-12-31"})
        yield uri


@pytest.mark.parametrize("indexed", [False, True], ids=["by-the-server", "from-the-index"])
def test_the_list_filters_sorts_and_pages(mongo, indexed):
    source = MongoSource(mongo, "dash", "results")
    if indexed:
        source.refresh_index()
    assert source.indexed is indexed
    page = source.list(ListQuery(namespace="team-a", sort="name", order="asc"))
    assert page.total == 31 and [r.name for r in page.rows][:3] == ["broken-model", "eval-00",
                                                                    "eval-02"]
    best = source.list(ListQuery(sort="metric", metric="auc", order="desc", status="Succeeded"))
    values = [r.metrics["auc"] for r in best.rows]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(1.09)
    second = source.list(ListQuery(page=2))
    assert len(second.rows) == 13 and second.total == 63
    assert source.list(ListQuery(model="V3.JSON")).total == 15
    assert source.list(ListQuery(schedule="nightly")).total == 20
    assert source.attempts("m7") == [1, 2] and source.get("m7").document.attempt == 2
    assert [r.document.name for r in source.runs("team-a", "nightly")][:2] == ["eval-00", "eval-06"]
    assert source.choices().namespaces == ["team-a", "team-b"]


def test_a_malformed_document_is_a_row_and_its_page_says_why(mongo):
    with TestClient(create_app(UIConfig(mongo_uri=mongo, database="dash"))) as client:
        listed = client.get("/").text
        page = client.get("/evaluations/odd")
        compared = client.get("/compare", params={"uid": ["m1", "odd"]})
    assert "odd: result missing/unreadable: attempt: Input should be a valid integer" in listed
    assert page.status_code == 200 and "result missing/unreadable" in page.text
    assert compared.status_code == 200


QUERIES = [ListQuery(namespace="team-a"), ListQuery(namespace="team-b", page=2),
           ListQuery(namespace="team-b", status="Succeeded", sort="metric", metric="auc",
                     order="asc"),
           ListQuery(model="v1.json", sort="finished", order="asc"), ListQuery(schedule="nightly")]


@pytest.mark.parametrize("query", QUERIES, ids=range(len(QUERIES)))
def test_the_index_lists_what_the_server_lists(mongo, query):
    server, indexed = MongoSource(mongo, "dash", "results"), MongoSource(mongo, "dash", "results")
    indexed.refresh_index()
    expected, found = server.list(query), indexed.list(query)
    assert found.total == expected.total
    assert [(r.uid, r.attempt) for r in found.rows] == [(r.uid, r.attempt) for r in expected.rows]


def test_the_index_takes_in_what_finished_since(mongo):
    source = MongoSource(mongo, "dash", "results")
    source.refresh_index()
    late = document("late1", name="late", namespace="team-z", curves=False,
                    finished=START + timedelta(days=40))
    collection = MongoClient(mongo)["dash"]["results"]
    collection.insert_one(late.to_mongo())
    try:
        assert source.list(ListQuery(namespace="team-z")).total == 0  # not yet read
        source.refresh_index()
        assert [r.name for r in source.list(ListQuery(namespace="team-z")).rows] == ["late"]
        assert "team-z" in source.choices().namespaces
    finally:
        collection.delete_one({"_id": late.id})


def test_the_index_finds_attempts_and_runs_as_the_server_does(mongo):
    server, indexed = MongoSource(mongo, "dash", "results"), MongoSource(mongo, "dash", "results")
    indexed.refresh_index()
    for uid in ("m7", "m1", "nosuch"):
        assert indexed.attempts(uid) == server.attempts(uid)
        ours, theirs = indexed.get(uid), server.get(uid)
        assert (ours and ours.document) == (theirs and theirs.document)
    runs = [(r.document.uid, r.document.attempt) for r in indexed.runs("team-a", "nightly")]
    assert runs == [(r.document.uid, r.document.attempt) for r in server.runs("team-a", "nightly")]
    assert len(runs) == 10
