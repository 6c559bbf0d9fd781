"""Events leave the platform at least once, across an operator killed between the status write
and the send: a real Kafka broker (KRaft, the platform's sink) and a real HTTP receiver in this
process (the evaluation's own webhook sink, HMAC-signed with the namespace's Secret)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client, watch

from modeleval.demo import EXAMPLES_BUCKET, publish_example_assets
from modeleval.engine.storage import Storage
from testbed.bed import LOOPBACK

from .kube import eventually
from .operator_fixture import (CRD, EVALUATIONS, OperatorProcess, apply_manifest,
                               get_evaluation, kubectl, spec_text)

TOPIC = "modeleval-events"
KEY = b"webhook-signing-key"


class Receiver(BaseHTTPRequestHandler):
    """The webhook's receiver: answers 503 while ``down``, else records each signed event."""

    received: list[tuple[dict, str]] = []
    down = True

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).down:
            self.send_response(503)
        else:
            type(self).received.append((json.loads(body), self.headers.get("X-Modeleval-Signature")))
            self.send_response(204)
            expected = "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(expected, self.headers["X-Modeleval-Signature"])
        self.end_headers()

    def log_message(self, *args) -> None:
        """No line per request on stderr (http.server's default)."""


@pytest.fixture(scope="module")
def receiver():
    server = ThreadingHTTPServer((LOOPBACK, 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{LOOPBACK}:{server.server_port}/events"
    server.shutdown()


def sinks_settings(kafka) -> dict[str, str]:
    return {"MODELEVAL_EVENT_SINKS": json.dumps([{"name": "bus", "kafka": {
                "bootstrapServers": kafka.bootstrap, "topic": TOPIC}}]),
            "MODELEVAL_ALLOW_OBJECT_EVENT_SINKS": "true", "MODELEVAL_POLL_INTERVAL": "3",
            "MODELEVAL_EVENTS_BACKOFF_BASE": "1", "MODELEVAL_EVENTS_BACKOFF_MAX": "2"}


@pytest.fixture(scope="module")
def operator(bed, kafka, tmp_path_factory):
    """This module's operator: the platform's Kafka sink, evaluations' own sinks allowed; a
    slow poll (3 s) leaves a window between a round's status write and the next round's send."""
    kubectl(bed, "apply", "--server-side", "-f", str(CRD))
    publish_example_assets(Storage(), EXAMPLES_BUCKET)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(bed, log, **sinks_settings(kafka)).start()
    yield process
    process.stop()


def consumed(kafka, wanted: set[str], timeout: float = 30) -> dict[str, int]:
    """How many times each event id arrived on the topic, until every wanted one did."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"t{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([TOPIC])
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not wanted <= set(seen):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                event = json.loads(message.value())
                seen[event["id"]] = seen.get(event["id"], 0) + 1
    finally:
        consumer.close()
    return seen


def killed_after_the_write(api, operator, namespace: str, name: str) -> dict:
    """Watches the evaluation until its status holds the Succeeded event, then kills the
    operator at once (SIGKILL): the send is the next round's, 3 s later."""
    stream = watch.Watch().stream(client.CustomObjectsApi(api).list_namespaced_custom_object,
                                  *EVALUATIONS[:2], namespace, EVALUATIONS[2],
                                  field_selector=f"metadata.name={name}", timeout_seconds=240)
    status: dict = {}
    for change in stream:
        status = change["object"].get("status") or {}
        if any(event["type"] == "Succeeded" for event in status.get("pendingEvents") or []):
            operator.kill()
            return change["object"]
    raise AssertionError(f"{name} never held its Succeeded event in status: {status}")


def test_events_reach_kafka_and_the_webhook_at_least_once_across_a_killed_operator(
        bed, api, kafka, operator, namespace, receiver):
    kubectl(bed, "create", "secret", "generic", "hook-key", "-n", namespace,
            f"--from-literal=key={KEY.decode()}")
    hook = {"name": "hook", "webhook": {"url": receiver,
                                        "secretRef": {"name": "hook-key", "key": "key"}}}
    apply_manifest(bed, namespace, spec_text("ev", events={"sinks": [hook]}))
    Receiver.down = True  # the webhook refuses until the operator is restarted
    held = killed_after_the_write(api, operator, namespace, "ev")
    uid = held["metadata"]["uid"]
    succeeded = f"{uid}.1.succeeded"
    after_kill = get_evaluation(api, namespace, "ev")["status"]
    waiting = {e["id"]: e["sinks"] for e in after_kill["pendingEvents"]}
    # Killed between the write and the send: neither sink has had it.
    assert set(waiting[succeeded]) == {"hook", "platform-bus"}

    Receiver.down = False
    restarted = OperatorProcess(bed, operator.log_path, **sinks_settings(kafka)).start()
    try:
        def delivered():
            status = get_evaluation(api, namespace, "ev")["status"]
            return status if not status.get("pendingEvents") else None

        status = eventually(delivered, 60, "every event acknowledged", interval=1)
    finally:
        restarted.stop()
    condition = next(c for c in status["conditions"] if c["type"] == "EventsDelivered")
    assert (condition["status"], condition["reason"]) == ("True", "EventsDelivered")
    assert status["phase"] == "Succeeded"

    on_topic = consumed(kafka, {succeeded, f"{uid}.1.started"})
    assert on_topic.get(succeeded, 0) >= 1 and on_topic.get(f"{uid}.1.started", 0) >= 1
    by_id = {event["id"]: event for event, _ in Receiver.received}
    assert {succeeded, f"{uid}.1.started"} <= set(by_id)
    event = by_id[succeeded]
    assert event["specversion"] == "1.0" and event["subject"] == f"{namespace}/ev"
    assert event["source"] == f"/apis/modeleval.dev/v1alpha1/namespaces/{namespace}/modelevaluations/ev"
    assert event["type"] == "dev.modeleval.evaluation.succeeded"
    assert event["data"]["primaryMetric"].startswith("ndcg@10=")
