"""Kueue on the test bed: its CRDs and its controller manager as a host process against the bed's
API server (as the KubeRay operator runs), started only by the tests that queue evaluations.

Kueue's webhooks are not registered with the API server: in a cluster they are reached through
its in-cluster Service with a certificate its own rotator makes for that Service's DNS name and
injects into the CRDs' conversion webhooks, none of which a host process on the bed has. The
operator therefore creates a queued RayCluster already suspended (what Kueue's mutating webhook
would do to it), and Kueue admits it by unsuspending it. The webhook server still listens (on
loopback, with a certificate made here); the metrics server insists on a certificate at a fixed
path, which a private mount namespace provides (the host's directory stays empty).

The process is recorded in the bed's state.json, so the bed's ``down`` and its watchdog stop it
with everything else.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .bed import BedError, Endpoints, free_port, kill_component, start_component, _replace_file
from .tools import Tools

NAME = "kueue"
SYSTEM_NAMESPACE = "kueue-system"
# Where Kueue's metrics server reads its certificate when it does not manage its own (fixed).
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
API_VERSION = "kueue.x-k8s.io/v1beta2"  # the version Kueue stores and its controllers use


def kueue_binary(tools: Tools) -> Path:
    return tools.root / f"kueue-{tools.versions['KUEUE_VERSION']}" / "kueue"


def kueue_crds(tools: Tools) -> Path:
    return tools.root / f"kueue-{tools.versions['KUEUE_VERSION']}" / "crds"


@dataclass
class Kueue:
    """A started Kueue: its health endpoint and log, for waiting and for a failure's message."""

    bed: Endpoints
    health: str
    log: Path
    began: float = 0.0  # time.monotonic() when its start began, for the caller's timing

    def wait_ready(self, timeout: float = 90) -> "Kueue":
        """Waits until Kueue's webhook server listens and its controllers started (readyz)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.health}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"
        raise BedError(f"kueue was not ready after {timeout:.0f}s; log: {self.log}\n{tail}")

    def stop(self) -> None:
        kill_component(self.bed.dir, NAME)


def start(bed: Endpoints, tools: Tools | None = None) -> Kueue:
    """Installs Kueue's CRDs and starts its controller manager; returns at once (``wait_ready``
    waits), so the caller prepares its namespaces meanwhile."""
    began = time.monotonic()
    tools = tools or Tools.locate()
    binary, crds = kueue_binary(tools), kueue_crds(tools)
    if not binary.exists():
        raise BedError(f"Kueue is not built ({binary}); run `make tools` (hack/build-tools.sh kueue)")
    _install_crds(bed, tools, crds)
    home = Path(bed.dir) / NAME
    certs = home / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    _self_signed(certs)
    health = free_port()
    config = home / "config.yaml"
    config.write_text(json.dumps(_configuration(certs, health)))  # JSON is valid YAML
    METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
    script = 'mount --bind "$0" "$1" && shift && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(certs),
            str(METRICS_CERT_DIR), str(binary), f"--config={config}", "--zap-log-level=info"]
    if NAME in json.loads((Path(bed.dir) / "state.json").read_text()).get("pids", {}):
        kill_component(bed.dir, NAME)  # an earlier test's Kueue on a reused bed
    _record_spec(Path(bed.dir), argv, {"KUBECONFIG": bed.kubeconfig})
    start_component(bed.dir, NAME)
    return Kueue(bed, f"http://127.0.0.1:{health}", Path(bed.dir) / "logs" / f"{NAME}.log", began)


def _configuration(certs: Path, health_port: int) -> dict:
    """Kueue's configuration: the RayCluster integration only, every server on loopback, no
    leader election, its certificates given (not rotated), no visibility API server."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": SYSTEM_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{free_port()}"},
        "webhook": {"host": "127.0.0.1", "port": free_port(), "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["ray.io/raycluster"]},
        "featureGates": {"VisibilityOnDemand": False},
    }


def _install_crds(bed: Endpoints, tools: Tools, crds: Path) -> None:
    # Server-side: the Workload CRD is too large for client-side apply's annotation.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}
    _kubectl(bed, tools, "apply", "-f", "-", input=json.dumps(namespace))
    _kubectl(bed, tools, "apply", "--server-side", "--force-conflicts", "-f", str(crds))
    _kubectl(bed, tools, "wait", "--for=condition=Established", "--timeout=60s",
             *(f"crd/{p.name.split('_', 1)[1].removesuffix('.yaml')}.kueue.x-k8s.io"
               for p in sorted(crds.glob("kueue.x-k8s.io_*.yaml"))))


def _kubectl(bed: Endpoints, tools: Tools, *args: str, input: str | None = None) -> str:
    result = subprocess.run([str(tools.kubectl), f"--kubeconfig={bed.kubeconfig}", *args],
                            input=input, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise BedError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def _self_signed(directory: Path) -> None:
    """The webhook and metrics servers' certificate (nobody verifies it: the API server is not
    told of the webhooks, and the metrics are not scraped)."""
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=kueue-webhook-service.kueue-system.svc",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(directory / "tls.key"),
         "-out", str(directory / "tls.crt")], capture_output=True, text=True)
    if result.returncode != 0:
        raise BedError(f"openssl could not make Kueue's certificate: {result.stderr.strip()}")


def _record_spec(directory: Path, argv: list[str], env: dict[str, str]) -> None:
    """Adds how Kueue starts to the bed's state.json, so start_component launches it and records
    its pid there (stopped by the bed's down and its watchdog)."""
    state_file = directory / "state.json"
    state = json.loads(state_file.read_text())
    state.setdefault("specs", {})[NAME] = {"argv": argv, "env": env, "cwd": str(directory)}
    _replace_file(state_file, json.dumps(state, indent=2))
