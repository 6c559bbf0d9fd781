"""Sustained events per second out of the operator's sinks, against a real Kafka broker (one
KRaft node, the test bed's: `hack/build-tools.sh kafka`) and a real HTTP receiver (a threaded
server in this process that checks each request's HMAC signature).

  python bench/events.py [--events 20000] [--batch 16] [--runs 3]

The operator's own code sends: KafkaSender (idempotent producer, acks=all: a batch counts once
the broker acknowledged every event) and WebhookSender (one signed POST per event, keep-alive),
in batches of --batch (an object's outbox holds at most 16, and a round sends one object's).
What it prints: events/s per sink (median of --runs), and the median latency of one batch.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from modeleval.api.events import (EventData, EventSink, EventType, PendingEvent,  # noqa: E402
                                  cloud_event, event_id, object_source)
from modeleval.controller.sinks import KafkaSender, WebhookSender  # noqa: E402
from testbed.kafka import KafkaBroker  # noqa: E402

KEY = b"bench-signing-key"


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver behind a proxy would
    count = 0
    bad = 0

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, self.headers.get("X-Modeleval-Signature", "")):
            type(self).count += 1
        else:
            type(self).bad += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        """No line per request on stderr (http.server's default)."""


def events(count: int) -> list[dict]:
    now = datetime.now(timezone.utc)
    made = []
    for index in range(count):
        data = EventData(kind="ModelEvaluation", name=f"ev-{index}", namespace="bench",
                         uid=f"uid-{index}", attempt=1, phase="Succeeded",
                         primary_metric="ndcg@10=0.8123", metrics={"ndcg@10": 0.8123})
        pending = PendingEvent(id=event_id(data.uid, 1, EventType.Succeeded),
                               type=EventType.Succeeded, time=now, sinks=["bench"], data=data)
        made.append(cloud_event(pending, object_source("modelevaluations", "bench", data.name)))
    return made


def rate(send, batches: list[list[dict]]) -> tuple[float, float]:
    """(events/s over every batch, median seconds of one batch)."""
    took = []
    start = time.perf_counter()
    for batch in batches:
        began = time.perf_counter()
        answers = send(batch)
        took.append(time.perf_counter() - began)
        failed = [why for why in answers.values() if why is not None]
        if failed:
            raise SystemExit(f"a sink refused events: {failed[0]}")
    return sum(map(len, batches)) / (time.perf_counter() - start), statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    made = events(args.events)
    batches = [made[i:i + args.batch] for i in range(0, len(made), args.batch)]
    broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="bench-kafka-"))).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        broker.wait_ready()
        kafka = KafkaSender()
        topic = EventSink.model_validate({"name": "bench", "kafka": {
            "bootstrapServers": broker.bootstrap, "topic": "bench-events"}}).kafka
        hook = EventSink.model_validate({"name": "bench", "webhook": {
            "url": f"http://127.0.0.1:{server.server_port}/events"}}).webhook
        webhook = WebhookSender()
        rate(lambda batch: kafka.send(topic, batch), batches[:8])  # the topic exists, warm
        results = {"kafka": [], "webhook": []}
        for _ in range(args.runs):
            results["kafka"].append(rate(lambda batch: kafka.send(topic, batch), batches))
            results["webhook"].append(rate(lambda batch: webhook.send(hook, batch, KEY), batches))
        print(f"{args.events} CloudEvents in batches of {args.batch}, median of {args.runs} runs")
        print(f"{'sink':10} {'events/s':>10} {'batch ms':>10}")
        for name, runs in results.items():
            per_second = statistics.median(r[0] for r in runs)
            batch_ms = 1000 * statistics.median(r[1] for r in runs)
            print(f"{name:10} {per_second:10.0f} {batch_ms:10.1f}")
        if Receiver.bad or Receiver.count != args.events * args.runs:
            raise SystemExit(f"receiver: {Receiver.count} signed, {Receiver.bad} bad signatures")
    finally:
        server.shutdown()
        broker.stop()


if __name__ == "__main__":
    main()
