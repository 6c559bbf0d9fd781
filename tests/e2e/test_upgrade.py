"""Upgrading a release: the previous release's chart, taken from git history, is installed with
its own CRDs; evaluations and a schedule are written under those CRDs; `helm upgrade` to the
working tree's chart must bring the CRDs up to date (Helm itself never upgrades crds/: the
chart's hook Job does) so that the new fields are served and kept, and the old objects must be
reconciled to Succeeded by the new operator.

The bed builds one operator image, from the working tree. The previous release's operator is
therefore not run: its Deployment is scaled to zero once installed, so the old objects reach the
new release's operator untouched, as queued work does in a real upgrade. The old chart differs
from this one only in templates, values and CRDs, so it installs the same image tag."""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from modeleval.demo import EXAMPLES_BUCKET, publish_example_assets
from modeleval.engine.storage import Storage
from testbed import Tools

from .kube import api_client, eventually
from .operator_fixture import EVALUATIONS, ROOT, get_evaluation, kubectl
from .test_real_node import (CHART, RELEASE, RESTRICTED, SYSTEM, evaluation_text, helm,
                             real_node_namespace, secret)

pytestmark = pytest.mark.e2e

# The last commit before the round that added spec.output.reportUri, status.reportURI and
# status.clusterFields to the ModelEvaluation CRD (and dropped the schedule's CEL pattern rule).
PREVIOUS_RELEASE = "4ae0180efcd6a5c9b3290f9b0ad6a75c3c9ebd46"
SCHEDULES = ("modeleval.dev", "v1alpha1", "evaluationschedules")
CRD_FILES = ("modelevaluations.modeleval.dev.yaml", "evaluationschedules.modeleval.dev.yaml")
SCHEDULE_LABEL = "modeleval.dev/schedule"
REMOVED_RULE = r"self.matches(r'^(@[a-z]+|\S+( \S+){4})$')"  # the old schedule pattern rule


def previous_chart(directory: Path) -> Path:
    """charts/modeleval as it was at PREVIOUS_RELEASE (`git archive`, so from history alone)."""
    archive = subprocess.run(["git", "archive", PREVIOUS_RELEASE, "charts/modeleval"], cwd=ROOT,
                             capture_output=True, timeout=60)
    assert archive.returncode == 0, (f"git archive {PREVIOUS_RELEASE}: {archive.stderr.decode()} "
                                     "(the test needs the repository's history: a full clone)")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory / "charts" / "modeleval"


def values(namespace: str, s3_endpoint: str) -> list[str]:
    """Settings both charts accept (a user passes the same values file to the upgrade)."""
    sets = {"watchNamespaces[0]": namespace, "rbac.clusterWide": "false", "s3.endpoint": s3_endpoint,
            "operator.pollIntervalSeconds": "1", "operator.backoffBaseSeconds": "2",
            "operator.schedulePollIntervalSeconds": "2", "operator.pendingTimeoutSeconds": "120"}
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def crd_text(chart: Path, name: str) -> str:
    return (chart / "crds" / name).read_text()


def served(api, name: str) -> dict:
    return client.ApiextensionsV1Api(api).read_custom_resource_definition(name).to_dict()


def served_schema(bed, name: str) -> dict:
    """The CRD's stored openAPIV3Schema as the API server returns it (plain JSON: the typed
    client model renames the x-kubernetes-* keys)."""
    text = kubectl(bed, "get", "crd", name, "-o", "json")
    return json.loads(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def put_back_crds(bed, chart: Path) -> None:
    """Replaces both CRDs by ``chart``'s copies (whole objects), creating a missing one."""
    for name in CRD_FILES:
        text = crd_text(chart, name)
        out = kubectl(bed, "replace", "-f", "-", input=text, check=False)
        if "NotFound" in out or "not found" in out:
            kubectl(bed, "create", "-f", "-", input=text)
        else:
            assert "replaced" in out, out


def evaluation(name: str, **spec) -> str:
    body = yaml.safe_load(evaluation_text(name, f"s3://{EXAMPLES_BUCKET}/mslr/test.txt", workers=1))
    body["spec"].update(spec)
    return yaml.safe_dump(body)


def hook_seconds(started: str, completed: str) -> float:
    """Seconds between two of Helm's RFC 3339 times (nanoseconds cut to what Python reads)."""
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text))
    return (parse(completed) - parse(started)).total_seconds()


