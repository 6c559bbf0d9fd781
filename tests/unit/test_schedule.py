"""The EvaluationSchedule's decisions, as plain calls of the pure ``decide_schedule`` with an
explicit ``now``: due and missed cron runs, concurrency policies, suspend, history, the
new-model trigger's dedupe by key and ETag (across restarts: the state is the status), and
degradation against the previous run or a champion."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from modeleval.api.direction import improvement
from modeleval.api.reasons import Reason
from modeleval.api.schedule import (RUNS_LIMIT, SCHEDULE_LABEL, EvaluationScheduleSpec,
                                    EvaluationScheduleStatus, SeenModel)
from modeleval.api.schedule import ScheduleConditionType as SC
from modeleval.api.spec import format_validation_error
from modeleval.api.status import DataDriftStatus
from modeleval.controller.actions import Emit
from modeleval.controller.observed import ObjectIdentity
from modeleval.controller.policy import InvalidSpec
from modeleval.controller.schedule import (SEEN_LIMIT, Child, CreateChild, DeleteChild, ModelObject,
                                           ScheduleObserved, cron_child_name,
                                           decide_schedule, model_child_name, parse_schedule_spec,
                                           wants_models)

from drift_documents import data_drift

UTC = timezone.utc
NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)
SCHED = ObjectIdentity(name="nightly", namespace="ns", uid="s-uid", generation=2,
                 created=datetime(2026, 11, 22, 11, 0, tzinfo=UTC))
TEMPLATE = {"task": "ranking", "model": {"uri": "s3://models/champion.json"},
            "dataset": {"uri": "s3://data/fresh.txt"}, "metrics": ["ndcg@10", "map"]}
PREFIX = "s3://models/incoming/"


def spec(**extra: Any) -> EvaluationScheduleSpec:
    return EvaluationScheduleSpec.model_validate({"template": TEMPLATE, **extra})


def cron_spec(**extra: Any) -> EvaluationScheduleSpec:
    return spec(schedule="0 * * * *", **extra)


def trigger_spec(**extra: Any) -> EvaluationScheduleSpec:
    return spec(trigger={"newModel": {"prefix": PREFIX}}, **extra)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 22, hour, minute, tzinfo=UTC)


def child(name: str, phase: str | None = "Running", created: datetime | None = None,
          completed: datetime | None = None, metric: float | None = None, **extra: Any) -> Child:
    metrics = {"ndcg@10": metric} if metric is not None else {}
    return Child(name=name, phase=phase, created=created or at(11, 30), completed=completed,
                 metrics=metrics, **extra)


def model(key: str, etag: str = "e1", minute: int = 50) -> ModelObject:
    return ModelObject(key=f"incoming/{key}", etag=etag, last_modified=at(11, minute))


def decide(s: EvaluationScheduleSpec | InvalidSpec, status: EvaluationScheduleStatus | None = None,
           now: datetime = NOW, **observed: Any):
    return decide_schedule(SCHED, s, status or EvaluationScheduleStatus(),
                           ScheduleObserved(**observed), now)


def created(actions) -> list[CreateChild]:
    return [a for a in actions if isinstance(a, CreateChild)]


def deleted(actions) -> list[str]:
    return [a.name for a in actions if isinstance(a, DeleteChild)]


def emitted(actions) -> list[Reason]:
    return [a.reason for a in actions if isinstance(a, Emit)]


# ----------------------------------------------------------------------------- the spec


@pytest.mark.parametrize("raw, field", [
    ({"template": TEMPLATE}, "set schedule, trigger or both"),
    ({"schedule": "0 25 * * *", "template": TEMPLATE}, "spec.schedule: hour"),
    ({"schedule": "@daily", "timeZone": "Nowhere/City", "template": TEMPLATE}, "spec.timeZone"),
    ({"trigger": {"newModel": {"prefix": "s3://models/no-slash"}}, "template": TEMPLATE},
     "spec.trigger.newModel.prefix"),
    ({"schedule": "@daily", "concurrencyPolicy": "Sometimes", "template": TEMPLATE},
     "spec.concurrencyPolicy"),
    ({"schedule": "@daily", "degradation": {"maxDrop": 0.01, "against": "champion"},
      "template": TEMPLATE}, "spec.degradation.championModel"),
    ({"schedule": "@daily", "degradation": {"maxDrop": 0.01, "metric": "mrr"}, "template": TEMPLATE},
     "spec.degradation.metric"),
    ({"schedule": "@daily", "template": {**TEMPLATE, "metrics": []}}, "spec.template.metrics"),
])
def test_a_bad_spec_names_the_field(raw, field):
    parsed = parse_schedule_spec(raw)
    assert isinstance(parsed, InvalidSpec) and field in parsed.message


def test_an_invalid_spec_says_so_once():
    bad = parse_schedule_spec({"template": TEMPLATE})
    status, actions = decide(bad)
    assert status.condition(SC.Ready).reason == Reason.InvalidSpec and not status.is_true(SC.Ready)
    assert emitted(actions) == [Reason.InvalidSpec]
    assert decide(bad, status)[1] == []
    listed = EvaluationScheduleStatus(models_listed=True)
    assert not wants_models(bad, listed) and not wants_models(trigger_spec(suspend=True), listed)
    assert wants_models(trigger_spec(), listed)
    # Suspended from the start: listed once, to record what was there before it.
    assert wants_models(trigger_spec(suspend=True), EvaluationScheduleStatus())


# ----------------------------------------------------------------------------- cron


def test_nothing_is_due_before_the_first_cron_time_after_creation():
    status, actions = decide(cron_spec(), now=at(11, 59))
    assert actions == [] and status.last_schedule_time is None
    assert status.next_schedule_time == at(12) and status.is_true(SC.Ready)


def test_a_due_cron_time_creates_one_child_owned_by_the_schedule():
    status, actions = decide(cron_spec())
    (create,) = created(actions)
    name = cron_child_name("nightly", at(12))
    assert name == f"nightly-{int(at(12).timestamp()) // 60}" and len(name) <= 63
    meta = create.manifest["metadata"]
    assert meta["name"] == name and meta["namespace"] == "ns"
    assert meta["labels"] == {SCHEDULE_LABEL: "nightly"}
    assert meta["ownerReferences"] == [{"apiVersion": "modeleval.dev/v1alpha1",
                                        "kind": "EvaluationSchedule", "name": "nightly",
                                        "uid": "s-uid", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert create.manifest["kind"] == "ModelEvaluation"
    assert create.manifest["spec"]["model"]["uri"] == "s3://models/champion.json"
    assert status.last_schedule_time == at(12) and status.last_run == name
    assert status.active == [name] and status.next_schedule_time == at(13)
    # The next round (child now listed) makes nothing more.
    again, actions = decide(cron_spec(), status, children=(child(name, created=at(12)),))
    assert created(actions) == [] and again.active == [name]


def test_missed_cron_times_after_downtime_run_once_for_the_latest():
    status = EvaluationScheduleStatus(last_schedule_time=at(8))
    status, actions = decide(cron_spec(), status)  # down from 08:00 to 12:00:30
    (create,) = created(actions)
    assert create.manifest["metadata"]["name"] == cron_child_name("nightly", at(12))
    assert "3 earlier cron time(s) missed" in create.message
    assert status.last_schedule_time == at(12)


def test_a_run_later_than_the_starting_deadline_is_skipped():
    status = EvaluationScheduleStatus(last_schedule_time=at(11))
    status, actions = decide(cron_spec(startingDeadlineSeconds=20), status, now=at(12, 1))
    assert created(actions) == [] and emitted(actions) == [Reason.RunSkipped]
    assert status.last_schedule_time == at(12)  # consumed: not tried again every round
    _, actions = decide(cron_spec(startingDeadlineSeconds=120), EvaluationScheduleStatus(
        last_schedule_time=at(11)), now=at(12, 1))
    assert len(created(actions)) == 1


def test_forbid_skips_a_cron_run_while_one_is_active():
    status, actions = decide(cron_spec(), children=(child("nightly-1"),))
    assert created(actions) == [] and emitted(actions) == [Reason.RunSkipped]
    assert status.active == ["nightly-1"] and status.last_schedule_time == at(12)


def test_allow_runs_beside_the_active_one():
    status, actions = decide(cron_spec(concurrencyPolicy="Allow"), children=(child("nightly-1"),))
    assert len(created(actions)) == 1 and deleted(actions) == []
    assert len(status.active) == 2


def test_replace_deletes_the_active_one_first():
    status, actions = decide(cron_spec(concurrencyPolicy="Replace"), children=(child("nightly-1"),))
    assert deleted(actions) == ["nightly-1"] and len(created(actions)) == 1
    assert Reason.RunReplaced in emitted(actions)
    assert status.active == [cron_child_name("nightly", at(12))]


def test_suspend_makes_no_runs_and_resuming_runs_the_latest_missed_time_once():
    status, actions = decide(cron_spec(suspend=True))
    assert actions == [] and status.condition(SC.Ready).reason == Reason.ScheduleSuspended
    resumed, actions = decide(cron_spec(), status, now=at(15, 0, ) + timedelta(seconds=5))
    assert [c.manifest["metadata"]["name"] for c in created(actions)] == [
        cron_child_name("nightly", at(15))]
    assert resumed.is_true(SC.Ready)


def test_cron_in_a_time_zone():
    s = spec(schedule="0 13 * * *", timeZone="Europe/Berlin")  # 13:00 CET = 12:00 UTC
    status, actions = decide(s)
    assert status.last_schedule_time == at(12) and len(created(actions)) == 1


@pytest.mark.parametrize("schedule, zone", [
    ("0 0 * * 0/2", None), ("? * * * *", None), ("@every 90m", None), ("0 12 * * *,1", None),
    ("0 1 * * *", "America/Argentina/ComodRivadavia"), ("0 1 * * *", "Etc/GMT+5"),
])
def test_what_a_cronjob_accepts_a_schedule_accepts(schedule, zone):
    assert isinstance(parse_schedule_spec({"schedule": schedule, "timeZone": zone,
                                           "template": TEMPLATE}), EvaluationScheduleSpec)


@pytest.mark.parametrize("schedule, says", [
    ("0 0 * * 7", "day of week: 7 is above 6"), ("*/ * * * *", "minute step"),
    ("0 0 1-5/ * *", "day of month step"), ("TZ=UTC 0 0 * * *", "TZ or CRON_TZ"),
    ("@every 1 hour", "@every"),
])
def test_what_a_cronjob_refuses_a_schedule_refuses(schedule, says):
    parsed = parse_schedule_spec({"schedule": schedule, "template": TEMPLATE})
    assert isinstance(parsed, InvalidSpec) and f"spec.schedule: {says}" in parsed.message


def test_a_schedule_that_never_fires_says_so_once_and_makes_nothing():
    s = spec(schedule="0 0 30 2 *")  # accepted by the API server, as a CronJob's
    status, actions = decide(s)
    assert created(actions) == [] and emitted(actions) == [Reason.InvalidSpec]
    ready = status.condition(SC.Ready)
    assert not ready.true and "never fires" in ready.message and status.next_schedule_time is None
    assert decide(s, status)[1] == []


def test_hourly_across_the_repeated_hour_runs_each_elapsed_hour():
    # New York, 2026-11-01: 01:00 EDT (05:00 UTC) and 01:00 EST (06:00 UTC) both run.
    s = spec(schedule="@hourly", timeZone="America/New_York")
    status = EvaluationScheduleStatus(last_schedule_time=datetime(2026, 11, 1, 5, tzinfo=UTC))
    status, actions = decide(s, status, now=datetime(2026, 11, 1, 6, 0, 5, tzinfo=UTC))
    assert status.last_schedule_time == datetime(2026, 11, 1, 6, tzinfo=UTC)
    assert len(created(actions)) == 1
    assert status.next_schedule_time == datetime(2026, 11, 1, 7, tzinfo=UTC)


# ----------------------------------------------------------------------------- history


def test_history_limits_delete_the_oldest_finished_children():
    children = tuple(child(f"ok-{i}", "Succeeded", completed=at(10, i), metric=0.8) for i in range(5)) + \
        tuple(child(f"bad-{i}", "Failed", completed=at(10, 10 + i)) for i in range(3)) + \
        (child("gone", "Succeeded", completed=at(9), deleting=True), child("running"))
    _, actions = decide(cron_spec(successfulHistoryLimit=2, failedHistoryLimit=1), now=at(11, 59),
                        children=children)
    assert sorted(deleted(actions)) == ["bad-0", "bad-1", "ok-0", "ok-1", "ok-2"]
    _, actions = decide(cron_spec(successfulHistoryLimit=0, failedHistoryLimit=0), now=at(11, 59),
                        children=children)
    assert len(deleted(actions)) == 8 and "running" not in deleted(actions)


# ----------------------------------------------------------------------------- new models


def test_what_is_under_the_prefix_at_the_first_listing_is_only_recorded():
    objects = (model("a.json"), model("b.json", minute=55))
    status, actions = decide(trigger_spec(), models=objects, bucket="models")
    assert actions == [] and status.models_listed and status.seen_before is None
    assert {m.key for m in status.seen_models} == {"incoming/a.json", "incoming/b.json"}
    status, actions = decide(trigger_spec(concurrencyPolicy="Allow"), status, models=objects,
                             bucket="models")
    assert actions == []
    # More than the seen list holds: the oldest are covered by seenBefore instead.
    many = tuple(ModelObject(f"incoming/k{i}", "e", at(10) + timedelta(seconds=i))
                 for i in range(SEEN_LIMIT + 5))
    status, _ = decide(trigger_spec(), models=many, bucket="models")
    assert len(status.seen_models) == SEEN_LIMIT and status.seen_before == many[4].last_modified
    _, actions = decide(trigger_spec(concurrencyPolicy="Allow"), status, models=many,
                        bucket="models")
    assert actions == []


def test_a_new_model_is_evaluated_once_by_key_and_etag():
    listed = EvaluationScheduleStatus(models_listed=True, seen_before=at(11, 0))
    objects = (model("old.json", minute=0), model("new.json", "e1", 50))
    status, actions = decide(trigger_spec(), listed, models=objects, bucket="models")
    (create,) = created(actions)
    name = model_child_name("nightly", "incoming/new.json", "e1")
    assert create.manifest["metadata"]["name"] == name
    assert create.manifest["spec"]["model"]["uri"] == "s3://models/incoming/new.json"
    assert create.manifest["metadata"]["annotations"]["modeleval.dev/model-etag"] == "e1"
    assert [(m.key, m.etag) for m in status.seen_models] == [("incoming/new.json", "e1")]
    # The status is the memory: a restarted operator (same status) makes no second child.
    again, actions = decide(trigger_spec(concurrencyPolicy="Allow"), status, models=objects,
                            bucket="models")
    assert created(actions) == []
    # The same key uploaded again (a new ETag) is a new model.
    objects = (model("new.json", "e2", 58),)
    _, actions = decide(trigger_spec(), again, models=objects, bucket="models")
    assert [c.manifest["metadata"]["name"] for c in created(actions)] == [
        model_child_name("nightly", "incoming/new.json", "e2")]


def test_trigger_format_overrides_the_templates():
    listed = EvaluationScheduleStatus(models_listed=True)
    s = spec(trigger={"newModel": {"prefix": PREFIX, "format": "onnx"}})
    _, actions = decide(s, listed, models=(model("m.onnx"),), bucket="models")
    assert created(actions)[0].manifest["spec"]["model"] == {
        "uri": "s3://models/incoming/m.onnx", "format": "onnx"}


def test_forbid_makes_a_new_model_wait_never_lose_it():
    listed = EvaluationScheduleStatus(models_listed=True)
    objects = (model("a.json", minute=10), model("b.json", minute=20))
    status, actions = decide(trigger_spec(), listed, models=objects, bucket="models",
                             children=(child("busy"),))
    assert actions == [] and status.seen_models == []
    status, actions = decide(trigger_spec(), status, models=objects, bucket="models")
    assert [c.manifest["spec"]["model"]["uri"] for c in created(actions)] == [
        "s3://models/incoming/a.json"]  # oldest first, one at a time
    status, actions = decide(trigger_spec(), status, models=objects, bucket="models",
                             children=(child(status.last_run, "Succeeded", completed=at(12)),))
    assert [c.manifest["spec"]["model"]["uri"] for c in created(actions)] == [
        "s3://models/incoming/b.json"]


def test_allow_evaluates_each_new_model_and_replace_the_newest():
    listed = EvaluationScheduleStatus(models_listed=True)
    objects = tuple(model(f"m{i}.json", minute=10 + i) for i in range(3))
    _, actions = decide(trigger_spec(concurrencyPolicy="Allow"), listed, models=objects,
                        bucket="models", children=(child("busy"),))
    assert len(created(actions)) == 3
    status, actions = decide(trigger_spec(concurrencyPolicy="Replace"), listed, models=objects,
                             bucket="models", children=(child("busy"),))
    assert deleted(actions) == ["busy"]
    assert [c.manifest["spec"]["model"]["uri"] for c in created(actions)] == [
        "s3://models/incoming/m2.json"]
    assert emitted(actions).count(Reason.RunSkipped) == 2 and len(status.seen_models) == 3


def registry_spec(**extra: Any) -> EvaluationScheduleSpec:
    return spec(trigger={"newModel": {"registeredModel": "ranker"}}, **extra)


def version(number: int, minute: int, created_ms: int | None = None) -> ModelObject:
    when = at(11, minute)
    return ModelObject(key=f"models:/ranker/{number}",
                       etag=str(created_ms or int(when.timestamp() * 1000)), last_modified=when)


@pytest.mark.parametrize("trigger", [{}, {"prefix": PREFIX, "registeredModel": "ranker"}])
def test_a_trigger_watches_a_prefix_or_a_registered_model_never_both(trigger):
    with pytest.raises(Exception) as refused:
        spec(trigger={"newModel": trigger})
    assert "set exactly one of prefix and registeredModel" in str(refused.value)


def test_a_new_registered_version_is_evaluated_once_as_its_models_uri():
    first = (version(1, 0), version(2, 10))
    status, actions = decide(registry_spec(), models=first)
    assert created(actions) == [] and status.models_listed  # what was there: only recorded
    assert status.models_source == "models:/ranker"
    status, actions = decide(registry_spec(), status, models=(*first, version(3, 40)))
    (create,) = created(actions)
    assert create.manifest["spec"]["model"]["uri"] == "models:/ranker/3"
    assert "the new version models:/ranker/3" in create.message
    assert create.manifest["metadata"]["annotations"]["modeleval.dev/model-key"] == \
        "models:/ranker/3"
    # A restarted operator (the same status) makes no second child for version 3.
    _, actions = decide(registry_spec(concurrencyPolicy="Allow"), status,
                        models=(*first, version(3, 40)),
                        children=(child(status.last_run, "Succeeded", completed=at(12)),))
    assert created(actions) == []
    # The model deleted and registered again: version 1 anew, made later, is a new model.
    _, actions = decide(registry_spec(), status, models=(version(1, 55),),
                        children=(child(status.last_run, "Succeeded", completed=at(12)),))
    assert [c.manifest["spec"]["model"]["uri"] for c in created(actions)] == ["models:/ranker/1"]


def test_a_schedule_edited_to_watch_another_source_lists_it_afresh():
    status, _ = decide(trigger_spec(), models=(model("a.json"),), bucket="models")
    assert status.models_source == PREFIX
    status, actions = decide(registry_spec(), status, models=(version(1, 0), version(2, 5)))
    assert created(actions) == [] and status.models_source == "models:/ranker"
    assert [m.key for m in status.seen_models] == ["models:/ranker/2", "models:/ranker/1"]
    # A status written before modelsSource existed listed the same source.
    old = EvaluationScheduleStatus(models_listed=True)
    _, actions = decide(registry_spec(), old, models=(version(4, 50),))
    assert [c.manifest["spec"]["model"]["uri"] for c in created(actions)] == ["models:/ranker/4"]


def test_the_seen_list_is_bounded_and_nothing_falls_out_of_it_unseen():
    old = [SeenModel(key=f"incoming/k{i}", etag="e", last_modified=at(10) + timedelta(seconds=i))
           for i in range(SEEN_LIMIT)]
    status = EvaluationScheduleStatus(models_listed=True, seen_models=list(reversed(old)))
    objects = tuple(ModelObject(m.key, m.etag, m.last_modified) for m in old) + (model("new.json"),)
    status, actions = decide(trigger_spec(), status, models=objects, bucket="models")
    assert len(created(actions)) == 1 and len(status.seen_models) == SEEN_LIMIT
    assert status.seen_before == old[0].last_modified
    _, actions = decide(trigger_spec(concurrencyPolicy="Allow"), status, models=objects,
                        bucket="models")
    assert created(actions) == []


def test_a_prefix_that_cannot_be_listed_says_so_once():
    listed = EvaluationScheduleStatus(models_listed=True)
    status, actions = decide(trigger_spec(), listed, bucket="models",
                             models_error="cannot list s3://models/incoming/: AccessDenied")
    assert status.condition(SC.Ready).reason == Reason.ModelListFailed
    assert emitted(actions) == [Reason.ModelListFailed]
    _, actions = decide(trigger_spec(), status, bucket="models", models_error="again")
    assert actions == []


# ----------------------------------------------------------------------------- metric, Degraded


def test_metric_and_its_change_from_the_run_before():
    s = cron_spec(degradation={"maxDrop": 0.02})
    first = (child("r1", "Succeeded", completed=at(11, 1), metric=0.80),)
    status, actions = decide(s, now=at(11, 59), children=first)
    assert status.last_primary_metric == 0.80 and status.metric_change is None
    assert status.condition(SC.Degraded) is None and actions == []
    both = first + (child("r2", "Succeeded", completed=at(11, 40), metric=0.79),)
    status, actions = decide(s, status, now=at(11, 59), children=both)
    assert status.last_completed_run == "r2" and status.metric_change == pytest.approx(-0.01)
    assert not status.is_true(SC.Degraded) and actions == []
    assert status.condition(SC.Degraded).reason == Reason.MetricWithinBounds


def test_degraded_turns_true_with_one_event_and_back():
    s = cron_spec(degradation={"maxDrop": 0.02})
    status = EvaluationScheduleStatus(last_primary_metric=0.80, last_completed_run="r1",
                                      last_completion_time=at(11, 1))
    worse = (child("r2", "Succeeded", completed=at(11, 40), metric=0.70),)
    status, actions = decide(s, status, now=at(11, 59), children=worse)
    assert status.is_true(SC.Degraded) and emitted(actions) == [Reason.MetricDegraded]
    assert "worse by 0.1000" in status.condition(SC.Degraded).message
    status, actions = decide(s, status, now=at(11, 59), children=worse)
    assert actions == [] and status.is_true(SC.Degraded)  # no second Event
    better = worse + (child("r3", "Succeeded", completed=at(11, 50), metric=0.71),)
    status, _ = decide(s, status, now=at(11, 59), children=better)
    assert not status.is_true(SC.Degraded)


def test_several_runs_finished_while_away_are_compared_in_order():
    s = cron_spec(degradation={"maxDrop": 0.05})
    runs = (child("r1", "Succeeded", completed=at(11, 1), metric=0.9),
            child("r2", "Succeeded", completed=at(11, 2), metric=0.8),
            child("r3", "Succeeded", completed=at(11, 3), metric=0.79))
    status, _ = decide(s, now=at(11, 59), children=runs)
    assert status.previous_primary_metric == 0.8 and not status.is_true(SC.Degraded)


def test_loss_metrics_degrade_upwards():
    assert improvement("rmse", 1.2, 1.0) == pytest.approx(-0.2)
    assert improvement("ndcg@10", 0.7, 0.8) == pytest.approx(-0.1)
    template = {**TEMPLATE, "task": "regression", "metrics": ["rmse"]}
    s = EvaluationScheduleSpec.model_validate({"schedule": "@hourly", "template": template,
                                               "degradation": {"maxDrop": 0.1}})
    status = EvaluationScheduleStatus(last_primary_metric=1.0, last_completion_time=at(11))
    runs = (Child("r2", "Succeeded", at(11, 5), at(11, 10), {"rmse": 1.2}),)
    status, _ = decide(s, status, now=at(11, 59), children=runs)
    assert status.is_true(SC.Degraded) and status.metric_change == pytest.approx(0.2)


def test_degradation_against_a_champion_uses_the_childs_baseline_delta():
    s = trigger_spec(degradation={"maxDrop": 0.01, "against": "champion",
                                  "championModel": {"uri": "s3://models/champion.json"}})
    listed = EvaluationScheduleStatus(models_listed=True)
    status, actions = decide(s, listed, models=(model("cand.json"),), bucket="models")
    spec_ = created(actions)[0].manifest["spec"]
    assert spec_["baseline"] == {"model": {"uri": "s3://models/champion.json"}}
    assert spec_["model"]["uri"] == "s3://models/incoming/cand.json"
    run = (child(status.last_run, "Succeeded", completed=at(12), metric=0.75,
                 deltas={"ndcg@10": -0.05}),)
    status, actions = decide(s, status, models=(model("cand.json"),), bucket="models", children=run)
    assert status.metric_change == pytest.approx(-0.05) and status.is_true(SC.Degraded)
    assert "the champion's 0.8000" in status.condition(SC.Degraded).message
    assert Reason.MetricDegraded in emitted(actions)


def test_spec_errors_format_like_the_evaluations():
    from pydantic import ValidationError
    with pytest.raises(ValidationError) as error:
        EvaluationScheduleSpec.model_validate({"schedule": "@daily", "template": TEMPLATE,
                                               "successfulHistoryLimit": -1})
    assert "spec.successfulHistoryLimit" in format_validation_error(error.value, "spec")


def test_every_schedule_example_validates():
    import yaml
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    found = [d for p in sorted(examples.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
             if d and d.get("kind") == "EvaluationSchedule"]
    assert found
    for doc in found:
        assert isinstance(parse_schedule_spec(doc["spec"]), EvaluationScheduleSpec)
        assert len(doc["metadata"]["name"]) <= 52


def test_the_gauges_follow_the_status_and_go_with_the_schedule():
    from prometheus_client import REGISTRY

    from modeleval.controller import telemetry

    labels = {"namespace": "ns", "schedule": "gauged"}
    telemetry.observe_schedule("ns", "gauged", 0.75, True)
    assert REGISTRY.get_sample_value("modeleval_schedule_primary_metric", labels) == 0.75
    assert REGISTRY.get_sample_value("modeleval_schedule_degraded", labels) == 1
    telemetry.observe_schedule("ns", "gauged", None, False)
    assert REGISTRY.get_sample_value("modeleval_schedule_primary_metric", labels) == 0.75
    assert REGISTRY.get_sample_value("modeleval_schedule_degraded", labels) == 0
    telemetry.forget_schedule("ns", "gauged")
    telemetry.forget_schedule("ns", "gauged")  # twice is fine
    assert REGISTRY.get_sample_value("modeleval_schedule_degraded", labels) is None


def test_a_run_finishing_in_the_same_second_as_the_last_one_recorded_still_counts():
    s = cron_spec(degradation={"maxDrop": 0.05})
    status = EvaluationScheduleStatus(last_primary_metric=0.8, last_completed_run="r1",
                                      last_completion_time=at(11, 1))
    runs = (child("r1", "Succeeded", completed=at(11, 1), metric=0.8),
            child("r2", "Succeeded", completed=at(11, 1), metric=0.7))
    status, actions = decide(s, status, now=at(11, 59), children=runs)
    assert status.last_completed_run == "r2" and status.is_true(SC.Degraded)
    again, actions = decide(s, status, now=at(11, 59), children=runs)
    assert actions == [] and again.previous_primary_metric == 0.8


def test_a_schedule_created_suspended_records_the_prefix_and_evaluates_what_comes_later():
    s = trigger_spec(suspend=True)
    status, actions = decide(s, models=(model("before.json"),), bucket="models")
    assert actions == [] and status.models_listed
    objects = (model("before.json"), model("during.json", minute=55))
    status, actions = decide(trigger_spec(), status, models=objects, bucket="models")
    assert [c.manifest["spec"]["model"]["uri"] for c in created(actions)] == [
        "s3://models/incoming/during.json"]


# ----------------------------------------------------------------------------- runs, DataDrift


def drift_of(planted: tuple[str, ...]) -> DataDriftStatus:
    """A child's status.drift, from the engine's comparison of generated data."""
    return DataDriftStatus.of(data_drift(planted).model_dump(by_alias=True))


def test_a_childs_drift_is_read_from_its_status():
    drift = drift_of(("2", "5", "7"))
    obj = {"metadata": {"name": "r1"}, "status": {"phase": "Succeeded", "metrics": {"ndcg@10": 0.8},
                                                  "drift": drift.model_dump(by_alias=True, mode="json")}}
    assert Child.of(obj).drift == drift
    assert Child.of({"metadata": {"name": "r2"}, "status": {"phase": "Succeeded"}}).drift is None


def test_each_completed_run_is_recorded_newest_first_with_its_drift_and_bounded():
    s = cron_spec()
    runs = (child("r1", "Succeeded", completed=at(11, 1), metric=0.8),
            child("r2", "Succeeded", completed=at(11, 2), metric=0.7, drift=drift_of(())),
            child("r3", "Succeeded", completed=at(11, 3), metric=0.6,
                  drift=drift_of(("2", "5", "7"))),
            child("r4", "Failed", completed=at(11, 4)))
    status, _ = decide(s, now=at(11, 59), children=runs)
    assert [(r.name, r.metric, r.drifted, r.drifted_share) for r in status.runs] == [
        ("r3", 0.6, True, 0.375), ("r2", 0.7, False, 0.0), ("r1", 0.8, None, None)]
    again, _ = decide(s, status, now=at(11, 59), children=runs)
    assert again.runs == status.runs  # a run is recorded once
    many = tuple(child(f"m{i:02d}", "Succeeded", completed=at(11, 10 + i), metric=0.5)
                 for i in range(RUNS_LIMIT + 3))
    status, _ = decide(s, status, now=at(11, 59), children=many)
    assert [r.name for r in status.runs] == [f"m{i:02d}" for i in range(RUNS_LIMIT + 2, 2, -1)]


def test_data_drift_follows_the_latest_compared_run_with_one_event():
    s = cron_spec(successfulHistoryLimit=10)
    steady = (child("r1", "Succeeded", completed=at(11, 1), metric=0.8, drift=drift_of(())),)
    status, actions = decide(s, now=at(11, 59), children=steady)
    assert status.condition(SC.DataDrift).reason == Reason.NoDataDrift and actions == []
    drifted = steady + (child("r2", "Succeeded", completed=at(11, 2), metric=0.8,
                              drift=drift_of(("2", "5", "7"))),)
    status, actions = decide(s, status, now=at(11, 59), children=drifted)
    condition = status.condition(SC.DataDrift)
    assert status.is_true(SC.DataDrift) and condition.reason == Reason.DataDrifted
    assert condition.message.startswith("r2: the data drifted from evaluation weekly-1: 3 of 8 "
                                        "features drifted (38%); most drifted: ")
    assert [(a.reason, a.message, a.warning) for a in actions if isinstance(a, Emit)] == [
        (Reason.DataDrifted, condition.message, True)]
    status, actions = decide(s, status, now=at(11, 59), children=drifted)
    assert actions == [] and status.is_true(SC.DataDrift)  # no second Event
    # A run that compared nothing leaves the condition as the last comparison left it.
    unmeasured = drifted + (child("r3", "Succeeded", completed=at(11, 3), metric=0.8),)
    status, _ = decide(s, status, now=at(11, 59), children=unmeasured)
    assert status.is_true(SC.DataDrift) and status.runs[0].drifted is None
    calm = unmeasured + (child("r4", "Succeeded", completed=at(11, 4), metric=0.8,
                               drift=drift_of(())),)
    status, actions = decide(s, status, now=at(11, 59), children=calm)
    assert not status.is_true(SC.DataDrift) and actions == []
    assert status.condition(SC.DataDrift).message.startswith("r4: the data did not drift")


def test_no_run_that_compared_its_data_no_data_drift_condition():
    status, _ = decide(cron_spec(), now=at(11, 59),
                       children=(child("r1", "Succeeded", completed=at(11, 1), metric=0.8),))
    assert status.condition(SC.DataDrift) is None and status.runs[0].drifted is None
