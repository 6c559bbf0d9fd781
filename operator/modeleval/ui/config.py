"""What `modeleval ui` serves from and how it lets people in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class UIConfig:
    """Exactly one source: ``mongo_uri`` (with ``database``/``collection``) or ``results_dir``.
    ``token``: when set, every request needs it (bearer header or the login cookie)."""

    mongo_uri: str | None = None
    database: str = "modeleval"
    collection: str = "results"
    results_dir: Path | None = None
    kubeconfig: Path | None = None
    # The live phase from the pod's own ServiceAccount (in-cluster config), with no kubeconfig.
    in_cluster: bool = False
    token: str | None = None
    mongo_timeout_ms: int = 5_000
    # How long the cluster's phases and the filters' choices are reused before asked again.
    cache_seconds: float = 10.0
    # MongoDB: list from an in-memory index of the list columns, kept fresh in the background
    # (False: every list page is a query, as a server with the indexes the docs list answers fast).
    index_mongodb: bool = True

    def __post_init__(self) -> None:
        if (self.mongo_uri is None) == (self.results_dir is None):
            raise ValueError("give either a MongoDB URI or a results directory, not both")
        if self.in_cluster and self.kubeconfig is not None:
            raise ValueError("give a kubeconfig or use the in-cluster config, not both")
        if self.token is not None and not self.token.strip():
            raise ValueError("the token is empty")