def schedule(name: str, template: dict, **spec) -> str:
    return yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1", "kind": "EvaluationSchedule",
                           "metadata": {"name": name}, "spec": {"template": template, **spec}})


@pytest.fixture(scope="module")
def old_release(bed, tmp_path_factory):
    """The previous release installed with its own CRDs, its operator stopped; yields the tenant
    namespace. Afterwards: uninstalled, and the working tree's CRDs back whatever happened."""
    api = api_client(bed.kubeconfig)
    started = time.monotonic()
    namespace = f"upg-{uuid.uuid4().hex[:6]}"
    old = previous_chart(tmp_path_factory.mktemp("previous"))
    assert "reportUri" not in crd_text(old, CRD_FILES[0]), "the previous release must lack the new fields"
    real_node_namespace(bed, SYSTEM)
    real_node_namespace(bed, namespace, RESTRICTED)
    kubectl(bed, "apply", "-n", SYSTEM, "-f", "-", input=secret("modeleval-mongodb", {"MONGODB_URI": bed.mongodb_uri}))
    for name, data in (("modeleval-s3", {"AWS_ACCESS_KEY_ID": bed.s3_access_key,
                                         "AWS_SECRET_ACCESS_KEY": bed.s3_secret_key}),
                       ("modeleval-mongodb", {"MONGODB_URI": bed.mongodb_uri})):
        kubectl(bed, "apply", "-n", namespace, "-f", "-", input=secret(name, data))
    publish_example_assets(Storage(), EXAMPLES_BUCKET)
    helm(bed, "uninstall", RELEASE, "-n", SYSTEM, "--ignore-not-found", "--wait")  # an earlier module's
    # The cluster as the previous release left it: its CRDs (Helm skips crds/ where they exist).
    put_back_crds(bed, old)
    helm(bed, "install", RELEASE, str(old), "-n", SYSTEM, *values(namespace, bed.s3_endpoint))
    kubectl(bed, "scale", "deployment", "-n", SYSTEM, RELEASE, "--replicas=0")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    eventually(lambda: not client.CoreV1Api(api).list_namespaced_pod(SYSTEM, label_selector=selector).items,
               120, "the previous release's operator to stop")
    print(f"the previous release installed, its operator stopped: {time.monotonic() - started:.1f}s")
    yield namespace, old
    subprocess.run([str(Tools.locate().helm), f"--kubeconfig={bed.kubeconfig}", "uninstall", RELEASE,
                    "-n", SYSTEM, "--ignore-not-found", "--wait"], capture_output=True, timeout=300)
    custom = client.CustomObjectsApi(api)
    for group, version, plural in (EVALUATIONS, SCHEDULES):
        for item in custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]:
            custom.patch_namespaced_custom_object(group, version, namespace, plural, item["metadata"]["name"],
                                                  {"metadata": {"finalizers": None}})
    client.CoreV1Api(api).delete_namespace(namespace)
    put_back_crds(bed, CHART)


