"""The events' outbox, decided purely: which events a round's transition makes, which of them
wait in ``status.pendingEvents`` (written before any is sent: at least once across restarts),
which are due to be sent now, and what the sinks' answers leave in status.

A round adds the events of its own transition to the outbox and sends only those that were
already in the status it started from; the runtime performs :class:`~.actions.SendEvents`
and :func:`record_deliveries` removes what each sink acknowledged. An operator killed between
the status write and the send sends them on its next round; one killed after a send and before
the removal sends them again (the event keeps its id: consumers can drop the repeat).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..api.crd import PLURAL
from ..api.schedule import SCHEDULE_PLURAL, ScheduleConditionType
from ..api.events import (MLFLOW_SINK, PENDING_LIMIT, MESSAGE_CHARS, EventData, EventSink,
                          EventsSpec, EventType, MlflowRunSink, PendingEvent, event_id, is_due,
                          object_source)
from ..api.reasons import Reason
from ..api.spec import MlflowOutput
from ..api.status import ConditionType, ModelEvaluationStatus, Phase
from . import status as st
from .actions import SendEvents
from .settings import OperatorSettings

PLATFORM_PREFIX = "platform-"
Sink = EventSink | MlflowRunSink


@dataclass(frozen=True)
class Delivery:
    """What one sink answered for one event: acknowledged (``error`` None) or why not."""

    event_id: str
    sink: str
    error: str | None = None


def configured_sinks(events: EventsSpec | None, settings: OperatorSettings,
                     mlflow: MlflowOutput | None = None) -> dict[str, Sink]:
    """Every sink an object's events go to, by the name status uses: the platform's (prefixed,
    so a spec cannot shadow one), the object's own when the platform allows them, and its
    MLflow run (``mlflow``: spec.output.mlflow, under a name no spec sink can take)."""
    sinks: dict[str, Sink] = {PLATFORM_PREFIX + sink.name: sink for sink in settings.event_sinks}
    if events is not None and settings.allow_object_event_sinks:
        sinks.update({sink.name: sink for sink in events.sinks})
    if mlflow is not None:
        sinks[MLFLOW_SINK] = MlflowRunSink(mlflow.experiment, mlflow.run_name)
    return sinks


def evaluation_events(before: ModelEvaluationStatus, after: ModelEvaluationStatus,
                      gate_passed: bool | None) -> list[EventType]:
    """What an evaluation's round did, as events: an attempt started running, it succeeded
    (with its gate failed, its data drifted) or failed. Each once: told by the round that
    makes the transition."""
    found: list[EventType] = []
    newly_running = before.phase != Phase.Running or before.attempt != after.attempt
    if after.phase == Phase.Running and newly_running:
        found.append(EventType.Started)
    if after.phase == Phase.Succeeded and before.phase != Phase.Succeeded:
        if newly_running:  # it ran and finished between two rounds: never seen Running
            found.append(EventType.Started)
        found.append(EventType.Succeeded)
        if gate_passed is False:
            found.append(EventType.GateFailed)
        if after.drift is not None and after.drift.drifted:
            found.append(EventType.Drifted)
    if after.phase == Phase.Failed and before.phase != Phase.Failed:
        found.append(EventType.Failed)
    return found


def evaluation_data(identity: Any, status: ModelEvaluationStatus, spec: Any,
                    gate_passed: bool | None, document: Any = None) -> EventData:
    """What the events of an evaluation's round carry; the intervals of the metrics status
    holds come from the round's result document (the Succeeded round has it)."""
    drift = status.drift
    version = next((m.version for m in status.resolved_models if m.field == "spec.model"), None)
    found = getattr(document, "intervals", None) or {}
    intervals = {name: [found[name].lower, found[name].upper] for name in status.metrics
                 if name in found}
    return EventData(kind="ModelEvaluation", name=identity.name, namespace=identity.namespace,
                     uid=identity.uid, attempt=status.attempt, phase=str(status.phase),
                     reason=status.reason, message=st.cap(status.message, MESSAGE_CHARS),
                     model=getattr(getattr(spec, "model", None), "uri", None),
                     model_version=version,
                     dataset=getattr(getattr(spec, "dataset", None), "uri", None),
                     started=status.start_time, primary_metric=status.primary_metric,
                     metrics=dict(status.metrics), intervals=intervals, gate_passed=gate_passed,
                     drifted_share=drift.drifted_share if drift else None,
                     report_uri=status.report_uri)


def pending(types: list[EventType], data: EventData, sinks: dict[str, Sink],
            now: datetime) -> list[PendingEvent]:
    """The outbox entries of new events: each for the sinks that want it (none: no entry)."""
    made = []
    for kind in types:
        names = [name for name, sink in sinks.items() if sink.wants(kind)]
        if names:
            made.append(PendingEvent(id=event_id(data.uid, data.attempt, kind), type=kind,
                                     time=now, sinks=names, data=data))
    return made


def outbox(status: Any, started: list[PendingEvent], new: list[PendingEvent],
           sinks: dict[str, Sink], source: str, now: datetime,
           generation: int | None) -> list[SendEvents]:
    """Adds ``new`` to the status' outbox and chooses the send of those that waited in the
    status the round ``started`` from and are due. A sink no longer configured is no longer
    waited for; past the outbox's bound the oldest events go (a condition says so)."""
    kept = []
    for event in status.pending_events:
        waiting = [name for name in event.sinks if name in sinks]
        if waiting:
            kept.append(event.model_copy(update={"sinks": waiting}))
    known = {event.id for event in kept}
    kept += [event for event in new if event.id not in known]
    dropped = len(kept) - PENDING_LIMIT
    status.pending_events = kept[max(0, dropped):]
    if dropped > 0:
        st.set_condition(status, ConditionType.EventsDelivered, False, Reason.EventsDropped,
                         f"{dropped} event(s) dropped: more than {PENDING_LIMIT} waited for "
                         "their sinks", generation, now)
    written = {event.id for event in started}
    due = [event for event in status.pending_events if event.id in written and is_due(event, now)]
    if not due:
        return []
    names = {name for event in due for name in event.sinks}
    return [SendEvents(tuple(due), source, tuple((n, sinks[n]) for n in sorted(names)))]


