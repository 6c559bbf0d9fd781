"""`make tools` explains itself when Go is missing and knows only the pinned tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "build-tools.sh"


def test_missing_go_is_a_clear_error(tmp_path):
    result = subprocess.run(["/bin/bash", str(SCRIPT)], env={"PATH": "/usr/bin/nonexistent:/bin",
                            "HOME": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 1
    assert "'go' is not on PATH" in result.stderr


def test_unknown_tool_is_refused(tmp_path):
    result = subprocess.run(["/bin/bash", str(SCRIPT), "docker"], capture_output=True, text=True,
                            env={"PATH": "/usr/local/go/bin:/usr/bin:/bin", "HOME": str(tmp_path),
                                 "MODELEVAL_TOOLS_DIR": str(tmp_path / "tools")})
    assert result.returncode == 2 and "unknown tool 'docker'" in result.stderr
