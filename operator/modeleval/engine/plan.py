"""How an evaluation runs, decided once before any data is read: in this process (inline) or on
Ray, and on Ray with which requests per task, how many shards at once, which predicting actors.

The choice between inline and Ray is a cost model: the seconds the work would take in this
process against Ray's start-up (seconds on a laptop where no Ray runs; next to nothing for a
job that already runs on a Ray cluster) plus the same work spread over the cluster's CPUs.
Ray is imported only when the plan needs it (an inline evaluation never pays its import).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..api.spec import ModelEvaluationSpec, parse_quantity
from ..settings import EngineSettings
from .errors import EvaluationError, Reason
from .inference import TaskResources, batched
from .scoring import ScoringPlan

# The cost model's constants: one CPU's rates, measured on the 2-core development machine
# (2026-12-06) unless said otherwise; only their ratios to the start-up matter.
#
# Reading a table (Parquet, CSV): read, converted to one float32 matrix and written to the
# parsed-dataset cache by the driver on either path (engine/evaluate.py's table stage): 128 MB
# of Parquet (500k x 50 float32, bench/inline.py) in 1.38 s, about 93 MB/s. CSV: Arrow's reader
# at 108-140 MB/s on one core (bench/RESULTS.md, issue 16), then the same conversion and write.
# LETOR text: the compiled tokenizer, part write included, 153-307 MB/s per core in the cold
# path (bench/RESULTS.md, issue 16's "cold path" figures). A cache hit on this machine's disk
# maps Arrow IPC parts: at memory speed, put at 1 GB/s. Parts in object storage (a cluster's
# cache) are fetched first: not measured apart, put at the LETOR cold path's rate, which was
# measured reading from MinIO.
READ_BYTES_PER_SECOND = {"parquet": 93e6, "csv": 60e6, "letor": 250e6, "cache": 1e9,
                         "remote-cache": 250e6}
# Bytes one feature value takes in each encoding, to count rows from a file's size: random
# float32 Parquet 5.1 (bench/inline.py's file: 128 MB for 25M values); MSLR-shaped LETOR text
# 22 ("j:value " with qid and label; 732 MB for 240k x 136, DESIGN.md); CSV about 10; cached
# parts hold float32 (4).
BYTES_PER_VALUE = {"parquet": 5.1, "csv": 10.0, "letor": 22.0, "cache": 4.0, "remote-cache": 4.0}
# Prediction: XGBoost's inplace_predict, whose cost grows with the rows times the model's size
# (its trees and their nodes; the serialized bytes stand for both): 500k rows through a 657 KiB
# JSON model of 100 depth-6 trees took 0.68 s on 2 threads, 2.4e11 row-bytes per CPU-second.
PREDICT_ROW_BYTES_PER_SECOND = 2.4e11
FEATURES_UNKNOWN = 50  # rows estimated as if the data had this many features
# Ray's start-up in a process where Ray is not running: ray.init starting a local head, then the
# first task workers importing NumPy and XGBoost. About 4 s on a laptop (issue 30); on the
# 2-core development machine bench/inline.py's Ray path spent 7 s more than inline.
RAY_START_SECONDS = 4.0
# Connected to a running Ray (a job the operator submitted; RAY_ADDRESS): no start-up, but the
# tasks' dispatch, their results' transfer and the cache parts' round trip. Measured on the
# development machine with Ray running and its workers warm, 240k x 136 MSLR-shaped LETOR
# (332 MB, 100 trees), the same evaluation inline and on Ray's 2 CPUs: about 0.3 s more than
# the work over 2 CPUs from the cache, 0.9-1.6 s parsing cold; 0.3 s taken (a cold parse gains
# more from Ray's spread than the difference).
RAY_CONNECTED_SECONDS = 0.3

# Inline, one shard at a time predicts with XGBoost's threads, which scale less than one
# single-threaded task per CPU: a warm 3M-row binary evaluation (8 features, 50 trees) on 2 CPUs
# spent 1.2-1.6 s predicting inline against 1.1-1.2 s on Ray's two tasks (same session); taken
# as three quarters of a CPU per thread. (The LETOR comparison above still runs inline.)
INLINE_THREAD_EFFICIENCY = 0.75

EXECUTIONS = ("auto", "inline", "ray")


@dataclass(frozen=True)
class Workload:
    """What the evaluation will read and predict: the dataset's bytes in ``encoding`` (its
    format, or "cache" / "remote-cache" for a complete cache entry on this machine's disk / in
    object storage), its feature count when known, the bytes of
    every model it predicts with (each model predicts every row), and whether it wants GPUs."""

    encoding: str
    data_bytes: int
    features: int | None
    model_bytes: int
    gpu: bool = False

    @property
    def rows(self) -> float:
        per_value = BYTES_PER_VALUE.get(self.encoding, BYTES_PER_VALUE["csv"])
        return self.data_bytes / per_value / max(1, self.features or FEATURES_UNKNOWN)

    @property
    def read_seconds(self) -> float:
        """One CPU's seconds to read (parse) the data."""
        return self.data_bytes / READ_BYTES_PER_SECOND.get(self.encoding, READ_BYTES_PER_SECOND["csv"])

    @property
    def predict_seconds(self) -> float:
        """CPU-seconds for every model to predict every row."""
        return self.rows * self.model_bytes / PREDICT_ROW_BYTES_PER_SECOND

    @property
    def read_in_driver(self) -> bool:
        """Tables are read by the driver on either path (one reader; the parts go to the tasks);
        LETOR text and cached parts are read by the tasks, side by side."""
        return self.encoding not in ("letor", "cache", "remote-cache")


