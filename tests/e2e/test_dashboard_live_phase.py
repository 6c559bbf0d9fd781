"""`modeleval ui --kubeconfig` against the bed's real API server: each evaluation's live phase,
read with the user's own credentials. A user who may list ModelEvaluations in one namespace only
sees that namespace's phases; the others say "phase unknown" and why; an evaluation deleted
from the cluster says so; the page never fails."""

from __future__ import annotations

import base64
import re
import uuid
import warnings
from pathlib import Path

import pytest
import yaml
from kubernetes import client

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from dashboard_documents import document
from modeleval.store import LocalResultStore
from modeleval.ui.app import create_app
from modeleval.ui.config import UIConfig

from .kube import api_client
from .operator_fixture import CRD, EVALUATIONS, kubectl

pytestmark = pytest.mark.e2e
SPEC = {"task": "binary", "model": {"uri": "s3://models/m.json"},
        "dataset": {"uri": "s3://data/d.parquet", "format": "parquet", "labelColumn": "y"},
        "metrics": ["auc"], "suspend": True}


def _evaluation(custom, namespace: str, name: str, phase: str) -> str:
    made = custom.create_namespaced_custom_object(*EVALUATIONS[:2], namespace, EVALUATIONS[2], {
        "apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
        "metadata": {"name": name}, "spec": SPEC})
    custom.patch_namespaced_custom_object_status(*EVALUATIONS[:2], namespace, EVALUATIONS[2],
                                                 name, {"status": {"phase": phase}})
    return made["metadata"]["uid"]


def _viewer_kubeconfig(bed, api, namespace: str, path: Path) -> Path:
    """A kubeconfig of a ServiceAccount that may list ModelEvaluations in ``namespace`` only."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "viewer"}})
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "viewer"},
        "rules": [{"apiGroups": ["modeleval.dev"], "resources": ["modelevaluations"],
                   "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}]})
    token = core.create_namespaced_service_account_token(
        "viewer", namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(Path(bed.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        data = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(data).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "viewer",
        "clusters": [{"name": "bed", "cluster": cluster}],
        "users": [{"name": "viewer", "user": {"token": token}}],
        "contexts": [{"name": "viewer", "context": {"cluster": "bed", "user": "viewer"}}]}))
    return path


def _phases(html: str) -> dict[str, str]:
    rows = re.findall(r'<tr class="evaluation" data-uid="([^"]+)">.*?<td class="phase">(.*?)</td>',
                      html, re.S)
    return {uid: re.sub(r"<[^>]+>", "", cell).strip() for uid, cell in rows}


def test_live_phase_with_the_users_own_credentials(bed, tmp_path):
    kubectl(bed, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev")
    api = api_client(bed.kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    mine, theirs = (f"dash-{uuid.uuid4().hex[:6]}" for _ in range(2))
    for namespace in (mine, theirs):
        core.create_namespace({"metadata": {"name": namespace}})
    try:
        running = _evaluation(custom, mine, "running", "Running")
        other = _evaluation(custom, theirs, "other", "Succeeded")
        store = LocalResultStore(tmp_path / "results")
        for uid, namespace in ((running, mine), (other, theirs), ("gone1", mine)):
            store.upsert(document(uid, name=f"n-{uid}", namespace=namespace, curves=False))
        viewer = _viewer_kubeconfig(bed, api, mine, tmp_path / "viewer")

        page = TestClient(create_app(UIConfig(results_dir=tmp_path / "results",
                                              kubeconfig=viewer))).get("/")
        assert page.status_code == 200
        phases = _phases(page.text)
        # as the API server holds it now (an operator on the bed may have written it since)
        now = custom.get_namespaced_custom_object(*EVALUATIONS[:2], mine, EVALUATIONS[2],
                                                  "running").get("status", {}).get("phase")
        assert phases[running] == (now or "Pending")
        assert phases[other] == ("phase unknown: forbidden: your credentials may not list "
                                 "ModelEvaluations here")
        assert phases["gone1"] == "phase unknown: no such ModelEvaluation in the cluster (deleted)"

        admin = TestClient(create_app(UIConfig(results_dir=tmp_path / "results",
                                               kubeconfig=Path(bed.kubeconfig)))).get("/")
        assert not _phases(admin.text)[other].startswith("phase unknown")
    finally:
        for namespace in (mine, theirs):
            core.delete_namespace(namespace)
