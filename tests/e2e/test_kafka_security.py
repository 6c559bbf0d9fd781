"""The Kafka sink over SASL_SSL against the real broker the bed starts (its SASL_SSL listener:
TLS with a certificate from a CA of its own, PLAIN and SCRAM-SHA-512 users): the credentials
and the CA come from the owner's Secrets (the object's namespace, or the operator's for the
platform's sinks), each pair of credentials gets its own producer, and a wrong password or an
unverifiable certificate is an answer naming why, never an acknowledgement. No Kubernetes: the
sinks are driven as the operator's rounds drive them."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from modeleval.api.events import EventSink
from modeleval.controller.secrets import NamespaceSecrets
from modeleval.controller.sinks import EventSinks, KafkaSender

pytestmark = pytest.mark.e2e


class Secrets:
    """The API server's Secrets, as the operator reads them: (namespace, name) -> data."""

    def __init__(self, found: dict[tuple[str, str], dict[str, str]]):
        self.found = found

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.found.get((namespace, name))


def sink(name: str, kafka, topic: str, mechanism: str, secret: str = "kafka-user",
         ca: bool = True) -> EventSink:
    return EventSink.model_validate({"name": name, "kafka": {
        "bootstrapServers": kafka.sasl_bootstrap, "topic": topic, "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": mechanism, "secretName": secret},
        **({"caRef": {"name": "kafka-ca", "key": "ca.crt"}} if ca else {})}})


def event(subject: str) -> dict:
    return {"id": f"{uuid.uuid4()}.1.succeeded", "subject": subject, "type": "t",
            "specversion": "1.0", "source": "/s", "data": {}}


def consumed(kafka, topic: str, user: tuple[str, str], mechanism: str, wanted: set[str],
             timeout: float = 30) -> set[str]:
    """The event ids on ``topic``, read over SASL_SSL as ``user``, until every wanted one came."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": kafka.sasl_bootstrap, "group.id": f"g{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "security.protocol": "SASL_SSL", "sasl.mechanism": mechanism,
                         "sasl.username": user[0], "sasl.password": user[1],
                         "ssl.ca.location": str(kafka.ca_cert)})
    consumer.subscribe([topic])
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not wanted <= seen:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen.add(json.loads(message.value())["id"])
    finally:
        consumer.close()
    return seen


def test_events_reach_kafka_over_sasl_ssl_with_the_owners_credentials_and_ca(kafka):
    ca = kafka.ca_cert.read_text()
    plain, scram = kafka.users["PLAIN"], kafka.users["SCRAM-SHA-512"]
    secrets = Secrets({
        ("team-a", "kafka-user"): {"username": plain[0], "password": plain[1]},
        ("team-a", "kafka-ca"): {"ca.crt": ca},
        ("modeleval", "kafka-user"): {"username": scram[0], "password": scram[1]},
        ("modeleval", "kafka-ca"): {"ca.crt": ca},
        ("team-b", "kafka-user"): {"username": plain[0], "password": "not-the-password"},
        ("team-b", "kafka-ca"): {"ca.crt": ca}})
    sinks = EventSinks(NamespaceSecrets(lambda: secrets), lambda: "modeleval",
                       kafka=KafkaSender(timeout=6.0), hold=0.0)
    topic = f"secure-{uuid.uuid4().hex[:6]}"

    # The object's own sink with its namespace's PLAIN user; the platform's with SCRAM.
    own, platform = event("team-a/ev"), event("team-a/ev2")
    answers = sinks.send("team-a", [("own", sink("own", kafka, topic, "PLAIN")),
                                    ("platform-bus", sink("platform-bus", kafka, topic,
                                                          "SCRAM-SHA-512"))],
                         {"own": [own], "platform-bus": [platform]})
    assert [(d.sink, d.error) for d in answers] == [("own", None), ("platform-bus", None)]
    both = {own["id"], platform["id"]}
    assert consumed(kafka, topic, scram, "SCRAM-SHA-512", both) == both

    # Another tenant's wrong password: not acknowledged, and the answer says why.
    (refused,) = sinks.send("team-b", [("own", sink("own", kafka, topic, "PLAIN"))],
                            {"own": [event("team-b/ev")]})
    assert refused.error is not None and "Authentication failed" in refused.error, refused
    # Without the CA, the broker's certificate does not verify against the system's CAs.
    (untrusted,) = sinks.send("team-a", [("own", sink("own", kafka, topic, "PLAIN", ca=False))],
                              {"own": [event("team-a/ev3")]})
    assert untrusted.error is not None and "certificate verify failed" in untrusted.error, \
        untrusted
    # A Secret that is not there: said, and nothing is sent.
    (missing,) = sinks.send("team-a", [("own", sink("own", kafka, topic, "PLAIN",
                                                    secret="absent"))],
                            {"own": [event("team-a/ev4")]})
    assert "Secret team-a/absent" in missing.error, missing
