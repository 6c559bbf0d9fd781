"""A Python user's install: the wheel built from pyproject.toml, installed with its declared
dependencies into a fresh virtualenv (nothing from the checkout or the test venv), runs the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The test venv's uv (`make venv` installs it): it builds in an isolated environment from
# pyproject.toml's build-system and installs from its cache, so both take seconds.
UV = Path(sys.executable).with_name("uv")


def uv(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(UV), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"uv {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def build_wheel(out: Path) -> Path:
    uv("build", "--wheel", "--quiet", "--out-dir", str(out), str(ROOT))
    (wheel,) = out.glob("modeleval-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # What the package must carry beyond .py files: the dashboard's pages and the tokenizer.
    assert "modeleval/ui/templates/base.html" in names, names
    assert any(n.startswith("modeleval/engine/_letor") and n.endswith(".so") for n in names), names
    return wheel


def test_wheel_in_a_fresh_venv_runs_the_demo(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    uv("venv", "--quiet", "--python", sys.executable, str(venv))
    # Only what the wheel declares, at the versions the lock pins (the constraint adds nothing).
    uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
       "--constraint", str(ROOT / "requirements.lock"), str(wheel))
    # A user's shell: none of the checkout's or the test run's Python or Ray settings.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MODELEVAL_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MODELEVAL_RESULTS_DIR=str(tmp_path / "results"),
               MODELEVAL_CACHE_URI=(tmp_path / "cache").as_uri())
    work = tmp_path / "work"
    work.mkdir()
    demo = subprocess.run([str(venv / "bin" / "modeleval"), "demo", "--rows", "2000",
                           "--workdir", str(work / "demo")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "ndcg@10" in demo.stdout, demo.stdout
    last = demo.stdout.rstrip().splitlines()[-1]
    assert last.startswith("report: "), demo.stdout
    report = Path(last.removeprefix("report: "))
    assert report.is_file() and report.parent == (tmp_path / "results").resolve(), report
    assert "demo-ranker" in report.read_text()