@dataclass(frozen=True)
class Capacity:
    """The CPUs this process may use, Ray's CPUs (a cluster's once connected; else what a local
    Ray would get: this machine's), and whether Ray is already running for this process."""

    local_cpus: int
    ray_cpus: float
    connected: bool


@dataclass(frozen=True)
class Choice:
    """Inline or Ray, the seconds the cost model expects of each (None where it did not
    estimate), and what decided: "cost", a "setting", or "gpu" (GPUs are Ray's)."""

    inline: bool
    decided_by: str
    inline_seconds: float | None = None
    ray_seconds: float | None = None

    def facts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decidedBy": self.decided_by}
        if self.inline_seconds is not None:
            out["inlineSeconds"] = round(self.inline_seconds, 3)
        if self.ray_seconds is not None:
            out["raySeconds"] = round(self.ray_seconds, 3)
        return out


def inline_seconds(work: Workload, local_cpus: int) -> float:
    """In this process: LETOR text parsed by one thread, a table by its reader; the models
    predict with every CPU (XGBoost's threads, at ``INLINE_THREAD_EFFICIENCY``)."""
    threads = max(1.0, local_cpus * INLINE_THREAD_EFFICIENCY)
    return work.read_seconds + work.predict_seconds / threads


def ray_seconds(work: Workload, capacity: Capacity) -> float:
    """On Ray: start-up (or dispatch when running already), a table's read in the driver, and
    the rest over Ray's CPUs."""
    start = RAY_CONNECTED_SECONDS if capacity.connected else RAY_START_SECONDS
    serial = work.read_seconds if work.read_in_driver else 0.0
    spread = work.predict_seconds + (0.0 if work.read_in_driver else work.read_seconds)
    return start + serial + spread / max(1.0, capacity.ray_cpus)


