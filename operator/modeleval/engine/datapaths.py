"""The scoring stage: every shard of the dataset predicted by every model, by one of three paths
(from the cache; parsing and predicting in the same tasks; parsing into the cache, then
predicting from it), inline or on Ray as the evaluation's plan says.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from ..api.spec import ModelEvaluationSpec
from .cache import CacheManifest, DatasetCache, PartStore
from .errors import EvaluationError, Reason
from .inference import (CachedPart, LetorRange, ParsedRange, Predictor, Progress, ShardPrediction,
                        parse_and_predict, parse_letor_range, predict_part, profile_part,
                        profiled_aside, run_bounded)
from ..api.profile import DatasetProfile
from .plan import RunPlan
from .profile import (ProfileRequest, ProfileState, RunningProfile, data_only, merge_all,
                      to_profile)
from .shard import ParsedShard
from .sharding import group_aligned_splits, letor_ranges
from .storage import ObjectInfo
from .tables import read_table, table_to_shard


# Inline, the shards whose profiles may still be computing beside the next shard's parse (each
# holds its shard's matrix): two keep the profiling thread busy without holding more.
PROFILES_ASIDE = 2


@dataclass(frozen=True)
class DatasetEntry:
    """The dataset's object and its cache entry: the key, the feature count to parse with (None:
    as many as the lines have), and the entry's manifest when it is complete (a cache hit)."""

    info: ObjectInfo
    cache: DatasetCache
    key: str
    num_features: int | None
    manifest: CacheManifest | None


def slice_inputs(spec: ModelEvaluationSpec) -> tuple[list[str], list[int]]:
    """The columns and the feature indexes the spec's slices read from each shard."""
    columns = [s.column for s in spec.slices if s.column]
    features = [s.feature for s in spec.slices if s.feature is not None]
    return columns, features


