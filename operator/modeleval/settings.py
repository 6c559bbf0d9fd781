"""Settings of the engine and the CLI, read from the environment (prefix MODELEVAL_).

Credentials are never part of a spec: S3 keys come from the standard AWS variables (or an
instance profile), MongoDB's URI from MODELEVAL_MONGODB_URI.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeleval"


CLUSTER_CACHE_PREFIX = "modeleval-cache"


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELEVAL_", extra="ignore")

    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (MinIO etc.); default: "
                                    "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL or AWS itself.")
    s3_region: str | None = Field(None, description="Default: AWS_DEFAULT_REGION or us-east-1.")
    mongodb_uri: SecretStr | None = Field(None, description="Results store; unset: local files.")
    mongodb_timeout_ms: int = 10_000
    cache_uri: str | None = Field(None, description="Where parsed datasets are cached, shared by "
                                  "every node (s3://bucket/prefix or file:///dir). Default: a local dir; in a "
                                  "cluster, s3://<the dataset's bucket>/modeleval-cache.")
    node_cache_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "modeleval-parts",
                                 description="Each Ray node's local copies of cached parts "
                                 "(memory-mapped on read).")
    node_cache_bytes: int = Field(4 * 2**30, ge=0, description="Bound of node_cache_dir (least "
                                  "recently used parts go first); 0 turns the local tier off.")
    results_dir: Path = Field(default_factory=lambda: _default_home() / "results")
    allow_file_uris: bool = Field(True, description="file:// URIs (refused in cluster mode).")
    allow_pickle: bool = Field(True, description="Whether a spec's allowPickle may take effect. "
                               "Locally the user's own choice stands; the cluster's runner "
                               "sets this from --allow-pickle, which the operator passes only "
                               "when its policy allows pickle models.")
    max_inflight_tasks: int | None = Field(None, ge=1, description="Default: 2 x CPUs in Ray.")
    task_retries: int = Field(3, ge=0, description="Retries of a task whose worker died.")
    execution: Literal["auto", "inline", "ray"] = Field(
        "auto", description="Where a CPU-only evaluation runs: inline (in the job's own "
        "process, without Ray), on Ray, or auto: the plan's cost model compares the seconds "
        "inline with Ray's start-up (none when Ray already runs) plus the work over Ray's CPUs. "
        "A GPU evaluation always runs on Ray.")
    inline_bytes: int | None = Field(None, ge=0, description="Set: datasets up to this size "
                                     "(CPU-only evaluations) run inline, larger ones on Ray, "
                                     "in place of the cost model (0: always Ray); unset: "
                                     "execution decides.")
    scorers_per_gpu: int = Field(4, ge=1, le=16, description="Predicting actors sharing each "
                                 "GPU of a GPU evaluation: one process copying batches to the "
                                 "device keeps the GPU idle between them; several overlap.")
    profile: bool = Field(True, description="Profile the data and the predictions in the pass "
                          "(every evaluation does; off only to measure what profiling costs: "
                          "spec.dataQuality is then not checked, and a warning says so).")
    predict_while_actors_start: bool = Field(True, description="A GPU evaluation's tasks "
                                             "predict their shards on the CPU while the "
                                             "predicting actors start (a process, CUDA and the "
                                             "models each: seconds) rather than wait for them; "
                                             "the result's model.predictedBy counts the shards "
                                             "each way. The two devices' predictions agree "
                                             "within 1e-6; false: every shard waits for a GPU.")
    shard_bytes: int = Field(32 * 2**20, ge=4096, description="Target size of a LETOR shard "
                             "(one parse task and one cached part).")
    report: bool = Field(True, description="Whether an evaluation computes the curve "
                         "aggregates its HTML report plots (ROC, PR, calibration, confusion, "
                         "histograms, ranking cut-offs) and writes the report; false: neither, "
                         "the result document has no curves and no report URI.")

    def resolved_cache_uri(self, dataset_uri: str | None = None, namespace: str | None = None) -> str:
        """Where parsed parts go. In a cluster (file:// refused) the pods share no disk, so with
        no cache configured the parts go next to the data, under ``modeleval-cache/<namespace>``
        in the dataset's own bucket, which every pod reads (one prefix per namespace: no tenant
        reads parts another wrote; a configured cache gets its prefix from the operator); on one
        machine, a local directory."""
        if self.cache_uri:
            return self.cache_uri
        if not self.allow_file_uris and dataset_uri and dataset_uri.startswith("s3://"):
            bucket = dataset_uri[len("s3://"):].split("/", 1)[0]
            return f"s3://{bucket}/{CLUSTER_CACHE_PREFIX}/{namespace or 'default'}"
        return (_default_home() / "datasets").as_uri()
