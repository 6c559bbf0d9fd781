"""Fixtures the operator e2e modules share: an API client, the operator as a local process (one
per module), and a fresh namespace with the example Secrets per test."""

from __future__ import annotations

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
