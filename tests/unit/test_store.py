"""The results store both sides share, and the documents they exchange."""

from __future__ import annotations

from modeleval.api.reasons import Reason
from modeleval.api.results import DOCUMENT_MARKER, ResultDocument, document_id
from modeleval.store import LocalResultStore, MongoResultStore


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
    ok = ResultDocument(_id="u:1", uid="u", attempt=1, name="ev", status="Succeeded", rows=3)
    other = ok.model_copy(update={"id": "u:2", "attempt": 2})
    log = "\n".join(["noise", ok.log_line(), other.log_line(), DOCUMENT_MARKER + "{not json",
                     "MODELEVAL_RESULT {}"])
    assert ResultDocument.from_log(log, "u:1") == ok
    assert ResultDocument.from_log(log, "u:2") == other
    assert ResultDocument.from_log(log, "u:3") is None
