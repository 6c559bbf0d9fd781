"""The Helm chart against the test bed's API server: install, run the operator with the chart's
ServiceAccount (not admin), upgrade, uninstall."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from modeleval.demo import EXAMPLES_BUCKET, publish_example_assets
from modeleval.engine.storage import Storage
from testbed import Tools

from .kube import api_client, eventually
from .operator_fixture import ROOT, OperatorProcess, kubectl

pytestmark = pytest.mark.e2e
CHART = ROOT / "charts" / "modeleval"
RELEASE, SYSTEM = "modeleval", "modeleval-system"


def helm(bed, *args: str) -> str:
    result = subprocess.run([str(Tools.locate().helm), f"--kubeconfig={bed.kubeconfig}", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


def token_kubeconfig(bed, path: Path, service_account: str) -> Path:
    token = kubectl(bed, "create", "token", service_account, "-n", SYSTEM, "--duration=2h").strip()
    admin = json.loads(Path(bed.kubeconfig).read_text())
    config = {**admin, "users": [{"name": service_account, "user": {"token": token}}],
              "contexts": [{"name": "sa", "context": {"cluster": "modeleval-bed", "user": service_account}}],
              "current-context": "sa"}
    path.write_text(json.dumps(config))
    return path


def test_install_run_with_chart_rbac_upgrade_uninstall(bed, tmp_path):
    api = api_client(bed.kubeconfig)
    core = client.CoreV1Api(api)
    watched = f"chart-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=watched)))
    kubectl(bed, "apply", "-n", watched, "-f", str(ROOT / "examples" / "secrets.yaml"))
    publish_example_assets(Storage(), EXAMPLES_BUCKET)

    helm(bed, "uninstall", RELEASE, "-n", SYSTEM, "--ignore-not-found", "--wait")  # a failed earlier run
    notes = helm(bed, "install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace",
                 "--set", f"watchNamespaces[0]={watched}", "--set", "rbac.clusterWide=false",
                 "--set", f"s3.endpoint={bed.s3_endpoint}", "--wait=false")
    assert "kubectl apply -f examples/mslr-ranker.yaml" in notes
    kubectl(bed, "wait", "--for=condition=Established", "crd/modelevaluations.modeleval.dev")
    assert "ModelEvaluation" in kubectl(bed, "explain", "modelevaluations")
    deployment = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, SYSTEM)
    assert deployment.spec.replicas == 1 and deployment.spec.strategy.type == "Recreate"
    container = deployment.spec.template.spec.containers[0]
    assert container.security_context.read_only_root_filesystem is True
    assert deployment.spec.template.spec.security_context.run_as_non_root is True
    assert container.liveness_probe.http_get.path == "/healthz"

    kubeconfig = token_kubeconfig(bed, tmp_path / "sa.kubeconfig", RELEASE)
    operator = OperatorProcess(bed, tmp_path / "operator.log", kubeconfig=str(kubeconfig),
                               MODELEVAL_NAMESPACES=json.dumps([watched])).start()
    try:
        kubectl(bed, "apply", "-n", watched, "-f", str(ROOT / "examples" / "mslr-ranker.yaml"))

        def done():
            obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "modeleval.dev", "v1alpha1", watched, "modelevaluations", "mslr-ranker")
            return obj if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

        status = eventually(done, 240, "the evaluation to finish under the chart's RBAC")["status"]
        assert status["phase"] == "Succeeded", status
    finally:
        operator.stop()
    assert "forbidden" not in operator.log_path.read_text().lower()

    # The account can do its job and nothing more.
    as_operator = ["--kubeconfig", str(kubeconfig)]
    def can_i(*args: str) -> str:
        result = subprocess.run([str(Tools.locate().kubectl), *as_operator, "auth", "can-i", *args],
                                capture_output=True, text=True, timeout=60)
        return result.stdout.strip()
    assert can_i("create", "rayclusters.ray.io", "-n", watched) == "yes"
    assert can_i("patch", "modelevaluations.modeleval.dev/status", "-n", watched) == "yes"
    for forbidden in (("create", "rayclusters.ray.io", "-n", "default"), ("list", "nodes"),
                      ("delete", "deployments", "-n", SYSTEM), ("list", "secrets", "-n", watched),
                      ("delete", "namespaces"), ("create", "customresourcedefinitions"),
                      ("create", "pods", "-n", watched)):
        assert can_i(*forbidden) == "no", forbidden
    refused = subprocess.run([str(Tools.locate().kubectl), *as_operator, "get", "secrets", "-n", "kube-system"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()

    helm(bed, "upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--reuse-values",
         "--set", "operator.pollIntervalSeconds=3", "--wait=false")
    env = {e.name: e.value for e in client.AppsV1Api(api).read_namespaced_deployment(
        RELEASE, SYSTEM).spec.template.spec.containers[0].env}
    assert env["MODELEVAL_POLL_INTERVAL"] == "3"

    helm(bed, "uninstall", RELEASE, "-n", SYSTEM, "--wait")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    assert not client.AppsV1Api(api).list_namespaced_deployment(SYSTEM, label_selector=selector).items
    assert not core.list_namespaced_service_account(SYSTEM, label_selector=selector).items
    rbac = client.RbacAuthorizationV1Api(api)
    assert not rbac.list_namespaced_role(watched, label_selector=selector).items
    assert not rbac.list_namespaced_role_binding(watched, label_selector=selector).items
    assert not rbac.list_cluster_role(label_selector=selector).items
    core.delete_namespace(watched)
