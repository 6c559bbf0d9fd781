"""The chart's dashboard on the real node: its rendered objects (ServiceAccount, ClusterIP
Service, Deployment, NetworkPolicy) run the operator's image as `python -m modeleval.ui` on one
results database; through `kubectl port-forward` to the Service (the documented way in) the list
page shows a stored evaluation with the token and answers 401 without it; the NetworkPolicy
lets the pod reach MongoDB's port and nothing else."""

from __future__ import annotations

import re
import secrets
import subprocess
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from kubernetes import client
from pymongo import MongoClient

from modeleval.api.results import ResultDocument, document_id
from modeleval.store import MongoResultStore
from testbed import Tools

from .kube import api_client, eventually
from .operator_fixture import kubectl
from .test_real_node import CHART, connection, helm, real_node_namespace, refused, secret

pytestmark = pytest.mark.e2e
RELEASE = "dash"
NAME = f"{RELEASE}-modeleval-dashboard"


def stored_result(bed, database: str, namespace: str) -> ResultDocument:
    uid = uuid.uuid4().hex[:12]
    document = ResultDocument(_id=document_id(uid, 1), uid=uid, attempt=1, name="dash-listed",
                              namespace=namespace, status="Succeeded", primary_metric="ndcg@10",
                              metrics={"ndcg@10": 0.8426}, rows=6000,
                              model={"uri": "s3://modeleval-examples/models/ranker.json"},
                              dataset={"uri": "s3://modeleval-examples/mslr/test.txt"})
    MongoResultStore(bed.mongodb_uri, database).upsert(document)
    return document


def rendered_dashboard(bed, namespace: str, database: str) -> str:
    """The chart's dashboard objects, as `helm install` with these values would create them
    (the operator's objects left out: one operator per bed)."""
    mongo_port = urlsplit(bed.mongodb_uri).port
    return helm(bed, "template", RELEASE, str(CHART), "-n", namespace,
                "--set", "dashboard.enabled=true", "--set", f"dashboard.database={database}",
                "--set", "dashboard.mongodb.existingSecret=dash-mongodb",
                "--set", "dashboard.auth.tokenSecret=dash-token",
                "--set-json", f"dashboard.mongodb.ports=[{mongo_port}]",
                "--show-only", "templates/dashboard.yaml",
                "--show-only", "templates/dashboard-networkpolicy.yaml")


def ready_pod(bed, api: client.ApiClient, namespace: str) -> client.V1Pod:
    def probe():
        pods = client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/name=modeleval-dashboard").items
        return next((p for p in pods if any(c.type == "Ready" and c.status == "True"
                                            for c in p.status.conditions or [])), None)

    try:
        return eventually(probe, 120, "the dashboard pod to be ready (/healthz)", interval=1)
    except AssertionError:
        selector = "app.kubernetes.io/name=modeleval-dashboard"
        print(kubectl(bed, "describe", "pods", "-n", namespace, "-l", selector, check=False))
        print(kubectl(bed, "logs", "-n", namespace, "-l", selector, "--tail=50", check=False))
        raise


class PortForward:
    """`kubectl port-forward svc/NAME :8765`, on a local port kubectl picks."""

    def __init__(self, bed, namespace: str):
        self.process = subprocess.Popen(
            [str(Tools.locate().kubectl), f"--kubeconfig={bed.kubeconfig}", "port-forward", "-n",
             namespace, f"svc/{NAME}", ":8765"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        line = self.process.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8765"
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert found, f"kubectl port-forward: {line}{self.process.stderr.read() if not line else ''}"
        self.url = f"http://127.0.0.1:{found.group(1)}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def test_the_charts_dashboard_lists_results_with_its_token_only(bed):
    api = api_client(bed.kubeconfig)
    suffix = uuid.uuid4().hex[:6]
    namespace, database, token = f"dash-{suffix}", f"dash_{suffix}", secrets.token_hex(16)
    started = time.monotonic()
    real_node_namespace(bed, namespace)
    forward = None
    try:
        document = stored_result(bed, database, namespace)
        kubectl(bed, "apply", "-n", namespace, "-f", "-",
                input=secret("dash-mongodb", {"MONGODB_URI": bed.mongodb_uri}))
        kubectl(bed, "apply", "-n", namespace, "-f", "-", input=secret("dash-token", {"token": token}))
        kubectl(bed, "apply", "-n", namespace, "-f", "-", input=rendered_dashboard(bed, namespace, database))
        pod = ready_pod(bed, api, namespace)
        assert client.CoreV1Api(api).read_namespaced_service(NAME, namespace).spec.type == "ClusterIP"

        forward = PortForward(bed, namespace)
        assert httpx.get(f"{forward.url}/healthz", timeout=10).status_code == 200
        refused_page = httpx.get(f"{forward.url}/", timeout=30)
        assert refused_page.status_code == 401 and "dash-listed" not in refused_page.text
        listed = httpx.get(f"{forward.url}/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert listed.status_code == 200, listed.text[:2000]
        assert "dash-listed" in listed.text and document.uid in listed.text
        # The NetworkPolicy: MongoDB's port (the page above came from it), nothing else, e.g.
        # not MinIO on the same host.
        mongo = urlsplit(bed.mongodb_uri)
        name = pod.metadata.name
        assert connection(bed, namespace, name, mongo.hostname, mongo.port) == "connected"
        assert refused(bed, namespace, name, bed.host_ip, urlsplit(bed.s3_endpoint).port)
        print(f"dashboard from apply to checked: {time.monotonic() - started:.1f}s")
    finally:
        if forward is not None:
            forward.stop()
        kubectl(bed, "delete", "namespace", namespace, "--ignore-not-found", "--wait=false")
        with MongoClient(bed.mongodb_uri) as mongo_client:
            mongo_client.drop_database(database)
