"""Fixtures the operator e2e modules share: an API client, the operator as a local process (one
per module), and a fresh namespace with the example Secrets per test."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modeleval.demo import EXAMPLES_BUCKET, publish_example_assets
from modeleval.engine.storage import Storage

from .kube import api_client
from .operator_fixture import CRD, OperatorProcess, kubectl, new_namespace


@pytest.fixture(scope="module")
def api(bed):
    return api_client(bed.kubeconfig)


@pytest.fixture(scope="module")
def operator(bed, tmp_path_factory):
    kubectl(bed, "apply", "--server-side", "-f", str(CRD))
    kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev")
    publish_example_assets(Storage(), EXAMPLES_BUCKET)
    process = OperatorProcess(bed, tmp_path_factory.mktemp("operator") / "operator.log").start()
    yield process
    process.stop()


@pytest.fixture()
def namespace(bed, api, operator):
    name = new_namespace(bed, api)
    yield name
    client.CoreV1Api(api).delete_namespace(name)


# ----------------------------------------------------------------------------- Kafka
# A real broker for the event sinks' tests, started as soon as the tests are collected when one
# of them asks for it, so it comes up while the bed does; waited for by the first that needs it.
_KAFKA: dict[str, Any] = {}


def pytest_collection_modifyitems(session, config, items) -> None:
    if any("kafka" in getattr(item, "fixturenames", ()) for item in items):
        from testbed.kafka import KafkaBroker

        directory = Path(tempfile.mkdtemp(prefix="modeleval-kafka-"))
        _KAFKA["broker"] = KafkaBroker(directory).start()


@pytest.fixture(scope="session")
def kafka():
    broker = _KAFKA.get("broker")
    if broker is None:  # collected some other way: start it now
        from testbed.kafka import KafkaBroker

        broker = _KAFKA["broker"] = KafkaBroker(Path(tempfile.mkdtemp(
            prefix="modeleval-kafka-"))).start()
    try:
        yield broker.wait_ready()
    finally:
        broker.stop()
        shutil.rmtree(broker.dir, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    """A broker started at collection whose tests never ran is stopped and removed too."""
    broker = _KAFKA.pop("broker", None)
    if broker is not None:
        broker.stop()
        shutil.rmtree(broker.dir, ignore_errors=True)
