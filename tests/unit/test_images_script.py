"""`make images` (hack/build-images.sh) keys every image on its inputs; --print-keys shows the keys
without building, so this needs neither root nor buildah."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ["hack/build-images.sh", "hack/versions.env", "hack/pause", "images", "operator", "requirements.lock",
          "pyproject.toml", "README.md", ".dockerignore"]


def checkout(tmp_path: Path) -> Path:
    """The script's inputs outside git, where the sources are found with find(1)."""
    repo = tmp_path / "repo"
    for name in INPUTS:
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target)
    return repo


def keys(repo: Path, mirror: str = "http://mirror.invalid/debian") -> dict[str, str]:
    result = subprocess.run(
        ["/bin/bash", str(repo / "hack/build-images.sh"), "--print-keys"], capture_output=True,
        text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(repo.parent),
                                    "MODELEVAL_DEBIAN_MIRROR": mirror})
    assert result.returncode == 0, result.stderr
    pairs = dict(line.split() for line in result.stdout.splitlines())
    assert set(pairs) == {"base", "pause", "operator", "ray", "minio", "ferretdb"}
    # The dependency images' keys exist once `make tools` built their binaries (none here).
    assert all(len(key) == 16 and int(key, 16) >= 0 for key in pairs.values() if key != "none")
    return pairs


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def test_each_key_changes_with_its_inputs_only(tmp_path):
    repo = checkout(tmp_path)
    first = keys(repo)
    assert keys(repo) == first

    (repo / "operator/modeleval/__pycache__").mkdir(exist_ok=True)
    (repo / "operator/modeleval/__pycache__/runner.cpython-311.pyc").write_bytes(b"\0")
    assert keys(repo) == first, "bytecode is not an input"

    with (repo / "operator/modeleval/runner.py").open("a") as f:
        f.write("\n# a source change\n")
    now = keys(repo)
    assert changed(first, now) == {"operator", "ray"}

    with (repo / "images/ray/Dockerfile").open("a") as f:
        f.write("\n# a Dockerfile change\n")
    before, now = now, keys(repo)
    assert changed(before, now) == {"ray"}

    with (repo / "hack/pause/main.go").open("a") as f:
        f.write("\n// a change\n")
    before, now = now, keys(repo)
    assert changed(before, now) == {"pause"}

    before, now = now, keys(repo, mirror="http://other.invalid/debian")
    assert changed(before, now) == {"base", "operator", "ray"}, "a new base rebuilds both images"

    now = keys(repo)
    assert now["minio"] == "none", "no binary built: no image"
    version = next(line.split("=", 1)[1] for line in (repo / "hack/versions.env").read_text().splitlines()
                   if line.startswith("MINIO_VERSION="))
    binary = repo.parent / ".cache/modeleval/tools" / f"minio-{version}" / "minio"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"first build")
    before, now = now, keys(repo)
    assert changed(before, now) == {"minio"} and now["minio"] != "none"
    binary.write_bytes(b"another build")
    before, now = now, keys(repo)
    assert changed(before, now) == {"minio"}, "the image follows its binary"


def test_keys_of_this_checkout_and_usage(tmp_path):
    result = subprocess.run(["/bin/bash", str(ROOT / "hack/build-images.sh"), "--print-keys"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == \
        ["base", "pause", "operator", "ray", "minio", "ferretdb"]
    result = subprocess.run(["/bin/bash", str(ROOT / "hack/build-images.sh"), "--bogus"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage: hack/build-images.sh" in result.stderr
