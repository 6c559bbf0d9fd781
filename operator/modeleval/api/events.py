"""Events that leave the platform: what a ModelEvaluation or an EvaluationSchedule tells its
sinks (a webhook, a Kafka topic; an evaluation's MLflow run, ``spec.output.mlflow``) when it
starts, ends, fails its gate, degrades or drifts.

The contract, in one place: the sinks a spec (``spec.events``) or the platform names, the
event waiting in ``status.pendingEvents`` until each sink acknowledged it, and the
CloudEvents 1.0 structured-mode JSON every sink receives (:func:`cloud_event`). Pure: no I/O.

CloudEvents' structured JSON is six attributes and a payload; a typed builder here keeps the
contract beside the models that generate the CRD (the ``cloudevents`` SDK would add two
packages for its HTTP binary mode and format plug-ins, which nothing here uses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .times import Time, rfc3339

API_GROUP = "modeleval.dev"  # spec.API_GROUP (not imported: spec imports this module)
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
SIGNATURE_HEADER = "X-Modeleval-Signature"
# An object's outbox: a sink down for long keeps at most this many events (the oldest go).
PENDING_LIMIT = 16
MESSAGE_CHARS = 512
SINK_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MLFLOW_SINK = "output.mlflow"  # no spec sink's name (SINK_NAME has no dots)
TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
BOOTSTRAP = r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}(,[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5})*$"


class EventType(StrEnum):
    """What happened; the CloudEvents ``type`` is ``dev.modeleval.<kind>.<value lowercased>``."""

    Started = "Started"          # an attempt's Ray job runs
    Succeeded = "Succeeded"
    Failed = "Failed"
    GateFailed = "GateFailed"    # it succeeded and its gate did not pass
    Degraded = "Degraded"        # a schedule's watched metric fell by more than maxDrop
    Drifted = "Drifted"          # the data drifted from its reference


def ce_type(kind: str, event: EventType | str) -> str:
    """``dev.modeleval.evaluation.succeeded``: reverse DNS of the API group, the kind, the event."""
    prefix = ".".join(reversed(API_GROUP.split(".")))
    return f"{prefix}.{kind}.{str(event).lower()}"


# ---------------------------------------------------------------------------- spec: the sinks
class _SinkModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_alias=True,
                              validate_by_name=False, extra="forbid", strict=True, frozen=True)


class SecretKeyRef(_SinkModel):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", description="A Secret "
                      "in the object's own namespace (the platform's sinks: the operator's).")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]{1,253}$", description="Its key.")


class WebhookSink(_SinkModel):
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048, description="Where each "
                     "event is POSTed (http or https).")
    secret_ref: SecretKeyRef | None = Field(None, description="The HMAC-SHA256 key: each "
                                            "request carries X-Modeleval-Signature: "
                                            "sha256=<hex of HMAC(key, body)>.")
    format: Literal["cloudevents", "slack"] = Field("cloudevents", description="cloudevents: "
                                                    "the structured CloudEvent as the body; "
                                                    "slack: a Slack-compatible {text, blocks} "
                                                    "message (an incoming webhook's).")
    timeout_seconds: float = Field(5.0, gt=0, le=30, strict=False, description="Per request.")


class KafkaSasl(_SinkModel):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        description="The SASL mechanism the brokers' listener takes.")
    secret_name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", description=
                             "A Secret with the keys username and password (the type "
                             "kubernetes.io/basic-auth has them), in the object's own namespace "
                             "(the platform's sinks: the operator's).")


class KafkaSink(_SinkModel):
    bootstrap_servers: str = Field(pattern=BOOTSTRAP, max_length=1024, description="host:port "
                                   "of the brokers, comma-separated.")
    topic: str = Field(pattern=TOPIC, description="The topic; each event is keyed by "
                       "namespace/name (one object's events stay in order on one partition).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="As the brokers' listener speaks: SSL and SASL_SSL verify the "
        "brokers' certificates (against caRef, else the system's CAs) and their host names.")
    sasl: KafkaSasl | None = Field(None, description="The credentials for SASL_PLAINTEXT and "
                                   "SASL_SSL (required by them, refused otherwise).")
    ca_ref: SecretKeyRef | None = Field(None, description="The CA bundle (PEM) the brokers' "
                                        "certificates are checked against, for SSL and "
                                        "SASL_SSL; default: the system's CAs.")

    @model_validator(mode="after")
    def _security(self) -> "KafkaSink":
        protocol = self.security_protocol
        if protocol.startswith("SASL_") and self.sasl is None:
            raise ValueError(f"securityProtocol {protocol} needs sasl (its mechanism and "
                             "Secret)")
        if not protocol.startswith("SASL_") and self.sasl is not None:
            raise ValueError(f"sasl is used only with SASL_PLAINTEXT or SASL_SSL, not "
                             f"{protocol}")
        if not protocol.endswith("SSL") and self.ca_ref is not None:
            raise ValueError(f"caRef is used only with SSL or SASL_SSL, not {protocol}")
        return self


class EventSink(_SinkModel):
    name: str = Field(pattern=SINK_NAME, description="Names the sink in status.pendingEvents "
                      "and the EventsDelivered condition.")
    webhook: WebhookSink | None = Field(None, description="An HTTP endpoint each event is "
                                       "POSTed to (set this or kafka).")
    kafka: KafkaSink | None = Field(None, description="A Kafka topic each event is produced to "
                                    "(acks=all, idempotent; set this or webhook).")
    types: list[Annotated[EventType, Field(strict=False)]] = Field(default_factory=list, description="The events it receives; "
                                   "empty: every one.")

    @model_validator(mode="after")
    def _one_kind(self) -> "EventSink":
        if (self.webhook is None) == (self.kafka is None):
            raise ValueError(f"sink {self.name}: set exactly one of webhook and kafka")
        return self

    def wants(self, event: EventType | str) -> bool:
        return not self.types or str(event) in {str(kind) for kind in self.types}


@dataclass(frozen=True)
class MlflowRunSink:
    """spec.output.mlflow as one of the outbox's sinks: the evaluation's end, logged as one
    MLflow run (not a spec sink: its name is reserved, :data:`MLFLOW_SINK`)."""

    experiment: str
    run_name: str | None = None

    def wants(self, event: EventType | str) -> bool:
        return str(event) in (EventType.Succeeded, EventType.Failed)


class EventsSpec(_SinkModel):
    sinks: list[EventSink] = Field(default_factory=list, max_length=8, description="Where this "
                                   "object's events go, besides the platform's sinks.")

    @model_validator(mode="after")
    def _unique_names(self) -> "EventsSpec":
        names = [sink.name for sink in self.sinks]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"sink names must be unique: {', '.join(twice)} named twice")
        return self


# ---------------------------------------------------------------------------- status: the outbox
class _StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class EventData(_StatusModel):
    """The event's ``data``: what a consumer acts on without reading the object."""

    kind: str = Field(description="ModelEvaluation or EvaluationSchedule.")
    name: str = Field(description="The object's name.")
    namespace: str = Field(description="Its namespace.")
    uid: str = Field(description="Its uid.")
    attempt: int = Field(0, description="The attempt it tells of.")
    phase: str | None = Field(None, description="The phase after the event.")
    reason: str | None = Field(None, description="The reason of a failure.")
    message: str | None = Field(None, max_length=MESSAGE_CHARS, description="In words.")
    model: str | None = Field(None, description="The candidate's URI.")
    model_version: str | None = Field(None, description="The registered version a models:/ "
                                      "candidate resolved to (status.resolvedModels).")
    dataset: str | None = Field(None, description="The dataset's URI.")
    started: Time | None = Field(None, description="When the operator accepted the evaluation.")
    primary_metric: str | None = Field(None, description="e.g. ndcg@10=0.8562.")
    metrics: dict[str, float] = Field(default_factory=dict, description="The metrics status "
                                      "holds.")
    intervals: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(
        default_factory=dict, description="Each metric's bootstrap interval, [lower, upper], "
        "when the evaluation drew them (spec.confidence).")
    gate_passed: bool | None = Field(None, description="Whether the candidate's gate passed.")
    drifted_share: float | None = Field(None, description="Share of the features that drifted.")
    report_uri: str | None = Field(None, alias="reportURI", description="The HTML report.")


