"""Bounded work and memory per tenant: a spec's size, active children per schedule, schedules
per namespace, children read a page at a time, refused creates end instead of retrying, and
slot bookkeeping forgets what is gone."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from modeleval.api.reasons import Reason
from modeleval.api.schedule import EvaluationScheduleStatus, ScheduleConditionType as SC
from modeleval.api.spec import (MAX_FEATURE_COLUMN_CHARS, MAX_SPEC_BYTES, ModelEvaluationSpec,
                                format_validation_error)
from modeleval.controller import handlers
from modeleval.controller.kube import CreateRefused, Kube
from modeleval.controller.schedule import (CreateChild, ScheduleLimits, ScheduleObserved,
                                           decide_schedule, record_refusals)
from modeleval.controller.schedule_runtime import ScheduleRuntime
from modeleval.controller.settings import OperatorSettings
from modeleval.controller.slots import Slots

from .test_schedule import NOW, SCHED, child, created, emitted, model, trigger_spec
from .test_slots import acquire
from .test_schedule import cron_spec, spec as schedule_spec


def table_spec(columns: list[str], **extra) -> dict:
    return {"task": "ranking", "model": {"uri": "s3://models/r.json"},
            "dataset": {"uri": "s3://data/t.parquet", "format": "parquet", "groupColumn": "qid",
                        "featureColumns": columns}, "metrics": ["ndcg@10"], **extra}


def refusal(raw: dict) -> str:
    with pytest.raises(ValidationError) as error:
        ModelEvaluationSpec.model_validate(raw)
    return format_validation_error(error.value, "spec")


# ----------------------------------------------------------------------------- spec size
def test_a_spec_of_1_3_mb_is_accepted():
    raw = table_spec([f"f{i:05d}" + "x" * 122 for i in range(10_000)])
    assert len(json.dumps(raw)) > 1_300_000
    assert len(ModelEvaluationSpec.model_validate(raw).dataset.feature_columns) == 10_000


def test_feature_column_names_are_bounded_in_all():
    columns = [f"f{i:05d}" + "x" * 215 for i in range(6000)]
    assert sum(map(len, columns)) > MAX_FEATURE_COLUMN_CHARS
    assert refusal(table_spec(columns)) == (
        f"spec.dataset.featureColumns: at most {MAX_FEATURE_COLUMN_CHARS} characters of column "
        "names in all")


def test_the_whole_spec_is_bounded():
    columns = [f"f{i:05d}" + "x" * 120 for i in range(10_000)]
    raw = table_spec(columns, challengers=[
        {"name": f"c{i}", "model": {"uri": "s3://models/" + "m" * 1000}} for i in range(8)],
        slices=[{"name": f"s{i}", "column": "c" * 256} for i in range(32)])
    raw["dataset"]["labelColumn"] = "l" * 256
    raw["dataset"]["featureColumns"] = columns + ["g" * 256] * 400  # still under the column bound
    message = refusal(raw)
    assert message.startswith("spec: ") and f"more than the {MAX_SPEC_BYTES} a spec may hold" in message


# ----------------------------------------------------------------------------- children bounded
def test_a_cron_run_beyond_the_active_children_limit_is_skipped():
    active = tuple(child(f"nightly-{i}") for i in range(3))
    after, actions = decide_schedule(SCHED, cron_spec(concurrencyPolicy="Allow"),
                                     EvaluationScheduleStatus(), ScheduleObserved(children=active),
                                     NOW, ScheduleLimits(max_active=3))
    assert not created(actions) and Reason.RunSkipped in emitted(actions)
    skipped = [a.message for a in actions if getattr(a, "reason", None) == Reason.RunSkipped]
    assert "3 children are active, the most one schedule may have (policy.maxActivePerSchedule: 3)" \
        in skipped[0]
    # Below the limit it runs.
    _, actions = decide_schedule(SCHED, cron_spec(concurrencyPolicy="Allow"),
                                 EvaluationScheduleStatus(), ScheduleObserved(children=active[:2]),
                                 NOW, ScheduleLimits(max_active=3))
    assert len(created(actions)) == 1


def test_new_models_beyond_the_limit_wait_and_are_never_lost():
    status = EvaluationScheduleStatus(models_listed=True)
    models = tuple(model(f"m{i}.json", minute=40 + i) for i in range(4))
    limits = ScheduleLimits(max_active=2)
    after, actions = decide_schedule(SCHED, trigger_spec(concurrencyPolicy="Allow"), status,
                                     ScheduleObserved(children=(child("old"),), models=models,
                                                      bucket="models"), NOW, limits)
    assert [a.manifest["spec"]["model"]["uri"] for a in created(actions)] == ["s3://models/incoming/m0.json"]
    assert {m.key for m in after.seen_models} == {"incoming/m0.json"}  # the rest are still new
    # Once the children finish, the rest come (two at a time).
    after, actions = decide_schedule(SCHED, trigger_spec(concurrencyPolicy="Allow"), after,
                                     ScheduleObserved(models=models, bucket="models"), NOW, limits)
    assert len(created(actions)) == 2


def test_only_the_oldest_schedules_of_a_namespace_make_runs():
    limits = ScheduleLimits(max_per_namespace=2)
    after, actions = decide_schedule(SCHED, cron_spec(), EvaluationScheduleStatus(),
                                     ScheduleObserved(older_schedules=2), NOW, limits)
    assert not created(actions)
    ready = after.condition(SC.Ready)
    assert (ready.status, ready.reason) == ("False", Reason.TooManySchedules)
    assert "at most 2 make runs (policy.maxSchedulesPerNamespace)" in ready.message
    _, actions = decide_schedule(SCHED, cron_spec(), EvaluationScheduleStatus(),
                                 ScheduleObserved(older_schedules=1), NOW, limits)
    assert len(created(actions)) == 1


def test_older_schedules_are_counted_from_the_index():
    index = {"ns": [("2026-11-22T10:00:00Z", "a"), ("2026-11-22T11:00:00Z", "nightly"),
                    ("2026-11-22T11:00:00Z", "b"), ("2026-11-22T12:00:00Z", "c")],
             "other": [("2026-11-22T09:00:00Z", "x")]}
    assert handlers.older_schedules(index, SCHED, "2026-11-22T11:00:00Z") == 2  # a, and b by name
    assert handlers.schedules_by_namespace(namespace="ns", name="n", meta={
        "creationTimestamp": "2026-11-22T11:00:00Z"}) == {"ns": ("2026-11-22T11:00:00Z", "n")}


# ----------------------------------------------------------------------------- children read in pages
class PagedCustom:
    """Serves ``count`` children, ``limit`` per request, as the API server's continue tokens."""

    def __init__(self, count: int):
        self.count, self.requests = count, []

    def list_namespaced_custom_object(self, group, version, namespace, plural, label_selector,
                                      limit, _continue=None):
        start = int(_continue or 0)
        self.requests.append((start, limit))
        end = min(start + limit, self.count)
        items = [{"metadata": {"name": f"c{i}", "ownerReferences": [{"uid": "s-uid"}]},
                  "spec": {"dataset": {"featureColumns": ["x"] * 1000}},
                  "status": {"phase": "Succeeded"}} for i in range(start, end)]
        return {"items": items, "metadata": {"continue": str(end) if end < self.count else ""}}


