"""GPU evaluations: CPU tasks parse and read, predicting actors hold the GPUs.

A task that parsed a shard and then held a GPU to predict it would run one at a time per GPU,
its parse included. Instead, CPU-only tasks parse (or read from the cache) on every CPU and
return two objects: the feature matrix, which stays in the object store and goes by reference
to one of the predicting actors (one per GPU, the models loaded once, on the device), and the
small rest (labels, query ids, slice columns), which goes to the driver. The driver never holds
a feature matrix, and at most ``max_inflight`` shards are parsed, waiting or predicted at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .device import Device
from .errors import EvaluationError
from .inference import (ModelHandle, Predictor, ShardPrediction, TaskResources, remote_of,
                        result_of)
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

    def score(self, index: int, features: np.ndarray, predictor: Predictor,
              where: str) -> tuple[int, list[np.ndarray]]:
        return index, predictor.score(features, where, self._adapter, self.device)


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


def gpu_warnings(plan: ScoringPlan, reports: list[tuple[str, list[str]]]) -> list[str]:
    """The result's warnings when actors that asked for a GPU (or some of their models)
    predict on the CPU: one per distinct reason."""
    if not plan.use_gpu:
        return []
    reasons = sorted({why for _, whys in reports for why in whys})
    return [f"spec.resources.gpu asks for a GPU, but {why}" for why in reasons]


def run_scored(produce: Callable, calls: Iterable[tuple[tuple, str]], resources: TaskResources,
               actors: list[Any], predictor: Predictor, max_inflight: int,
               on_result: Callable[[ShardPrediction], None], queue_per_actor: int = 2) -> None:
    """Runs ``produce(*args)`` for each (args, where) as CPU tasks returning (features, rest),
    hands each shard's features to the least busy actor (at most ``queue_per_actor`` queued on
    one), and passes each finished shard (the rest with its predictions) to ``on_result``. At
    most ``max_inflight`` shards are between their task's start and their predictions."""
    import ray

    remote = remote_of(produce).options(**resources.options(), num_returns=2)
    producing: dict[Any, tuple[Any, str]] = {}  # rest ref -> (features ref, where)
    ready: list[tuple[int, Any, str]] = []  # parsed shards waiting for an actor
    predicting: dict[Any, int] = {}  # actor call -> the actor's position
    rests: dict[int, ShardPrediction] = {}
    load = [0] * len(actors)
    iterator = iter(calls)
    exhausted = False
    try:
        while True:
            while not exhausted and len(producing) + len(ready) + len(predicting) < max_inflight:
                try:
                    args, where = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                features, rest = remote.remote(*args)
                producing[rest] = (features, where)
            while ready and min(load) < queue_per_actor:
                index, features, where = ready.pop(0)
                slot = load.index(min(load))
                load[slot] += 1
                predicting[actors[slot].score.remote(index, features, predictor, where)] = slot
            if not producing and not predicting:
                return
            # Only the small refs are waited on and fetched: a feature matrix goes from the
            # object store straight to an actor.
            done = ray.wait([*producing, *predicting], num_returns=1)[0][0]
            if done in producing:
                features, where = producing.pop(done)
                rest: ShardPrediction = result_of(done)
                rests[rest.index] = rest
                ready.append((rest.index, features, where))
            else:
                load[predicting.pop(done)] -= 1
                index, predictions = result_of(done)
                result = rests.pop(index)
                result.predictions = predictions
                on_result(result)
    finally:
        for ref in [*producing, *predicting]:
            ray.cancel(ref, force=False)