def choose(work: Workload, capacity: Capacity | None, execution: str = "auto",
           inline_bytes: int | None = None) -> Choice:
    """Inline or Ray. A GPU evaluation runs on Ray (its predicting actors hold the GPUs);
    otherwise an explicit ``execution`` ("inline", "ray") or ``inline_bytes`` (datasets up to
    that size inline) decides; else the cost model. ``capacity`` None: not known yet, and
    needed only when the inline estimate is above the least Ray could cost."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {', '.join(EXECUTIONS)}, not {execution!r}")
    if work.gpu:
        return Choice(False, "gpu")
    if execution != "auto":
        return Choice(execution == "inline", "setting")
    if inline_bytes is not None:
        return Choice(work.data_bytes <= inline_bytes, "setting")
    local = capacity.local_cpus if capacity is not None else local_cpus()
    here = inline_seconds(work, local)
    if capacity is None:
        return Choice(True, "cost", here, None)
    there = ray_seconds(work, capacity)
    return Choice(here <= there, "cost", here, there)


def local_cpus() -> int:
    """The CPUs this process may use: its affinity, bounded by its cgroup's quota (a pod's CPU
    limit, which os.cpu_count does not see)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def ray_running() -> bool:
    """Whether this process is connected to Ray, or will connect to a running one (RAY_ADDRESS:
    a job on a Ray cluster). Looks without importing Ray."""
    ray = sys.modules.get("ray")
    return bool(os.environ.get("RAY_ADDRESS")) or (ray is not None and ray.is_initialized())


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connects to Ray: RAY_ADDRESS or ``address`` if set, else starts a local one."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False,
                              "configure_logging": False}
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


@dataclass(frozen=True)
class RayShape:
    """The Ray cluster as the plan found it: its CPUs and GPUs, and each live node's."""

    cpus: float
    gpus: float
    nodes: tuple[tuple[float, float], ...]  # (CPU, GPU) of each live node

    @classmethod
    def current(cls) -> "RayShape":
        import ray

        total = ray.cluster_resources()
        nodes = tuple((float(n.get("Resources", {}).get("CPU", 0)),
                       float(n.get("Resources", {}).get("GPU", 0)))
                      for n in ray.nodes() if n.get("Alive"))
        return cls(float(total.get("CPU", 0)), float(total.get("GPU", 0)), nodes)


