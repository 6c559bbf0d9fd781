"""The sinks against real endpoints on loopback: an HTTP receiver in this process that
acknowledges, refuses or is gone, and a Kafka address where no broker listens. A sink that does
not acknowledge answers with why, within its timeout, and never raises into the round."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modeleval.api.events import EventData, EventSink, EventType, PendingEvent, cloud_event
from modeleval.controller.secrets import NamespaceSecrets
from modeleval.controller.sinks import EventSinks, KafkaSender, WebhookSender
from testbed.bed import LOOPBACK, free_port


class Answering(BaseHTTPRequestHandler):
    status = 204
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802
        type(self).bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args) -> None:
        """No line per request on stderr (http.server's default)."""


@pytest.fixture()
def receiver():
    Answering.status, Answering.bodies = 204, []
    server = ThreadingHTTPServer((LOOPBACK, 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{LOOPBACK}:{server.server_port}/hook"
    server.shutdown()


def events(count: int = 2) -> list[dict]:
    made = []
    for index in range(count):
        data = EventData(kind="ModelEvaluation", name=f"ev{index}", namespace="ns", uid=f"u{index}")
        pending = PendingEvent(id=f"u{index}.1.failed", type=EventType.Failed,
                               time="2026-12-06T12:00:00Z", sinks=["hook"], data=data)
        made.append(cloud_event(pending, f"/apis/x/ev{index}"))
    return made


def hook(url: str, **extra) -> EventSink:
    return EventSink.model_validate({"name": "hook", "webhook": {"url": url, **extra}})


def unreadable_secrets() -> NamespaceSecrets:
    def no_cluster():
        raise AssertionError("an unsigned webhook or a Kafka sink reads no Secret")
    return NamespaceSecrets(no_cluster)


def test_a_2xx_acknowledges_each_event_and_the_body_is_the_cloudevent(receiver):
    sent = events()
    answers = WebhookSender().send(hook(receiver).webhook, sent, None)
    assert answers == {"u0.1.failed": None, "u1.1.failed": None}
    assert [json.loads(body) for body in Answering.bodies] == sent


def test_a_refusing_receiver_and_a_gone_one_are_errors_not_exceptions(receiver):
    Answering.status = 503
    sinks = EventSinks(unreadable_secrets(), lambda: None)
    refused = sinks.send("ns", [("hook", hook(receiver))], {"hook": events()})
    assert [(d.event_id, d.error) for d in refused] == [("u0.1.failed", "HTTP 503"),
                                                         ("u1.1.failed", "HTTP 503")]
    gone = f"http://{LOOPBACK}:{free_port()}/hook"
    started = time.monotonic()
    down = sinks.send("ns", [("hook", hook(gone, timeoutSeconds=2))], {"hook": events(3)})
    assert len(down) == 3 and all(d.error.startswith("POST failed: ConnectError") for d in down)
    assert time.monotonic() - started < 2  # refused at once, the rest of the batch not tried


def test_no_broker_is_an_error_within_the_timeout():
    topic = EventSink.model_validate({"name": "bus", "kafka": {
        "bootstrapServers": f"{LOOPBACK}:{free_port()}", "topic": "t"}})
    sinks = EventSinks(unreadable_secrets(), lambda: None, kafka=KafkaSender(timeout=1.5))
    started = time.monotonic()
    answers = sinks.send("ns", [("bus", topic)], {"bus": events()})
    assert time.monotonic() - started < 5
    assert [d.event_id for d in answers] == ["u0.1.failed", "u1.1.failed"]
    assert all(d.error for d in answers), answers


def test_an_address_that_acknowledged_nothing_is_held_for_every_object_then_tried_again(receiver):
    Answering.status = 503
    now = [100.0]
    sinks = EventSinks(unreadable_secrets(), lambda: None, hold=5, clock=lambda: now[0])
    first = sinks.send("ns", [("hook", hook(receiver))], {"hook": events()})
    assert len(Answering.bodies) == 2 and all(d.error == "HTTP 503" for d in first)
    now[0] += 4  # another object's round, naming the same URL, within the hold: not sent
    held = sinks.send("other", [("theirs", hook(receiver))], {"theirs": events(1)})
    assert len(Answering.bodies) == 2
    assert held[0].error == "HTTP 503 (not tried again for 5s after it failed)"
    now[0] += 2
    Answering.status = 204
    again = sinks.send("ns", [("hook", hook(receiver))], {"hook": events()})
    assert len(Answering.bodies) == 4 and all(d.error is None for d in again)
