"""One evaluation, end to end: object store -> parsed (cached) shards -> Ray inference -> metrics.

The same function runs inside a cluster (the Ray job the operator submits) and on a laptop
(`modeleval run`); it knows nothing about Kubernetes. Ray is imported where it is first used:
an evaluation small enough to run inline (in this process) never joins Ray and skips the
import, about a quarter of a small job driver's CPU.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property, reduce
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..api.curves import ModelCurves
from ..api.metrics import resampled_unit
from ..api.results import ResultDocument, document_id
from ..api.spec import ModelEvaluationSpec, ModelFormat, ModelSource, parse_quantity
from ..settings import EngineSettings
from . import curves as curve_fns
from . import intervals as bootstrap
from . import metrics as metric_fns
from .cache import CacheManifest, DatasetCache, PartStore
from .errors import EvaluationError, Reason
from .facts import library_versions
from .gate import evaluate_gate
from .inference import (CachedPart, LetorRange, ParsedRange, Predictor, Progress, ShardPrediction,
                        TaskResources, batched, parse_and_predict, parse_letor_range,
                        predict_part, put_model, remember_model, result_of, run_bounded)
from .models import load_model
from .querymetrics import assemble
from .scoring import ScoringPlan, gpu_warnings, scorers, stop_scorers
from .shard import ParsedShard
from .sharding import group_aligned_splits, letor_ranges
from .storage import ObjectInfo, Storage, join_uri
from .tables import read_table, table_to_shard


@dataclass
class Identity:
    """Who the result belongs to: the evaluation's uid and attempt (the result's key)."""

    uid: str
    attempt: int = 1
    name: str = "local"
    namespace: str | None = None


@dataclass
class EvaluationResult:
    identity: Identity
    metrics: dict[str, float]
    rows: int
    queries: int | None
    model: dict[str, Any]
    dataset: dict[str, Any]
    timings: dict[str, float]
    slices: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    predictions_uri: str | None = None
    cache_hit: bool = False
    primary_metric: str = ""
    intervals: dict[str, Any] = field(default_factory=dict)
    confidence: dict[str, Any] | None = None
    challengers: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    curves: list[ModelCurves] | None = None
    slice_intervals: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # Filled by the runner after the evaluation: where its report went (or why it did not) and
    # the EvaluationSchedule that created it.
    report_uri: str | None = None
    report_error: str | None = None
    schedule: str | None = None

    def document(self) -> ResultDocument:
        """The attempt's result document (keyed by uid + attempt)."""
        return ResultDocument(
            _id=document_id(self.identity.uid, self.identity.attempt), uid=self.identity.uid,
            attempt=self.identity.attempt, name=self.identity.name,
            namespace=self.identity.namespace, status="Succeeded",
            primary_metric=self.primary_metric, metrics=self.metrics, intervals=self.intervals,
            confidence=self.confidence, slices=self.slices,
            slice_intervals=self.slice_intervals, baseline=self.baseline,
            gate=self.gate, challengers=self.challengers, warnings=self.warnings,
            rows=self.rows, queries=self.queries,
            model=self.model, dataset=self.dataset, timings=self.timings,
            cache_hit=self.cache_hit, predictions_uri=self.predictions_uri, curves=self.curves,
            resources=self.resources, versions=self.versions,
            report_uri=self.report_uri, report_error=self.report_error, schedule=self.schedule)


# Bootstrap intervals are drawn for at most this many values of each slice, those with the most
# rows: each value costs a resampling of its rows, so a slice of a thousand small values would
# cost many times the headline intervals. A warning names each slice that has more values.
SLICE_INTERVAL_VALUES = 100


@dataclass
class _SliceTable:
    """The candidate's metrics per slice value, their intervals, the warnings, and the seconds
    the intervals took."""

    metrics: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    intervals: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class _DatasetEntry:
    """The dataset's object and its cache entry: the key, the feature count to parse with (None:
    as many as the lines have), and the entry's manifest when it is complete (a cache hit)."""

    info: ObjectInfo
    cache: DatasetCache
    key: str
    num_features: int | None
    manifest: CacheManifest | None