@dataclass(frozen=True)
class RunPlan:
    """How one evaluation runs, fixed before it reads any data. Inline: in this process, one
    shard at a time. On Ray: ``task``, what each task requests (CPUs only when predicting
    ``scoring`` actors hold the GPUs); the cluster's shape; how many tasks may run or wait at
    once (``max_inflight``)."""

    choice: Choice
    local_cpus: int
    task: TaskResources = TaskResources()
    scoring: ScoringPlan | None = None
    ray: RayShape | None = None
    max_inflight: int = 1

    @property
    def inline(self) -> bool:
        return self.choice.inline

    @property
    def shards_per_task(self) -> int:
        """The shards a task works on side by side: one per whole CPU it holds (on the GPU path
        too, each handing its shard to an actor)."""
        return 1 if self.inline else self.task.threads

    @property
    def task_slots(self) -> int:
        """How many shards the Ray cluster works on at once: its tasks at once, each on as many
        shards as it holds whole CPUs (the GPU path's tasks one each)."""
        if self.ray is None:
            return 1
        slots = (self.ray.cpus or 1) / self.task.num_cpus
        if self.task.num_gpus:
            slots = min(slots, self.ray.gpus / self.task.num_gpus)
        return max(1, int(slots)) * self.shards_per_task

    @property
    def table_parts(self) -> int:
        """The cached parts a table is split into: one inline, else two per CPU of Ray."""
        return 1 if self.ray is None else max(1, int(self.ray.cpus) * 2)

    def shard_threads(self, count: int) -> list[int]:
        """The CPUs the work on each of ``count`` shards may use: a task shares the CPUs it holds
        among the shards it works on, in the groups ``batched`` makes (0 inline: the runtime's
        defaults, in this process)."""
        if self.inline:
            return [0] * count
        return [max(1, self.task.threads // len(group))
                for group in batched(range(count), self.shards_per_task) for _ in group]

    def resources_used(self, mode: str, shards: int, actors: int) -> dict[str, Any]:
        """What the evaluation ran with (the result's ``resources``): ``mode`` local or
        cluster; ``inline``: in this process, without Ray tasks. ``cpus``/``gpus``/``nodes``:
        the Ray cluster's (this machine's inline); per task, its requests; ``tasks``: the Ray
        tasks the shards went to, ``taskSlots``: how many of them the cluster runs at once;
        ``actors``: a GPU evaluation's predicting actors; ``plan``: what chose inline or Ray."""
        plan = self.choice.facts()
        if self.ray is None:
            return {"mode": mode, "inline": True, "cpus": os.cpu_count() or 1, "gpus": 0,
                    "nodes": 1, "taskCpus": 0, "taskGpus": 0, "tasks": 0, "taskSlots": 0,
                    "actors": 0, "shards": shards, "plan": plan}
        return {"mode": mode, "inline": False, "cpus": _whole(self.ray.cpus),
                "gpus": _whole(self.ray.gpus), "nodes": len(self.ray.nodes),
                "taskCpus": _whole(self.task.num_cpus), "taskGpus": _whole(self.task.num_gpus),
                "tasks": -(-shards // self.shards_per_task),
                "taskSlots": self.task_slots // self.shards_per_task,
                "actors": actors, "shards": shards, "plan": plan}


def _whole(value: float) -> float | int:
    """A resource amount as an int when whole (4.0 CPUs: 4), else as it is (0.5)."""
    return int(value) if float(value).is_integer() else float(value)


def plan_run(spec: ModelEvaluationSpec, settings: EngineSettings, work: Workload,
             scoring: ScoringPlan | None = None) -> RunPlan:
    """The evaluation's plan. Joins (or starts) Ray only when the plan runs there; ``scoring``
    overrides how a Ray evaluation's predicting actors are started (tests, benchmarks)."""
    cpus = local_cpus()
    choice = choose(work, None, settings.execution, settings.inline_bytes)
    if choice.decided_by == "cost" and choice.inline_seconds is not None \
            and choice.inline_seconds > RAY_CONNECTED_SECONDS:
        # Worth asking what Ray would cost: if it runs already, its CPUs count.
        running = ray_running()
        if running:
            ensure_ray()
        ray_cpus = RayShape.current().cpus if running else float(cpus)
        choice = choose(work, Capacity(cpus, ray_cpus, running))
    if choice.inline:
        return RunPlan(choice, cpus)
    ensure_ray()
    shape = RayShape.current()
    wanted = task_resources(spec, settings, shape)
    if scoring is None and wanted.num_gpus:  # (a cluster without the GPUs asked for fails there)
        scoring = ScoringPlan.for_cluster({"GPU": shape.gpus}, settings.scorers_per_gpu)
    task = replace(wanted, num_gpus=0.0) if scoring else wanted
    inflight = settings.max_inflight_tasks or max(2, 2 * int(shape.cpus))
    return RunPlan(choice, cpus, task, scoring, shape, inflight)


def task_resources(spec: ModelEvaluationSpec, settings: EngineSettings,
                   shape: RayShape) -> TaskResources:
    """Per-task requests: one worker's CPUs and GPUs. A request no node of the Ray cluster can
    ever meet would wait forever, so it is an error instead."""
    r = spec.resources
    wanted = TaskResources(num_cpus=max(parse_quantity(r.cpu), 0.01), num_gpus=float(r.gpu),
                           max_retries=settings.task_retries)
    if not any(cpu >= wanted.num_cpus and gpu >= wanted.num_gpus for cpu, gpu in shape.nodes):
        cpu, gpu = max(shape.nodes, key=lambda node: (node[1], node[0]), default=(0.0, 0.0))
        raise EvaluationError(
            f"spec.resources asks {wanted.num_cpus:g} CPU and {wanted.num_gpus:g} GPU per worker; "
            f"the largest Ray node has {cpu:g} CPU and {gpu:g} GPU", Reason.Unschedulable)
    return wanted
