"""How the chart upgrades its CRDs: a pre-install/pre-upgrade hook Job, rendered by `helm template`
(the bed's pinned helm), that replaces modeleval's two CRDs with the chart's crds/ byte for byte,
with RBAC for those two names only. Also `make kind-up`'s path: the chart lints and renders with
the settings hack/stack-up.sh installs it with. The Job's program itself (controller/crds.py) is
checked here on files; against an API server by tests/e2e/test_upgrade.py."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from modeleval.controller import crds
from tests.testbed.tools import REPO_ROOT, read_versions, tools_dir

CHART = REPO_ROOT / "charts" / "modeleval"
HELM = tools_dir() / f"helm-{read_versions()['HELM_VERSION']}" / "helm"
needs_helm = pytest.mark.skipif(not HELM.exists(), reason="helm is not built (make tools)")
NAME = "me-modeleval-crd-upgrade"
HOOK_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Job")


@functools.lru_cache(maxsize=None)
def rendered(*sets: str) -> dict[str, dict]:
    argv = [str(HELM), "template", "me", str(CHART), "-n", "modeleval-system"]
    for value in sets:
        argv += ["--set", value]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in yaml.safe_load_all(result.stdout) if o}


def chart_crd_files() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((CHART / "crds").glob("*.yaml"))}


@needs_helm
def test_the_hook_carries_the_charts_crds_byte_for_byte():
    data = rendered()[f"ConfigMap/{NAME}"]["data"]
    assert data == chart_crd_files()
    assert set(data) == {"modelevaluations.modeleval.dev.yaml", "evaluationschedules.modeleval.dev.yaml"}


@needs_helm
def test_the_hooks_rbac_names_our_two_crds_and_nothing_else():
    objects = rendered()
    names = sorted(yaml.safe_load(text)["metadata"]["name"] for text in chart_crd_files().values())
    assert sorted(crds.OURS) == names
    [rule] = objects[f"ClusterRole/{NAME}"]["rules"]
    assert rule["apiGroups"] == ["apiextensions.k8s.io"] and rule["resources"] == ["customresourcedefinitions"]
    assert sorted(rule["resourceNames"]) == names
    assert set(rule["verbs"]) == {"get", "create", "update", "patch"}  # no list, watch or delete
    binding = objects[f"ClusterRoleBinding/{NAME}"]
    assert binding["roleRef"]["name"] == NAME
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": "modeleval-system"}]


@needs_helm
def test_every_hook_object_runs_before_install_and_upgrade_and_goes_once_it_succeeded():
    objects = rendered()
    weights = {}
    for kind in HOOK_KINDS:
        annotations = objects[f"{kind}/{NAME}"]["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade", kind
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded", kind
        weights[kind] = int(annotations["helm.sh/hook-weight"])
    assert all(weights["Job"] > weight for kind, weight in weights.items() if kind != "Job")


@needs_helm
def test_the_job_runs_the_operator_image_as_the_operator_runs():
    objects = rendered("image.tag=9.9.9", "nodeSelector.pool=system",
                       "tolerations[0].key=dedicated", "tolerations[0].operator=Exists")
    operator = objects["Deployment/me-modeleval"]["spec"]["template"]["spec"]
    job = objects[f"Job/{NAME}"]["spec"]["template"]["spec"]
    [container] = job["containers"]
    assert container["image"] == operator["containers"][0]["image"] == "modeleval/operator:9.9.9"
    # The whole command: args alone would follow the image's entrypoint (the operator).
    assert container["command"] == ["python", "-m", "modeleval.controller.crds", "/crds"]
    assert "args" not in container
    assert {"name": "crds", "mountPath": "/crds", "readOnly": True} in container["volumeMounts"]
    assert {"name": "crds", "configMap": {"name": NAME}} in job["volumes"]
    assert job["serviceAccountName"] == NAME and job["restartPolicy"] == "Never"
    assert job["securityContext"] == operator["securityContext"]
    assert container["securityContext"] == operator["containers"][0]["securityContext"]
    assert job["nodeSelector"] == operator["nodeSelector"] == {"pool": "system"}
    assert job["tolerations"] == operator["tolerations"]
    # Not one of the operator's pods: its NetworkPolicy and Service select those.
    selector = objects["Deployment/me-modeleval"]["spec"]["selector"]["matchLabels"]
    labels = objects[f"Job/{NAME}"]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items()


@needs_helm
def test_no_hook_when_crds_upgrade_is_off():
    objects = rendered("crds.upgrade=false")
    assert not [key for key in objects if key.endswith(f"/{NAME}")]
    assert "Deployment/me-modeleval" in objects


def stack_up_settings() -> list[str]:
    """The --set values hack/stack-up.sh (make kind-up) installs the chart with, its shell
    variables given example values."""
    text = (REPO_ROOT / "hack" / "stack-up.sh").read_text()
    chart = text[text.index("\nchart() {"):]
    chart = chart[: chart.index("\n}")]
    example = {"s3_endpoint": "http://minio.modeleval-deps.svc:9000", "namespace": "demo"}
    sets = [re.sub(r"\$(\w+)", lambda m: example[m.group(1)], value)
            for value in re.findall(r'--set "([^"]+)"', chart)]
    assert sets and not any("$" in value for value in sets), sets
    return sets


@needs_helm
def test_the_kind_path_lints_and_renders_with_the_hook():
    sets = stack_up_settings()
    argv = [str(HELM), "lint", str(CHART), "--strict"]
    for value in sets:
        argv += ["--set", value]
    lint = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    objects = rendered(*sets)
    assert f"Job/{NAME}" in objects and "Deployment/me-modeleval" in objects


# ----------------------------------------------------------------------------- the Job's program
def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_the_job_reads_the_charts_crds():
    read = crds.read_crds(CHART / "crds")
    assert [c["metadata"]["name"] for c in read] == sorted(crds.OURS)


@pytest.mark.parametrize("text, message", [
    ("kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n", "is not apiextensions.k8s.io/v1 CustomResourceDefinition"),
    ("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: rayclusters.ray.io}\n"
     "spec: {group: ray.io}\n", "'rayclusters.ray.io' is not one of modeleval's CRDs"),
    ("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
     "metadata: {name: modelevaluations.modeleval.dev}\nspec: {group: evil.dev}\n", "is not one of modeleval's CRDs"),
    ("a: 1\n---\nb: 2\n", "found 2 documents"),
    ("a: [1\n", "not YAML"),
])
def test_the_job_refuses_anything_but_our_crds(tmp_path, text, message):
    with pytest.raises(crds.CrdFileError, match=re.escape(message)):
        crds.read_crds(write(tmp_path / "d", "x.yaml", text))


def test_the_job_refuses_an_empty_directory_and_a_crd_given_twice(tmp_path):
    with pytest.raises(crds.CrdFileError, match="no \\*.yaml files"):
        crds.read_crds(tmp_path)
    crd = (CHART / "crds" / "modelevaluations.modeleval.dev.yaml").read_text()
    directory = write(write(tmp_path / "d", "a.yaml", crd), "b.yaml", crd)
    with pytest.raises(crds.CrdFileError, match="given twice"):
        crds.read_crds(directory)


def test_a_replacement_is_the_files_crd_at_the_current_version_keeping_others_metadata():
    [ours, _] = sorted(crds.read_crds(CHART / "crds"), key=lambda c: c["metadata"]["name"] != crds.CRD_NAME)
    current = {"metadata": {"name": crds.CRD_NAME, "resourceVersion": "41", "uid": "u",
                            "labels": {"team": "ml", "app.kubernetes.io/part-of": "other"},
                            "annotations": {"argocd.argoproj.io/sync-options": "Replace=true"},
                            "managedFields": [{"manager": "helm"}]},
               "spec": {"group": "modeleval.dev", "versions": []}, "status": {"conditions": []}}
    body = crds.replacement(ours, current)
    assert body["spec"] == ours["spec"]  # whole: nothing of the old spec survives
    assert body["metadata"] == {"name": crds.CRD_NAME, "resourceVersion": "41",
                                "labels": {"team": "ml", "app.kubernetes.io/part-of": "modeleval"},
                                "annotations": {"argocd.argoproj.io/sync-options": "Replace=true"}}
    assert "status" not in body


def test_the_job_says_what_is_wrong_and_exits_2_on_a_bad_directory(tmp_path, caplog):
    assert crds.main([str(write(tmp_path / "d", "x.yaml", "a: [1\n"))]) == 2
    assert "x.yaml: not YAML" in caplog.text
    assert crds.main([]) == 2