class ShardScoring:
    """Scores one evaluation's shards under its plan. ``models``: the driver's own load of
    every model (the candidate's feature count, or the load's error)."""

    def __init__(self, spec: ModelEvaluationSpec, plan: RunPlan, parts: PartStore,
                 models: Future, progress: Progress, shard_bytes: int):
        self.spec = spec
        self.plan = plan
        self.parts = parts
        self.models = models
        self.progress = progress
        self.shard_bytes = shard_bytes
        # The shards' profiles, merged as each shard comes in (a shard's is dropped from it):
        # the driver holds one profile, not one per shard.
        self.profile = RunningProfile()
        self.aside: deque[Future] = deque()  # inline: shards' profiles still being computed

    def expected_features(self) -> int | None:
        """The candidate model's feature count, once the driver has loaded it (its load error,
        if it could not)."""
        return self.models.result()[0].expected_features

    def predictions(self, dataset: DatasetEntry,
                    predictor: Predictor) -> tuple[CacheManifest, list[ShardPrediction]]:
        """Every shard's predictions: from the cache (a hit); parsing and predicting in the same
        tasks (a miss on a LETOR file whose feature count is known); or parsing into the cache,
        then predicting from it (any other miss)."""
        if dataset.manifest is not None:
            return dataset.manifest, self.predict_cached(dataset.manifest, predictor)
        if self.spec.dataset.format == "letor" and dataset.num_features is not None:
            return self.parse_and_predict(dataset, predictor)
        return self.parse_then_predict(dataset, predictor)

    # ------------------------------------------------------------------ paths
    def predict_cached(self, manifest: CacheManifest, predictor: Predictor) -> list[ShardPrediction]:
        """A task per cached part: reads it and predicts it."""
        with self.model_errors_first(manifest.num_features):
            self.check_rows(manifest)
            self.check_slice_features(manifest.num_features)
            keep_columns, _ = slice_inputs(self.spec)
            threads = self.plan.shard_threads(len(manifest.parts))
            names = None if manifest.feature_names is None else tuple(manifest.feature_names)
            calls = [(self.parts, CachedPart(i, uri, manifest.num_features, tuple(keep_columns),
                                             threads[i], names), predictor)
                     for i, uri in enumerate(manifest.parts)]
            return self.run_shards(predict_part, calls, manifest.rows, "rows")

    def parse_and_predict(self, dataset: DatasetEntry,
                          predictor: Predictor) -> tuple[CacheManifest, list[ShardPrediction]]:
        """The cold LETOR path when the feature count is known: each task parses a byte range,
        writes its part to the cache and predicts it, so parsed data is never read back."""
        info, width = dataset.info, dataset.num_features
        with self.model_errors_first(width):
            self.check_slice_features(width)
            ranges = self.letor_ranges(dataset, width)
            shards = self.run_shards(parse_and_predict, [(self.parts, r, predictor) for r in ranges],
                                     [r.end - r.start for r in ranges], "bytes")
            has_qid = all_or_none(info.uri, [s.qids is not None for s in shards if s.rows])
            manifest = CacheManifest(info.uri, info.fingerprint, [r.part_uri for r in ranges],
                                     [s.rows for s in shards], width, has_qid)
            self.check_rows(manifest)
            dataset.cache.save_manifest(dataset.key, manifest)
        return manifest, shards

    def parse_then_predict(self, dataset: DatasetEntry,
                           predictor: Predictor) -> tuple[CacheManifest, list[ShardPrediction]]:
        """The other cold paths: the dataset is parsed into the cache first (a table, or a LETOR
        file of unknown width), then predicted from it."""
        with self.model_errors_first(dataset.num_features):
            self.expected_features()  # a broken model fails here, before any data is parsed
            if self.spec.dataset.format != "letor" and self.plan.inline:
                return self.table_inline(dataset, predictor)
            manifest = (self.parse_letor(dataset) if self.spec.dataset.format == "letor"
                        else self.parse_table(dataset))
            dataset.cache.save_manifest(dataset.key, manifest)
        return manifest, self.predict_cached(manifest, predictor)

    def table_inline(self, dataset: DatasetEntry,
                     predictor: Predictor) -> tuple[CacheManifest, list[ShardPrediction]]:
        """An inline table: its one part is written to the cache while the models predict the
        table already in memory (as the LETOR path's tasks do), not read back after it."""
        shard = self.table_shard(dataset).counted()  # once, for the part and the predictions
        info, uri = dataset.info, dataset.cache.part_uri(dataset.key, 0)
        manifest = CacheManifest(info.uri, info.fingerprint, [uri], [shard.rows],
                                 shard.features.shape[1], shard.qids is not None,
                                 feature_names=_names(shard))
        with ThreadPoolExecutor(1, thread_name_prefix="part-write") as pool:
            written = pool.submit(self.parts.write, uri, shard)
            try:
                self.check_rows(manifest)
                self.check_slice_features(manifest.num_features)
                self.progress(0, shard.rows, "rows")
                prediction = predictor.predict(0, shard, uri)
            finally:  # the entry is complete once its part is, whatever the models did
                written.result()
                dataset.cache.save_manifest(dataset.key, manifest)
        self.progress(shard.rows, shard.rows, "rows")
        return manifest, [self.took_profile(prediction)]

    def parse_letor(self, dataset: DatasetEntry) -> CacheManifest:
        """Parses without a known feature count: the width is the widest part's."""
        info = dataset.info
        ranges = self.letor_ranges(dataset, None)
        parsed: dict[int, ParsedRange] = {}

        def collect(part: ParsedRange) -> None:
            parsed[part.index] = part

        self.execute(parse_letor_range, [(self.parts, r) for r in ranges], collect)
        widths = {p.width for p in parsed.values() if p.rows}
        if len(widths) > 1:
            # Parts narrower than the widest are re-parsed at the common width.
            width = max(widths)
            self.execute(parse_letor_range, [(self.parts, replace(r, num_features=width))
                                             for r in ranges if parsed[r.index].width != width],
                         collect)
        parts = [parsed[r.index] for r in ranges]
        has_qid = all_or_none(info.uri, [p.has_qid for p in parts if p.rows])
        return CacheManifest(info.uri, info.fingerprint, [r.part_uri for r in ranges],
                             [p.rows for p in parts], max(widths, default=0), has_qid)

    def letor_ranges(self, dataset: DatasetEntry, num_features: int | None) -> list[LetorRange]:
        """The LETOR file's byte ranges and the cached parts they become, each with its share
        of its task's CPUs (all of them for a range alone in its task: parsed in pieces)."""
        ranges = letor_ranges(self.parts.storage, dataset.info, self.shard_bytes,
                              self.plan.task_slots)
        threads = self.plan.shard_threads(len(ranges))
        return [LetorRange(i, dataset.info.uri, start, end, num_features,
                           dataset.cache.part_uri(dataset.key, i), threads[i])
                for i, (start, end) in enumerate(ranges)]

    def parse_table(self, dataset: DatasetEntry) -> CacheManifest:
        """A table read whole by the driver and written to the cache in the plan's parts."""
        info, cache, key = dataset.info, dataset.cache, dataset.key
        shard = self.table_shard(dataset)
        splits = group_aligned_splits(shard.qids, shard.rows, self.plan.table_parts)
        uris, rows = [], []
        for i, (a, b) in enumerate(splits):
            piece = ParsedShard(shard.labels[a:b], None if shard.qids is None else shard.qids[a:b],
                                shard.features[a:b], {k: v[a:b] for k, v in shard.extra.items()},
                                feature_names=shard.feature_names)
            uri = cache.part_uri(key, i)
            self.parts.write(uri, piece)
            uris.append(uri)
            rows.append(b - a)
        return CacheManifest(info.uri, info.fingerprint, uris, rows, shard.features.shape[1],
                             shard.qids is not None, feature_names=_names(shard))

    def table_shard(self, dataset: DatasetEntry) -> ParsedShard:
        """The table read whole: its label, group, feature and slice columns."""
        ds = self.spec.dataset
        table = read_table(self.parts.storage, dataset.info.uri, ds.format)
        shard = table_to_shard(table, ds.label_column, ds.group_column, ds.feature_columns,
                               slice_inputs(self.spec)[0], where=dataset.info.uri)
        if shard.rows == 0:
            raise EvaluationError(f"{dataset.info.uri}: the dataset has no rows",
                                  Reason.EmptyDataset)
        return shard

    def profile_dataset(self, dataset: DatasetEntry, request: ProfileRequest) -> DatasetProfile:
        """A reference dataset's data profile: a task per cached part (the dataset parsed into
        the cache first, as an evaluated one is, on a miss), merged here."""
        manifest = dataset.manifest
        if manifest is None:
            manifest = (self.parse_letor(dataset) if self.spec.dataset.format == "letor"
                        else self.parse_table(dataset))
            self.check_rows(manifest)
            dataset.cache.save_manifest(dataset.key, manifest)
        keep_columns, _ = slice_inputs(self.spec)
        names = None if manifest.feature_names is None else tuple(manifest.feature_names)
        calls = [(self.parts, CachedPart(i, uri, manifest.num_features, tuple(keep_columns), 0,
                                         names), request)
                 for i, uri in enumerate(manifest.parts)]
        states: list[ProfileState] = []
        self.execute(profile_part, calls, states.append)
        return data_only(to_profile(merge_all(states)))

    # ------------------------------------------------------------------ running
    def execute(self, fn: Callable, calls: list[tuple], on_result: Callable[[Any], None]) -> None:
        """Each call as a Ray task, or in this process when the evaluation runs inline."""
        if self.plan.inline:
            with profiled_aside():
                for args in calls:
                    on_result(fn(*args))
                self.take_aside(0)
        else:
            run_bounded(fn, calls, self.plan.task, self.plan.max_inflight, on_result)

    def run_shards(self, fn: Callable, calls: list[tuple], sizes: list[int],
                   unit: str) -> list[ShardPrediction]:
        """Runs one task per shard, reporting progress as the sum of finished shards' sizes."""
        done, total = 0, sum(sizes)
        shards: dict[int, ShardPrediction] = {}

        def collect(result: ShardPrediction) -> None:
            nonlocal done
            shards[result.index] = self.took_profile(result)
            done += sizes[result.index]
            self.progress(done, total, unit)

        self.progress(0, total, unit)
        self.execute(fn, calls, collect)
        return [shards[i] for i in range(len(calls))]

    def took_profile(self, result: ShardPrediction) -> ShardPrediction:
        """The shard, its profile merged into the evaluation's and dropped from it (one still
        being computed aside is taken once more than ``PROFILES_ASIDE`` are: each holds its
        shard's matrix)."""
        if result.profile is not None:
            self.profile.add(result.profile)
            result.profile = None
        if result.profile_aside is not None:
            self.aside.append(result.profile_aside)
            result.profile_aside = None
            self.take_aside(PROFILES_ASIDE)
        return result

    def take_aside(self, keep: int) -> None:
        """The profiles computed aside merged in, the oldest first, until ``keep`` remain."""
        while len(self.aside) > keep:
            self.profile.add(self.aside.popleft().result())

    # ------------------------------------------------------------------ checks
    @contextlib.contextmanager
    def model_errors_first(self, width: int | None) -> Iterator[None]:
        """Tasks start without waiting for the driver's own load of the model: the workers load
        it too. When a step fails, the driver's verdict on the model (unreadable, or made for
        another feature count than the data's ``width``) is the likelier cause and is the error
        reported."""
        try:
            yield
        except EvaluationError:
            self.check_width(width, self.expected_features())
            raise

    def check_width(self, width: int | None, expected: int | None) -> None:
        if expected is not None and width is not None and width != expected:
            raise EvaluationError(f"{self.spec.dataset.uri}: the data has {width} features, the "
                                  f"model expects {expected}", Reason.SchemaMismatch)

    def check_rows(self, manifest: CacheManifest) -> None:
        if manifest.total_rows == 0:
            raise EvaluationError(f"{self.spec.dataset.uri}: the dataset has no rows",
                                  Reason.EmptyDataset)
        if self.spec.task == "ranking" and not manifest.has_qid:
            raise EvaluationError(f"{self.spec.dataset.uri}: ranking needs query ids (qid:)",
                                  Reason.SchemaMismatch)

    def check_slice_features(self, width: int) -> None:
        for j in slice_inputs(self.spec)[1]:
            if j >= width:
                raise EvaluationError(f"slices: feature {j} does not exist (the data has "
                                      f"{width} features)", Reason.SchemaMismatch)


def _names(shard: ParsedShard) -> list[str] | None:
    return None if shard.feature_names is None else list(shard.feature_names)


def all_or_none(uri: str, has_qid: list[bool]) -> bool:
    """Whether the shards carry query ids; a file where only some lines do is refused."""
    if any(has_qid) and not all(has_qid):
        raise EvaluationError(f"{uri}: some lines have qid: and others do not", Reason.SchemaMismatch)
    return bool(has_qid) and all(has_qid)
