"""Where events go out of the platform: an HTTP webhook, a Kafka topic and an evaluation's
MLflow run (:mod:`.tracking`), behind one small interface (send a batch, get back which the
sink acknowledged). What is sent is decided in ``events.py``; a sink that is down never raises
into a round: its answer is an error string that the outbox records, and the event is sent
again with backoff.

A webhook's HMAC key comes from a Secret in the object's own namespace (the platform's sinks:
the operator's namespace), read as the tenant's other credentials are (``secrets.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx

from ..api.events import (CONTENT_TYPE, SIGNATURE_HEADER, KafkaSink, MlflowRunSink,
                          WebhookSink, encode)
from .events import PLATFORM_PREFIX, Delivery, Sink
from .secrets import MissingCredentials, NamespaceSecrets
from .tracking import RunTracker

log = logging.getLogger(__name__)
KAFKA_SASL_KEYS = ("username", "password")  # a kubernetes.io/basic-auth Secret's keys
KAFKA_TIMEOUT = 10.0  # seconds a batch may wait for the broker's acknowledgement


def signature(key: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _slack_text(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as markup (links, mentions): user strings are escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(event: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook message of a CloudEvent: one line of text, a block
    with the facts (the CloudEvent's id stays in the message for deduplication)."""
    data = event.get("data") or {}
    what = event["type"].rsplit(".", 1)[-1]
    headline = f"{data.get('kind', 'ModelEvaluation')} {event['subject']} {what}"
    facts = [f"*{key}*: {data[key]}" for key in ("primaryMetric", "gatePassed", "driftedShare",
                                                 "reason", "message", "reportURI")
             if data.get(key) is not None]
    text = _slack_text(headline)
    body = "\n".join(_slack_text(fact) for fact in facts)
    return {"text": text, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*\n{body}".strip()}},
        {"type": "context", "elements": [{"type": "mrkdwn",
                                          "text": _slack_text(f"id {event['id']}")}]}]}


def webhook_request(sink: WebhookSink, event: dict[str, Any], key: bytes | None
                    ) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one event's POST."""
    if sink.format == "slack":
        body, headers = json.dumps(slack_message(event)).encode(), {"Content-Type": "application/json"}
    else:
        body, headers = encode(event), {"Content-Type": CONTENT_TYPE}
    headers["ce-id"] = event["id"]  # lets a receiver drop a repeat before parsing
    if key is not None:
        headers[SIGNATURE_HEADER] = signature(key, body)
    return body, headers


class WebhookSender:
    def __init__(self, client: httpx.Client | None = None):
        self.client = client or httpx.Client(follow_redirects=False)

    def send(self, sink: WebhookSink, events: list[dict[str, Any]], key: bytes | None
             ) -> dict[str, str | None]:
        """POSTs each event; a 2xx answer acknowledges it. After a failure to connect the
        rest of the batch is not tried (each would wait out the same timeout)."""
        answers: dict[str, str | None] = {}
        for event in events:
            body, headers = webhook_request(sink, event, key)
            try:
                reply = self.client.post(sink.url, content=body, headers=headers,
                                         timeout=sink.timeout_seconds)
            except httpx.HTTPError as error:
                why = f"POST failed: {type(error).__name__}: {error}"
                return {**answers, **{e["id"]: why for e in events if e["id"] not in answers}}
            answers[event["id"]] = None if reply.is_success else f"HTTP {reply.status_code}"
        return answers


