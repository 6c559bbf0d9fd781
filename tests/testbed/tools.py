"""Where the test bed's Go-built tools live: the cache that `make tools` fills, keyed by version."""

from __future__ import annotations

import os
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


def tools_dir() -> Path:
    if env := os.environ.get("MODELEVAL_TOOLS_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeleval" / "tools"


@dataclass(frozen=True)
class Tools:
    """Absolute paths of every binary and data file the test bed runs."""

    root: Path
    versions: dict[str, str]

    @classmethod
    def locate(cls) -> "Tools":
        tools = cls(tools_dir(), read_versions())
        missing = [str(p) for p in tools.all_paths() if not p.exists()]
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
            self.etcd,
            self.kwok,
            self.helm,
            self.kuberay,
            self.kuberay_crds / "ray.io_rayclusters.yaml",
            self.minio,
            self.ferretdb,
        ]
