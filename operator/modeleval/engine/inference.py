"""Parallel parsing and batch inference on Ray Core.

* Models travel once through the object store; each worker process loads a model once and keeps
  it (keyed by the model's fingerprint) for every later task.
* Tasks request the spec's CPUs, are retried when their worker dies (``max_retries``), and
  at most ``max_inflight`` run or wait at once, so a large dataset never floods the object store.
* A GPU evaluation's tasks parse and read on the CPU and hand each shard's matrix to a predicting
  actor that holds a GPU (:mod:`.scoring`), then finish the shard as the CPU path does.
* A ranking evaluation's per-query metric values are computed in the task that predicted the
  shard (:mod:`.querymetrics`), side by side with the other shards, not in the driver.
* Progress (rows done / total) is reported through a callback as shards finish.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np

from .cache import PartStore
from .device import CPU, Device, batches
from .errors import EvaluationError, Reason
from .letor import join_pieces, parse_letor_stream
from .models import ModelAdapter, load_model
from .profile import ProfileRequest, ProfileState, profile_data
from .querymetrics import QueryValues, shard_values
from .shard import ParsedShard
from .sharding import line_pieces
from .storage import Storage

Progress = Callable[[int, int, str], None]  # done, total, unit


@dataclass(frozen=True)
class ModelHandle:
    """A model as tasks receive it: its bytes in the object store plus how to load them. The ref
    sits inside this object so Ray does not fetch it for tasks whose worker already loaded it.
    Tasks load it for the CPU; a predicting actor, for its device."""

    ref: Any  # an object ref, or the bytes themselves for an evaluation that runs inline
    fingerprint: str
    format: str
    task: str
    allow_pickle: bool


@dataclass(frozen=True)
class TaskResources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 3

    @property
    def threads(self) -> int:
        """The whole CPUs a task holds: it works on that many shards side by side, in threads."""
        return max(1, int(self.num_cpus))

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "max_retries": self.max_retries,
                                "retry_exceptions": False}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        return opts


# Loaded models by fingerprint and the threads they predict with: a model is never changed once
# loaded, so calls side by side in one process share it safely.
_LOADED: dict[tuple[str, int], ModelAdapter] = {}


def _model(handle: ModelHandle, threads: int = 0) -> ModelAdapter:
    adapter = _LOADED.get((handle.fingerprint, threads))
    if adapter is None:
        data = handle.ref if isinstance(handle.ref, bytes) else _get(handle.ref)
        adapter = load_model(data, handle.format, handle.task, handle.allow_pickle, threads=threads)
        _LOADED[(handle.fingerprint, threads)] = adapter
    return adapter


def remember_model(fingerprint: str, adapter: ModelAdapter) -> None:
    """A model this process has loaded already (an inline evaluation's driver, whose calls
    predict with the runtime's default threads)."""
    _LOADED[(fingerprint, 0)] = adapter


@dataclass
class ShardPrediction:
    index: int
    labels: np.ndarray
    qids: np.ndarray | None
    predictions: list[np.ndarray]  # one per model: candidate, baseline, then the challengers
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    incomplete_rows: int = 0  # rows without a value for every feature (before any filling)
    missing_values: int = 0  # absent (NaN) feature values, before any filling
    per_query: QueryValues | None = None  # a ranking evaluation's, when the shard computes alone
    actor: int | None = None  # the predicting actor (its slot) that predicted it; None: the task
    profile: ProfileState | None = None  # the shard's data and predictions profile
    # inline (profiled_aside): that profile, still being computed beside the next shards
    profile_aside: Future | None = None

    @property
    def rows(self) -> int:
        return len(self.labels)


# Inline, the process runs one shard after another, the parser on one CPU and the models with
# threads that leave CPU idle: each shard's profile then runs on a thread of its own while the
# next shards are parsed and predicted (the driver takes it later: ShardScoring.took_profile), not
# beside the shard's own predictions, which it outlasts. A Ray task's process has no CPU to
# spare, so there the task profiles its shard itself.
_PROFILER: ContextVar[ThreadPoolExecutor | None] = ContextVar("modeleval_profiler", default=None)


@contextlib.contextmanager
def profiled_aside() -> Iterator[None]:
    """Within it, shards predicted in this thread are profiled on one thread beside it."""
    with ThreadPoolExecutor(1, thread_name_prefix="profile") as pool:
        token = _PROFILER.set(pool)
        try:
            yield
        finally:
            _PROFILER.reset(token)


MMAP_THRESHOLD = 8 * 2**20  # glibc: blocks at least this large are mapped, and unmapped on free


@cache
def _return_freed_memory() -> None:
    """Makes a task process give large blocks back as soon as a task frees them, and reuse the
    small ones. glibc raises its mmap threshold after a large block is freed (up to 32 MiB), so
    the next shard's matrix would come from the heap and stay resident (a worker grew by a
    shard's size with every task). Pinning the threshold at 8 MiB keeps every shard-sized array
    mapped (returned on free) while a parse's per-block buffers (a few MiB, allocated and freed
    for every block) are reused from the heap, whose top is returned past twice the threshold.
    A threshold of 1 MiB bounded memory as well but mapped and unmapped every block's buffers:
    page faults on every block halved the parser's speed. Arrow keeps its default pool
    (mimalloc), which reuses its pages for the next block and returns them when idle."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator decides
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (also stops its adjustment)
            libc.mallopt(-1, 2 * MMAP_THRESHOLD)  # M_TRIM_THRESHOLD


def _predict_batches(adapter: ModelAdapter, features: np.ndarray, batch_size: int,
                     device: Device = CPU) -> np.ndarray:
    """The model's predictions, batch by batch, each batch put on ``device`` first."""
    outputs = [adapter.predict(device.put(features[a:b], adapter.device_arrays))
               for a, b in batches(len(features), batch_size)]
    return np.concatenate(outputs) if outputs else np.empty(0)


# Task arguments. Each is small and pickled into its task; model bytes travel by reference.
@dataclass(frozen=True)
class LetorRange:
    """Shard ``index`` of a LETOR file: bytes [start, end) of ``uri``, parsed into the cached part
    ``part_uri`` with ``num_features`` columns (None: as many as the lines have). ``threads``:
    the CPUs its work may use (parsed in that many pieces side by side, predicted with that
    many threads; 0: one piece, the model runtime's default)."""

    index: int
    uri: str
    start: int
    end: int
    num_features: int | None
    part_uri: str
    threads: int = 0

    @property
    def where(self) -> str:
        return f"{self.uri} (bytes {self.start}-{self.end})"


@dataclass(frozen=True)
class CachedPart:
    """Shard ``index`` of a dataset: a cached part, the columns slices need from it, and the
    threads its predictions may use (0: the model runtime's default)."""

    index: int
    uri: str
    num_features: int
    keep_columns: tuple[str, ...] = ()
    threads: int = 0
    feature_names: tuple[str, ...] | None = None  # a table's columns (the manifest's)

    @property
    def where(self) -> str:
        return self.uri


@dataclass(frozen=True)
class Predictor:
    """What every task of an evaluation predicts with: its models (candidate first, then the
    baseline and the challengers; the shard is parsed once for all), the batch size, the
    features slices need from each shard, whether an absent feature is read as 0, the ranking
    metrics whose per-query values each shard computes (and whether it computes their curve
    aggregates for the report), and, in a GPU evaluation, the
    predicting actors (:mod:`.scoring`) that hold the GPUs and, when tasks may predict on the
    CPU while an actor starts, each actor's start (the ref of its models' load)."""

    handles: tuple[ModelHandle, ...]
    batch_size: int
    keep_features: tuple[int, ...] = ()
    missing_as_zero: bool = False
    query_metrics: tuple[str, ...] = ()
    query_curves: bool = True
    scorers: tuple[Any, ...] = ()
    starting: tuple[Any, ...] = ()
    profile: ProfileRequest | None = None

    def predict(self, index: int, shard: ParsedShard, where: str, threads: int = 0,
                part: tuple[PartStore, CachedPart] | None = None) -> ShardPrediction:
        """Everything the driver needs of a shard: its predictions by every model (on a
        predicting actor when the evaluation has them; else here, each model with ``threads``
        threads, 0: its runtime's default), labels, query ids, slice columns and, for a
        ranking evaluation, its per-query metric values. ``part``: the cached part the shard
        was read from, which an actor on this node reads itself."""
        shard = shard.counted()  # once, for the metrics and the models' input
        result = self.prepare(index, shard)
        aside = _PROFILER.get()
        if self.profile is None:
            self._predict_into(result, shard, where, threads, part)
        elif aside is not None:
            data = aside.submit(self.profile.data_of, shard)
            self._predict_into(result, shard, where, threads, part)
            request, predictions = self.profile, result.predictions
            # after the data's profile on the same thread: the predictions' joins it there
            result.profile_aside = aside.submit(
                lambda: request.with_predictions(data.result(), predictions))
        else:
            with ThreadPoolExecutor(1, thread_name_prefix="profile") as pool:
                # The data's profile beside the predictions: the sorts and the model runtimes
                # release the GIL, and a task waiting for its GPU actor profiles meanwhile.
                profiling = pool.submit(self.profile.data_of, shard)
                self._predict_into(result, shard, where, threads, part)
                result.profile = self.profile.with_predictions(profiling.result(),
                                                               result.predictions)
        if self.query_metrics:
            result.per_query = shard_values(self.query_metrics, result.labels, result.qids,
                                            result.predictions, self.query_curves)
        return result

    def _predict_into(self, result: ShardPrediction, shard: ParsedShard, where: str,
                      threads: int, part: tuple[PartStore, CachedPart] | None) -> None:
        """Every model's predictions of the shard: on its predicting actor once that actor has
        started, else here."""
        slot = self.actor_slot(result.index)
        if slot is not None and (not self.starting or _started(self.starting[slot])):
            result.predictions = self._score_on_actor(slot, shard, where, part)
            result.actor = slot
        else:
            result.predictions = self.score(self.model_input(shard), where,
                                            lambda handle: _model(handle, threads))

    def actor_slot(self, index: int) -> int | None:
        """The predicting actor of shard ``index`` (round robin), None without actors. While
        it has not loaded the models (``starting``: a new actor starts a process, CUDA and the
        models, seconds), the task predicts the shard itself, on the CPU, rather than wait;
        without ``starting``, every shard waits for its actor."""
        return index % len(self.scorers) if self.scorers else None

    def _score_on_actor(self, slot: int, shard: ParsedShard, where: str,
                        part: tuple[PartStore, CachedPart] | None) -> list[np.ndarray]:
        """The predictions of actor ``slot``. The task waits for them, so its CPU is the
        actor's while the actor copies and predicts (actors request no CPU of their own), and
        the shard is finished here: no driver relays it. A cached part that is a file on this
        node is read by the actor itself (memory-mapped, as the task read it): the matrix is
        not copied into the object store. An actor on another node, which has no copy, says
        so, and gets the matrix."""
        actor, bare = self.scorers[slot], replace(self, scorers=(), starting=())
        if part is not None:
            predictions = result_of(actor.score_part.remote(*part, bare))
            if predictions is not None:
                return predictions
        return result_of(actor.score.remote(self.model_input(shard), bare, where))

    def model_input(self, shard: ParsedShard) -> np.ndarray:
        """The matrix the models read: absent features as 0 when asked."""
        if self.missing_as_zero and shard.counted().incomplete:
            return np.where(np.isnan(shard.features), 0, shard.features)
        return shard.features

    def prepare(self, index: int, shard: ParsedShard) -> ShardPrediction:
        """Everything metrics need of a shard besides predictions: labels, query ids, the
        slices' columns (as the models read them), incomplete rows."""
        columns = dict(shard.extra)
        for j in self.keep_features:
            column = shard.features[:, j]
            columns[f"feature:{j}"] = np.where(np.isnan(column), 0, column) \
                if self.missing_as_zero else column.copy()
        counted = shard.counted()
        return ShardPrediction(index, shard.labels, shard.qids, [], columns, counted.incomplete,
                               counted.missing)

    def score(self, features: np.ndarray, where: str,
              adapters: Callable[[ModelHandle], ModelAdapter] | None = None,
              device: Device = CPU) -> list[np.ndarray]:
        """Every model's predictions of ``features`` on ``device``; ``adapters`` gives each
        handle's loaded model (default: this process's, loaded on first use)."""
        predictions = []
        for handle in self.handles:
            adapter = (adapters or _model)(handle)
            try:
                predictions.append(_predict_batches(adapter, features, self.batch_size, device))
            except EvaluationError:
                raise
            except Exception as error:  # noqa: BLE001 - a model runtime's own failure
                raise EvaluationError(f"inference failed on {where}: "
                                      f"{str(error).splitlines()[0][:300]}",
                                      Reason.InferenceError) from None
        return predictions


# The actor starts this process has seen finish (their refs' ids): later shards skip the check.
_STARTED: set[bytes] = set()
# How long a task asks the actor's owner (the driver) whether its start has finished: long
# enough for the answer when it has, short against a shard's predict when it has not.
ACTOR_START_WAIT_S = 0.02


def _started(ref: Any) -> bool:
    """Whether the actor start ``ref`` (a predicting actor's load of the models) has finished."""
    import ray

    key = ref.binary()
    if key not in _STARTED:
        if not ray.wait([ref], timeout=ACTOR_START_WAIT_S, fetch_local=False)[0]:
            return False
        if len(_STARTED) > 4096:  # a long-lived worker: forget old evaluations' actors
            _STARTED.clear()
        _STARTED.add(key)
    return True


@dataclass(frozen=True)
class ParsedRange:
    """What parsing a :class:`LetorRange` into its part found."""

    index: int
    rows: int
    width: int
    has_qid: bool


# Task functions: what each Ray task runs (the inline path calls them directly). Their names
# are the task workers' process titles (``ray::predict_part``).
def predict_part(parts: PartStore, part: CachedPart, predictor: Predictor) -> ShardPrediction:
    """Reads one cached part, predicts it with every model, returns what metrics need."""
    _return_freed_memory()
    shard = replace(parts.read(part.uri, part.num_features, keep=list(part.keep_columns)),
                    feature_names=part.feature_names)
    return predictor.predict(part.index, shard, part.uri, part.threads, (parts, part))


def profile_part(parts: PartStore, part: CachedPart, request: ProfileRequest) -> ProfileState:
    """Reads one cached part of a reference dataset and profiles its data (no model reads it)."""
    _return_freed_memory()
    shard = parts.read(part.uri, part.num_features, keep=list(part.keep_columns))
    return profile_data(shard, part.feature_names, request.cuts, request.slice_columns)


def parse_and_predict(parts: PartStore, letor: LetorRange, predictor: Predictor) -> ShardPrediction:
    """The cold path in one task: parses a range of a LETOR file, writes the parsed part to the
    cache while the models predict it, returns the predictions."""
    _return_freed_memory()
    shard = _parse_range(parts, letor).counted()  # once, for the part and the predictions
    with ThreadPoolExecutor(1) as pool:  # the upload overlaps prediction (which drops the GIL)
        written = pool.submit(parts.write, letor.part_uri, shard)
        result = predictor.predict(letor.index, shard, letor.where, letor.threads)
        written.result()
    return result


def parse_letor_range(parts: PartStore, letor: LetorRange) -> ParsedRange:
    """Parses a range of a LETOR file into one cached part."""
    _return_freed_memory()
    shard = _parse_range(parts, letor)
    parts.write(letor.part_uri, shard)
    return ParsedRange(letor.index, shard.rows, shard.features.shape[1], shard.qids is not None)


def _parse_range(parts: PartStore, letor: LetorRange) -> ParsedShard:
    """Parses the range, in line-aligned pieces side by side when its task holds several CPUs
    (the parser releases the GIL): a worker of N CPUs runs one task of N threads, not one
    thread and N-1 idle CPUs. The pieces are joined as one parse of the range reads it."""
    storage, uri, width = parts.storage, letor.uri, letor.num_features
    if letor.threads <= 1:
        return _parse_piece(storage, uri, letor.start, letor.end, width)
    with ThreadPoolExecutor(letor.threads) as pool:
        pieces = line_pieces(storage, uri, letor.start, letor.end, letor.threads, pool.map)
        shards = list(pool.map(lambda piece: _parse_piece(storage, uri, *piece, width), pieces))
        joined = join_pieces(shards, width, pool.map)
    if joined is None:  # pieces disagree on query ids: one parse of the range names the line
        return _parse_piece(storage, uri, letor.start, letor.end, width)
    return joined


def _parse_piece(storage: Storage, uri: str, start: int, end: int,
                 num_features: int | None) -> ParsedShard:
    """Streams bytes [start, end) from storage into the parser: the text is never held whole."""
    with storage.open_range(uri, start, end) as read:
        return parse_letor_stream(read, end - start, num_features, f"{uri} (bytes {start}-{end})",
                                  lambda: storage.read(uri, start, end))


def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` in consecutive groups of ``size`` (the last one may be smaller)."""
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


def run_threaded(fn: Callable, calls: Sequence[tuple]) -> list[Any]:
    """The task of a worker holding several CPUs: ``fn(*args)`` for each call side by side, in
    threads of one process (parsing, predicting, reading and writing parts release the GIL;
    each call's shard says the CPUs its work may use). One process of N threads rather than N
    processes: a fresh worker starts and imports once, not N times. The results are in the
    order of ``calls``; the first call to fail fails the task."""
    _return_freed_memory()
    if len(calls) == 1:
        return [fn(*calls[0])]
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda args: fn(*args), calls))


_remote_cache: dict[Callable, Any] = {}


def remote_of(fn: Callable) -> Any:
    """``fn`` as a Ray remote function, made once per process."""
    import ray

    remote = _remote_cache.get(fn)
    if remote is None:
        remote = _remote_cache[fn] = ray.remote(fn)
    return remote


def run_bounded(fn: Callable, calls: Iterable[tuple], resources: TaskResources, max_inflight: int,
                on_result: Callable[[Any], None]) -> None:
    """Runs ``fn(*args)`` for each args tuple as Ray tasks, at most ``max_inflight`` calls at a
    time, handing each result to ``on_result`` as it arrives (in completion order). A task that
    holds several CPUs runs as many calls side by side (:func:`run_threaded`), in the groups
    :func:`batched` makes of ``calls``."""
    import ray

    threads = resources.threads
    if threads > 1:
        each = on_result
        calls = [(fn, batch) for batch in batched(list(calls), threads)]
        fn, max_inflight = run_threaded, max(1, -(-max_inflight // threads))

        def on_result(results: list[Any]) -> None:
            for result in results:
                each(result)

    remote = remote_of(fn).options(**resources.options())
    pending: list = []
    iterator = iter(calls)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < max_inflight:
                try:
                    args = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(remote.remote(*args))
            if not pending:
                return
            done, pending = ray.wait(pending, num_returns=1)
            on_result(result_of(done[0]))
    finally:
        for ref in pending:
            ray.cancel(ref, force=False)


def _get(ref: Any) -> Any:
    import ray

    return ray.get(ref)


def result_of(ref: Any) -> Any:
    """A task's or actor call's value; its failure as an EvaluationError (the task's own
    error when it raised one; a lost worker or actor as a retryable InferenceError)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, EvaluationError):
            raise EvaluationError(cause.message, cause.reason, cause.retryable) from None
        raise EvaluationError(f"a task failed: {str(error).splitlines()[0][:400]}",
                              Reason.InferenceError, retryable=True) from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError, ray.exceptions.RayActorError) as error:
        raise EvaluationError(f"a task was lost after its retries: {error}", Reason.InferenceError,
                              retryable=True) from None


def put_model(data: bytes, fingerprint: str, fmt: str, task: str, allow_pickle: bool,
              local: bool = False) -> ModelHandle:
    """A model for tasks (its bytes put in the object store) or, ``local``, for this process."""
    if local:
        return ModelHandle(data, fingerprint, fmt, task, allow_pickle)
    import ray

    return ModelHandle(ray.put(data), fingerprint, fmt, task, allow_pickle)