class KafkaSender:
    """One idempotent producer (acks=all) per broker list, kept between rounds."""

    def __init__(self, size: int = 16, timeout: float = KAFKA_TIMEOUT):
        self.size, self.timeout = size, timeout
        self._producers: OrderedDict[str, Any] = OrderedDict()
        # The last error librdkafka reported for each producer outside a delivery (refused
        # credentials, a certificate that does not verify): what a timed-out event was up against.
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(servers: str, security: dict[str, str]) -> str:
        return servers + "\0" + hashlib.sha256(json.dumps(security, sort_keys=True)
                                                .encode()).hexdigest()

    def producer(self, servers: str, security: dict[str, str] | None = None) -> Any:
        """The producer for these brokers and this security (protocol, SASL credentials, CA):
        one per distinct pair, so one tenant's credentials never send another's events."""
        from confluent_kafka import Producer  # only an operator with a Kafka sink loads it

        security = security or {}
        key = self._key(servers, security)

        def remember(error: Any) -> None:
            self._errors[key] = error.str()

        with self._lock:
            if key not in self._producers:
                self._producers[key] = Producer({
                    "bootstrap.servers": servers, "acks": "all", "enable.idempotence": True,
                    "message.timeout.ms": int(self.timeout * 1000), "linger.ms": 5,
                    "client.id": "modeleval-operator",
                    # librdkafka's own lines go to the operator's log, not raw to stderr
                    # (a broker down logs every reconnect).
                    "logger": log, "log.connection.close": False, "error_cb": remember,
                    **security})
                while len(self._producers) > self.size:
                    dropped, producer = self._producers.popitem(last=False)
                    producer.flush(0)
                    self._errors.pop(dropped, None)
            self._producers.move_to_end(key)
            return self._producers[key]

    def send(self, sink: KafkaSink, events: list[dict[str, Any]],
             security: dict[str, str] | None = None) -> dict[str, str | None]:
        """Produces each event keyed by its subject; acknowledged once every in-sync replica
        has it (the delivery report), within the timeout."""
        producer = self.producer(sink.bootstrap_servers, security)
        key = self._key(sink.bootstrap_servers, security or {})
        self._errors.pop(key, None)
        answers: dict[str, str | None] = {}

        def reporter(event_id: str) -> Callable[[Any, Any], None]:
            def report(error: Any, message: Any) -> None:
                answers[event_id] = None if error is None else error.str()
            return report

        for event in events:
            producer.produce(sink.topic, value=encode(event), key=event["subject"].encode(),
                             headers={"content-type": CONTENT_TYPE, "ce_id": event["id"]},
                             on_delivery=reporter(event["id"]))
        producer.flush(self.timeout + 1)
        last = self._errors.get(key)
        found = {}
        for event in events:
            why = answers.get(event["id"], f"no acknowledgement within {self.timeout:.0f}s")
            if why is not None and last and last not in why:
                why = f"{why} (last error: {last})"
            found[event["id"]] = None if why is None else f"Kafka {sink.bootstrap_servers}: {why}"
        return found


def kafka_security(sink: KafkaSink, secret: Callable[[str, tuple[str, ...]], list[str]]
                   ) -> dict[str, str]:
    """librdkafka's settings for the sink's protocol, with its SASL credentials and CA bundle
    as ``secret(name, keys)`` reads them from the owner's namespace. The brokers' host names
    are verified (librdkafka's default, stated so that no default can change it)."""
    security = {"security.protocol": sink.security_protocol}
    if sink.sasl is not None:
        username, password = secret(sink.sasl.secret_name, KAFKA_SASL_KEYS)
        security.update({"sasl.mechanism": sink.sasl.mechanism, "sasl.username": username,
                         "sasl.password": password})
    if sink.security_protocol.endswith("SSL"):
        security["ssl.endpoint.identification.algorithm"] = "https"
        if sink.ca_ref is not None:
            security["ssl.ca.pem"] = secret(sink.ca_ref.name, (sink.ca_ref.key,))[0]
    return security


def sink_address(sink: Sink, namespace: str) -> str:
    """Where a sink sends: its brokers, or its URL (objects naming the same share a state);
    an MLflow run or a Kafka sink with SASL credentials, with whose credentials too (one
    tenant's refusal holds no other's)."""
    if isinstance(sink, MlflowRunSink):
        return f"mlflow:{namespace}"
    if sink.kafka is not None:
        sasl = sink.kafka.sasl
        owner = f"#{namespace}/{sasl.secret_name}" if sasl is not None else ""
        return f"kafka://{sink.kafka.bootstrap_servers}{owner}"
    return sink.webhook.url