def test_an_upgrade_from_the_previous_release_serves_the_new_fields_and_finishes_old_work(bed, old_release):
    namespace, old = old_release
    api = api_client(bed.kubeconfig)
    custom = client.CustomObjectsApi(api)
    started = time.monotonic()
    assert served_schema(bed, "modelevaluations.modeleval.dev") == \
        yaml.safe_load(crd_text(old, CRD_FILES[0]))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    # Work written under the previous release's CRDs: two evaluations sharing one RayCluster (the
    # real node starts Ray once) and a schedule whose runs use it too.
    shared = "first-ray"  # the first evaluation's cluster, kept for the others
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=evaluation("first", keepCluster=True))
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=evaluation("second", rayClusterName=shared))
    template = yaml.safe_load(evaluation("x", rayClusterName=shared))["spec"]
    kubectl(bed, "apply", "-n", namespace, "-f", "-",
            input=schedule("every-minute", template, schedule="* * * * *", concurrencyPolicy="Forbid"))

    upgrade_started = time.monotonic()
    helm(bed, "upgrade", RELEASE, str(CHART), "-n", SYSTEM, *values(namespace, bed.s3_endpoint),
         "--wait", "--timeout=5m")
    print(f"helm upgrade --wait (the CRD hook Job included): {time.monotonic() - upgrade_started:.1f}s")
    for hook in json.loads(helm(bed, "status", RELEASE, "-n", SYSTEM, "-o", "json"))["hooks"]:
        run = hook["last_run"]
        assert run["phase"] == "Succeeded", hook
        if hook["kind"] == "Job":
            print(f"the CRD hook Job: {hook_seconds(run['started_at'], run['completed_at']):.1f}s")

    # The CRDs are the working tree's, whole: new fields in, the removed CEL rule out.
    for name in CRD_FILES:
        assert served_schema(bed, name.removesuffix(".yaml")) == \
            yaml.safe_load(crd_text(CHART, name))["spec"]["versions"][0]["schema"]["openAPIV3Schema"], name
    assert REMOVED_RULE not in json.dumps(served_schema(bed, "evaluationschedules.modeleval.dev"))
    eventually(lambda: not kubectl(bed, "get", "jobs,configmaps,serviceaccounts", "-n", SYSTEM, "-o", "name",
                                   "-l", f"app.kubernetes.io/instance={RELEASE}").count("crd-upgrade"),
               30, "the hook's objects deleted once it succeeded")
    # ... and served: kubectl explain reads the published OpenAPI, and objects keep the new fields.
    explain = eventually(lambda: "reportUri" in (out := kubectl(bed, "explain", "modelevaluations.spec.output",
                                                                 check=False)) and out, 30,
                         "spec.output.reportUri in the published OpenAPI")
    assert "reportUri" in explain
    report_uri = f"s3://{EXAMPLES_BUCKET}/reports/"
    kubectl(bed, "apply", "-n", namespace, "-f", "-",
            input=evaluation("new-field", suspend=True, output={"reportUri": report_uri}))
    assert get_evaluation(api, namespace, "new-field")["spec"]["output"] == {"reportUri": report_uri}
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=schedule(
        "new-field", {**template, "output": {"reportUri": report_uri}}, schedule="@yearly", suspend=True))
    assert custom.get_namespaced_custom_object(*SCHEDULES[:2], namespace, SCHEDULES[2], "new-field")[
        "spec"]["template"]["output"] == {"reportUri": report_uri}

    # The old work, reconciled to the end by the new operator, with the new status fields kept.
    def finished(name: str) -> dict | None:
        status = get_evaluation(api, namespace, name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    def schedule_child() -> dict | None:
        items = custom.list_namespaced_custom_object(*EVALUATIONS[:2], namespace, EVALUATIONS[2],
                                                     label_selector=f"{SCHEDULE_LABEL}=every-minute")["items"]
        done = [i for i in items if (i.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
        return done[0] if done else None

    for name in ("first", "second"):
        status = eventually(lambda: finished(name), 300, f"{name} to finish")
        assert status["phase"] == "Succeeded", status
        fields = status["clusterFields"]  # pruned by the previous release's CRD
        assert (fields.get("keepCluster", False), fields.get("rayClusterName")) == \
            ((True, None) if name == "first" else (False, shared)), status
        assert status["metrics"]["ndcg@10"] > 0
        assert status.get("reportURI", "").startswith("s3://"), status
    child = eventually(schedule_child, 150, "the schedule's first run to finish")
    assert child["status"]["phase"] == "Succeeded", child["status"]
    print(f"the upgrade test's own time: {time.monotonic() - started:.1f}s")
