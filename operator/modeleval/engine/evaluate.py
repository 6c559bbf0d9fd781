"""One evaluation, end to end: object store -> parsed (cached) shards -> Ray inference -> metrics.

The same function runs inside a cluster (the Ray job the operator submits) and on a laptop
(`modeleval run`); it knows nothing about Kubernetes. It runs as stages, each taking what it
needs and returning a value: prepare, plan (:mod:`.plan`: inline or Ray, fixed once), score
(:mod:`.datapaths`), metrics, curves, intervals and gate, predictions written, result. Ray is
imported where it is first used: an evaluation the plan runs inline (in this process) never
joins Ray and skips the import, about a quarter of a small job driver's CPU.
"""

from __future__ import annotations

import contextlib
import io
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import reduce
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..api.curves import ModelCurves
from ..api.metrics import resampled_unit
from ..api.results import ResultDocument, document_id
from ..api.spec import ModelEvaluationSpec, ModelFormat, ModelSource
from ..settings import EngineSettings
from . import curves as curve_fns
from . import intervals as bootstrap
from . import metrics as metric_fns
from ..api.profile import DataDrift, DatasetProfile
from . import dataquality
from .cache import CacheManifest, DatasetCache, PartStore
from .dataquality import Checked, Reference, load_profile, save_profile
from .profile import ProfileRequest, ProfileState, cuts_digest, data_only
from .datapaths import DatasetEntry, ShardScoring, slice_inputs
from .errors import EvaluationError, Reason
from .facts import library_versions
from .gate import evaluate_gate
from .inference import (Predictor, Progress, ShardPrediction, put_model, remember_model,
                        result_of)
from .models import load_model
from .plan import RunPlan, Workload, ensure_ray, plan_run
from .querymetrics import assemble
from .scoring import ScoringPlan, gpu_warnings, scorers, stop_scorers
from .storage import ObjectInfo, Storage, join_uri

__all__ = ["EvaluationResult", "Evaluator", "Identity", "ensure_ray"]

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
    profile: DatasetProfile | None = None
    drift: DataDrift | None = None
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
            report_uri=self.report_uri, report_error=self.report_error, schedule=self.schedule,
            profile=self.profile, drift=self.drift)


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
class _Prepared:
    """The prepare stage's output: each model's source, object and bytes (candidate, baseline,
    challengers), the driver's load of them (running in a thread: checked, and the candidate's
    feature count learnt, while the data is located), and the dataset's cache entry."""

    sources: tuple[ModelSource, ...]
    infos: tuple[ObjectInfo, ...]
    blobs: tuple[bytes, ...]
    models: Future
    dataset: DatasetEntry


@dataclass(frozen=True)
class _Scored:
    """The scoring stage's output: the dataset's manifest, every shard's predictions, a ranking
    evaluation's per-query values, the GPU's warnings and the candidate's feature count."""

    manifest: CacheManifest
    shards: list[ShardPrediction]
    per_query: list[dict[str, np.ndarray]] | None
    gpu_warnings: list[str]
    expected_features: int | None
    profile: ProfileState | None = None


@dataclass(frozen=True)
class _Profiling:
    """What the pass profiles (None: profiling is off), the reference found, and the cache's
    profile of this data on the reference's bins (None: the pass profiles the data)."""

    request: ProfileRequest | None
    reference: Reference | None
    cached: DatasetProfile | None


@dataclass(frozen=True)
class _Pooled:
    """Every shard's rows in one array each: labels, query ids, each model's predictions and
    the slice columns."""

    labels: np.ndarray
    qids: np.ndarray | None
    predictions: list[np.ndarray]
    columns: dict[str, np.ndarray]

    @classmethod
    def of(cls, shards: list[ShardPrediction], has_qid: bool, models: int) -> "_Pooled":
        return cls(np.concatenate([s.labels for s in shards]),
                   np.concatenate([s.qids for s in shards]) if has_qid else None,
                   [np.concatenate([s.predictions[m] for s in shards]) for m in range(models)],
                   {name: np.concatenate([s.columns[name] for s in shards])
                    for name in (shards[0].columns if shards else {})})


@dataclass(frozen=True)
class _Scores:
    """The metrics stage's output: each model's metrics, a binary evaluation's curve aggregates
    (or the error that kept a model from having them) and the seconds they took, the slices."""

    scored: list[dict[str, float]]
    binary: list[Any]
    binary_seconds: float
    slices: _SliceTable


