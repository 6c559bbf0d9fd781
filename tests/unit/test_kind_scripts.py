"""The kind path's scripts pass shellcheck (`make prepare` installs it): the kind-specific part,
the part the test bed shares with it, and the stand-ins tests/e2e/test_kind_up.py runs them with."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["hack/kind-up.sh", "hack/stack-up.sh", "hack/build-images.sh",
           "tests/e2e/stand_ins/docker", "tests/e2e/stand_ins/kind"]


def test_kind_path_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run `make prepare` (hack/apt-install.sh installs it)"
    result = subprocess.run([shellcheck, "-x", *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

