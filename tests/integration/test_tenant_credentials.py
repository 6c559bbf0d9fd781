"""The operator acts for a tenant with the tenant's own credentials, against the test bed's real
MinIO and FerretDB: a trigger prefix is listed with the namespace's S3 Secret (a missing bucket
and refused keys read the same), and a result in a database the platform does not serve is
written with the namespace's MongoDB Secret, its failure reported without the server's address."""

from __future__ import annotations

import uuid

import boto3
import pytest
from pymongo import MongoClient

from modeleval.api.results import ResultDocument, document_id
from modeleval.api.schedule import EvaluationScheduleSpec, EvaluationScheduleStatus
from modeleval.api.spec import MongoTarget
from modeleval.controller.results_store import ResultsStores
from modeleval.controller.observed import ObjectIdentity
from modeleval.controller.schedule_runtime import ScheduleRuntime
from modeleval.controller.secrets import NamespaceSecrets
from modeleval.controller.settings import OperatorSettings
from modeleval.store import ResultsStoreError

pytestmark = pytest.mark.integration
SCHED = ObjectIdentity(name="s", namespace="team-a", uid="u-1")


class Secrets:
    """The Kubernetes API's Secrets, as the operator reads them."""

    def __init__(self, secrets: dict):
        self.secrets = secrets

    def read_secret(self, namespace, name):
        return self.secrets.get((namespace, name))

    def list_evaluations(self, namespace, selector):
        return []


def trigger(prefix: str) -> EvaluationScheduleSpec:
    return EvaluationScheduleSpec.model_validate({
        "trigger": {"newModel": {"prefix": prefix}},
        "template": {"task": "ranking", "model": {"uri": "s3://models/m.json"},
                     "dataset": {"uri": "s3://data/d.txt"}, "metrics": ["ndcg@10"]}})


def listing(bed, prefix: str, key_id: str, secret: str):
    kube = Secrets({("team-a", "modeleval-s3"): {"AWS_ACCESS_KEY_ID": key_id,
                                                 "AWS_SECRET_ACCESS_KEY": secret}})
    runtime = ScheduleRuntime(OperatorSettings(_env_file=None, s3_endpoint=bed.s3_endpoint),
                              lambda: kube)
    return runtime.observe(SCHED, trigger(prefix), EvaluationScheduleStatus())


def test_a_trigger_lists_minio_with_the_namespace_s_keys_and_refusals_read_alike(bed):
    s3 = boto3.client("s3", endpoint_url=bed.s3_endpoint, aws_access_key_id=bed.s3_access_key,
                      aws_secret_access_key=bed.s3_secret_key, region_name="us-east-1")
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/m1.json", Body=b"{}")
    found = listing(bed, f"s3://{bucket}/in/", bed.s3_access_key, bed.s3_secret_key)
    assert [m.key for m in found.models] == ["in/m1.json"] and found.models_error is None

    missing = listing(bed, f"s3://no-such-{bucket}/in/", bed.s3_access_key, bed.s3_secret_key)
    refused = listing(bed, f"s3://{bucket}/in/", "not-a-key", "not-a-secret")
    assert missing.models is None and refused.models is None
    assert missing.models_error.replace("no-such-", "") == refused.models_error == (
        f"cannot list s3://{bucket}/in/ with the credentials of Secret team-a/modeleval-s3: "
        "the bucket does not exist or they may not list it")


def test_a_tenant_database_is_written_with_the_tenant_s_uri(bed):
    database = f"tenant_{uuid.uuid4().hex[:8]}"
    tenant = Secrets({("team-a", "modeleval-mongodb"): {"MONGODB_URI": bed.mongodb_uri}})
    settings = OperatorSettings(_env_file=None, mongodb_uri="mongodb://127.0.0.1:9/")
    stores = ResultsStores(settings, NamespaceSecrets(lambda: tenant))
    document = ResultDocument(_id=document_id("u1", 1), uid="u1", attempt=1, name="ev",
                              namespace="team-a", status="Succeeded")
    # The operator's own URI points nowhere: the write succeeds only with the tenant's.
    stores.open("team-a", MongoTarget(database=database)).upsert(document)
    with MongoClient(bed.mongodb_uri, serverSelectionTimeoutMS=10_000) as mongo:
        assert mongo[database]["results"].find_one({"_id": "u1:1"})["name"] == "ev"

    with pytest.raises(ResultsStoreError) as caught:  # the platform's database, operator's URI
        ResultsStores(settings, NamespaceSecrets(lambda: tenant), timeout_ms=200).open(
            "team-a", MongoTarget()).get("u1", 1)
    assert "127.0.0.1:9" in caught.value.message and caught.value.public == "MongoDB read failed"
