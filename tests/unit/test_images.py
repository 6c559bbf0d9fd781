"""The Dockerfiles install complete, pinned dependency sets, run as non-root, and the chart's
default images are the ones they build."""

from __future__ import annotations

import re
from importlib.metadata import requires
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LOCK = {line.split("==")[0].lower() for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")}


def closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = [r.lower() for r in roots]
    while stack:
        name = stack.pop().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for spec in requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name.lower())
    return seen


def installed_by(dockerfile: Path) -> set[str]:
    pattern = re.search(r"grep -E '\^\(([^)]*)\)=='", dockerfile.read_text()).group(1)
    return {name.lower() for name in pattern.split("|")}


def test_operator_image_has_the_operator_closure_only():
    wanted = closure(["kopf", "kubernetes", "httpx", "prometheus-client", "pydantic",
                      "pydantic-settings", "pyyaml", "pymongo", "boto3",
                      # The chart's dashboard (`python -m modeleval.ui`) runs from this image.
                      "fastapi", "uvicorn", "jinja2", "altair", "vl-convert-python"])
    listed = installed_by(ROOT / "images/operator/Dockerfile")
    assert wanted <= listed, f"missing from the operator image: {sorted(wanted - listed)}"
    assert listed <= LOCK, f"not pinned in requirements.lock: {sorted(listed - LOCK)}"
    assert not listed & {"ray", "numpy", "xgboost", "pyarrow", "onnxruntime"}


def test_ray_image_has_the_engine_closure():
    wanted = closure(["xgboost", "onnxruntime", "pyarrow", "numpy", "boto3", "pymongo", "pydantic",
                      "pydantic-settings", "pyyaml", "rich", "click",
                      # GPU evaluations: CuPy, and the CUDA runtime it loads (cuda-toolkit's
                      # cudart and nvrtc extras, which the closure of its own name leaves out).
                      "cupy-cuda12x", "cuda-toolkit", "nvidia-cuda-runtime-cu12",
                      "nvidia-cuda-nvrtc-cu12",
                      # The runner renders each evaluation's HTML report.
                      "altair", "jinja2", "vl-convert-python",
                      # Data profiles and drift (engine/profile.py, engine/drift.py).
                      "datasketches", "scipy"])
    listed = installed_by(ROOT / "images/ray/Dockerfile")
    assert wanted <= listed, f"missing from the Ray image: {sorted(wanted - listed)}"
    assert listed <= LOCK


def test_ray_image_builds_the_reports_vega_bundle_once():
    """Every job is a fresh process: without the bundle in the image each report would spend
    seconds building it (vl-convert), over the report's 0.5 s budget."""
    ray = (ROOT / "images/ray/Dockerfile").read_text()
    assert re.search(r"^ && python -m modeleval\.report\.bundle \\$", ray, re.M)
    assert ray.index("modeleval.report.bundle") > ray.index("wheels/modeleval-")


def test_images_run_as_non_root_and_match_chart_defaults():
    operator = (ROOT / "images/operator/Dockerfile").read_text()
    ray = (ROOT / "images/ray/Dockerfile").read_text()
    assert "USER 10001" in operator and re.search(r"^USER 1000$", ray, re.M)
    values = yaml.safe_load((ROOT / "charts/modeleval/values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "charts/modeleval/Chart.yaml").read_text())
    assert f"ARG BASE_IMAGE=rayproject/ray:{values['ray']['version']}-" in ray
    assert f"-t {values['image']['repository']}:{chart['appVersion']}" in operator
    assert f"-t {values['ray']['image']}" in ray
    assert values["ray"]["version"] == "2.60.0"


def test_dockerfiles_take_base_image_with_the_public_default():
    """hack/build-images.sh passes its own base; without --build-arg, Docker users get these."""
    for name, default in [("operator", "python:3.11.11-slim-bookworm"),
                          ("ray", "rayproject/ray:2.60.0-py311-cpu")]:
        lines = [line for line in (ROOT / f"images/{name}/Dockerfile").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        assert lines[0] == f"ARG BASE_IMAGE={default}", name
        froms = [line.split() for line in lines if line.startswith("FROM ")]
        assert froms and all(words[1] == "${BASE_IMAGE}" for words in froms), name
    assert len([line for line in (ROOT / "images/operator/Dockerfile").read_text().splitlines()
                if line.startswith("FROM ${BASE_IMAGE}")]) == 2


def test_ray_image_installs_ray_from_the_lock_on_a_plain_python_base():
    ray = (ROOT / "images/ray/Dockerfile").read_text()
    assert 'if ! python -c "import ray"' in ray
    assert re.search(r"pip install [^\n]*-c requirements\.lock [^\n]*\"ray\[default\]==2\.60\.0\"", ray)
    assert any(line.startswith("ray==2.60.0") for line in
               (ROOT / "requirements.lock").read_text().splitlines())
    assert "useradd --uid 1000 --gid 100" in ray and "--home-dir /home/ray" in ray


def test_chart_crd_is_the_generated_one():
    assert (ROOT / "charts/modeleval/crds/modelevaluations.modeleval.dev.yaml").read_text() == \
        (ROOT / "crds/modelevaluations.modeleval.dev.yaml").read_text()
