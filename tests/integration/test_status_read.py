"""The operator's read of a finished attempt's document, against a real MongoDB wire server (the
bed's FerretDB, started alone): what status never shows (the data's profile, the curves, the
slices, every drift measure but each feature's name, PSI and verdict) stays in the store, and
what status shows is the same as from the whole document."""

from __future__ import annotations

from collections.abc import Iterator

import bson
import pytest
from pymongo import MongoClient

from modeleval.api.results import ResultDocument, document_id
from modeleval.api.status import DataDriftStatus
from modeleval.controller.results_store import STATUS_PROJECTION, StatusResultStore
from modeleval.store import MongoResultStore

from dashboard_documents import ferretdb
from drift_documents import data_drift, profile

pytestmark = pytest.mark.integration
PLANTED = ("2", "5", "7")


@pytest.fixture(scope="module")
def mongo() -> Iterator[str]:
    with ferretdb() as uri:
        yield uri


def test_status_reads_the_document_without_its_profile_and_drift_detail(mongo):
    drift = data_drift(PLANTED)
    whole = ResultDocument(_id=document_id("u1", 1), uid="u1", attempt=1, name="ev",
                           namespace="team-a", status="Succeeded", rows=4000,
                           metrics={"ndcg@10": 0.8}, warnings=["data quality (rows): few"],
                           profile=profile(PLANTED), drift=drift)
    MongoResultStore(mongo, "modeleval", "results").upsert(whole)
    store = StatusResultStore(mongo, "modeleval", "results")
    document, status_drift = store.get_for_status("u1", 1)
    assert document.profile is None and document.drift is None
    assert document.model_dump(exclude={"profile", "drift"}) == \
        whole.model_dump(exclude={"profile", "drift"})
    assert status_drift == DataDriftStatus.of(drift.model_dump(by_alias=True))
    assert status_drift.drifted and {f.name for f in status_drift.most_drifted} == set(PLANTED)
    assert store.get_for_status("u1", 2) == (None, None)
    # What crossed the wire: a small part of the stored document.
    with MongoClient(mongo) as client:
        collection = client["modeleval"]["results"]
        stored = collection.find_one({"_id": "u1:1"})
        read = collection.find_one({"_id": "u1:1"}, STATUS_PROJECTION)
    assert set(read["drift"]["features"][0]) == {"name", "psi", "drifted"}
    assert len(bson.encode(read)) * 20 < len(bson.encode(stored))


def test_a_document_without_drift_gives_none(mongo):
    plain = ResultDocument(_id=document_id("u2", 1), uid="u2", attempt=1, name="ev2",
                           namespace="team-a", status="Succeeded", metrics={"auc": 0.9})
    MongoResultStore(mongo, "modeleval", "results").upsert(plain)
    document, drift = StatusResultStore(mongo, "modeleval", "results").get_for_status("u2", 1)
    assert drift is None and document.metrics == {"auc": 0.9}
