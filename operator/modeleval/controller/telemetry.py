"""Prometheus metrics of the operator: evaluations by phase, reconcile and job durations, queue
waits, RayClusters by state, rows, schedules, data drift. The Grafana dashboard the chart ships
(charts/modeleval/dashboards/modeleval.json) charts each of them."""

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
# How long the first attempt of an evaluation waited, from its creation: until its RayCluster
# was ready (stage cluster_ready; the cluster slots, the scheduler, image pulls) and until its
# Ray job was found on the head (stage job_started; also the head's job slots).
QUEUE_WAIT = Histogram("modeleval_queue_wait_seconds", "Time from an evaluation's creation "
                       "until its RayCluster was ready or its Ray job started", ["stage"],
                       buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
# Drift: one series per evaluation (and per schedule) that compared its data with a reference,
# removed with the object. No per-feature labels: a dataset may have thousands of features (the
# most drifted are named in the DataDrift condition and status.drift instead).
DATA_DRIFT_SHARE = Gauge("modeleval_data_drift_share", "Share of an evaluation's features that "
                         "drifted from its dataQuality.reference", ["namespace", "evaluation"])
DATA_DRIFTED = Gauge("modeleval_data_drifted", "1 when an evaluation's data drifted from its "
                     "dataQuality.reference, else 0", ["namespace", "evaluation"])
SCHEDULE_DRIFT_SHARE = Gauge("modeleval_schedule_data_drift_share", "Share of the features that "
                             "drifted in an EvaluationSchedule's latest run that compared its "
                             "data with a reference", ["namespace", "schedule"])
SCHEDULE_DRIFTED = Gauge("modeleval_schedule_data_drifted", "1 when an EvaluationSchedule's "
                         "latest run that compared its data with a reference drifted, else 0",
                         ["namespace", "schedule"])
RAYCLUSTERS = Gauge("modeleval_rayclusters", "RayClusters the operator created that exist, by "
                    "state (provisioning, ready, suspended, failed, deleting)", ["state"])


class Tally:
    """A gauge by one label that counts objects by their latest value of it (an object moves
    from one series to another, each object counted once)."""

    def __init__(self, gauge: Gauge):
        self.gauge = gauge
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def observe(self, key: str, value: str) -> None:
        with self._lock:
            previous = self._values.get(key)
            if previous == value:
                return
            if previous is not None:
                self.gauge.labels(previous).dec()
            self.gauge.labels(value).inc()
            self._values[key] = value

    def forget(self, key: str) -> None:
        with self._lock:
            previous = self._values.pop(key, None)
            if previous is not None:
                self.gauge.labels(previous).dec()


_PHASES = Tally(EVALUATIONS)
_CLUSTERS = Tally(RAYCLUSTERS)
_started = False


def observe_phase(uid: str, phase: str) -> None:
    _PHASES.observe(uid, phase)


def forget(uid: str) -> None:
    _PHASES.forget(uid)


def observe_raycluster(uid: str, state: str) -> None:
    _CLUSTERS.observe(uid, state)


def forget_raycluster(uid: str) -> None:
    _CLUSTERS.forget(uid)


def observe_queue_wait(stage: str, seconds: float) -> None:
    QUEUE_WAIT.labels(stage).observe(max(0.0, seconds))


def observe_schedule(namespace: str, name: str, metric: float | None, degraded: bool) -> None:
    if metric is not None:
        SCHEDULE_METRIC.labels(namespace, name).set(metric)
    SCHEDULE_DEGRADED.labels(namespace, name).set(1 if degraded else 0)


def forget_schedule(namespace: str, name: str) -> None:
    for gauge in (SCHEDULE_METRIC, SCHEDULE_DEGRADED, SCHEDULE_DRIFT_SHARE, SCHEDULE_DRIFTED):
        with contextlib.suppress(KeyError):  # never observed
            gauge.remove(namespace, name)


def _observe_drift(share: Gauge, drifted: Gauge, labels: tuple[str, str],
                   drift: tuple[bool, float] | None) -> None:
    """Sets both drift gauges of one object, or removes them when it compared nothing."""
    if drift is None:
        for gauge in (share, drifted):
            with contextlib.suppress(KeyError):  # never observed
                gauge.remove(*labels)
        return
    share.labels(*labels).set(drift[1])
    drifted.labels(*labels).set(1 if drift[0] else 0)


def observe_evaluation_drift(namespace: str, name: str, drift: tuple[bool, float] | None) -> None:
    """An evaluation's drift, (drifted, share); None: no drift recorded (no series)."""
    _observe_drift(DATA_DRIFT_SHARE, DATA_DRIFTED, (namespace, name), drift)


def forget_evaluation(namespace: str, name: str) -> None:
    observe_evaluation_drift(namespace, name, None)


def observe_schedule_drift(namespace: str, name: str, drift: tuple[bool, float] | None) -> None:
    """The drift of a schedule's latest run that compared its data, (drifted, share)."""
    _observe_drift(SCHEDULE_DRIFT_SHARE, SCHEDULE_DRIFTED, (namespace, name), drift)


def start(settings: OperatorSettings) -> None:
    global _started
    if not _started and settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        _started = True