def record_deliveries(status: Any, deliveries: list[Delivery], now: datetime,
                      settings: OperatorSettings, generation: int | None) -> str | None:
    """Removes from the outbox what the sinks acknowledged; an event a sink refused waits
    with a backoff. Returns the failure's words when sending failed (for a Warning Event)."""
    if not deliveries:
        return None
    acked = {(d.event_id, d.sink) for d in deliveries if d.error is None}
    failed = {d.event_id: d for d in deliveries if d.error is not None}
    waiting = []
    for event in status.pending_events:
        sinks = [name for name in event.sinks if (event.id, name) not in acked]
        if not sinks:
            continue
        update: dict[str, Any] = {"sinks": sinks}
        if event.id in failed:
            tries = event.tries + 1
            delay = st.backoff_delay(tries, settings.events_backoff_base,
                                     settings.events_backoff_max)
            update.update(tries=tries, next_try_time=now + timedelta(seconds=delay))
        waiting.append(event.model_copy(update=update))
    status.pending_events = waiting
    return _delivery_condition(status, failed, now, generation)


def _delivery_condition(status: Any, failed: dict[str, Delivery], now: datetime,
                        generation: int | None) -> str | None:
    if not failed:
        if not status.pending_events:
            st.set_condition(status, ConditionType.EventsDelivered, True, Reason.EventsDelivered,
                             "every event reached its sinks", generation, now)
        return None
    first = next(iter(failed.values()))
    retry = min(event.next_try_time for event in status.pending_events if event.next_try_time)
    message = (f"sink {first.sink}: {first.error}; {len(status.pending_events)} event(s) "
               f"waiting, next try at {retry.isoformat(timespec='seconds')}")
    st.set_condition(status, ConditionType.EventsDelivered, False, Reason.EventSinkUnavailable,
                     message, generation, now)
    return message


def gate_outcome(status: ModelEvaluationStatus, document: Any) -> bool | None:
    """Whether the candidate's gate passed: status.baseline's, else its result document's."""
    if status.baseline is not None and status.baseline.gate_passed is not None:
        return status.baseline.gate_passed
    gate = getattr(document, "gate", None)
    return gate.passed if gate is not None else None


def evaluation_outbox(ev: Any, spec: Any, before: ModelEvaluationStatus, decision: Any,
                      document: Any, now: datetime, settings: OperatorSettings) -> Any:
    """The round's decision with its events: the transition's added to the outbox and a send
    of those already written. ``spec`` may be an InvalidSpec (the platform's sinks only)."""
    after, actions = decision
    output = getattr(spec, "output", None)
    sinks = configured_sinks(getattr(spec, "events", None), settings,
                             getattr(output, "mlflow", None))
    if not sinks and not after.pending_events:
        return decision
    gate = gate_outcome(after, document)
    data = evaluation_data(ev, after, spec, gate, document)
    new = pending(evaluation_events(before, after, gate), data, sinks, now)
    source = object_source(PLURAL, ev.namespace, ev.name)
    sends = outbox(after, before.pending_events, new, sinks, source, now, ev.generation)
    return type(decision)(after, [*actions, *sends])


def _turned_true(before: Any, after: Any, type_: ScheduleConditionType) -> bool:
    return after.is_true(type_) and not before.is_true(type_)


def schedule_events(before: Any, after: Any) -> list[EventType]:
    """A schedule's: its watched metric degraded, its latest run's data drifted (each when its
    condition turns true)."""
    found = []
    if _turned_true(before, after, ScheduleConditionType.Degraded):
        found.append(EventType.Degraded)
    if _turned_true(before, after, ScheduleConditionType.DataDrift):
        found.append(EventType.Drifted)
    return found


def schedule_outbox(sched: Any, spec: Any, before: Any, decision: tuple, now: datetime,
                    settings: OperatorSettings) -> tuple:
    """A schedule round's decision with its events, sent to the platform's sinks and to those
    its template names (the sinks its runs send to). The id names the run that made it: a
    schedule degrades once per run at most."""
    after, actions = decision
    template = getattr(spec, "template", None)
    sinks = configured_sinks(getattr(template, "events", None), settings)
    if not sinks and not after.pending_events:
        return decision
    run = after.last_completed_run or after.last_run or "none"
    condition = after.condition(ScheduleConditionType.Degraded)
    data = EventData(kind="EvaluationSchedule", name=sched.name, namespace=sched.namespace,
                     uid=sched.uid, reason=condition.reason if condition else None,
                     message=st.cap(condition.message, MESSAGE_CHARS) if condition else None,
                     primary_metric=f"{after.metric_name}={after.last_primary_metric:.4f}"
                     if after.metric_name and after.last_primary_metric is not None else None,
                     drifted_share=next((r.drifted_share for r in after.runs
                                         if r.drifted_share is not None), None))
    new = [event.model_copy(update={"id": f"{sched.uid}.{run}.{event.type.lower()}"})
           for event in pending(schedule_events(before, after), data, sinks, now)]
    source = object_source(SCHEDULE_PLURAL, sched.namespace, sched.name)
    sends = outbox(after, before.pending_events, new, sinks, source, now, sched.generation)
    return after, [*actions, *sends]