class PendingEvent(_StatusModel):
    """An event not yet acknowledged by every sink it is for."""

    id: str = Field(description="uid.attempt.type: the same event keeps its id when resent.")
    type: EventType
    time: Time = Field(description="When it happened.")
    sinks: list[str] = Field(description="The sinks that have not acknowledged it yet.")
    tries: int = Field(0, description="Sends that failed so far.")
    next_try_time: Time | None = Field(None, description="Not sent again before this "
                                       "(exponential backoff after a failure).")
    data: EventData = Field(description="The CloudEvent's data.")


def event_id(uid: str, attempt: int, event: EventType | str) -> str:
    return f"{uid}.{attempt}.{str(event).lower()}"


def cloud_event(pending: PendingEvent, source: str) -> dict[str, Any]:
    """The structured-mode CloudEvent (JSON event format, spec 1.0) of a pending event:
    ``source`` is the object's API path, ``subject`` namespace/name."""
    data = pending.data
    kind = "schedule" if data.kind == "EvaluationSchedule" else "evaluation"
    return {"specversion": SPEC_VERSION, "id": pending.id, "source": source,
            "type": ce_type(kind, pending.type), "subject": f"{data.namespace}/{data.name}",
            "time": rfc3339(pending.time), "datacontenttype": "application/json",
            "data": data.model_dump(by_alias=True, mode="json", exclude_none=True)}


def encode(event: dict[str, Any]) -> bytes:
    """The bytes every sink sends (and the HMAC covers): compact, keys sorted."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


def object_source(plural: str, namespace: str, name: str, version: str = "v1alpha1") -> str:
    """The CloudEvents source: the object's path on the Kubernetes API."""
    return f"/apis/{API_GROUP}/{version}/namespaces/{namespace}/{plural}/{name}"


def is_due(pending: PendingEvent, now: datetime) -> bool:
    return pending.next_try_time is None or now >= pending.next_try_time