class _Stopwatch:
    """The evaluation's timings: each stage's seconds since the previous mark."""

    def __init__(self) -> None:
        self.started = self.mark = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str | None, adjust: float = 0.0) -> None:
        """Records the seconds since the last mark (plus ``adjust``) under ``name`` (None:
        not recorded) and marks now."""
        now = time.perf_counter()
        if name is not None:
            self.timings[name] = round(now - self.mark + adjust, 4)
        self.mark = now

    def total(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.started, 4)
        return self.timings


class Evaluator:
    """Runs one spec. Construct, then call :meth:`run`: prepare (models fetched and loaded,
    the dataset located), plan (inline or Ray, fixed once), score, metrics, curves, intervals
    and gate, predictions written, result."""

    def __init__(self, spec: ModelEvaluationSpec, identity: Identity,
                 settings: EngineSettings | None = None, progress: Progress | None = None,
                 scoring: ScoringPlan | None = None, reference: Reference | None = None):
        """``scoring`` overrides how predicting actors are started (tests: the GPU path's
        wiring on the CPU, ``ScoringPlan(num_gpus=0, use_gpu=False)``; a benchmark: actors
        kept between evaluations, ``keep=True``). ``reference``: spec.dataQuality.reference as
        the job found it (``runner.find_reference``)."""
        self.spec = spec
        self.reference = reference
        self.identity = identity
        self.settings = settings or EngineSettings()
        self.scoring = scoring
        self.storage = Storage.from_settings(self.settings)
        self.parts = PartStore(self.storage, str(self.settings.node_cache_dir),
                               self.settings.node_cache_bytes)
        self.progress = progress or (lambda done, total, unit: None)

    def run(self) -> EvaluationResult:
        clock = _Stopwatch()
        with ThreadPoolExecutor(1, thread_name_prefix="model-load") as loader:
            prepared = self._prepare(loader)
            plan = self._plan(prepared)
            actors = scorers(plan.scoring, self.settings.task_retries) if plan.scoring else []
            try:
                return self._stages(plan, prepared, actors, clock)
            finally:
                if plan.scoring is not None and not plan.scoring.keep and actors:
                    stop_scorers(actors)

    def _stages(self, plan: RunPlan, prepared: _Prepared, actors: list[Any],
                clock: _Stopwatch) -> EvaluationResult:
        spec = self.spec
        names = [str(m) for m in spec.metric_names]
        profiling = self._profiling(plan, prepared)
        predictor, starting = self._predictor(plan, prepared, names, actors, profiling.request)
        clock.lap("prepareDataset")
        scored = self._score(plan, prepared, predictor, starting, names)
        clock.lap("inference")
        checked = self._checked(profiling, scored, prepared.dataset)
        clock.lap("dataQuality")
        pooled = _Pooled.of(scored.shards, scored.manifest.has_qid, len(prepared.sources))
        scores = self._metrics(names, pooled, scored.per_query)
        clock.lap("metrics", -(scores.binary_seconds + scores.slices.seconds))
        curves: list[ModelCurves] | None = None
        curve_warnings: list[str] = []
        if self.settings.report:  # without a report, nothing plots the curves
            curves, curve_warnings = self._curves(
                names, scored.shards, pooled.labels, pooled.predictions, pooled.qids,
                scored.per_query is not None
                and all(s.per_query and s.per_query.curves for s in scored.shards),
                scores.binary)
            clock.lap("curves", scores.binary_seconds)
        outcome = _Outcome.of(spec, list(prepared.infos), scores.scored,
                              self._resampled(names, pooled.labels, pooled.predictions,
                                              pooled.qids, scored.per_query))
        # the slices' intervals included
        clock.lap("confidence" if spec.confidence is not None else None, scores.slices.seconds)
        predictions_uri = None
        if spec.output.predictions_uri:
            predictions_uri = self._write_predictions(pooled.labels, pooled.qids, pooled.predictions)
            clock.lap("writePredictions")
        return self._result(plan, prepared, scored, pooled, scores, outcome, curves,
                            curve_warnings + checked.warnings, predictions_uri, len(actors),
                            clock.total(), checked)

    # ------------------------------------------------------------------ prepare
    def _prepare(self, loader: ThreadPoolExecutor) -> _Prepared:
        """Fetches every model (side by side, each a request or two to object storage) while
        the dataset and its cache entry are looked up; the driver loads each model once, in
        ``loader``, to check it and learn its feature count. One pass predicts every model:
        the candidate, the baseline, then the challengers."""
        spec = self.spec
        sources = ([spec.model] + ([spec.baseline.model] if spec.baseline is not None else [])
                   + [c.model for c in spec.challengers])
        with ThreadPoolExecutor(len(sources), thread_name_prefix="model-fetch") as fetches:
            fetching = [fetches.submit(self._fetch_model, source) for source in sources]
            models = loader.submit(lambda: [self._load_model(source, f.result()[1])
                                            for source, f in zip(sources, fetching)])
            try:
                dataset = self._open_cache(models)
            finally:  # a model's error comes first, as when the models were fetched first
                fetched = [f.result() for f in fetching]
        return _Prepared(tuple(sources), tuple(info for info, _ in fetched),
                         tuple(data for _, data in fetched), models, dataset)

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

    def _open_cache(self, models: Future) -> DatasetEntry:
        ds = self.spec.dataset
        info = self.storage.stat(ds.uri, not_found=Reason.DatasetNotFound)
        if info.size == 0:
            raise EvaluationError(f"{ds.uri}: the dataset is empty", Reason.EmptyDataset)
        num_features = ds.num_features
        if num_features is None and ds.format == "letor":
            num_features = models.result()[0].expected_features
        return self._cache_entry(info, num_features)

    def _cache_entry(self, info: ObjectInfo, num_features: int | None) -> DatasetEntry:
        """A dataset's cache entry, parsed with the spec's dataset options (the evaluated
        dataset's, or a reference dataset's: read as the evaluated one is)."""
        ds = self.spec.dataset
        keep_columns, _ = slice_inputs(self.spec)
        options = {"format": ds.format, "num_features": num_features, "label": ds.label_column,
                   "group": ds.group_column, "features": ds.feature_columns, "keep": keep_columns}
        cache = DatasetCache(self.storage,
                             self.settings.resolved_cache_uri(info.uri, self.identity.namespace))
        key = cache.key(info, options)
        return DatasetEntry(info, cache, key, num_features, cache.load_manifest(key))

    # ------------------------------------------------------------------ plan
    def _workload(self, prepared: _Prepared) -> Workload:
        """What the plan's cost model weighs: the data as it will be read (the cached parts on
        a hit), its feature count where known without waiting for the models' load, and the
        models' bytes."""
        entry, ds = prepared.dataset, self.spec.dataset
        model_bytes = sum(len(blob) for blob in prepared.blobs)
        gpu = self.spec.resources.gpu > 0
        if entry.manifest is not None:
            width = entry.manifest.num_features
            on_disk = all(entry.cache.storage.local_path(uri) for uri in entry.manifest.parts[:1])
            where = "cache" if on_disk else "remote-cache"
            return Workload(where, entry.manifest.total_rows * max(1, width) * 4, width,
                            model_bytes, gpu)
        width = entry.num_features or (len(ds.feature_columns) if ds.feature_columns else None)
        return Workload(ds.format, entry.info.size, width, model_bytes, gpu)

    def _plan(self, prepared: _Prepared) -> RunPlan:
        """The run's plan; inline, the driver's own load of the models is the one predicting
        (loaded once, here)."""
        plan = plan_run(self.spec, self.settings, self._workload(prepared), self.scoring)
        if plan.inline:
            for info, adapter in zip(prepared.infos, prepared.models.result()):
                remember_model(info.fingerprint, adapter)
        return plan

    # ------------------------------------------------------------------ data quality
    def _profiling(self, plan: RunPlan, prepared: _Prepared) -> _Profiling:
        """What the pass profiles: the reference found (a dataset reference profiled now, or
        from the cache), the cache's profile of this data on its bins (a warm read profiles
        only the predictions), and each task's request. Nothing when profiling is off."""
        if not self.settings.profile:
            return _Profiling(None, None, None)
        reference = dataquality.whole(self.reference, self.storage)
        if reference is not None and reference.uri is not None:
            reference = self._profiled_reference(plan, prepared, reference)
        cuts = dataquality.cuts_of(reference)
        entry = prepared.dataset
        cached = (load_profile(entry.cache, entry.key, cuts_digest(cuts))
                  if entry.manifest is not None else None)
        return _Profiling(dataquality.request(self._model_names(), reference,
                                              slice_inputs(self.spec)[0], cached),
                          reference, cached)

    def _profiled_reference(self, plan: RunPlan, prepared: _Prepared,
                            reference: Reference) -> Reference:
        """A reference dataset's profile: the cache's, or read (parsed into the cache as the
        evaluated dataset would be) and profiled once, on the sketch's bins."""
        try:
            info = self.storage.stat(reference.uri or "", not_found=Reason.ReferenceNotFound)
        except EvaluationError as error:
            return replace(reference, uri=None, missing=error.message)
        entry = self._cache_entry(info, prepared.dataset.num_features)
        profile = load_profile(entry.cache, entry.key, cuts_digest({}))
        if profile is None:
            scoring = ShardScoring(self.spec, plan, self.parts, prepared.models,
                                   lambda done, total, unit: None, self.settings.shard_bytes)
            profile = scoring.profile_dataset(
                entry, dataquality.request((), None, slice_inputs(self.spec)[0], None))
            save_profile(entry.cache, entry.key, cuts_digest({}), profile)
        return replace(reference, uri=None, profile=profile)

    def _checked(self, profiling: _Profiling, scored: _Scored, dataset: DatasetEntry) -> Checked:
        """The pass's profile merged, kept in the cache (the data's part, on its bins) when it
        was computed, then compared with the reference and checked by the rules."""
        if profiling.request is None:
            warning = (["spec.dataQuality was not checked: profiling is off (MODELEVAL_PROFILE)"]
                       if self.spec.data_quality is not None else [])
            return Checked(warnings=warning)
        profile = dataquality.merged(scored.profile, profiling.cached)
        if profiling.cached is None:
            save_profile(dataset.cache, dataset.key, cuts_digest(profiling.request.cuts),
                         data_only(profile))
        checked = dataquality.check(self.spec.data_quality, profile, profiling.reference)
        return dataquality.kept(checked, dataset.cache, dataset.key,
                                f"{self.identity.uid}-{self.identity.attempt}")

    # ------------------------------------------------------------------ score
    def _predictor(self, plan: RunPlan, prepared: _Prepared, names: list[str],
                   actors: list[Any], profile: ProfileRequest | None
                   ) -> tuple[Predictor, list[Any]]:
        """What every task predicts with (ranking metrics per query are computed by the tasks,
        shard by shard: querymetrics) and, with predicting actors, the refs of their starts:
        they load the models while the first shards are parsed."""
        spec = self.spec
        handles = tuple(put_model(data, info.fingerprint, source.format, spec.task,
                                  self._may_unpickle(source), local=plan.inline)
                        for source, info, data in zip(prepared.sources, prepared.infos,
                                                      prepared.blobs))
        predictor = Predictor(handles, spec.batch_size, tuple(slice_inputs(spec)[1]),
                              missing_as_zero=spec.dataset.missing_features == "zero",
                              query_metrics=tuple(names) if spec.task == "ranking" else (),
                              query_curves=self.settings.report, profile=profile)
        if not actors:
            return predictor, []
        starting = [actor.start.remote(predictor) for actor in actors]
        # With the starts in the predictor, a task whose actor has not started predicts itself.
        may_start = tuple(starting) if self.settings.predict_while_actors_start else ()
        return replace(predictor, scorers=tuple(actors), starting=may_start), starting

    def _score(self, plan: RunPlan, prepared: _Prepared, predictor: Predictor,
               starting: list[Any], names: list[str]) -> _Scored:
        scoring = ShardScoring(self.spec, plan, self.parts, prepared.models, self.progress,
                               self.settings.shard_bytes)
        manifest, shards = scoring.predictions(prepared.dataset, predictor)
        per_query = (assemble(names, [s.per_query for s in shards]) if self.spec.task == "ranking"
                     else None)
        warnings = []
        if starting:
            warnings = gpu_warnings(plan.scoring, self._actor_reports(starting, shards),
                                    any(s.actor is not None for s in shards))
        expected = scoring.expected_features()
        scoring.check_width(manifest.num_features, expected)
        return _Scored(manifest, shards, per_query, warnings, expected, scoring.profile.state)

    # ------------------------------------------------------------------ metrics
    def _metrics(self, names: list[str], pooled: _Pooled,
                 per_query: list[dict[str, np.ndarray]] | None) -> _Scores:
        """Each model's metrics (a ranking evaluation's from its per-query values; a binary
        one's beside its curve aggregates) and the candidate's on each slice."""
        labels, predictions, qids = pooled.labels, pooled.predictions, pooled.qids
        binary: list[Any] = []
        binary_seconds = 0.0
        if per_query is not None:
            scored = [{name: metric_fns.query_mean(values[name]) for name in names}
                      for values in per_query]
        elif self.spec.task == "binary":
            scored, binary, binary_seconds = self._binary(names, labels, predictions)
        else:
            scored = [metric_fns.compute(self.spec.task, names, labels, p, qids)
                      for p in predictions]
        slices = self._slices(names, labels, predictions[0], qids, pooled.columns)
        return _Scores(scored, binary, binary_seconds, slices)

    # ------------------------------------------------------------------ result
    def _result(self, plan: RunPlan, prepared: _Prepared, scored: _Scored, pooled: _Pooled,
                scores: _Scores, outcome: "_Outcome", curves: list[ModelCurves] | None,
                curve_warnings: list[str], predictions_uri: str | None, actors: int,
                timings: dict[str, float], checked: Checked) -> EvaluationResult:
        spec, manifest, shards, per_query = self.spec, scored.manifest, scored.shards, scored.per_query
        info = prepared.dataset.info
        mode = "local" if self.settings.allow_file_uris else "cluster"
        return EvaluationResult(
            identity=self.identity, metrics=scores.scored[0], rows=int(len(pooled.labels)),
            queries=(len(next(iter(per_query[0].values()))) if per_query
                     else int(len(np.unique(pooled.qids))) if pooled.qids is not None else None),
            model={"uri": spec.model.uri, "format": spec.model.format,
                   "fingerprint": prepared.infos[0].fingerprint,
                   "features": scored.expected_features, **self._predicted_by(plan, shards)},
            dataset={"uri": spec.dataset.uri, "format": spec.dataset.format,
                     "fingerprint": info.fingerprint, "bytes": info.size,
                     "shards": len(manifest.parts), "features": manifest.num_features,
                     "missingValues": sum(s.missing_values for s in shards)},
            timings=timings, slices=scores.slices.metrics,
            slice_intervals=scores.slices.intervals, baseline=outcome.baseline,
            gate=outcome.gate, predictions_uri=predictions_uri,
            cache_hit=prepared.dataset.manifest is not None,
            primary_metric=spec.primary_metric, intervals=outcome.intervals,
            confidence=outcome.confidence, challengers=outcome.challengers,
            warnings=(scored.gpu_warnings + self._warnings(shards, manifest.num_features)
                      + scores.slices.warnings + curve_warnings),
            resources=plan.resources_used(mode, len(manifest.parts), actors),
            versions=library_versions(), curves=curves, profile=checked.profile,
            drift=checked.drift,
        )

    # ------------------------------------------------------------------ stages' parts
    def _model_names(self) -> list[str]:
        """Each model's name in the result, in prediction order."""
        return (["model"] + (["baseline"] if self.spec.baseline is not None else [])
                + [c.name for c in self.spec.challengers])

    def _binary(self, names: list[str], labels: np.ndarray, predictions: list[np.ndarray]
                ) -> tuple[list[dict[str, float]], list[Any], float]:
        """Each binary model's metrics and, with a report, its curve aggregates (or the error
        that kept it from having them), both read off one sort of its scores; and the seconds
        the aggregates took. A model's counts go before the next model's are made: they can be
        as large as its predictions. What needs every distinct score is gathered in the
        counts' own tally (a :class:`curve_fns.BinaryTally`); the rest is read off the counts
        by binary searches."""
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

    def _actor_reports(self, starting: list[Any],
                       shards: list[ShardPrediction]) -> list[tuple[str, list[str]]]:
        """The device reports of the actors that predicted a shard, and of any other whose
        report is in: the driver does not wait for an actor still starting whose shards its
        tasks predicted themselves."""
        import ray

        used = {s.actor for s in shards if s.actor is not None}
        ready = set(ray.wait(starting, num_returns=len(starting), timeout=0)[0])
        return [result_of(ref) for slot, ref in enumerate(starting) if slot in used or ref in ready]

    def _predicted_by(self, plan: RunPlan, shards: list[ShardPrediction]) -> dict[str, Any]:
        """A GPU evaluation's shards counted by who predicted them: the actors, or the tasks
        on the CPU while the actors started (nothing for an evaluation without actors)."""
        if plan.scoring is None:
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
        out: list[str] = []
        incomplete = sum(s.incomplete_rows for s in shards)
        if not incomplete or self.spec.dataset.format != "letor":
            return out
        rows = sum(s.rows for s in shards)
        read_as = ("0 (dataset.missingFeatures: zero)"
                   if self.spec.dataset.missing_features == "zero"
                   else "missing, as XGBoost reads them (dataset.missingFeatures: missing; the "
                   "SVMlight format would read them as 0: set missingFeatures: zero)")
        return out + [f"{self.spec.dataset.uri}: {incomplete:,} of {rows:,} lines omit some of "
                      f"the {width} features; omitted features were read as {read_as}"]

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

