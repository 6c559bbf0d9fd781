"""The schedule runtime's reads, with fakes for the Kubernetes API and S3: children are this
schedule's own (by owner uid, not just the label), folder markers are no models, and an S3
error becomes the round's ``models_error`` rather than an exception."""

from __future__ import annotations

from datetime import datetime, timezone

from botocore.exceptions import ClientError

from modeleval.api.schedule import SCHEDULE_LABEL, EvaluationScheduleSpec, EvaluationScheduleStatus
from modeleval.controller.schedule import Schedule
from modeleval.controller.schedule_runtime import ScheduleRuntime, split_prefix
from modeleval.controller.settings import OperatorSettings

SCHED = Schedule(name="s", namespace="ns", uid="u-1")
SPEC = EvaluationScheduleSpec.model_validate({
    "trigger": {"newModel": {"prefix": "s3://models/in/"}},
    "template": {"task": "ranking", "model": {"uri": "s3://models/m.json"},
                 "dataset": {"uri": "s3://data/d.txt"}, "metrics": ["ndcg@10"]}})


class FakeKube:
    def __init__(self, items):
        self.items, self.selectors = items, []

    def list_evaluations(self, namespace, selector):
        self.selectors.append((namespace, selector))
        return self.items


class FakeS3:
    def __init__(self, pages=None, error=None):
        self.pages, self.error = pages or [], error

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket, Prefix):
        assert (Bucket, Prefix) == ("models", "in/")
        if self.error:
            raise self.error
        return iter(self.pages)


def child(name, uid):
    return {"metadata": {"name": name, "ownerReferences": [{"uid": uid}],
                         "creationTimestamp": "2026-11-22T10:00:00Z"},
            "status": {"phase": "Succeeded", "completionTime": "2026-11-22T10:05:00Z",
                       "metrics": {"ndcg@10": 0.8}}}


def runtime(items, s3):
    kube = FakeKube(items)
    rt = ScheduleRuntime(OperatorSettings(_env_file=None), lambda: kube)
    rt._s3 = s3
    return rt, kube


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


def test_an_s3_error_is_reported_not_raised():
    error = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ListObjectsV2")
    rt, _ = runtime([], FakeS3(error=error))
    observed = rt.observe(SCHED, SPEC, EvaluationScheduleStatus())
    assert observed.models is None and "AccessDenied" in observed.models_error
    assert "s3://models/in/" in observed.models_error