def test_children_are_read_a_page_at_a_time_and_only_their_fields_kept():
    kube = Kube.__new__(Kube)
    kube.custom = PagedCustom(25)
    runtime = ScheduleRuntime(OperatorSettings(_env_file=None), lambda: kube)
    children = runtime.children(SCHED)
    assert [c.name for c in children] == [f"c{i}" for i in range(25)]
    assert kube.custom.requests == [(0, 10), (10, 10), (20, 10)]
    assert not any(hasattr(c, "spec") for c in children)


# ----------------------------------------------------------------------------- refused creates
def test_a_refused_child_sets_ready_false_with_an_event_and_is_not_retried(monkeypatch):
    from modeleval.controller import schedule_runtime as srt
    warned = []
    monkeypatch.setattr(srt.kopf, "warn", lambda body, reason, message: warned.append(reason))

    class Refusing:
        def create_evaluation(self, manifest):
            error = ApiException(status=413, reason="Request Entity Too Large")
            raise CreateRefused("ModelEvaluation ns/nightly-1", error)

    runtime = ScheduleRuntime(OperatorSettings(_env_file=None), lambda: Refusing())
    after, actions = decide_schedule(SCHED, cron_spec(), EvaluationScheduleStatus(),
                                     ScheduleObserved(), NOW)
    refused = runtime.act(None, SCHED, [a for a in actions if isinstance(a, CreateChild)])
    record_refusals(after, refused, SCHED.generation, NOW)
    assert warned == [Reason.CreateRefused]
    ready = after.condition(SC.Ready)
    assert (ready.status, ready.reason) == ("False", Reason.CreateRefused)
    assert "HTTP 413 Request Entity Too Large" in ready.message
    # The cron time was consumed: the next round (same minute) makes no second attempt.
    _, again = decide_schedule(SCHED, cron_spec(), after, ScheduleObserved(), NOW)
    assert not created(again)


# ----------------------------------------------------------------------------- slot bookkeeping
def test_slot_lines_of_gone_keys_are_pruned():
    clock = [0.0]
    slots = Slots(1, refresh=0.0, forget_after=10.0, grace=5.0, clock=lambda: clock[0])
    for i in range(500):  # 500 namespaces (or Ray heads) that come and go
        key = f"namespace/ns{i}"
        assert acquire(slots, key, f"u{i}", f"u{i}", 0.0, lambda: []).granted
        slots.release(key, f"u{i}")
    clock[0] = 100.0
    acquire(slots, "namespace/last", "u", "u", 0.0, lambda: [])
    assert len(slots._lines) <= 2


def test_a_line_with_holders_or_waiters_is_kept():
    clock = [0.0]
    slots = Slots(1, refresh=0.0, forget_after=10.0, grace=5.0, clock=lambda: clock[0])
    acquire(slots, "held", "u1", "u1", 0.0, lambda: ["u1"])
    clock[0] = 100.0
    acquire(slots, "other", "u2", "u2", 0.0, lambda: [])
    assert "held" in slots._lines


def test_the_cli_refuses_an_oversized_manifest_in_one_line():
    from modeleval.runner import ManifestError, parse_manifest
    spec = table_spec([f"f{i:05d}" + "x" * 120 for i in range(10_000)])
    spec["dataset"]["featureColumns"] += ["g" * 250] * 600
    manifest = {"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
                "metadata": {"name": "big"}, "spec": spec}
    with pytest.raises(ManifestError) as error:
        parse_manifest(json.dumps(manifest))
    message = str(error.value)
    assert "\n" not in message and "spec: " in message and "a spec may hold" in message


def test_kopf_lists_evaluations_a_page_at_a_time():
    """kopf's own listing (at start, after a watch expires) would otherwise read every
    evaluation of a namespace in one response: 100 children of a 1.3 MB template are 130 MB of
    JSON, above the operator's memory limit once parsed."""
    import kopf
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert settings.watching.chunk_size == 10