class EventSinks:
    """Sends a batch of CloudEvents to each sink it is for, with the credentials the sink's
    owner gives: the object's namespace, or the operator's for the platform's sinks."""

    def __init__(self, secrets: NamespaceSecrets, operator_namespace: Callable[[], str | None],
                 webhook: WebhookSender | None = None, kafka: KafkaSender | None = None,
                 hold: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 tracker: RunTracker | None = None):
        self.secrets, self.operator_namespace = secrets, operator_namespace
        self.webhook, self.kafka = webhook or WebhookSender(), kafka or KafkaSender()
        self.tracker = tracker
        # An address that acknowledged nothing is not tried again for ``hold`` seconds, by any
        # object: a broker down costs one producer timeout per hold, not one per object's round
        # (each would hold one of the operator's handler threads for that long).
        self.hold, self.clock = hold, clock
        self._down: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def send(self, namespace: str, sinks: list[tuple[str, Sink]],
             batches: dict[str, list[dict[str, Any]]]) -> list[Delivery]:
        """``batches``: each sink's events (CloudEvents). Never raises for a sink's fault."""
        deliveries = []
        for name, sink in sinks:
            events = batches.get(name) or []
            if events:
                answers = self._answers(namespace, name, sink, events)
                deliveries += [Delivery(event_id, name, why) for event_id, why in answers.items()]
        return deliveries

    def _answers(self, namespace: str, name: str, sink: Sink,
                 events: list[dict[str, Any]]) -> dict[str, str | None]:
        address = sink_address(sink, namespace)
        with self._lock:
            since, why = self._down.get(address, (None, ""))
        if since is not None and self.clock() - since < self.hold:
            held = f"{why} (not tried again for {self.hold:.0f}s after it failed)"
            return {event["id"]: held for event in events}
        try:
            answers = self._send(namespace, name, sink, events)
        except (MissingCredentials, ValueError) as error:  # the sink's configuration, not its address
            return {event["id"]: getattr(error, "message", str(error)) for event in events}
        except Exception as error:  # a client library's own failure: the event waits
            log.warning("event sink %s of %s: %s", name, namespace, error)
            answers = {event["id"]: f"{type(error).__name__}: {error}" for event in events}
        with self._lock:
            if all(why is not None for why in answers.values()):
                self._down[address] = (self.clock(), next(iter(answers.values())))
            else:
                self._down.pop(address, None)
        return answers

    def _send(self, namespace: str, name: str, sink: Sink,
              events: list[dict[str, Any]]) -> dict[str, str | None]:
        if isinstance(sink, MlflowRunSink):
            if self.tracker is None:
                raise ValueError(f"sink {name}: this operator logs no MLflow runs")
            return self.tracker.send(namespace, sink, events)
        if sink.kafka is not None:
            security = kafka_security(sink.kafka, lambda secret, keys: self.secrets.keys(
                self._owner(name, namespace), secret, keys))
            return self.kafka.send(sink.kafka, events, security)
        ref = sink.webhook.secret_ref
        key = None
        if ref is not None:
            key = self.secrets.keys(self._owner(name, namespace), ref.name,
                                    (ref.key,))[0].encode()
        return self.webhook.send(sink.webhook, events, key)

    def _owner(self, name: str, namespace: str) -> str:
        """The namespace a sink's Secrets are read from: the operator's for the platform's
        sinks, the object's own for its own."""
        if not name.startswith(PLATFORM_PREFIX):
            return namespace
        owner = self.operator_namespace()
        if not owner:
            raise ValueError(f"sink {name}: the platform's Secrets need the operator's "
                             "namespace (MODELEVAL_OPERATOR_NAMESPACE)")
        return owner
