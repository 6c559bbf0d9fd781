"""Where the test bed's tools live: the cache that `make tools` fills (keyed by version), the
images `make images` builds, and the Debian packages the real node runs (containerd, runc, CNI)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"


class ToolMissing(RuntimeError):
    """A tool the test bed needs has not been built yet."""


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def _cache_dir(variable: str, name: str) -> Path:
    if env := os.environ.get(variable):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeleval" / name


def tools_dir() -> Path:
    return _cache_dir("MODELEVAL_TOOLS_DIR", "tools")


def images_dir() -> Path:
    return _cache_dir("MODELEVAL_IMAGES_DIR", "images")


# Debian packages the real node runs (`make tools` installs them with apt-get when missing); nft
# removes the policy enforcer's table when a bed stops.
SYSTEM_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "iptables", "conntrack", "ip",
                   "nft")


@dataclass(frozen=True)
class Tools:
    """Absolute paths of every binary and data file the test bed runs."""

    root: Path
    versions: dict[str, str]

    @classmethod
    def locate(cls) -> "Tools":
        tools = cls(tools_dir(), read_versions())
        missing = [str(p) for p in tools.all_paths() if not p.exists()]
        missing += [f"{c} (Debian package)" for c in SYSTEM_COMMANDS if shutil.which(c) is None]
        if missing:
            raise ToolMissing(
                "test bed tools are not built; run `make tools` (missing: " + ", ".join(missing) + ")"
            )
        return tools

    def _dir(self, tool: str, key: str) -> Path:
        return self.root / f"{tool}-{self.versions[key]}"

    @property
    def kubernetes_version(self) -> str:
        return self.versions["KUBERNETES_VERSION"]

    def kube(self, name: str) -> Path:
        return self._dir("kubernetes", "KUBERNETES_VERSION") / name

    def kube_node(self, name: str) -> Path:
        """kubelet and kube-proxy, built from the same Kubernetes version."""
        return self._dir("kubernetes-node", "KUBERNETES_VERSION") / name

    @property
    def coredns(self) -> Path:
        return self._dir("coredns", "COREDNS_VERSION") / "coredns"

    @property
    def kube_network_policies(self) -> Path:
        """The real node's NetworkPolicy enforcer (nfqueue), the one kind ships."""
        return self._dir("kube-network-policies", "KUBE_NETWORK_POLICIES_VERSION") / "kube-network-policies"

    @property
    def runc_wrapper(self) -> Path:
        return self.root / "runc-wrapper" / "runc-wrapper"

    @property
    def containerd_root(self) -> Path:
        """containerd's content and snapshots, kept between beds so images are imported once."""
        return self.root.parent / "containerd"

    @property
    def images_index(self) -> Path:
        return images_dir() / "index.json"

    def images(self) -> list[dict]:
        """The images `make images` built: name, ref, archive, key."""
        if not self.images_index.exists():
            return []
        return json.loads(self.images_index.read_text())

    @property
    def etcd(self) -> Path:
        return self._dir("etcd", "ETCD_VERSION") / "etcd"

    @property
    def kwok(self) -> Path:
        return self._dir("kwok", "KWOK_VERSION") / "kwok"

    @property
    def helm(self) -> Path:
        return self._dir("helm", "HELM_VERSION") / "helm"

    @property
    def kuberay(self) -> Path:
        return self._dir("kuberay", "KUBERAY_VERSION") / "kuberay-operator"

    @property
    def kuberay_crds(self) -> Path:
        return self._dir("kuberay", "KUBERAY_VERSION") / "crds"

    @property
    def minio(self) -> Path:
        return self._dir("minio", "MINIO_VERSION") / "minio"

    @property
    def ferretdb(self) -> Path:
        return self._dir("ferretdb", "FERRETDB_VERSION") / "ferretdb"

    @property
    def kubectl(self) -> Path:
        return self.kube("kubectl")

    def all_paths(self) -> list[Path]:
        return [
            self.kube("kube-apiserver"),
            self.kube("kube-controller-manager"),
            self.kube("kube-scheduler"),
            self.kubectl,
            self.kube_node("kubelet"),
            self.kube_node("kube-proxy"),
            self.coredns,
            self.kube_network_policies,
            self.runc_wrapper,
            self.etcd,
            self.kwok,
            self.helm,
            self.kuberay,
            self.kuberay_crds / "ray.io_rayclusters.yaml",
            self.minio,
            self.ferretdb,
        ]
