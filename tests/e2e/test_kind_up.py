"""`make kind-up` on the test bed: hack/kind-up.sh runs as a Docker user runs it, with the real
kubectl, helm and chart, and docker and kind replaced (only where this machine lacks them) by
stand-ins whose "cluster" is the bed and whose "images" are the ones `make images` built. Its
shared part, hack/stack-up.sh, starts MinIO and FerretDB as pods on the real node (images built
here), creates the Secrets, installs the chart with kind's values, publishes the examples and
follows one evaluation to Succeeded: a chart change that breaks the kind path fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from testbed import Tools

from .kube import api_client
from .operator_fixture import EVALUATIONS, ROOT
from .test_real_node import helm, real_node_namespace

pytestmark = pytest.mark.e2e

STAND_INS = Path(__file__).parent / "stand_ins"
DEPENDENCIES = "modeleval-deps"
SYSTEM = "modeleval-system"


def _lacking() -> set[str]:
    """Which of docker and kind this machine cannot run: a docker CLI without an engine counts."""
    lacking = {tool for tool in ("docker", "kind") if shutil.which(tool) is None}
    if "docker" not in lacking and subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        lacking.add("docker")
    return lacking


def _stand_in_path(tmp_path: Path, lacking: set[str]) -> Path:
    """A directory with a stand-in for each tool in ``lacking``, first on PATH."""
    path = tmp_path / "bin"
    path.mkdir()
    for tool in lacking:
        (path / tool).symlink_to(STAND_INS / tool)
    return path


def _dependency_images() -> dict[str, str]:
    refs = {image["name"]: image["ref"] for image in Tools.locate().images()}
    missing = {"minio", "ferretdb"} - set(refs)
    assert not missing, f"no {', '.join(sorted(missing))} image: run `make prepare` (tools, then images)"
    return {"MINIO_IMAGE": refs["minio"], "FERRETDB_IMAGE": refs["ferretdb"]}


@pytest.fixture()
def kind_env(bed, tmp_path):
    namespace = f"kind-{uuid.uuid4().hex[:6]}"
    for name in (DEPENDENCIES, SYSTEM, namespace):  # their pods run on the bed's real node
        real_node_namespace(bed, name)
    helm(bed, "uninstall", "modeleval", "-n", SYSTEM, "--ignore-not-found", "--wait")
    kubeconfig = tmp_path / "kubeconfig"  # kind's context is added to a copy, not the bed's
    shutil.copy(bed.kubeconfig, kubeconfig)
    (tmp_path / "state").mkdir()
    tools = Tools.locate()
    env = {
        **os.environ, **_dependency_images(),
        "PATH": os.pathsep.join([str(_stand_in_path(tmp_path, _lacking())), str(tools.kubectl.parent),
                                 str(tools.helm.parent), os.environ["PATH"]]),
        "KUBECONFIG": str(kubeconfig), "STACK_NAMESPACE": namespace, "STACK_TIMEOUT": "900",
        "STAND_IN_LOG": str(tmp_path / "calls.log"), "STAND_IN_STATE": str(tmp_path / "state"),
        "STAND_IN_TESTS": str(ROOT / "tests"), "STAND_IN_PYTHON": sys.executable,
        "MODELEVAL_IMAGES_INDEX": str(tools.images_index),
    }
    yield env
    _remove(bed, namespace)


def _remove(bed, namespace: str) -> None:
    subprocess.run([str(Tools.locate().helm), f"--kubeconfig={bed.kubeconfig}", "uninstall", "modeleval",
                    "-n", SYSTEM, "--ignore-not-found", "--wait"], capture_output=True, timeout=300)
    api = api_client(bed.kubeconfig)
    try:
        evaluations = client.CustomObjectsApi(api).list_namespaced_custom_object(
            *EVALUATIONS[:2], namespace, EVALUATIONS[2])["items"]
    except client.ApiException as error:
        if error.status != 404:  # no CRD: the chart never got installed
            raise
        evaluations = []
    # With no operator left to remove its finalizer, an evaluation would hold the namespace.
    for item in evaluations:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            *EVALUATIONS[:2], namespace, EVALUATIONS[2], item["metadata"]["name"],
            {"metadata": {"finalizers": None}})
    for name in (namespace, DEPENDENCIES):
        client.CoreV1Api(api).delete_namespace(name)


def test_kind_up_reaches_a_succeeded_evaluation_and_kind_down_removes_the_cluster(kind_env, tmp_path):
    # -o: the venv the tests run in is used as it is (make would rebuild it after a lock change).
    up = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "kind-up"], cwd=ROOT, env=kind_env,
                        capture_output=True, text=True, timeout=1500)
    print(up.stdout)
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
    out = up.stdout

    def timed(prefix: str) -> bool:  # announced, then done with its duration
        return any(line.startswith(prefix) and ": done in " in line for line in out.splitlines())
    for step in ("checking docker, kind, kubectl and helm", "kind cluster modeleval",
                 "KubeRay", "building the operator and Ray images"):
        assert timed(f"[kind-up] {step}"), step
    assert "KubeRay's CRDs are installed already" in out  # the bed runs KubeRay itself
    for step in ("MinIO and FerretDB as pods", "Secrets for the operator", "the modeleval chart",
                 "the examples' data published", "mslr-ranker.yaml applied in", "waiting for the evaluation"):
        assert timed(f"[stack] {step}"), step
    # `kubectl get evaluations`: the example Succeeded with its primary metric.
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NAME "))
    row = lines[header + 1]
    assert lines[header].split()[:4] == ["NAME", "PHASE", "MODEL", "METRIC"]
    assert row.split()[1] == "Succeeded" and row.split()[3].startswith("ndcg@10="), row
    lacking = _lacking()
    calls = (tmp_path / "calls.log").read_text() if lacking else ""
    if "kind" in lacking:
        assert "kind create cluster --name modeleval" in calls
        assert "kind load docker-image --name modeleval modeleval/operator:0.1.0 modeleval/ray:0.1.0" in calls

    down = subprocess.run(["make", "--no-print-directory", "kind-down"], cwd=ROOT, env=kind_env,
                          capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    if "kind" in lacking:
        assert "kind delete cluster --name modeleval" in (tmp_path / "calls.log").read_text()
        assert (tmp_path / "state" / "clusters").read_text() == ""
