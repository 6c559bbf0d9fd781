"""Events: the CloudEvent every sink receives (the CloudEvents 1.0 spec's attributes), the
webhook's HMAC signature and Slack message, and the outbox as decide() keeps it: a transition's
events wait in status before any is sent, a send is chosen for those already written, the
sinks' answers remove what they acknowledged and back off the rest."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import timedelta

import pytest
from pydantic import ValidationError

from modeleval.api import spec as spec_module
from modeleval.api.events import (CONTENT_TYPE, SIGNATURE_HEADER, EventData, EventSink,
                                  EventType, PendingEvent, cloud_event, encode, event_id,
                                  object_source)
from modeleval.api.reasons import Reason
from modeleval.api.status import ConditionType as C, Phase
from modeleval.api.results import GateResult
from modeleval.controller.actions import SendEvents
from modeleval.controller.decide import decide
from modeleval.controller.events import Delivery, record_deliveries
from modeleval.controller.policy import InvalidSpec, parse_spec
from modeleval.controller.settings import OperatorSettings
from modeleval.controller.sinks import signature, slack_message, webhook_request

from .test_decide import (DRIFTED, EV, NOW, RUNNING, doc, finished_with, job, ready, seen, spec,
                         status)

HOOK = {"name": "hook", "webhook": {"url": "http://receiver.example/events",
                                    "secretRef": {"name": "hook-key", "key": "key"}}}
BUS = {"name": "bus", "kafka": {"bootstrapServers": "kafka-0:9092,kafka-1:9092", "topic": "ml"}}
SETTINGS = OperatorSettings(mongodb_uri="mongodb://store", backoff_base=10, backoff_max=300,
                            allow_object_event_sinks=True, events_backoff_base=5,
                            events_backoff_max=60, _env_file=None)
PLATFORM = OperatorSettings(mongodb_uri="mongodb://store", _env_file=None,
                            event_sinks=[EventSink.model_validate(BUS)])


def sinks(*named: dict) -> dict:
    return {"events": {"sinks": list(named)}}


def waiting(kind: EventType = EventType.Succeeded, sinks=("hook",), age: float = 10,
            **extra) -> PendingEvent:
    data = EventData(kind="ModelEvaluation", name="ev", namespace="ns", uid="u1", attempt=1,
                     phase="Succeeded")
    return PendingEvent(id=event_id("u1", 1, kind), type=kind, time=NOW - timedelta(seconds=age),
                        sinks=list(sinks), data=data, **extra)


# --------------------------------------------------------------------------- the CloudEvent
def test_the_cloudevent_has_the_spec_s_required_attributes_and_structured_json_shape():
    event = cloud_event(waiting(), object_source("modelevaluations", "ns", "ev"))
    # CloudEvents 1.0: id, source, specversion, type are REQUIRED non-empty strings.
    for attribute in ("id", "source", "specversion", "type"):
        assert isinstance(event[attribute], str) and event[attribute]
    assert event["specversion"] == "1.0"
    assert event["source"] == "/apis/modeleval.dev/v1alpha1/namespaces/ns/modelevaluations/ev"
    assert event["type"] == "dev.modeleval.evaluation.succeeded"
    assert event["subject"] == "ns/ev"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])  # RFC 3339
    assert event["datacontenttype"] == "application/json"
    assert event["data"]["uid"] == "u1" and event["data"]["phase"] == "Succeeded"
    # Attribute names: lower-case letters and digits only (spec: naming conventions).
    assert all(re.fullmatch(r"[a-z0-9]{1,20}", name) for name in event)
    assert json.loads(encode(event)) == event
    assert CONTENT_TYPE == "application/cloudevents+json"


def test_the_id_comes_from_uid_attempt_and_type_so_a_resent_event_is_the_same_event():
    assert event_id("u1", 2, EventType.GateFailed) == "u1.2.gatefailed"
    ids = {event_id(uid, attempt, kind) for uid in ("u1", "u2") for attempt in (1, 2)
           for kind in EventType}
    assert len(ids) == 2 * 2 * len(EventType)


def test_the_events_api_group_is_the_crds():
    from modeleval.api import events
    assert events.API_GROUP == spec_module.API_GROUP


def test_a_sink_is_exactly_one_of_webhook_and_kafka_and_names_are_unique():
    with pytest.raises(ValidationError, match="exactly one of webhook and kafka"):
        EventSink.model_validate({"name": "x"})
    with pytest.raises(ValidationError, match="exactly one of webhook and kafka"):
        EventSink.model_validate({**HOOK, "kafka": BUS["kafka"]})
    with pytest.raises(ValidationError, match="hook named twice"):
        spec(**sinks(HOOK, HOOK))
    with pytest.raises(ValidationError, match="bootstrapServers"):
        spec(**sinks({"name": "b", "kafka": {"bootstrapServers": "no port", "topic": "t"}}))


def test_a_spec_s_own_sinks_are_refused_unless_the_platform_allows_them():
    raw = {"task": "ranking", "model": {"uri": "s3://models/r.json"}, "dataset": {"uri": "s3://data/t.txt"},
           "metrics": ["ndcg@10"], **sinks(HOOK)}
    refused = parse_spec(raw, OperatorSettings(_env_file=None))
    assert isinstance(refused, InvalidSpec) and refused.reason == Reason.Forbidden
    assert refused.message.startswith("spec.events.sinks:")
    assert not isinstance(parse_spec(raw, SETTINGS), InvalidSpec)


# --------------------------------------------------------------------------- the webhook
def test_the_signature_is_hmac_sha256_of_the_exact_body_and_a_receiver_can_verify_it():
    event = cloud_event(waiting(), "/apis/x")
    sink = EventSink.model_validate(HOOK).webhook
    body, headers = webhook_request(sink, event, b"s3cr3t")
    expected = hmac.new(b"s3cr3t", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], f"sha256={expected}")
    assert signature(b"other", body) != headers[SIGNATURE_HEADER]
    assert signature(b"s3cr3t", body + b" ") != headers[SIGNATURE_HEADER]
    assert headers["Content-Type"] == CONTENT_TYPE and json.loads(body) == event
    _, unsigned = webhook_request(sink, event, None)
    assert SIGNATURE_HEADER not in unsigned


def test_the_slack_message_escapes_what_slack_reads_as_markup():
    pending = waiting(EventType.Failed)
    pending.data.name, pending.data.message = "<!channel>", "a & b <http://x|click>"
    message = slack_message(cloud_event(pending, "/apis/x"))
    text = json.dumps(message)
    assert "<!channel>" not in text and "<http" not in text
    assert message["text"] == "ModelEvaluation ns/&lt;!channel&gt; failed"
    assert "a &amp; b &lt;http://x|click&gt;" in message["blocks"][0]["text"]["text"]
    hook = EventSink.model_validate({**HOOK, "webhook": {**HOOK["webhook"], "format": "slack"}})
    body, headers = webhook_request(hook.webhook, cloud_event(pending, "/x"), b"k")
    assert json.loads(body) == slack_message(cloud_event(pending, "/x"))
    assert headers["Content-Type"] == "application/json" and SIGNATURE_HEADER in headers


# --------------------------------------------------------------------------- the outbox
def sends(actions) -> list[SendEvents]:
    return [a for a in actions if isinstance(a, SendEvents)]


def test_a_round_that_succeeds_writes_its_events_to_status_and_sends_none_yet():
    the_spec = spec(**sinks(HOOK, BUS))
    gate = GateResult(passed=False, rules=[])
    after, actions = decide(EV, the_spec, RUNNING, finished_with(DRIFTED).__class__(
        **{**finished_with(DRIFTED).__dict__, "document": doc(gate=gate)}), NOW, SETTINGS)
    assert after.phase == Phase.Succeeded
    assert [e.type for e in after.pending_events] == [EventType.Succeeded, EventType.GateFailed,
                                                      EventType.Drifted]
    assert all(e.sinks == ["hook", "bus"] and e.data.attempt == 1 for e in after.pending_events)
    assert after.pending_events[0].data.gate_passed is False
    assert after.pending_events[2].data.drifted_share == 0.375
    assert sends(actions) == []  # sent by the next round, once this status is written


def test_the_next_round_sends_what_was_written_even_after_the_evaluation_ended():
    before = status(Phase.Succeeded, pending_events=[waiting(), waiting(EventType.Drifted)])
    after, actions = decide(EV, spec(**sinks(HOOK, BUS)), before, seen(), NOW, SETTINGS)
    (send,) = sends(actions)
    assert [e.id for e in send.events] == ["u1.1.succeeded", "u1.1.drifted"]
    assert send.source.endswith("/namespaces/ns/modelevaluations/ev")
    assert [name for name, _ in send.sinks] == ["hook"]
    assert after.pending_events == before.pending_events  # removed only when acknowledged


ROWS = {
    # name: (spec extra, pending before, settings, expected sinks still waited for, sends)
    "started: a running job": (sinks(HOOK), [], SETTINGS, None, 0),
    "not due: waits out its backoff": (
        sinks(HOOK), [waiting(next_try_time=NOW + timedelta(seconds=30), tries=2)], SETTINGS,
        [["hook"]], 0),
    "due: its backoff is over": (
        sinks(HOOK), [waiting(next_try_time=NOW - timedelta(seconds=1), tries=2)], SETTINGS,
        [["hook"]], 1),
    "a sink removed from the spec is no longer waited for": (
        sinks(BUS), [waiting(sinks=("hook", "bus"))], SETTINGS, [["bus"]], 1),
    "no sinks at all: the outbox empties": ({}, [waiting()], SETTINGS, [], 0),
    "the platform's sinks: prefixed, for every evaluation": (
        {}, [waiting(sinks=("platform-bus",))], PLATFORM, [["platform-bus"]], 1),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_outbox_rows(name):
    extra, before_events, settings, left, sent = ROWS[name]
    before = status(Phase.Succeeded, pending_events=before_events)
    after, actions = decide(EV, spec(**extra), before, seen(), NOW, settings)
    if left is not None:
        assert [e.sinks for e in after.pending_events] == left
    assert len(sends(actions)) == sent


def test_a_job_found_running_is_a_started_event_for_the_sinks_that_want_it():
    hook = {**HOOK, "types": ["Failed", "Started"]}
    quiet = {**BUS, "types": ["Succeeded"]}
    before = status(Phase.Provisioning, cluster="ev-ray",
                    conditions={C.Provisioned: (True, Reason.RayClusterReady, 10)})
    after, _ = decide(EV, spec(**sinks(hook, quiet)), before,
                      seen(ready(), job=job("RUNNING")), NOW, SETTINGS)
    assert after.phase == Phase.Running
    assert [(e.type, e.sinks) for e in after.pending_events] == [(EventType.Started, ["hook"])]


def test_a_failure_is_one_failed_event_and_an_invalid_spec_tells_the_platform_s_sinks():
    after, _ = decide(EV, InvalidSpec("spec.model: bad"), status(), seen(), NOW, PLATFORM)
    assert after.phase == Phase.Failed
    assert [(e.type, e.sinks) for e in after.pending_events] == [(EventType.Failed,
                                                                 ["platform-bus"])]
    again, _ = decide(EV, InvalidSpec("spec.model: bad"), after, seen(), NOW, PLATFORM)
    assert len(again.pending_events) == 1  # told once, by the round that failed it


def test_the_outbox_is_bounded_the_oldest_go_and_a_condition_says_so():
    old = [waiting(age=100 + i).model_copy(update={"id": f"u0.{i}.started"}) for i in range(16)]
    before = status(Phase.Provisioning, cluster="ev-ray", pending_events=old,
                    conditions={C.Provisioned: (True, Reason.RayClusterReady, 10)})
    after, _ = decide(EV, spec(**sinks(HOOK)), before, seen(ready(), job=job("RUNNING")), NOW,
                      SETTINGS)
    assert len(after.pending_events) == 16 and after.pending_events[-1].id == "u1.1.started"
    assert "u0.0.started" not in {e.id for e in after.pending_events}
    assert after.pending_events[0].id == "u0.1.started"
    dropped = after.condition(C.EventsDelivered)
    assert (dropped.status, dropped.reason) == ("False", Reason.EventsDropped)


# --------------------------------------------------------------------------- deliveries
def test_acknowledged_events_leave_and_a_refused_one_backs_off_exponentially():
    s = status(Phase.Succeeded, pending_events=[waiting(sinks=("hook", "bus")),
                                                waiting(EventType.Drifted)])
    failed = record_deliveries(s, [Delivery("u1.1.succeeded", "bus"),
                                   Delivery("u1.1.succeeded", "hook", "HTTP 503"),
                                   Delivery("u1.1.drifted", "hook", "HTTP 503")],
                               NOW, SETTINGS, 3)
    assert [(e.id, e.sinks, e.tries) for e in s.pending_events] == [
        ("u1.1.succeeded", ["hook"], 1), ("u1.1.drifted", ["hook"], 1)]
    assert s.pending_events[0].next_try_time == NOW + timedelta(seconds=5)
    condition = s.condition(C.EventsDelivered)
    assert (condition.status, condition.reason) == ("False", Reason.EventSinkUnavailable)
    assert failed == condition.message and failed.startswith("sink hook: HTTP 503; 2 event(s)")
    delays = []
    for _ in range(5):  # 10, 20, 40, then capped at events_backoff_max (60)
        record_deliveries(s, [Delivery("u1.1.succeeded", "hook", "down")], NOW, SETTINGS, 3)
        delays.append((s.pending_events[0].next_try_time - NOW).total_seconds())
    assert delays == [10, 20, 40, 60, 60]
    assert record_deliveries(s, [Delivery("u1.1.succeeded", "hook"),
                                 Delivery("u1.1.drifted", "hook")], NOW, SETTINGS, 3) is None
    assert s.pending_events == []
    condition = s.condition(C.EventsDelivered)
    assert (condition.status, condition.reason) == ("True", Reason.EventsDelivered)


def test_nothing_sent_changes_nothing():
    s = status(Phase.Succeeded, pending_events=[waiting()])
    assert record_deliveries(s, [], NOW, SETTINGS, 3) is None
    assert len(s.pending_events) == 1 and s.condition(C.EventsDelivered) is None


# --------------------------------------------------------------------------- schedules
def test_a_schedule_that_degrades_and_drifts_tells_its_template_s_sinks_once():
    from modeleval.api.schedule import (EvaluationScheduleSpec, EvaluationScheduleStatus,
                                        ScheduleConditionType as SC)
    from modeleval.controller import status as st
    from modeleval.controller.events import schedule_outbox
    from modeleval.controller.observed import ObjectIdentity

    sched = ObjectIdentity(name="nightly", namespace="ns", uid="s-uid", generation=2)
    the_spec = EvaluationScheduleSpec.model_validate({"schedule": "0 3 * * *", "template": {
        "task": "ranking", "model": {"uri": "s3://models/champion.json"},
        "dataset": {"uri": "s3://data/t.txt"}, "metrics": ["ndcg@10"], **sinks(HOOK)}})
    before = EvaluationScheduleStatus(last_completed_run="nightly-2", metric_name="ndcg@10",
                                      last_primary_metric=0.61)
    after = before.model_copy(deep=True)
    st.set_condition(after, SC.Degraded, True, Reason.MetricDegraded, "ndcg@10 fell by 0.2", 2, NOW)
    st.set_condition(after, SC.DataDrift, True, Reason.DataDrifted, "drifted", 2, NOW)
    after, actions = schedule_outbox(sched, the_spec, before, (after, []), NOW, SETTINGS)
    assert [(e.id, e.sinks) for e in after.pending_events] == [
        ("s-uid.nightly-2.degraded", ["hook"]), ("s-uid.nightly-2.drifted", ["hook"])]
    event = cloud_event(after.pending_events[0], "/x")
    assert event["type"] == "dev.modeleval.schedule.degraded" and event["subject"] == "ns/nightly"
    assert event["data"]["primaryMetric"] == "ndcg@10=0.6100"
    assert sends(actions) == []
    again, actions = schedule_outbox(sched, the_spec, after, (after.model_copy(deep=True), []),
                                     NOW, SETTINGS)
    assert len(again.pending_events) == 2  # still Degraded: no new event
    (send,) = sends(actions)
    assert send.source == "/apis/modeleval.dev/v1alpha1/namespaces/ns/evaluationschedules/nightly"


def test_an_ended_evaluation_is_reconciled_while_its_events_wait_and_not_after():
    from modeleval.controller.handlers import _live_or_sending

    assert _live_or_sending({"phase": "Running"})
    assert _live_or_sending({"phase": "Succeeded", "pendingEvents": [{"id": "u1.1.succeeded"}]})
    assert not _live_or_sending({"phase": "Succeeded", "pendingEvents": []})
    assert not _live_or_sending({"phase": "Failed"})


def test_an_attempt_that_ran_and_finished_between_two_rounds_still_tells_it_started():
    """A fast job can go from Provisioning to Succeeded between two rounds: the round that sees
    it Succeeded also writes Started (once: a Running status before it wrote it already)."""
    from modeleval.controller.events import evaluation_events
    from modeleval.api.status import ModelEvaluationStatus

    provisioning = ModelEvaluationStatus(phase=Phase.Provisioning, attempt=1)
    running = ModelEvaluationStatus(phase=Phase.Running, attempt=1)
    succeeded = ModelEvaluationStatus(phase=Phase.Succeeded, attempt=1)
    assert evaluation_events(provisioning, succeeded, None) == [EventType.Started,
                                                                 EventType.Succeeded]
    assert evaluation_events(running, succeeded, None) == [EventType.Succeeded]
    assert evaluation_events(succeeded, succeeded, None) == []
    retried = ModelEvaluationStatus(phase=Phase.Succeeded, attempt=2)
    assert evaluation_events(running, retried, None) == [EventType.Started, EventType.Succeeded]


def test_a_kafka_sinks_security_comes_from_its_owners_secrets_and_keys_its_state():
    from modeleval.controller.sinks import kafka_security, sink_address

    secure = EventSink.model_validate({"name": "bus", "kafka": {
        "bootstrapServers": "b-1:9096", "topic": "t", "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512", "secretName": "kafka-user"},
        "caRef": {"name": "kafka-ca", "key": "ca.crt"}}})
    read = []

    def secret(name, keys):
        read.append((name, keys))
        return {"kafka-user": ["u", "p"], "kafka-ca": ["PEM"]}[name]

    assert kafka_security(secure.kafka, secret) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u", "sasl.password": "p",
        "ssl.endpoint.identification.algorithm": "https", "ssl.ca.pem": "PEM"}
    assert read == [("kafka-user", ("username", "password")), ("kafka-ca", ("ca.crt",))]
    plain = EventSink.model_validate({"name": "bus", "kafka": {"bootstrapServers": "b-1:9092",
                                                                "topic": "t"}})
    assert kafka_security(plain.kafka, secret) == {"security.protocol": "PLAINTEXT"}
    # One tenant's refused credentials hold no other tenant's sends to the same brokers.
    assert sink_address(secure, "team-a") != sink_address(secure, "team-b")
    assert sink_address(plain, "team-a") == sink_address(plain, "team-b")
    with pytest.raises(ValueError, match="needs sasl"):
        EventSink.model_validate({"name": "bus", "kafka": {
            "bootstrapServers": "b:1", "topic": "t", "securityProtocol": "SASL_PLAINTEXT"}})
