"""``spec.output.mlflow``: an evaluation's end logged as one MLflow run, through the tracking
server's REST API, with the namespace's own MLflow credentials (as the registry is read,
:mod:`.mlflow`) and its own S3 credentials for the report.

It is one of the outbox's sinks (:mod:`.events`): the Succeeded or Failed event waits in
``status.pendingEvents`` until a run holds it, and is tried again with backoff while the server
does not answer; the evaluation has ended by then, so nothing here holds or fails it. Logging
is idempotent per evaluation: the run is found again by its tag ``modeleval.uid``, so a send
repeated (after a failure midway, or by an operator restarted before it recorded the answer)
finishes the run it started and never logs a second one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlparse

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from ..api.events import EventData, EventType, MlflowRunSink
from ..api.reasons import Reason
from ..api.times import parse_time
from .mlflow import API, SERVED_ARTIFACTS, MlflowClient, Registries, RegistryError
from .s3 import s3_client, split_uri
from .secrets import S3_KEYS, MissingCredentials, NamespaceSecrets
from .settings import OperatorSettings

log = logging.getLogger(__name__)
UID_TAG = "modeleval.uid"
REPORT_FILE = "report.html"
REPORT_BYTES = 64 * 2**20  # a larger report is not copied (a tag says so)
ENDED = {"FINISHED", "FAILED", "KILLED"}  # an MLflow run's statuses that end it
PARAM_CHARS = 6000  # MLflow's longest parameter value


def failure(message: str, retryable: bool = False) -> RegistryError:
    """A run that could not be logged for a reason of its own (not the server's answer)."""
    return RegistryError(Reason.EventSinkUnavailable, message, retryable)


# ---------------------------------------------------------------------------- what a run holds
def metric_key(name: str) -> str:
    """A metric's name as an MLflow key, which takes only letters, digits and ``_-. /``:
    ``ndcg@10`` -> ``ndcg_at_10``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name.replace("@", "_at_"))


def run_metrics(data: EventData, timestamp: int) -> list[dict[str, Any]]:
    """Each metric, and its interval as ``KEY.ci_low`` and ``KEY.ci_high``, at step 0 and the
    event's time (a repeated log of the same point is the same point)."""
    values: dict[str, float] = {}
    for name, value in data.metrics.items():
        values[metric_key(name)] = value
        if name in data.intervals:
            low, high = data.intervals[name]
            values[f"{metric_key(name)}.ci_low"], values[f"{metric_key(name)}.ci_high"] = low, high
    return [{"key": key, "value": value, "timestamp": timestamp, "step": 0}
            for key, value in values.items()]


def run_params(data: EventData) -> list[dict[str, str]]:
    """What was evaluated, from the event alone: the same values each time the event is sent
    (MLflow refuses a parameter logged again with another value)."""
    params = {"model": data.model, "model_version": data.model_version, "dataset": data.dataset,
              "metrics": ",".join(data.metrics) or None, "attempt": str(data.attempt),
              "gate_passed": None if data.gate_passed is None else str(data.gate_passed).lower()}
    return [{"key": key, "value": value[:PARAM_CHARS]} for key, value in params.items()
            if value is not None]


def run_tags(data: EventData, run_name: str, report: str) -> list[dict[str, str]]:
    """The object the run tells of (namespace, name, uid), how it ended, and the report."""
    renamed = {metric_key(name): name for name in data.metrics if metric_key(name) != name}
    tags = {"mlflow.runName": run_name, "modeleval.namespace": data.namespace,
            "modeleval.name": data.name, UID_TAG: data.uid, "modeleval.phase": data.phase,
            "modeleval.reason": data.reason, "modeleval.message": data.message,
            "modeleval.primaryMetric": data.primary_metric,
            "modeleval.metricNames": ",".join(f"{key}={name}" for key, name in renamed.items())
            or None, "modeleval.reportURI": data.report_uri, "modeleval.report": report}
    return [{"key": key, "value": value} for key, value in tags.items() if value is not None]


def millis(text: Any) -> int | None:
    moment = parse_time(text) if isinstance(text, str) else text
    return int(moment.timestamp() * 1000) if moment is not None else None


# ---------------------------------------------------------------------------- the REST API
class MlflowRuns(MlflowClient):
    """One namespace's view of the tracking server's experiments and runs."""

    def experiment_id(self, name: str) -> str:
        """The experiment's id, made when there is none (by this call or a concurrent one)."""
        what = f"experiment {name}"
        for _ in range(2):
            try:
                found = self._call("GET", f"{API}/experiments/get-by-name", what,
                                   params={"experiment_name": name})["experiment"]
            except RegistryError as error:
                if error.code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            else:
                if found.get("lifecycle_stage") == "deleted":
                    raise failure(f"{what} is deleted: restore it or name another")
                return str(found["experiment_id"])
            try:
                return str(self._call("POST", f"{API}/experiments/create", what,
                                      json={"name": name})["experiment_id"])
            except RegistryError as error:
                if error.code != "RESOURCE_ALREADY_EXISTS":
                    raise
        raise failure(f"{what}: neither found nor created")

    def find_run(self, experiment_id: str, uid: str) -> dict | None:
        """The active run tagged with this evaluation's uid, if one was made."""
        found = self._call("POST", f"{API}/runs/search", f"the run of {uid}", json={
            "experiment_ids": [experiment_id], "filter": f"tags.\"{UID_TAG}\" = '{uid}'",
            "max_results": 1, "order_by": ["attributes.start_time DESC"]})
        runs = found.get("runs") or []
        return runs[0] if runs else None

    def create_run(self, experiment_id: str, name: str, start: int,
                   tags: list[dict[str, str]]) -> dict:
        return self._call("POST", f"{API}/runs/create", f"run {name}", json={
            "experiment_id": experiment_id, "run_name": name, "start_time": start,
            "tags": tags})["run"]

    def log_batch(self, run_id: str, metrics: list[dict], params: list[dict],
                  tags: list[dict]) -> None:
        self._call("POST", f"{API}/runs/log-batch", f"run {run_id}", json={
            "run_id": run_id, "metrics": metrics, "params": params, "tags": tags})

    def upload(self, path: str, body: bytes) -> None:
        """A file into the server's own artefact store (``mlflow server --serve-artifacts``)."""
        self._call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{quote(path)}",
                   f"artefact {path}", content=body, headers={"Content-Type": "text/html"})

    def finish(self, run_id: str, status: str, end: int) -> None:
        self._call("POST", f"{API}/runs/update", f"run {run_id}",
                   json={"run_id": run_id, "status": status, "end_time": end})


