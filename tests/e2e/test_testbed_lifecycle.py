"""`make cluster-up` / `make cluster-down` (python -m testbed) start a bed in a directory of
their own and stop every process they started: the kubelet, containerd, every pod's containers
and the real node's network too. A bed started from Python (as the session's is) dies with the
process that started it, even one killed with SIGKILL. (conftest.py runs this module before the session's bed starts:
a machine has one real node at a time.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testbed.node import BRIDGE, HOST_IP, LOCK_FILE

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]


def _processes_mentioning(text: str, pgids: set[int]) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if stat[0] == "Z":
            continue
        if text in cmdline or int(stat[2]) in pgids:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def _run_sleeper_pod(directory: Path, state: dict) -> None:
    """A pod with real containers (and their shims) on the real node."""
    kubeconfig = str(directory / "kubeconfig")
    kubectl = state["specs"]["kube-apiserver"]["argv"][0].replace("kube-apiserver", "kubectl")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"}, "spec": {
        "nodeSelector": {"modeleval.dev/node": "real"},
        "tolerations": [{"key": "modeleval.dev/real-node", "operator": "Exists"}],
        "containers": [{"name": "c", "image": "modeleval/operator:0.1.0",
                        "command": ["python", "-c", "import time; time.sleep(3600)"]}]}}
    subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "apply", "-f", "-"], input=json.dumps(pod),
                   text=True, check=True, capture_output=True)
    waited = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "wait", "--for=condition=Ready",
                             "pod/sleeper", "--timeout=180s"], capture_output=True, text=True)
    assert waited.returncode == 0, waited.stderr
    assert _processes_mentioning("time.sleep(3600)", set()), "the container's process runs"


def _mounts_under(directory: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(directory) or p.startswith(f"{directory}/")]


# What the session's `bed` fixture does (conftest.py): start a bed from Python and keep running.
_OWNER = """
import sys, time
from pathlib import Path
from testbed import TestBed
TestBed(Path(sys.argv[1]), ray_cpus=1).up()
print("up", flush=True)
time.sleep(3600)
"""


def test_bed_dies_with_a_killed_owner(tmp_path):
    """SIGKILL to the process that started a bed (nothing of it runs after that) stops, within
    30 s, every process of the bed (the API server included), the real node's containers and
    shims, and removes the kubelet's mounts and the machine's claim, so the next bed can start."""
    directory = Path(tempfile.mkdtemp(prefix="mebed-owned-", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("RAY_AUTH_TOKEN", None)
    errors = tmp_path / "owner.err"
    with errors.open("w") as stderr:
        owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(directory)], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert owner.stdout.readline().strip() == "up", errors.read_text()[-3000:]
        state = json.loads((directory / "state.json").read_text())
        _run_sleeper_pod(directory, state)
        pgids = set(state["pids"].values())
        assert any("kube-apiserver" in p for p in _processes_mentioning(str(directory), pgids))
        assert _mounts_under(directory), "the real node has mounts in the bed's directory"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    killed = time.monotonic()

    def leftovers() -> list[str]:
        return (_processes_mentioning(str(directory), pgids) + _processes_mentioning("time.sleep(3600)", set())
                + _mounts_under(directory) + ([str(LOCK_FILE)] if str(directory) in _lock_owner() else []))
    while leftovers() and time.monotonic() - killed < 30:
        time.sleep(0.5)
    assert leftovers() == [], f"left {time.monotonic() - killed:.0f} s after the owner was killed"
    print(f"bed stopped {time.monotonic() - killed:.1f} s after its owner was killed")
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    assert "owner" in (directory / "logs" / "watchdog.log").read_text()
    shutil.rmtree(directory)


def _lock_owner() -> str:
    try:
        return LOCK_FILE.read_text()
    except OSError:
        return ""


def test_cluster_up_then_down_leaves_no_process(tmp_path):
    directory = Path(tempfile.mkdtemp(prefix="mebed-life-", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("RAY_AUTH_TOKEN", None)
    up = subprocess.run([sys.executable, "-m", "testbed", "up", "--dir", str(directory), "--ray-cpus", "1"],
                        env=env, capture_output=True, text=True, timeout=900)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        state = json.loads((directory / "state.json").read_text())
        assert (directory / "kubeconfig").exists() and (directory / "bed.env").exists()
        assert set(state["logs"]) >= {"etcd", "kube-apiserver", "kube-controller-manager",
                                      "kube-scheduler", "kwok", "kuberay-operator", "minio",
                                      "ferretdb", "ray-head", "containerd", "kubelet",
                                      "kube-proxy", "coredns"}
        for path in state["logs"].values():
            assert Path(path).exists()
        pgids = set(state["pids"].values())
        running = _processes_mentioning(str(directory), pgids)
        assert running, "the bed's processes are running"
        # Everything the bed started (Ray's many processes too) listens on loopback or on the
        # real node's host-only bridge, never on the machine's own network.
        pids = {int(p.split(":")[0]) for p in running}
        listening = subprocess.run(["ss", "-Htulnp"], capture_output=True, text=True).stdout
        for line in listening.splitlines():
            if any(f"pid={pid}," in line for pid in pids):
                assert line.split()[4].startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:",
                                                   f"{HOST_IP}:")), line
        _run_sleeper_pod(directory, state)
    finally:
        down = subprocess.run([sys.executable, "-m", "testbed", "down", "--dir", str(directory)],
                              env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "stopped:" in down.stdout
    # A process in the middle of exiting (no command line yet, not yet a zombie) may linger a
    # moment after `down` returns; it must be gone shortly after.
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(directory), pgids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(directory), pgids) == []
    assert _processes_mentioning("time.sleep(3600)", set()) == [], "down stops every pod"
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert "KUBE-" not in rules, "kube-proxy's and the kubelet's iptables chains are removed"
    assert "MODELEVAL-POLICY-QUEUE" not in rules, "no pod packet is queued to a gone enforcer"
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "kube-network-policies" not in tables
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "modeleval-metadata" not in namespaces, "the metadata stand-in's namespace is removed"
    assert str(directory) not in Path("/proc/self/mountinfo").read_text(), "no mount is left"
    shutil.rmtree(directory)


def test_cluster_up_without_images_names_the_step_and_leaves_nothing(tmp_path):
    """A bed that cannot start (here: no images built) says so at once, in one message naming the
    step and what to do, and leaves nothing behind, the real node's network included."""
    directory = Path(tempfile.mkdtemp(prefix="mebed-fail-", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(TESTS), "MODELEVAL_IMAGES_DIR": str(tmp_path / "none")}
    env.pop("RAY_AUTH_TOKEN", None)
    up = subprocess.run([sys.executable, "-m", "testbed", "up", "--dir", str(directory), "--ray-cpus", "1"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 1
    assert "cluster-up failed: real node: no images in" in up.stderr and "make images" in up.stderr
    assert "Traceback" not in up.stderr
    assert not (directory / "state.json").exists()
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(directory), set()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(directory), set()) == []
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    shutil.rmtree(directory)
