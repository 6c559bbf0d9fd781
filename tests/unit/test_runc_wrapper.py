"""hack/runc-wrapper: a container's negative oom_score_adj is raised to 0 (these VMs refuse to
lower it), everything else in the bundle is kept, and runc runs with the same arguments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "hack" / "runc-wrapper"


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory) -> Path:
    if shutil.which("go") is None:
        pytest.fail("go is not on PATH (make tools needs it too)")
    out = tmp_path_factory.mktemp("wrapper") / "runc-wrapper"
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=SOURCE, env=env, check=True, timeout=300)
    return out


@pytest.fixture()
def fake_runc(tmp_path) -> tuple[Path, Path]:
    """A stand-in for runc that records the arguments it was started with."""
    record = tmp_path / "args.json"
    script = tmp_path / "runc"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\n")
    script.chmod(0o755)
    return script, record


def run(wrapper: Path, runc: Path, *args: str) -> None:
    subprocess.run([str(wrapper), *args], env={**os.environ, "MODELEVAL_RUNC": str(runc)},
                   check=True, timeout=30)


def test_negative_score_is_clamped_and_the_rest_kept(wrapper, fake_runc, tmp_path):
    runc, record = fake_runc
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = {"ociVersion": "1.0.2", "process": {"args": ["/pause"], "oomScoreAdj": -998,
                                                 "user": {"uid": 65535}},
              "linux": {"resources": {"cpu": {"quota": 50000, "period": 100000}}}}
    (bundle / "config.json").write_text(json.dumps(config))
    run(wrapper, runc, "--root", "/run/x", "create", "--bundle", str(bundle), "--pid-file", "p", "id1")
    written = json.loads((bundle / "config.json").read_text())
    assert written["process"]["oomScoreAdj"] == 0
    config["process"]["oomScoreAdj"] = 0
    assert written == config
    assert record.read_text().split() == ["--root", "/run/x", "create", "--bundle", str(bundle),
                                          "--pid-file", "p", "id1"]


@pytest.mark.parametrize("score", [0, 1000])
def test_scores_allowed_here_are_left_untouched(wrapper, fake_runc, tmp_path, score):
    runc, _ = fake_runc
    text = json.dumps({"process": {"oomScoreAdj": score, "args": ["sh"]}}, indent=3)
    (tmp_path / "config.json").write_text(text)
    run(wrapper, runc, "create", f"--bundle={tmp_path}", "id2")
    assert (tmp_path / "config.json").read_text() == text


def test_exec_process_file_is_clamped(wrapper, fake_runc, tmp_path):
    runc, record = fake_runc
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh"], "oomScoreAdj": -5}))
    run(wrapper, runc, "exec", "--process", str(process), "id3")
    assert json.loads(process.read_text()) == {"args": ["sh"], "oomScoreAdj": 0}
    assert record.read_text().split()[0] == "exec"


def test_commands_without_a_bundle_pass_straight_through(wrapper, fake_runc):
    runc, record = fake_runc
    run(wrapper, runc, "--version")
    assert record.read_text().split() == ["--version"]
