"""The schedule runtime's reads, with fakes for the Kubernetes API and S3: children are this
schedule's own (by owner uid, not just the label), folder markers are no models, the prefix is
listed with the namespace's own Secret (never the operator's credentials) at most once a
minute per prefix and credentials, and an S3 error becomes the round's ``models_error`` (the
same for a missing bucket and a refused one) rather than an exception."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import boto3
import httpx
from botocore.stub import Stubber

from modeleval.api.schedule import SCHEDULE_LABEL, EvaluationScheduleSpec, EvaluationScheduleStatus
from modeleval.api.reasons import Reason
from modeleval.api.schedule import ScheduleConditionType
from modeleval.controller.observed import ObjectIdentity
from modeleval.controller.schedule import decide_schedule
from modeleval.controller.mlflow import Registries
from modeleval.controller.schedule_runtime import PrefixListings, ScheduleRuntime, split_prefix
from modeleval.controller.secrets import NamespaceSecrets
from modeleval.controller.settings import OperatorSettings

SCHED = ObjectIdentity(name="s", namespace="ns", uid="u-1")
SPEC = EvaluationScheduleSpec.model_validate({
    "trigger": {"newModel": {"prefix": "s3://models/in/"}},
    "template": {"task": "ranking", "model": {"uri": "s3://models/m.json"},
                 "dataset": {"uri": "s3://data/d.txt"}, "metrics": ["ndcg@10"]}})


TENANT_KEYS = {"AWS_ACCESS_KEY_ID": "tenant-key", "AWS_SECRET_ACCESS_KEY": "tenant-secret"}


class FakeKube:
    def __init__(self, items, secrets=None):
        self.items, self.selectors, self.secret_reads = items, [], []
        self.secrets = {("ns", "modeleval-s3"): TENANT_KEYS} if secrets is None else secrets

    def list_evaluations(self, namespace, selector):
        self.selectors.append((namespace, selector))
        return self.items

    def read_secret(self, namespace, name):
        self.secret_reads.append((namespace, name))
        return self.secrets.get((namespace, name))


class FakeS3:
    def __init__(self, pages=None):
        self.pages, self.made, self.listed = pages or [], [], []

    def __call__(self, endpoint, key_id, secret):
        self.made.append((endpoint, key_id, secret))
        return self

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket, Prefix):
        self.listed.append((Bucket, Prefix))
        return iter(self.pages)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def child(name, uid):
    return {"metadata": {"name": name, "ownerReferences": [{"uid": uid}],
                         "creationTimestamp": "2026-11-22T10:00:00Z"},
            "status": {"phase": "Succeeded", "completionTime": "2026-11-22T10:05:00Z",
                       "metrics": {"ndcg@10": 0.8}}}


def runtime(items, s3, kube=None, clock=None, **settings):
    kube = kube or FakeKube(items)
    listings = PrefixListings(clock=clock or Clock(), rng=lambda: 1.0)
    rt = ScheduleRuntime(OperatorSettings(_env_file=None, **settings), lambda: kube, s3_client=s3,
                         listings=listings)
    return rt, kube


def refusing(code: str, status: int):
    """A real S3 client whose answer to a listing is ``code``."""
    def make(endpoint, key_id, secret):
        client = boto3.client("s3", endpoint_url="http://s3.example:9000", region_name="us-east-1",
                              aws_access_key_id=key_id, aws_secret_access_key=secret)
        stubber = Stubber(client)
        stubber.add_client_error("list_objects_v2", service_error_code=code,
                                 service_message=f"{code} for bucket models", http_status_code=status)
        stubber.activate()
        return client
    return make


def test_split_prefix():
    assert split_prefix("s3://models/a/b/") == ("models", "a/b/")
    assert split_prefix("s3://models/") == ("models", "")


def test_children_are_the_schedules_own_and_folder_markers_are_no_models():
    when = datetime(2026, 11, 22, 11, 0, 0, 123456, tzinfo=timezone.utc)
    pages = [{"Contents": [{"Key": "in/", "ETag": '"d"', "LastModified": when},
                           {"Key": "in/m1.json", "ETag": '"abc"', "LastModified": when}]}]
    rt, kube = runtime([child("s-1", "u-1"), child("copied-label", "other")], FakeS3(pages))
    observed = rt.observe(SCHED, SPEC, EvaluationScheduleStatus())
    assert kube.selectors == [("ns", f"{SCHEDULE_LABEL}=s")]
    assert [c.name for c in observed.children] == ["s-1"]
    assert observed.children[0].metrics == {"ndcg@10": 0.8}
    assert observed.bucket == "models"
    ((key, etag, modified),) = [(m.key, m.etag, m.last_modified) for m in observed.models]
    assert (key, etag) == ("in/m1.json", "abc") and modified == when.replace(microsecond=0)


def test_the_prefix_is_listed_with_the_namespace_s_own_secret():
    s3 = FakeS3()
    rt, kube = runtime([], s3, s3_endpoint="http://minio:9000", s3_secret="modeleval-s3")
    observed = rt.observe(SCHED, SPEC, EvaluationScheduleStatus())
    assert observed.models == () and observed.models_error is None
    assert kube.secret_reads == [("ns", "modeleval-s3")]
    assert s3.made == [("http://minio:9000", "tenant-key", "tenant-secret")]
    assert s3.listed == [("models", "in/")]


def test_without_its_secret_a_trigger_says_so_and_lists_nothing():
    s3 = FakeS3()
    for secrets, missing in (({}, "not found"),
                             ({("ns", "modeleval-s3"): {"AWS_ACCESS_KEY_ID": "k"}},
                              "no AWS_SECRET_ACCESS_KEY")):
        rt, _ = runtime([], s3, kube=FakeKube([], secrets))
        observed = rt.observe(SCHED, SPEC, EvaluationScheduleStatus(models_listed=True))
        assert observed.models is None and s3.made == []
        assert "Secret ns/modeleval-s3" in observed.models_error and missing in observed.models_error
        assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in observed.models_error
        status, _ = decide_schedule(SCHED, SPEC, EvaluationScheduleStatus(models_listed=True),
                                    observed, datetime(2026, 11, 22, tzinfo=timezone.utc))
        ready = status.condition(ScheduleConditionType.Ready)
        assert (ready.status, ready.reason) == ("False", Reason.ModelListFailed)
        assert "Secret ns/modeleval-s3" in ready.message


def test_a_missing_bucket_and_a_refused_one_read_the_same():
    messages = set()
    for code, status in (("NoSuchBucket", 404), ("AccessDenied", 403), ("AllAccessDisabled", 403)):
        rt, _ = runtime([], refusing(code, status))
        observed = rt.observe(SCHED, SPEC, EvaluationScheduleStatus())
        assert observed.models is None and code not in observed.models_error
        messages.add(observed.models_error)
    assert messages == {"cannot list s3://models/in/ with the credentials of Secret "
                        "ns/modeleval-s3: the bucket does not exist or they may not list it"}


def test_an_s3_outage_is_reported_without_its_address():
    unreachable = ScheduleRuntime(OperatorSettings(_env_file=None, s3_endpoint="http://127.0.0.1:1"),
                                  lambda: FakeKube([]))  # the real client, nothing listening
    failing, _ = runtime([], refusing("InternalError", 500), s3_endpoint="http://10.1.2.3:9000")
    for rt in (unreachable, failing):
        observed = rt.observe(SCHED, SPEC, EvaluationScheduleStatus())
        assert observed.models_error == ("cannot list s3://models/in/: S3 did not answer (the "
                                         "operator's log has the details)")


def test_a_prefix_is_listed_once_a_minute_for_every_schedule_with_the_same_credentials():
    clock, s3 = Clock(), FakeS3()
    kube = FakeKube([], {(ns, "modeleval-s3"): TENANT_KEYS for ns in ("ns", "team-b")})
    other = FakeKube([], {("ns", "modeleval-s3"): {**TENANT_KEYS, "AWS_SECRET_ACCESS_KEY": "x"}})
    rt, _ = runtime([], s3, kube=kube, clock=clock)
    second = ObjectIdentity(name="t", namespace="team-b", uid="u-2")
    for _ in range(6):  # a round every 10 s for a minute, two schedules on one prefix
        rt.observe(SCHED, SPEC, EvaluationScheduleStatus())
        rt.observe(second, SPEC, EvaluationScheduleStatus())
        clock.now += 10
    assert len(s3.listed) == 1
    clock.now = 1000.0 + 60 * 1.25  # the interval with its largest jitter
    rt.observe(second, SPEC, EvaluationScheduleStatus())
    assert len(s3.listed) == 2
    rt.secrets, rt._kube = type(rt.secrets)(lambda: other), lambda: other  # other credentials
    rt.observe(SCHED, SPEC, EvaluationScheduleStatus())
    assert len(s3.listed) == 3


def test_an_s3_client_is_made_once_per_credentials_and_few_are_kept(monkeypatch):
    monkeypatch.setattr("modeleval.controller.schedule_runtime.MAX_S3_CLIENTS", 2)
    s3 = FakeS3()
    rt, _ = runtime([], s3)
    for key_id in ("a", "b", "a", "c", "a"):
        rt.s3_client(key_id, "secret")
    assert [made[1] for made in s3.made] == ["a", "b", "c"]  # "b" went when "c" came
    rt.s3_client("b", "secret")
    assert [made[1] for made in s3.made] == ["a", "b", "c", "b"]


def test_listings_are_jittered_and_bounded():
    clock = Clock()
    listings = PrefixListings(clock=clock, rng=lambda: 0.5, size=2)
    calls = []
    for key in ("a", "b", "c", "a"):
        listings.get(("", "bucket", key, "creds"), lambda: calls.append(key) or ((), None))
    assert calls == ["a", "b", "c", "a"]  # "a" was forgotten (the least recently used)
    clock.now += 60 * 1.125 - 0.001
    listings.get(("", "bucket", "a", "creds"), lambda: calls.append("again") or ((), None))
    assert calls[-1] == "a"
    clock.now += 0.001
    listings.get(("", "bucket", "a", "creds"), lambda: calls.append("again") or ((), None))
    assert calls[-1] == "again"
    assert len(listings._entries) == 2
    clock.now += 2 * 60 + 1  # neither asked for in two intervals: both forgotten but the asker
    listings.get(("", "bucket", "z", "creds"), lambda: ((), None))
    assert list(listings._entries) == [("", "bucket", "z", "creds")]


# ----------------------------------------------------------------------------- registered models
REGISTRY_SPEC = SPEC.model_copy(update={"trigger": SPEC.trigger.model_copy(update={
    "new_model": SPEC.trigger.new_model.model_copy(update={"prefix": None,
                                                           "registered_model": "ranker"})})})
TENANT_MLFLOW = {"MLFLOW_TRACKING_USERNAME": "tenant", "MLFLOW_TRACKING_PASSWORD": "pw"}


class FakeRegistryServer:
    """MLflow's REST answers for a registered model's versions, two pages of them (one still
    registering), and who asked."""

    def __init__(self, exists: bool = True):
        self.exists, self.requests = exists, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.url.path, dict(request.url.params),
                              request.headers.get("authorization")))
        if request.url.path.endswith("/registered-models/get"):
            if not self.exists:
                return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST",
                                                 "message": "Registered Model with name=ranker "
                                                            "not found"})
            return httpx.Response(200, json={"registered_model": {"name": "ranker"}})
        assert request.url.params["filter"] == "name='ranker'"
        if "page_token" not in request.url.params:
            return httpx.Response(200, json={"next_page_token": "p2", "model_versions": [
                {"name": "ranker", "version": "3", "creation_timestamp": 1764331200000,
                 "status": "PENDING_REGISTRATION"},
                {"name": "ranker", "version": "2", "creation_timestamp": 1764327600500,
                 "status": "READY"}]})
        return httpx.Response(200, json={"model_versions": [
            {"name": "ranker", "version": "1", "creation_timestamp": 1764324000000,
             "status": "READY"}]})


def registry_runtime(server, secrets=None, clock=None):
    kube = FakeKube([], {("ns", "modeleval-mlflow"): TENANT_MLFLOW} if secrets is None
                    else secrets)
    settings = OperatorSettings(_env_file=None, mlflow_tracking_uri="http://mlflow:5000")
    registries = Registries(settings, NamespaceSecrets(lambda: kube),
                            transport=lambda: httpx.MockTransport(server))
    listings = PrefixListings(clock=clock or Clock(), rng=lambda: 1.0)
    return ScheduleRuntime(settings, lambda: kube, s3_client=FakeS3(), listings=listings,
                           registries=registries)


def test_a_registered_models_versions_are_listed_with_the_namespaces_mlflow_user():
    server = FakeRegistryServer()
    clock = Clock()
    rt = registry_runtime(server, clock=clock)
    observed = rt.observe(SCHED, REGISTRY_SPEC, EvaluationScheduleStatus())
    assert observed.models_error is None
    assert [(m.key, m.etag) for m in observed.models] == [
        ("models:/ranker/2", "1764327600500"), ("models:/ranker/1", "1764324000000")]
    assert observed.models[0].last_modified == datetime(2025, 11, 28, 11, 0, tzinfo=timezone.utc)
    assert {auth for _, _, auth in server.requests} == {
        "Basic " + base64.b64encode(b"tenant:pw").decode()}
    # Listed once a minute for every schedule with the same credentials.
    rt.observe(SCHED, REGISTRY_SPEC, EvaluationScheduleStatus())
    assert len(server.requests) == 3
    clock.now += 100
    rt.observe(SCHED, REGISTRY_SPEC, EvaluationScheduleStatus())
    assert len(server.requests) == 6


def test_a_registered_model_that_is_not_there_or_no_credentials_is_a_clear_list_failure():
    observed = registry_runtime(FakeRegistryServer(exists=False)).observe(
        SCHED, REGISTRY_SPEC, EvaluationScheduleStatus())
    assert observed.models is None
    assert observed.models_error.startswith("cannot list the versions of models:/ranker: "
                                            "registered model ranker:")
    assert "not found" in observed.models_error
    observed = registry_runtime(FakeRegistryServer(), secrets={}).observe(
        SCHED, REGISTRY_SPEC, EvaluationScheduleStatus())
    assert observed.models is None and "no MLflow credentials" in observed.models_error
    server = FakeRegistryServer()
    unset = registry_runtime(server)
    unset.settings = unset.settings.model_copy(update={"mlflow_tracking_uri": None})
    observed = unset.observe(SCHED, REGISTRY_SPEC, EvaluationScheduleStatus())
    assert observed.models is None and observed.models_error.endswith(
        "the chart's mlflow.trackingUri is not set)") and server.requests == []
    status, _ = decide_schedule(SCHED, REGISTRY_SPEC, EvaluationScheduleStatus(), observed,
                                datetime(2026, 11, 22, tzinfo=timezone.utc))
    assert status.condition(ScheduleConditionType.Ready).reason == Reason.ModelListFailed
