"""The results store both sides share, and the documents they exchange."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from modeleval import store as store_module
from modeleval.api.reasons import Reason
from modeleval.api.results import DOCUMENT_MARKER, MAX_DOCUMENT_LINE, ResultDocument, document_id
from modeleval.store import LocalResultStore, MongoResultStore, ResultsStoreError


def test_every_store_on_one_uri_shares_one_client():
    """An operator reading many tenants' databases holds one client (one pool, one set of
    monitor threads), however many databases and collections it is asked for."""
    a = MongoResultStore("mongodb://127.0.0.1:9/", "tenant-a", "results", timeout_ms=100)
    b = MongoResultStore("mongodb://127.0.0.1:9/", "tenant-b", "evals", timeout_ms=100)
    assert a._collection.database.client is b._collection.database.client
    assert (a._collection.full_name, b._collection.full_name) == ("tenant-a.results", "tenant-b.evals")


def test_documents_round_trip_through_a_local_store(tmp_path):
    store = LocalResultStore(tmp_path)
    ok = ResultDocument(_id=document_id("u", 2), uid="u", attempt=2, name="ev", status="Succeeded",
                        metrics={"ndcg@10": 0.5}, gate={"passed": True, "rules": []})
    failed = ResultDocument.failure("u", 1, "ev", "ns", Reason.SchemaMismatch, "46 != 136", False,
                                    "s3://m/x", "s3://d/y")
    store.upsert(failed)
    store.upsert(ok)
    assert store.get("u", 1) == failed and store.get("u") == ok  # the latest attempt
    assert failed.reason is Reason.SchemaMismatch and not failed.succeeded
    assert sorted(d.attempt for d in store.list()) == [1, 2]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_a_document_printed_to_the_log_is_found_by_its_id():
    ok = ResultDocument(_id="u:1", uid="u", attempt=1, name="ev", namespace="ns",
                        status="Succeeded", rows=3)
    other = ok.model_copy(update={"id": "u:2", "attempt": 2})
    log = "\n".join(["noise", ok.log_line(), other.log_line(), DOCUMENT_MARKER + "{not json",
                     "MODELEVAL_RESULT {}"])
    assert ResultDocument.from_log(log, "u", 1, "ev", "ns") == ok
    assert ResultDocument.from_log(log, "u", 2, "ev", "ns") == other
    assert ResultDocument.from_log(log, "u", 3, "ev", "ns") is None


def test_a_logged_document_must_be_the_evaluations_own_in_every_field():
    """The log is written by a tenant's pods: a line carrying this attempt's id but another
    evaluation's name, namespace or uid is not relayed, nor is an overlong line."""
    mine = ResultDocument(_id="u:1", uid="u", attempt=1, name="ev", namespace="ns",
                          status="Succeeded", rows=3)
    for forged in ({"namespace": "team-b"}, {"name": "theirs"}, {"uid": "v"}, {"attempt": 2},
                   {"namespace": None}):
        log = mine.model_copy(update=forged).log_line()
        assert ResultDocument.from_log(log, "u", 1, "ev", "ns") is None, forged
    padded = mine.model_copy(update={"warnings": ["x" * MAX_DOCUMENT_LINE]})
    assert ResultDocument.from_log(padded.log_line(), "u", 1, "ev", "ns") is None
    assert ResultDocument.from_log("\n".join([mine.log_line(), padded.log_line()]),
                                   "u", 1, "ev", "ns") == mine


def test_a_store_error_says_what_failed_without_the_driver_s_words():
    """The driver's message names hosts and topology: kept for a log (``message``), never in
    ``public``, which a tenant's status shows."""
    store = MongoResultStore("mongodb://127.0.0.1:9/", "modeleval", "results", timeout_ms=100)
    with pytest.raises(ResultsStoreError) as caught:
        store.get("u", 1)
    assert "127.0.0.1:9" in caught.value.message
    assert caught.value.public == "MongoDB read failed"


def test_a_uri_the_driver_refuses_is_not_quoted():
    with pytest.raises(ResultsStoreError) as caught:
        MongoResultStore("mongodb://user:s3cret@host:99999999/", timeout_ms=100)
    assert "s3cret" not in caught.value.message and "s3cret" not in caught.value.public


def test_clients_are_bounded(monkeypatch):
    monkeypatch.setattr(store_module, "MAX_CLIENTS", 2)
    monkeypatch.setattr(store_module, "_clients", OrderedDict())  # other tests' clients stay open
    first = MongoResultStore("mongodb://127.0.0.1:11/", timeout_ms=100)._collection.database.client
    for port in (12, 13):
        MongoResultStore(f"mongodb://127.0.0.1:{port}/", timeout_ms=100)
    assert ("mongodb://127.0.0.1:11/", 100) not in store_module._clients
    assert len(store_module._clients) == 2
    with pytest.raises(Exception, match="after close"):  # the forgotten client was closed
        first["db"]["c"].find_one({})
