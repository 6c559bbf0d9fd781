"""Prometheus metrics of the operator: evaluations by phase, reconcile and job durations, rows."""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .settings import OperatorSettings

EVALUATIONS = Gauge("modeleval_evaluations", "ModelEvaluations by phase", ["phase"])
RECONCILE_SECONDS = Histogram("modeleval_reconcile_duration_seconds", "Time of one reconcile",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
JOB_SECONDS = Histogram("modeleval_evaluation_duration_seconds",
                        "Time from start to a terminal phase", ["phase"],
                        buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200))
ROWS_SCORED = Counter("modeleval_rows_scored_total", "Rows scored by succeeded evaluations")
SCHEDULE_METRIC = Gauge("modeleval_schedule_primary_metric", "The watched metric of an "
                        "EvaluationSchedule's latest successful run", ["namespace", "schedule"])
SCHEDULE_DEGRADED = Gauge("modeleval_schedule_degraded", "1 while an EvaluationSchedule's "
                          "Degraded condition is true, else 0", ["namespace", "schedule"])

_phases: dict[str, str] = {}
_lock = threading.Lock()
_started = False


def observe_phase(uid: str, phase: str) -> None:
    with _lock:
        previous = _phases.get(uid)
        if previous == phase:
            return
        if previous is not None:
            EVALUATIONS.labels(previous).dec()
        EVALUATIONS.labels(phase).inc()
        _phases[uid] = phase


def forget(uid: str) -> None:
    with _lock:
        previous = _phases.pop(uid, None)
        if previous is not None:
            EVALUATIONS.labels(previous).dec()


def observe_schedule(namespace: str, name: str, metric: float | None, degraded: bool) -> None:
    if metric is not None:
        SCHEDULE_METRIC.labels(namespace, name).set(metric)
    SCHEDULE_DEGRADED.labels(namespace, name).set(1 if degraded else 0)


def forget_schedule(namespace: str, name: str) -> None:
    for gauge in (SCHEDULE_METRIC, SCHEDULE_DEGRADED):
        with contextlib.suppress(KeyError):  # never observed
            gauge.remove(namespace, name)


def start(settings: OperatorSettings) -> None:
    global _started
    if not _started and settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        _started = True