# ---------------------------------------------------------------------------- the sink
class RunTracker:
    """Logs each evaluation's end as one run, with its namespace's credentials."""

    def __init__(self, settings: OperatorSettings, secrets: NamespaceSecrets,
                 transport: Callable[[], httpx.BaseTransport | None] = lambda: None,
                 s3: Callable[[str | None, str, str], Any] = s3_client):
        self.settings, self.secrets, self._s3 = settings, secrets, s3
        self.servers = Registries(settings, secrets, transport)

    def send(self, namespace: str, sink: MlflowRunSink,
             events: list[dict[str, Any]]) -> dict[str, str | None]:
        """Each event (a CloudEvent) logged as its evaluation's run: None when a run holds
        it, else why not (the outbox sends it again)."""
        try:
            runs = self.servers.open(namespace, MlflowRuns)
        except RegistryError as error:
            return {event["id"]: error.message for event in events}
        answers: dict[str, str | None] = {}
        try:
            for event in events:
                try:
                    self.log(runs, namespace, sink, event)
                    answers[event["id"]] = None
                except RegistryError as error:
                    answers[event["id"]] = error.message
        finally:
            runs.close()
        return answers

    def log(self, runs: MlflowRuns, namespace: str, sink: MlflowRunSink,
            event: dict[str, Any]) -> None:
        """One evaluation's run: found again (an ended one is left as it is) or made, its
        metrics, parameters, tags and report logged, then ended."""
        data = EventData.model_validate(event["data"])
        name = sink.run_name or data.name
        experiment = runs.experiment_id(sink.experiment)
        run = runs.find_run(experiment, data.uid)
        if run is not None and run["info"].get("status") in ENDED:
            return  # logged before: a repeated send logs nothing twice
        end = millis(event.get("time")) or 0
        if run is None:
            identity = [tag for tag in run_tags(data, name, "")
                        if tag["key"] in ("mlflow.runName", UID_TAG, "modeleval.namespace",
                                          "modeleval.name")]
            run = runs.create_run(experiment, name, millis(data.started) or end, identity)
        info = run["info"]
        report = self.report(runs, namespace, data, info.get("artifact_uri") or "")
        runs.log_batch(info["run_id"], run_metrics(data, end), run_params(data),
                       run_tags(data, name, report))
        status = "FINISHED" if data.phase == EventType.Succeeded else "FAILED"
        runs.finish(info["run_id"], status, end)

    # ------------------------------------------------------------------------ the report
    def report(self, runs: MlflowRuns, namespace: str, data: EventData, artifacts: str) -> str:
        """Copies the report into the run's artefacts; the ``modeleval.report`` tag: the
        artefact's path, or why there is none. Only the server's own failure to answer raises
        (tried again); a report that cannot be had is told, never waited for."""
        if not data.report_uri:
            return "none: the evaluation wrote no report"
        if not data.report_uri.startswith("s3://"):
            return f"not copied: {data.report_uri} is not in S3"
        if not (artifacts.startswith(SERVED_ARTIFACTS) or artifacts.startswith("s3://")):
            return f"not copied: the run's artefacts ({artifacts or 'none'}) are not in S3 or " \
                   "served by the MLflow server"
        try:
            s3 = self._s3(self.settings.s3_endpoint,
                          *self.secrets.keys(namespace, self.settings.s3_secret, S3_KEYS))
        except MissingCredentials as error:
            return f"not copied: no S3 credentials: {error.message}"
        body, why = self._read(s3, data.report_uri)
        if body is None:
            return f"not copied: {why}"
        if artifacts.startswith("s3://"):
            return self._put(s3, artifacts, body)
        path = urlparse(artifacts).path.lstrip("/") + "/" + REPORT_FILE
        try:
            runs.upload(path, body)
        except RegistryError as error:
            if error.retryable:
                raise
            return f"not copied: {error.message}"
        return REPORT_FILE

    @staticmethod
    def _read(s3: Any, uri: str) -> tuple[bytes | None, str]:
        bucket, key = split_uri(uri)
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            if int(head.get("ContentLength") or 0) > REPORT_BYTES:
                return None, f"{uri} is larger than {REPORT_BYTES // 2**20} MiB"
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read(), ""
        except (ClientError, BotoCoreError) as error:
            log.info("reading report %s: %s", uri, error)
            return None, f"cannot read {uri} with the namespace's S3 credentials"

    @staticmethod
    def _put(s3: Any, artifacts: str, body: bytes) -> str:
        """Into an artefact location in S3, with the namespace's S3 credentials: S3 not
        answering is tried again; a refusal is told."""
        bucket, prefix = split_uri(artifacts.rstrip("/") + "/" + REPORT_FILE)
        try:
            s3.put_object(Bucket=bucket, Key=prefix, Body=body, ContentType="text/html")
        except ClientError as error:
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
            if status >= 500:
                raise failure(f"S3 answered HTTP {status} writing the report to {artifacts}",
                              retryable=True) from None
            return (f"not copied: the namespace's S3 credentials may not write {artifacts} "
                    f"({error.response.get('Error', {}).get('Code', status)})")
        except BotoCoreError as error:
            raise failure(f"S3 did not answer writing the report to {artifacts}: "
                          f"{type(error).__name__}", retryable=True) from None
        return REPORT_FILE
