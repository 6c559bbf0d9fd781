"""GPU evaluations: CPU tasks parse and read, predicting actors hold the GPUs.

A task that parsed a shard and then held a GPU to predict it would run one at a time per GPU,
its parse included. Instead, CPU-only tasks parse (or read from the cache) on every CPU, and
each hands its shard's feature matrix to one of the predicting actors (a few per GPU, the
models loaded once, on the device), waits for the predictions, and finishes the shard as a CPU
task does (its per-query metric values included). On a cache hit the task names the cached
part instead, and an actor on the same node reads it (memory-mapped) rather than be handed a
copy through the object store. The task's CPU is the actor's while it waits: actors request no
CPU, so every CPU parses, and none is left to an actor that idles between shards. The driver
sees only finished shards, as on the CPU path: it relays no matrix and no shard (relaying them,
one event per parsed shard and one per prediction, kept the driver busier than the GPU), and
at most ``max_inflight`` shards are parsed or predicted at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .cache import PartStore
from .device import Device
from .errors import EvaluationError
from .inference import CachedPart, ModelHandle, Predictor
from .models import ModelAdapter, load_model


@dataclass(frozen=True)
class ScoringPlan:
    """How many predicting actors an evaluation starts, the GPUs each holds, whether they
    predict on a GPU (False only in tests: the same wiring on the CPU), and whether they are
    kept for this process's next evaluation (``keep``: a benchmark on a Ray of its own; never
    on a shared Ray, where a kept actor would hold its GPU from every other job)."""

    actors: int = 1
    num_gpus: float = 1.0
    use_gpu: bool = True
    keep: bool = False

    @classmethod
    def for_cluster(cls, cluster: dict[str, float], per_gpu: int = 1) -> "ScoringPlan":
        """``per_gpu`` actors on each whole GPU of the Ray cluster, each holding its share (on
        a cluster with a fraction of one GPU, ``per_gpu`` actors share that fraction). A
        batch's copy to the device is host work of the actor's process (pageable memory): one
        actor leaves the GPU idle while it copies, several copy side by side."""
        gpus = float(cluster.get("GPU", 0))
        whole = int(gpus)
        if whole:
            return cls(actors=whole * per_gpu, num_gpus=1.0 / per_gpu)
        return cls(actors=per_gpu, num_gpus=gpus / per_gpu)


class ShardScorer:
    """A predicting actor. It loads each model once, on its device, and predicts the feature
    matrices it is handed. Models are loaded on first use, so a model that cannot be loaded
    fails the shard with the model's own error rather than killing the actor."""

    def __init__(self, want_gpu: bool):
        self.device, self.fallback = Device.select(want_gpu)
        self.adapters: dict[str, ModelAdapter] = {}

    def _adapter(self, handle: ModelHandle) -> ModelAdapter:
        import ray

        adapter = self.adapters.get(handle.fingerprint)
        if adapter is None:
            data = handle.ref if isinstance(handle.ref, bytes) else ray.get(handle.ref)
            adapter = load_model(data, handle.format, handle.task, handle.allow_pickle,
                                 use_gpu=self.device.cuda)
            self.adapters[handle.fingerprint] = adapter
        return adapter

    def start(self, predictor: Predictor) -> tuple[str, list[str]]:
        """Loads the evaluation's models (while the first shards are parsed) and forgets any
        others; returns the device and why anything asked to run on a GPU does not."""
        wanted = {h.fingerprint for h in predictor.handles}
        self.adapters = {k: v for k, v in self.adapters.items() if k in wanted}
        for handle in predictor.handles:
            try:
                self._adapter(handle)
            except EvaluationError:
                break  # reported by the first shard, with the driver's verdict on the model
        if self.fallback:
            return self.device.kind, [f"{self.fallback}: the models predicted on the CPU"]
        return self.device.kind, sorted({a.cpu_reason for a in self.adapters.values()
                                         if a.cpu_reason})

    def score(self, features: np.ndarray, predictor: Predictor, where: str) -> list[np.ndarray]:
        """Every model's predictions of a shard's matrix, on this actor's device."""
        return predictor.score(features, where, self._adapter, self.device)

    def score_part(self, parts: PartStore, part: CachedPart,
                   predictor: Predictor) -> list[np.ndarray] | None:
        """Every model's predictions of a cached part read here, from a file on this node;
        None when this node has no copy (the task then hands over the matrix)."""
        shard = parts.read_local(part.uri, part.num_features)
        if shard is None:
            return None
        return self.score(predictor.model_input(shard), predictor, part.where)


# Kept actors (ScoringPlan.keep), per Ray session and plan: starting an actor and loading CUDA
# costs seconds. A new plan replaces them rather than adding to them (they hold the GPUs).
_KEPT: dict[tuple[str, ScoringPlan], list[Any]] = {}


def scorers(plan: ScoringPlan, max_restarts: int = 3) -> list[Any]:
    """The predicting actors of ``plan``: new ones, or the kept ones when ``plan.keep``."""
    import ray

    if not plan.keep:
        return _start(plan, max_restarts)
    context = ray.get_runtime_context()  # a new Ray session reuses job ids, not node ids
    key = (f"{context.get_node_id()}/{context.get_job_id()}", plan)
    found = _KEPT.get(key)
    if found is None:
        release_scorers()
        found = _KEPT[key] = _start(plan, max_restarts)
    return found


def _start(plan: ScoringPlan, max_restarts: int) -> list[Any]:
    import ray

    # num_cpus=0: the actor's own CPU work is a batch's copy to the device; a CPU it held
    # would be one parse task fewer (and none at all on a 1-CPU test cluster).
    actor = ray.remote(ShardScorer).options(num_cpus=0, num_gpus=plan.num_gpus,
                                            max_restarts=max_restarts,
                                            max_task_retries=max_restarts)
    return [actor.remote(plan.use_gpu) for _ in range(plan.actors)]


def stop_scorers(actors: list[Any]) -> None:
    """Stops predicting actors: their GPUs go back to the cluster."""
    import ray

    for actor in actors:
        ray.kill(actor)


def release_scorers() -> None:
    """Stops this process's kept actors."""
    for actors in _KEPT.values():
        stop_scorers(actors)
    _KEPT.clear()


def gpu_warnings(plan: ScoringPlan, reports: list[tuple[str, list[str]]],
                 actors_predicted: bool = True) -> list[str]:
    """The result's warnings when actors that asked for a GPU (or some of their models)
    predict on the CPU, one per distinct reason, or when no actor predicted anything (the
    tasks predicted every shard on the CPU while the actors started)."""
    if not plan.use_gpu:
        return []
    reasons = sorted({why for _, whys in reports for why in whys})
    if not actors_predicted:
        reasons.append("the tasks predicted every shard on the CPU while the predicting actors "
                       "started")
    return [f"spec.resources.gpu asks for a GPU, but {why}" for why in reasons]