class Evaluator:
    """Runs one spec. Construct, then call :meth:`run`."""

    def __init__(self, spec: ModelEvaluationSpec, identity: Identity,
                 settings: EngineSettings | None = None, progress: Progress | None = None,
                 scoring: ScoringPlan | None = None):
        """``scoring`` overrides how predicting actors are started (tests: the GPU path's
        wiring on the CPU, ``ScoringPlan(num_gpus=0, use_gpu=False)``; a benchmark: actors
        kept between evaluations, ``keep=True``)."""
        self.spec = spec
        self._scoring = scoring
        self._actors: list[Any] = []
        self._gpu_warnings: list[str] = []
        self.identity = identity
        self.settings = settings or EngineSettings()
        self.storage = Storage.from_settings(self.settings)
        self.parts = PartStore(self.storage, str(self.settings.node_cache_dir),
                               self.settings.node_cache_bytes)
        self.progress = progress or (lambda done, total, unit: None)
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ steps
    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.perf_counter() - started, 4)

    def _fetch_model(self, source: ModelSource) -> tuple[ObjectInfo, bytes]:
        return self.storage.fetch(source.uri, not_found=Reason.ModelNotFound)

    def _may_unpickle(self, source: ModelSource) -> bool:
        """The spec's allowPickle counts only with the settings' permission (in a cluster, the
        platform's, passed by the operator)."""
        return source.allow_pickle and self.settings.allow_pickle

    def _load_model(self, source: ModelSource, data: bytes) -> Any:
        if source.format == ModelFormat.pickle and source.allow_pickle \
                and not self.settings.allow_pickle:
            raise EvaluationError(f"{source.uri}: pickle models are refused: this platform does "
                                  "not allow them (the operator passes its permission to the "
                                  "job only when its policy allows pickle)", Reason.PickleRefused)
        try:
            # On the CPU: the driver only checks the model; the predicting actors hold the GPUs.
            return load_model(data, source.format, self.spec.task, self._may_unpickle(source))
        except EvaluationError as error:  # the message names the object
            raise EvaluationError(f"{source.uri}: {error.message}", error.reason,
                                  error.retryable) from None

    def _expected_features(self) -> int | None:
        """The candidate model's feature count, once the driver has loaded it (its load error,
        if it could not)."""
        return self._loading.result()[0].expected_features

    @cached_property
    def _resources(self) -> TaskResources:
        """Per-task requests: one worker's CPUs and GPUs. A request no node of the Ray cluster
        can ever meet would wait forever, so it is an error instead."""
        import ray

        r = self.spec.resources
        wanted = TaskResources(num_cpus=max(parse_quantity(r.cpu), 0.01), num_gpus=float(r.gpu),
                               max_retries=self.settings.task_retries)
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(n.get("CPU", 0) >= wanted.num_cpus and n.get("GPU", 0) >= wanted.num_gpus
                   for n in nodes):
            largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            raise EvaluationError(
                f"spec.resources asks {wanted.num_cpus:g} CPU and {wanted.num_gpus:g} GPU per worker; "
                f"the largest Ray node has {largest.get('CPU', 0):g} CPU and "
                f"{largest.get('GPU', 0):g} GPU", Reason.Unschedulable)
        return wanted

    @cached_property
    def _plan(self) -> ScoringPlan | None:
        """How a GPU evaluation's predicting actors are started; None: the tasks predict."""
        if self._inline:
            return None
        if self._scoring is not None:
            return self._scoring
        import ray

        if self._resources.num_gpus:  # (a cluster without the GPUs asked for fails there)
            return ScoringPlan.for_cluster(ray.cluster_resources(), self.settings.scorers_per_gpu)
        return None

    @cached_property
    def _task_resources(self) -> TaskResources:
        """What each task requests: with predicting actors, CPUs only (the actors hold the GPUs)."""
        return replace(self._resources, num_gpus=0.0) if self._plan else self._resources

    @cached_property
    def _task_slots(self) -> int:
        """How many shards of this evaluation the Ray cluster works on at once: its tasks at
        once, each on as many shards as it holds whole CPUs (the GPU path's tasks one each)."""
        if self._inline:
            return 1
        import ray

        total = ray.cluster_resources()
        slots = total.get("CPU", 1) / self._task_resources.num_cpus
        if self._task_resources.num_gpus:
            slots = min(slots, total.get("GPU", 0) / self._task_resources.num_gpus)
        return max(1, int(slots)) * self._shards_per_task

    @cached_property
    def _shards_per_task(self) -> int:
        """The shards a task works on side by side: one per whole CPU it holds
        (:func:`run_threaded`; on the GPU path too, each handing its shard to an actor)."""
        return 1 if self._inline else self._task_resources.threads

    @cached_property
    def _max_inflight(self) -> int:
        if self.settings.max_inflight_tasks:
            return self.settings.max_inflight_tasks
        return max(2, 2 * _cluster_cpus())

    def _slice_inputs(self) -> tuple[list[str], list[int]]:
        columns = [s.column for s in self.spec.slices if s.column]
        features = [s.feature for s in self.spec.slices if s.feature is not None]
        return columns, features

    def _open_cache(self) -> _DatasetEntry:
        ds = self.spec.dataset
        info = self.storage.stat(ds.uri, not_found=Reason.DatasetNotFound)
        if info.size == 0:
            raise EvaluationError(f"{ds.uri}: the dataset is empty", Reason.EmptyDataset)
        num_features = ds.num_features
        if num_features is None and ds.format == "letor":
            num_features = self._expected_features()
        keep_columns, _ = self._slice_inputs()
        options = {"format": ds.format, "num_features": num_features, "label": ds.label_column,
                   "group": ds.group_column, "features": ds.feature_columns, "keep": keep_columns}
        cache = DatasetCache(self.storage, self.settings.resolved_cache_uri(ds.uri, self.identity.namespace))
        key = cache.key(info, options)
        return _DatasetEntry(info, cache, key, num_features, cache.load_manifest(key))

    # ------------------------------------------------------------------ data paths
    def _infer(self, dataset: _DatasetEntry,
               predictor: Predictor) -> tuple[CacheManifest, list[ShardPrediction]]:
        """Every shard's predictions, by one of three paths: from the cache (a hit); parsing and
        predicting in the same tasks (a miss on a LETOR file whose feature count is known); or
        parsing into the cache, then predicting from it (any other miss)."""
        if dataset.manifest is not None:
            return dataset.manifest, self._predict_cached(dataset.manifest, predictor)
        if self.spec.dataset.format == "letor" and dataset.num_features is not None:
            return self._parse_and_predict(dataset, predictor)
        return self._parse_then_predict(dataset, predictor)

    def _predict_cached(self, manifest: CacheManifest, predictor: Predictor) -> list[ShardPrediction]:
        """A task per cached part: reads it and predicts it."""
        with self._model_errors_first(manifest.num_features):
            self._check_rows(manifest)
            self._check_slice_features(manifest.num_features)
            keep_columns, _ = self._slice_inputs()
            threads = self._shard_threads(len(manifest.parts))
            calls = [(self.parts, CachedPart(i, uri, manifest.num_features, tuple(keep_columns),
                                             threads[i]), predictor)
                     for i, uri in enumerate(manifest.parts)]
            return self._run_shards(predict_part, calls, manifest.rows, "rows")

    def _parse_and_predict(self, dataset: _DatasetEntry,
                           predictor: Predictor) -> tuple[CacheManifest, list[ShardPrediction]]:
        """The cold LETOR path when the feature count is known: each task parses a byte range,
        writes its part to the cache and predicts it, so parsed data is never read back."""
        info, width = dataset.info, dataset.num_features
        with self._model_errors_first(width):
            self._check_slice_features(width)
            ranges = self._letor_ranges(dataset, width)
            shards = self._run_shards(parse_and_predict, [(self.parts, r, predictor) for r in ranges],
                                      [r.end - r.start for r in ranges], "bytes")
            has_qid = _all_or_none(info.uri, [s.qids is not None for s in shards if s.rows])
            manifest = CacheManifest(info.uri, info.fingerprint, [r.part_uri for r in ranges],
                                     [s.rows for s in shards], width, has_qid)
            self._check_rows(manifest)
            dataset.cache.save_manifest(dataset.key, manifest)
        return manifest, shards

    def _parse_then_predict(self, dataset: _DatasetEntry,
                            predictor: Predictor) -> tuple[CacheManifest, list[ShardPrediction]]:
        """The other cold paths: the dataset is parsed into the cache first (a table, or a LETOR
        file of unknown width), then predicted from it."""
        with self._model_errors_first(dataset.num_features):
            self._expected_features()  # a broken model fails here, before any data is parsed
            manifest = (self._parse_letor(dataset) if self.spec.dataset.format == "letor"
                        else self._parse_table(dataset))
            dataset.cache.save_manifest(dataset.key, manifest)
        return manifest, self._predict_cached(manifest, predictor)

    def _parse_letor(self, dataset: _DatasetEntry) -> CacheManifest:
        """Parses without a known feature count: the width is the widest part's."""
        info = dataset.info
        ranges = self._letor_ranges(dataset, None)
        parsed: dict[int, ParsedRange] = {}

        def collect(part: ParsedRange) -> None:
            parsed[part.index] = part

        self._execute(parse_letor_range, [(self.parts, r) for r in ranges], collect)
        widths = {p.width for p in parsed.values() if p.rows}
        if len(widths) > 1:
            # Parts narrower than the widest are re-parsed at the common width.
            width = max(widths)
            self._execute(parse_letor_range, [(self.parts, replace(r, num_features=width))
                                              for r in ranges if parsed[r.index].width != width],
                          collect)
        parts = [parsed[r.index] for r in ranges]
        has_qid = _all_or_none(info.uri, [p.has_qid for p in parts if p.rows])
        return CacheManifest(info.uri, info.fingerprint, [r.part_uri for r in ranges],
                             [p.rows for p in parts], max(widths, default=0), has_qid)

    def _letor_ranges(self, dataset: _DatasetEntry, num_features: int | None) -> list[LetorRange]:
        """The LETOR file's byte ranges and the cached parts they become, each with its share
        of its task's CPUs (all of them for a range alone in its task: parsed in pieces)."""
        ranges = letor_ranges(self.storage, dataset.info, self.settings.shard_bytes, self._task_slots)
        threads = self._shard_threads(len(ranges))
        return [LetorRange(i, dataset.info.uri, start, end, num_features,
                           dataset.cache.part_uri(dataset.key, i), threads[i])
                for i, (start, end) in enumerate(ranges)]

    def _shard_threads(self, count: int) -> list[int]:
        """The CPUs the work on each of ``count`` shards may use: a task shares the CPUs it holds
        among the shards it works on, in the groups ``batched`` makes (0 inline: the
        runtime's defaults, in this process)."""
        if self._inline:
            return [0] * count
        cpus = self._task_resources.threads
        return [max(1, cpus // len(group))
                for group in batched(range(count), self._shards_per_task) for _ in group]

    def _parse_table(self, dataset: _DatasetEntry) -> CacheManifest:
        ds = self.spec.dataset
        info, cache, key = dataset.info, dataset.cache, dataset.key
        keep_columns, _ = self._slice_inputs()
        table = read_table(self.storage, info.uri, ds.format)
        shard = table_to_shard(table, ds.label_column, ds.group_column, ds.feature_columns,
                               keep_columns, where=info.uri)
        if shard.rows == 0:
            raise EvaluationError(f"{info.uri}: the dataset has no rows", Reason.EmptyDataset)
        parts = 1 if self._inline else max(1, _cluster_cpus() * 2)
        splits = group_aligned_splits(shard.qids, shard.rows, parts)
        uris, rows = [], []
        for i, (a, b) in enumerate(splits):
            piece = ParsedShard(shard.labels[a:b], None if shard.qids is None else shard.qids[a:b],
                                shard.features[a:b], {k: v[a:b] for k, v in shard.extra.items()})
            uri = cache.part_uri(key, i)
            self.parts.write(uri, piece)
            uris.append(uri)
            rows.append(b - a)
        return CacheManifest(info.uri, info.fingerprint, uris, rows, shard.features.shape[1],
                             shard.qids is not None)

    def _execute(self, fn: Callable, calls: list[tuple], on_result: Callable[[Any], None]) -> None:
        """Each call as a Ray task, or in this process when the evaluation runs inline."""
        if self._inline:
            for args in calls:
                on_result(fn(*args))
        else:
            run_bounded(fn, calls, self._task_resources, self._max_inflight, on_result)

    def _run_shards(self, fn: Callable, calls: list[tuple], sizes: list[int],
                    unit: str) -> list[ShardPrediction]:
        """Runs one task per shard, reporting progress as the sum of finished shards' sizes."""
        done, total = 0, sum(sizes)
        shards: dict[int, ShardPrediction] = {}

        def collect(result: ShardPrediction) -> None:
            nonlocal done
            shards[result.index] = result
            done += sizes[result.index]
            self.progress(done, total, unit)

        self.progress(0, total, unit)
        self._execute(fn, calls, collect)
        return [shards[i] for i in range(len(calls))]

    # ------------------------------------------------------------------ checks
    @contextlib.contextmanager
    def _model_errors_first(self, width: int | None) -> Iterator[None]:
        """Tasks start without waiting for the driver's own load of the model: the workers load
        it too. When a step fails, the driver's verdict on the model (unreadable, or made for
        another feature count than the data's ``width``) is the likelier cause and is the error
        reported."""
        try:
            yield
        except EvaluationError:
            self._check_width(width, self._expected_features())
            raise

    def _check_width(self, width: int | None, expected: int | None) -> None:
        if expected is not None and width is not None and width != expected:
            raise EvaluationError(f"{self.spec.dataset.uri}: the data has {width} features, the "
                                  f"model expects {expected}", Reason.SchemaMismatch)

    def _check_rows(self, manifest: CacheManifest) -> None:
        if manifest.total_rows == 0:
            raise EvaluationError(f"{self.spec.dataset.uri}: the dataset has no rows",
                                  Reason.EmptyDataset)
        if self.spec.task == "ranking" and not manifest.has_qid:
            raise EvaluationError(f"{self.spec.dataset.uri}: ranking needs query ids (qid:)",
                                  Reason.SchemaMismatch)

    def _check_slice_features(self, width: int) -> None:
        for j in self._slice_inputs()[1]:
            if j >= width:
                raise EvaluationError(f"slices: feature {j} does not exist (the data has "
                                      f"{width} features)", Reason.SchemaMismatch)

    # ------------------------------------------------------------------ run
    def run(self) -> EvaluationResult:
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="model-load") as pool:
                return self._run(pool)
        finally:
            plan = self.__dict__.get("_plan")  # computed only once the data path was chosen
            if plan is not None and not plan.keep and self._actors:
                stop_scorers(self._actors)

    def _run(self, pool: ThreadPoolExecutor) -> EvaluationResult:
        spec = self.spec
        started = t = time.perf_counter()
        use_gpu = spec.resources.gpu > 0
        # The driver loads each model once, to check it and learn its feature count, in a thread
        # while the data is located (and, on a cache hit, while the tasks already predict).
        # One pass predicts every model: the candidate, the baseline, then the challengers.
        sources = ([spec.model] + ([spec.baseline.model] if spec.baseline is not None else [])
                   + [c.model for c in spec.challengers])
        # Each a request or two to object storage: the models are fetched side by side, while
        # the dataset and its cache entry are looked up.
        with ThreadPoolExecutor(len(sources), thread_name_prefix="model-fetch") as fetches:
            fetching = [fetches.submit(self._fetch_model, source) for source in sources]
            self._loading = pool.submit(lambda: [self._load_model(source, f.result()[1])
                                                 for source, f in zip(sources, fetching)])
            try:
                dataset = self._open_cache()
            finally:  # a model's error comes first, as when the models were fetched first
                fetched = [f.result() for f in fetching]
        model_info = fetched[0][0]
        # Small CPU-only data is evaluated here, in this process: starting Ray task workers
        # would cost more than the work.
        self._inline = use_gpu is False and dataset.info.size <= self.settings.inline_bytes
        if self._inline:
            for (info, _), adapter in zip(fetched, self._loading.result()):
                remember_model(info.fingerprint, adapter)  # loaded once, here
        else:
            ensure_ray()
        handles = tuple(put_model(data, info.fingerprint, source.format, spec.task,
                                  self._may_unpickle(source), local=self._inline)
                        for source, (info, data) in zip(sources, fetched))
        names = [str(m) for m in spec.metric_names]
        # Ranking metrics per query are computed by the tasks, shard by shard (querymetrics).
        predictor = Predictor(handles, spec.batch_size, tuple(self._slice_inputs()[1]),
                              missing_as_zero=spec.dataset.missing_features == "zero",
                              query_metrics=tuple(names) if spec.task == "ranking" else (),
                              query_curves=self.settings.report)
        predictor, starting = self._start_actors(predictor)
        self._timed("prepareDataset", t)

        t = time.perf_counter()
        manifest, shards = self._infer(dataset, predictor)
        per_query = (assemble(names, [s.per_query for s in shards]) if spec.task == "ranking"
                     else None)
        if starting:
            self._gpu_warnings = gpu_warnings(self._plan, self._actor_reports(starting, shards),
                                              any(s.actor is not None for s in shards))
        expected = self._expected_features()
        self._check_width(manifest.num_features, expected)
        self._timed("inference", t)

        t = time.perf_counter()
        labels = np.concatenate([s.labels for s in shards])
        qids = np.concatenate([s.qids for s in shards]) if manifest.has_qid else None
        predictions = [np.concatenate([s.predictions[m] for s in shards]) for m in range(len(handles))]
        columns = {name: np.concatenate([s.columns[name] for s in shards])
                   for name in (shards[0].columns if shards else {})}
        binary: list[Any] = []
        binary_seconds = 0.0
        if per_query is not None:
            scored = [{name: metric_fns.query_mean(values[name]) for name in names}
                      for values in per_query]
        elif spec.task == "binary":
            scored, binary, binary_seconds = self._binary(names, labels, predictions)
        else:
            scored = [metric_fns.compute(spec.task, names, labels, p, qids) for p in predictions]
        slices = self._slices(names, labels, predictions[0], qids, columns)
        self._timed("metrics", t + binary_seconds + slices.seconds)
        curves: list[ModelCurves] | None = None
        curve_warnings: list[str] = []
        if self.settings.report:  # without a report, nothing plots the curves
            t = time.perf_counter()
            curves, curve_warnings = self._curves(
                names, shards, labels, predictions, qids,
                per_query is not None and all(s.per_query and s.per_query.curves for s in shards),
                binary)
            self._timed("curves", t - binary_seconds)
        t = time.perf_counter()
        outcome = _Outcome.of(spec, [info for info, _ in fetched], scored,
                              self._resampled(names, labels, predictions, qids, per_query))
        if spec.confidence is not None:  # the slices' intervals included
            self._timed("confidence", t - slices.seconds)

        predictions_uri = None
        if spec.output.predictions_uri:
            t = time.perf_counter()
            predictions_uri = self._write_predictions(labels, qids, predictions)
            self._timed("writePredictions", t)
        self._timed("total", started)
        return EvaluationResult(
            identity=self.identity, metrics=scored[0], rows=int(len(labels)),
            queries=(len(next(iter(per_query[0].values()))) if per_query
                     else int(len(np.unique(qids))) if qids is not None else None),
            model={"uri": spec.model.uri, "format": spec.model.format,
                   "fingerprint": model_info.fingerprint, "features": expected,
                   **self._predicted_by(shards)},
            dataset={"uri": spec.dataset.uri, "format": spec.dataset.format,
                     "fingerprint": dataset.info.fingerprint, "bytes": dataset.info.size,
                     "shards": len(manifest.parts), "features": manifest.num_features,
                     "missingValues": sum(s.missing_values for s in shards)},
            timings=self.timings, slices=slices.metrics, slice_intervals=slices.intervals,
            baseline=outcome.baseline, gate=outcome.gate,
            predictions_uri=predictions_uri, cache_hit=dataset.manifest is not None,
            primary_metric=spec.primary_metric, intervals=outcome.intervals,
            confidence=outcome.confidence, challengers=outcome.challengers,
            warnings=(self._gpu_warnings + self._warnings(shards, manifest.num_features)
                      + slices.warnings + curve_warnings),
            resources=self._resources_used(len(manifest.parts)), versions=library_versions(),
            curves=curves,
        )

    def _model_names(self) -> list[str]:
        """Each model's name in the result, in prediction order."""
        return (["model"] + (["baseline"] if self.spec.baseline is not None else [])
                + [c.name for c in self.spec.challengers])

    def _binary(self, names: list[str], labels: np.ndarray, predictions: list[np.ndarray]
                ) -> tuple[list[dict[str, float]], list[Any], float]:
        """Each binary model's metrics and, with a report, its curve aggregates (or the error
        that kept it from having them), both read off one sort of its scores; and the seconds
        the aggregates took. A model's counts go before the next model's are made: they can be
        as large as its predictions. The aggregates are gathered in the counts' own tally
        (a :class:`curve_fns.BinaryTally`): the curves then read only those."""
        scored, aggregates, seconds = [], [], 0.0
        for p in predictions:
            tally = curve_fns.BinaryTally() if self.settings.report else None
            # Without a report, the metrics sort the scores themselves if one needs them.
            counts = (metric_fns.binary_score_counts(labels, p, tally) if tally is not None
                      else None)
            scored.append(metric_fns.compute("binary", names, labels, p, counts=counts))
            if self.settings.report:
                started = time.perf_counter()
                try:
                    aggregates.append(curve_fns.binary_curves(labels, p, counts=counts))
                except EvaluationError as error:
                    aggregates.append(error)
                seconds += time.perf_counter() - started + tally.seconds  # type: ignore[union-attr]
            del counts
        return scored, aggregates, seconds

    def _curves(self, names: list[str], shards: list[ShardPrediction], labels: np.ndarray,
                predictions: list[np.ndarray], qids: np.ndarray | None,
                shards_ranked: bool, binary: list[Any]) -> tuple[list[ModelCurves] | None, list[str]]:
        """Every model's curve aggregates for the report. Binary: ``binary``, made beside the
        metrics. Ranking: the shards' states merged (``shards_ranked``: every shard computed
        its queries alone), else computed here over every row. A failure here costs the report
        its curves, never the evaluation."""
        task = self.spec.task
        try:
            out = []
            for m, model in enumerate(self._model_names()):
                if task == "binary":
                    if isinstance(binary[m], EvaluationError):
                        raise binary[m]
                    aggregate: Any = binary[m]
                elif task == "multiclass":
                    aggregate = curve_fns.multiclass_curves(labels, predictions[m])
                elif task == "regression":
                    aggregate = curve_fns.regression_curves([(s.labels, s.predictions[m])
                                                             for s in shards if s.rows])
                else:
                    state = (reduce(curve_fns.RankingState.merge,
                                    [s.per_query.curves[m]  # type: ignore[union-attr,index]
                                     for s in shards]) if shards_ranked
                             else curve_fns.RankingState.of(names, labels, predictions[m], qids))
                    aggregate = curve_fns.ranking_curves(state)
                out.append(ModelCurves(model=model, **{task: aggregate}))
            return out, []
        except EvaluationError as error:
            return None, [f"the report's curves could not be computed: {error.message}"]

    def _start_actors(self, predictor: Predictor) -> tuple[Predictor, list[Any]]:
        """Starts (or finds) the predicting actors and has them load the models while the
        first shards are parsed; returns the predictor the tasks hand their shards to the
        actors with, and the refs of the actors' device reports."""
        if self._plan is None:
            return predictor, []
        self._actors = scorers(self._plan, self.settings.task_retries)
        starting = [actor.start.remote(predictor) for actor in self._actors]
        # With the starts in the predictor, a task whose actor has not started predicts itself.
        may_start = tuple(starting) if self.settings.predict_while_actors_start else ()
        return replace(predictor, scorers=tuple(self._actors), starting=may_start), starting

    def _actor_reports(self, starting: list[Any],
                       shards: list[ShardPrediction]) -> list[tuple[str, list[str]]]:
        """The device reports of the actors that predicted a shard, and of any other whose
        report is in: the driver does not wait for an actor still starting whose shards its
        tasks predicted themselves."""
        import ray

        used = {s.actor for s in shards if s.actor is not None}
        ready = set(ray.wait(starting, num_returns=len(starting), timeout=0)[0])
        return [result_of(ref) for slot, ref in enumerate(starting) if slot in used or ref in ready]

    def _resources_used(self, shards: int) -> dict[str, Any]:
        """What the evaluation ran with. ``mode``: cluster where file:// URIs are refused (the
        operator's Ray jobs), else local; ``inline``: in this process, without Ray tasks.
        ``cpus``/``gpus``/``nodes``: the Ray cluster's (this machine's inline); per task, its
        requests; ``tasks``: the Ray tasks the shards went to, ``taskSlots``: how many of them
        the cluster runs at once; ``actors``: a GPU evaluation's predicting actors."""
        mode = "local" if self.settings.allow_file_uris else "cluster"
        if self._inline:
            return {"mode": mode, "inline": True, "cpus": os.cpu_count() or 1, "gpus": 0,
                    "nodes": 1, "taskCpus": 0, "taskGpus": 0, "tasks": 0, "taskSlots": 0,
                    "actors": 0, "shards": shards}
        import ray

        total = ray.cluster_resources()
        task = self._task_resources
        return {"mode": mode, "inline": False, "cpus": _whole(total.get("CPU", 0)),
                "gpus": _whole(total.get("GPU", 0)),
                "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
                "taskCpus": _whole(task.num_cpus), "taskGpus": _whole(task.num_gpus),
                "tasks": -(-shards // self._shards_per_task),
                "taskSlots": self._task_slots // self._shards_per_task,
                "actors": len(self._actors), "shards": shards}

    def _predicted_by(self, shards: list[ShardPrediction]) -> dict[str, Any]:
        """A GPU evaluation's shards counted by who predicted them: the actors, or the tasks
        on the CPU while the actors started (nothing for an evaluation without actors)."""
        if self._plan is None:
            return {}
        actors = sum(s.actor is not None for s in shards)
        return {"predictedBy": {"actors": actors, "tasks": len(shards) - actors}}

    def _resampled(self, names: list[str], labels: np.ndarray, predictions: list[np.ndarray],
                   qids: np.ndarray | None, per_query: list[dict[str, np.ndarray]] | None
                   ) -> list[dict[str, np.ndarray]] | None:
        """Every model's metrics on each bootstrap resample (None without spec.confidence)."""
        if self.spec.confidence is None:
            return None
        return bootstrap.bootstrap(self.spec.task, names, labels, predictions, qids,
                                   self.spec.confidence, per_query)

    def _warnings(self, shards: list[ShardPrediction], width: int) -> list[str]:
        incomplete = sum(s.incomplete_rows for s in shards)
        if not incomplete or self.spec.dataset.format != "letor":
            return []
        rows = sum(s.rows for s in shards)
        read_as = ("0 (dataset.missingFeatures: zero)"
                   if self.spec.dataset.missing_features == "zero"
                   else "missing, as XGBoost reads them (dataset.missingFeatures: missing; the "
                   "SVMlight format would read them as 0: set missingFeatures: zero)")
        return [f"{self.spec.dataset.uri}: {incomplete:,} of {rows:,} lines omit some of the "
                f"{width} features; omitted features were read as {read_as}"]

    def _slice_groups(self, s: Any, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A slice's values (or buckets) and the mask of each one's rows."""
        values = columns[s.column] if s.column else columns[f"feature:{s.feature}"]
        groups: dict[str, np.ndarray] = {}
        if s.buckets:
            numeric = np.asarray(values, dtype=np.float64)
            edges = np.asarray(s.buckets)
            bucket = np.digitize(numeric, edges)
            labels_text = ([f"< {edges[0]:g}"] + [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:])]
                           + [f">= {edges[-1]:g}"])
            for b in np.unique(bucket[~np.isnan(numeric)]):
                groups[labels_text[b]] = (bucket == b) & ~np.isnan(numeric)
            if np.isnan(numeric).any():
                groups["missing"] = np.isnan(numeric)
        else:
            for value in np.unique(values.astype(str))[:1000]:
                groups[str(value)] = values.astype(str) == value
        return groups

    def _slices(self, names: list[str], labels: np.ndarray, predictions: np.ndarray,
                qids: np.ndarray | None, columns: dict[str, np.ndarray]) -> "_SliceTable":
        """The candidate's metrics on each slice value's rows and, with spec.confidence, their
        bootstrap intervals (for the SLICE_INTERVAL_VALUES values of each slice with the most
        rows; a warning names a slice that has more)."""
        table = _SliceTable()
        for s in self.spec.slices:
            groups = self._slice_groups(s, columns)
            sizes = {group: int(mask.sum()) for group, mask in groups.items()}
            drawn = set(sorted(sizes, key=lambda g: -sizes[g])[:SLICE_INTERVAL_VALUES])
            if self.spec.confidence is not None and len(groups) > SLICE_INTERVAL_VALUES:
                table.warnings.append(
                    f"slice {s.name}: bootstrap intervals for its {SLICE_INTERVAL_VALUES} values "
                    f"with the most rows only, of {len(groups)}")
            table.metrics[s.name] = {}
            undefined: dict[str, str] = {}
            for group, mask in groups.items():
                rows = (labels[mask], predictions[mask], None if qids is None else qids[mask])
                entry = self._slice_metrics(names, rows, undefined)
                table.metrics[s.name][group] = {"rows": sizes[group], **entry}
                if self.spec.confidence is not None and group in drawn and entry:
                    started = time.perf_counter()
                    drawn_intervals = self._slice_intervals(names, *rows)
                    if drawn_intervals:
                        table.intervals.setdefault(s.name, {})[group] = drawn_intervals
                    table.seconds += time.perf_counter() - started
            table.warnings += [f"slice {s.name}: {name} is left out where it is undefined: "
                               f"{message}" for name, message in undefined.items()]
        return table

    def _slice_metrics(self, names: list[str], rows: tuple, undefined: dict[str, str]
                       ) -> dict[str, float]:
        """A slice value's metrics; one undefined on its rows (AUC on a one-class value) is
        left out, its reason kept in ``undefined`` (metric -> message) for the warning."""
        with contextlib.suppress(EvaluationError):  # the common case: all defined at once
            return metric_fns.compute(self.spec.task, names, *rows)
        entry: dict[str, float] = {}  # one is not: find which, metric by metric
        for name in names:
            try:
                entry.update(metric_fns.compute(self.spec.task, [name], *rows))
            except EvaluationError as error:
                undefined.setdefault(name, error.message)
        return entry

    def _slice_intervals(self, names: list[str], labels: np.ndarray, predictions: np.ndarray,
                         qids: np.ndarray | None) -> dict[str, Any]:
        """The bootstrap intervals of one slice value's metrics: its rows (or queries)
        resampled as the headline intervals are, with the same level, resamples and seed."""
        confidence = self.spec.confidence
        assert confidence is not None
        try:
            resampled = bootstrap.bootstrap(self.spec.task, names, labels, [predictions], qids,
                                            confidence)[0]
        except EvaluationError:
            return {}
        return bootstrap.intervals(resampled, confidence.level)

    def _write_predictions(self, labels: np.ndarray, qids: np.ndarray | None,
                           predictions: list[np.ndarray]) -> str:
        columns: dict[str, Any] = {"label": labels}
        if qids is not None:
            columns["qid"] = qids
        names = (["prediction"] + (["baseline_prediction"] if self.spec.baseline else [])
                 + [f"{c.name}_prediction" for c in self.spec.challengers])
        for name, values in zip(names, predictions):
            columns[name] = list(values) if values.ndim == 2 else values
        sink = io.BytesIO()
        pq.write_table(pa.table(columns), sink, compression="zstd")
        uri = join_uri(self.spec.output.predictions_uri or "",
                       f"{self.identity.name}-{self.identity.uid}-{self.identity.attempt}.parquet")
        self.storage.write(uri, sink.getvalue())
        return uri


def _all_or_none(uri: str, has_qid: list[bool]) -> bool:
    """Whether the shards carry query ids; a file where only some lines do is refused."""
    if any(has_qid) and not all(has_qid):
        raise EvaluationError(f"{uri}: some lines have qid: and others do not", Reason.SchemaMismatch)
    return bool(has_qid) and all(has_qid)


@dataclass(frozen=True)
class _Outcome:
    """What the result says about each model: the candidate's intervals and gate, the
    baseline's metrics and deltas, and each challenger's own table and gate."""

    intervals: dict[str, Any]
    confidence: dict[str, Any] | None
    baseline: dict[str, Any] | None
    gate: dict[str, Any] | None
    challengers: list[dict[str, Any]]

    @classmethod
    def of(cls, spec: ModelEvaluationSpec, infos: list[ObjectInfo], scored: list[dict[str, float]],
           resampled: list[dict[str, np.ndarray]] | None) -> "_Outcome":
        level = spec.confidence.level if spec.confidence is not None else 0.0

        def intervals(m: int) -> dict[str, Any]:
            return {} if resampled is None else bootstrap.intervals(resampled[m], level)

        base = 1 if spec.baseline is not None else None

        def compared(m: int) -> dict[str, Any]:
            """Model m's deltas versus the baseline, and their paired intervals."""
            if base is None:
                return {}
            return {"deltas": {n: scored[m][n] - scored[base][n] for n in scored[m]},
                    "delta_intervals": {} if resampled is None else bootstrap.delta_intervals(
                        resampled[m], resampled[base], level)}

        def gate(m: int) -> dict[str, Any] | None:
            if not spec.gate:
                return None
            return evaluate_gate(spec.gate, scored[m], None if base is None else scored[base],
                                 compared(m).get("delta_intervals"))

        baseline_doc = None
        if spec.baseline is not None:
            baseline_doc = {"model": {"uri": spec.baseline.model.uri,
                                      "fingerprint": infos[1].fingerprint},
                            "metrics": scored[1], "intervals": intervals(1), **compared(0)}
        first = 2 if spec.baseline is not None else 1
        challengers = [
            {"name": c.name, "model": {"uri": c.model.uri, "format": c.model.format,
                                       "fingerprint": infos[m].fingerprint},
             "metrics": scored[m], "intervals": intervals(m), **compared(m), "gate": gate(m)}
            for m, c in enumerate(spec.challengers, start=first)]
        confidence = None if spec.confidence is None else {
            **spec.confidence.model_dump(), "unit": resampled_unit(spec.task)}
        return cls(intervals(0), confidence, baseline_doc, gate(0), challengers)


def _whole(value: float) -> float | int:
    """A resource amount as an int when whole (4.0 CPUs: 4), else as it is (0.5)."""
    return int(value) if float(value).is_integer() else float(value)


def _cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


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
