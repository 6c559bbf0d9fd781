"""The chart's dashboard on the real node: its rendered objects (ServiceAccount, ClusterIP
Service, Deployment, NetworkPolicy, and with dashboard.livePhase its read-only Role) run the
operator's image as `python -m modeleval.ui` on one results database; through `kubectl
port-forward` to the Service (the documented way in) the list page shows a stored evaluation,
with its live phase read by the pod's own ServiceAccount, with the token, and answers 401
without it; the NetworkPolicy keeps the pod from the cloud metadata address."""

from __future__ import annotations

import re
import secrets
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from kubernetes import client
from pymongo import MongoClient

from modeleval.api.results import ResultDocument, document_id
from modeleval.store import MongoResultStore
from testbed import Tools
from testbed.node import METADATA_ADDRESS, METADATA_PORT

from .kube import api_client, eventually
from .operator_fixture import CRD, EVALUATIONS, kubectl
from .test_real_node import CHART, helm, real_node_namespace, refused, secret

pytestmark = pytest.mark.e2e
RELEASE = "dash"
NAME = f"{RELEASE}-modeleval-dashboard"
LIVE_SPEC = {"task": "binary", "model": {"uri": "s3://models/m.json"},
             "dataset": {"uri": "s3://data/d.parquet", "format": "parquet", "labelColumn": "y"},
             "metrics": ["auc"], "suspend": True}


def stored_result(bed, database: str, namespace: str, uid: str) -> ResultDocument:
    document = ResultDocument(_id=document_id(uid, 1), uid=uid, attempt=1, name="dash-listed",
                              namespace=namespace, status="Succeeded", primary_metric="ndcg@10",
                              metrics={"ndcg@10": 0.8426}, rows=6000,
                              model={"uri": "s3://modeleval-examples/models/ranker.json"},
                              dataset={"uri": "s3://modeleval-examples/mslr/test.txt"})
    MongoResultStore(bed.mongodb_uri, database).upsert(document)
    return document


def rendered_dashboard(bed, namespace: str, database: str) -> str:
    """The chart's dashboard objects, as `helm install` with these values would create them
    (the operator's objects left out: one operator per bed). The pods reach the API server at
    the kubernetes Service's 443, which kube-proxy turns into the bed's API server port."""
    mongo_port, api_port = urlsplit(bed.mongodb_uri).port, urlsplit(bed.apiserver).port
    return helm(bed, "template", RELEASE, str(CHART), "-n", namespace,
                "--set", "dashboard.enabled=true", "--set", f"dashboard.database={database}",
                "--set", "dashboard.mongodb.existingSecret=dash-mongodb",
                "--set", "dashboard.auth.tokenSecret=dash-token",
                "--set-json", f"dashboard.mongodb.ports=[{mongo_port}]",
                "--set", "dashboard.livePhase=true", "--set", f"watchNamespaces[0]={namespace}",
                "--set-json", f"dashboard.apiServerPorts=[443, {api_port}]",
                "--show-only", "templates/dashboard.yaml",
                "--show-only", "templates/dashboard-networkpolicy.yaml",
                "--show-only", "templates/dashboard-rbac.yaml")


def live_evaluation(api: client.ApiClient, namespace: str) -> str:
    """A ModelEvaluation no operator acts on (suspended), its phase set by hand; its uid."""
    custom = client.CustomObjectsApi(api)
    made = custom.create_namespaced_custom_object(*EVALUATIONS[:2], namespace, EVALUATIONS[2], {
        "apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
        "metadata": {"name": "dash-listed"}, "spec": LIVE_SPEC})
    custom.patch_namespaced_custom_object_status(*EVALUATIONS[:2], namespace, EVALUATIONS[2],
                                                 "dash-listed", {"status": {"phase": "Running"}})
    return made["metadata"]["uid"]


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
        kubectl(bed, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev")
        document = stored_result(bed, database, namespace, live_evaluation(api, namespace))
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
        # The live phase, read with the pod's ServiceAccount (its Role in this namespace only).
        assert '<td class="phase">Running</td>' in listed.text, listed.text[:4000]
        # The NetworkPolicy admits DNS, MongoDB and the API server only: the cloud metadata
        # address (a listener answers there) is refused. (The bed's enforcer judges routed
        # traffic; the node's own address, where MongoDB and MinIO listen, is never judged, as
        # with many CNIs.)
        assert refused(bed, namespace, pod.metadata.name, METADATA_ADDRESS, METADATA_PORT)
        log = Path(bed.dir, "logs", "kube-network-policies.log").read_text()
        assert f'srcPod="{namespace}/{pod.metadata.name}"' in log, "the enforcer judged the pod"
        print(f"dashboard from apply to checked: {time.monotonic() - started:.1f}s")
    finally:
        if forward is not None:
            forward.stop()
        kubectl(bed, "delete", "namespace", namespace, "--ignore-not-found", "--wait=false")
        with MongoClient(bed.mongodb_uri) as mongo_client:
            mongo_client.drop_database(database)
