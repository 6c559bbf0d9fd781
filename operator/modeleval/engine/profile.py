"""Data profiles, computed per shard in the pass that reads every row and merged on the driver.

A column's state (:class:`ColumnState`) holds what merges exactly (counts, min, max, and the
mean and the sum of squared deviations, merged with Chan et al.'s parallel update in float64)
and two Apache DataSketches sketches that merge within their documented error: a KLL quantile
sketch (``kll_floats_sketch``: the features are float32, so its items lose nothing) and an HLL
distinct-count sketch. Where the bins are known before the pass (a reference profile's), each
column is also counted exactly into them.

Per shard the feature matrix is read a group of columns at a time by one compiled pass
(``_letor.c``'s ``profile_block``): the columns are transposed into order-preserving integer
keys (the rows ahead fetched early: a whole row's stride is more than the CPU guesses), each
column radix-sorted (three passes of 11, 11 and 10 bits, a pass skipped where every key shares
its digit; the last writes the values back) and read once: the counts (missing and infinities
read off the top digit's counts, zeros by a binary search), the extremes, the mean and the
squared deviations in float64, and the HLL registers of its values
(MurmurHash3 as DataSketches hashes them; merged register by register on the driver:
``distinct.py``). The KLL sketch and the bins' counts are then read off the sorted column here
(``sketch_sorted``: runs' stand-ins entered at their weight; a binary search per edge). The
group (about 1 MiB of columns, one buffer for all of them) bounds what a profile adds to a
shard's memory. Without the compiled module (or for a matrix that is not float32 in C order),
numpy sorts a block of columns (``BLOCK_BYTES``) and the same is read off with numpy. A model's
predictions (float64) are sorted by the compiled radix sort of doubles and read the same way.

Cost (240k x 136 MSLR-shaped, in 10 shards of 24k rows): about 24 ms of CPU a shard, 21 of them
the compiled pass (about 6.6 ns a value), 2 the KLL sketches (14 us a column); a model's
predictions 0.6 ms a shard; a whole cold evaluation takes about 1.2-1.5 s of CPU without
profiling, its parse about 0.55 s of it (bench/RESULTS.md, "The stand-ins enter the sketch at
their weight").

Missing values: every reader gives a shard NaN where a value is absent (a LETOR line that
leaves a feature out, a Parquet or CSV null) or NaN in the data; both are ``missing``.
count, mean, std, min, max, the sketches and the quantiles are over the finite values; +inf and
-inf are counted as ``infinities`` and fall in the histogram's outer bins.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import datasketches as ds
import numpy as np

from ..api.profile_limits import (HLL_LG_K, KLL_K, MAX_SLICE_VALUES, MAX_VALUE_COUNTS,
                                  QUANTILE_RANKS)
from .distinct import DATASKETCHES_SEED, FILTER_ABOVE, Registers
from .shard import ParsedShard

try:  # the compiled pass (setup.py builds it with the LETOR tokenizer); else numpy's sort
    from ._letor import (profile_block as _profile_block, profile_sorted as _profile_sorted,
                         sort_float64 as _sort_float64)
except ImportError:
    _profile_block = _profile_sorted = _sort_float64 = None

if TYPE_CHECKING:  # the document's models (pydantic): imported where a document is made, on the
    # driver; a task process makes states only
    from ..api.profile import ColumnHistogram, ColumnProfile, DatasetProfile

# The bytes of columns transposed and sorted at a time (at least one column): a bound on what a
# profile adds to a shard's memory, against a copy of its whole matrix.
BLOCK_BYTES = 64 * 2**20
# The compiled pass's columns at a time: they and their sorted copies stay in the CPU's cache
# (one buffer, used again for each group of columns: no new pages to fault in).
COMPILED_BLOCK_BYTES = 2**20
# The share of the KLL sketch's rank error that feeding it runs' stand-ins may add (sketch_sorted).
SAMPLED_ERROR_SHARE = 1 / 64
_KLL_ERROR = ds.kll_floats_sketch.get_normalized_rank_error(KLL_K, False)
# Without a reference, the histogram's bins are the sketch's deciles.
SKETCH_BIN_RANKS = tuple(i / 10 for i in range(1, 10))
# Updated as HLL_8 (a byte per register: about 2.5x faster to update than HLL_4 here), kept and
# sent as HLL_4 (half the bytes, the same estimate).
_HLL_TYPE = ds.HLL_8
_HLL_STORED = ds.HLL_4


def _empty_kll() -> ds.kll_floats_sketch:
    return ds.kll_floats_sketch(KLL_K)


def _empty_hll() -> Registers:
    return Registers.empty(HLL_LG_K)


@dataclass
class ColumnState:
    """The mergeable profile of one column over the rows seen so far."""

    name: str
    rows: int = 0
    count: int = 0  # finite values
    missing: int = 0
    negative_infinities: int = 0
    positive_infinities: int = 0
    zeros: int = 0
    min: float = np.inf
    max: float = -np.inf
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean, over the finite values
    kll: ds.kll_floats_sketch = field(default_factory=_empty_kll)
    hll: Registers = field(default_factory=_empty_hll)  # the distinct-count sketch's state
    cuts: np.ndarray | None = None  # inner bin edges fixed before the pass
    counts: np.ndarray | None = None  # values per bin, len(cuts) + 1
    values: dict[float, int] | None = None  # exact counts while few distinct values

    def __getstate__(self) -> dict:
        # Ray moves states between processes by pickle; the sketches travel serialised.
        state = dict(self.__dict__)
        state["kll"] = self.kll.serialize()
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["kll"] = ds.kll_floats_sketch.deserialize(state["kll"])
        self.__dict__.update(state)

    def merged(self, other: "ColumnState") -> "ColumnState":
        """This state and ``other`` (the same column, other rows) as one."""
        if self.name != other.name:
            raise ValueError(f"cannot merge the profiles of columns {self.name!r} and {other.name!r}")
        count = self.count + other.count
        mean, m2 = self.mean, self.m2
        if other.count:  # Chan et al.'s update: exact in float64 whatever the order of shards
            delta = other.mean - self.mean
            mean = self.mean + delta * other.count / count
            m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / count
        kll = ds.kll_floats_sketch.deserialize(self.kll.serialize())
        kll.merge(other.kll)
        return ColumnState(
            self.name, self.rows + other.rows, count, self.missing + other.missing,
            self.negative_infinities + other.negative_infinities,
            self.positive_infinities + other.positive_infinities, self.zeros + other.zeros,
            min(self.min, other.min), max(self.max, other.max), mean, m2, kll,
            self.hll.merged(other.hll), *self._merged_bins(other),
            _merged_values(self.values, other.values))

    def _merged_bins(self, other: "ColumnState") -> tuple[np.ndarray | None, np.ndarray | None]:
        if not other.rows:
            return self.cuts, self.counts
        if not self.rows:
            return other.cuts, other.counts
        if self.cuts is None or other.cuts is None or not np.array_equal(self.cuts, other.cuts):
            return None, None  # bins that differ (or none) are read off the merged sketch
        return self.cuts, self.counts + other.counts

    def absent(self, rows: int) -> "ColumnState":
        """The state of this column over ``rows`` rows that lack it (a shard narrower than the
        dataset): all missing, in no bin."""
        counts = None if self.counts is None else np.zeros_like(self.counts)
        return ColumnState(self.name, rows=rows, missing=rows, cuts=self.cuts, counts=counts)


def _merged_values(first: dict[float, int] | None,
                   second: dict[float, int] | None) -> dict[float, int] | None:
    if first is None or second is None:
        return None
    merged = dict(first)
    for value, count in second.items():
        merged[value] = merged.get(value, 0) + count
    return merged if len(merged) <= MAX_VALUE_COUNTS else None


def column_state(name: str, values: np.ndarray, cuts: np.ndarray | None = None, *,
                 value_counts: bool = False) -> ColumnState:
    """The profile of one column's values (any float or integer dtype)."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if _profile_block is not None and values.ndim == 1:
        if values.dtype == np.float32:
            return _compiled_states(values.reshape(-1, 1), [name],
                                    {name: cuts} if cuts is not None else {}, value_counts)[0]
        if values.dtype == np.float64:
            ordered = np.array(values, order="C")  # a copy: the caller's values stay as they are
            _sort_float64(ordered, np.empty(len(ordered), np.uint64))
            return _sorted64_state(name, ordered, cuts, value_counts)
    return _sorted_column_state(name, np.sort(values), cuts, value_counts)


def _sorted_column_state(name: str, ordered: np.ndarray, cuts: np.ndarray | None,
                         value_counts: bool) -> ColumnState:
    """The profile of one column from its values in ascending order (NaN last)."""
    # Needles of the column's own type: a float64 needle would copy a float32 column to float64.
    kind = ordered.dtype.type
    present = int(np.searchsorted(ordered, kind(np.nan), side="left"))  # NaN sorts after +inf
    low = int(np.searchsorted(ordered[:present], kind(-np.inf), side="right"))
    high = int(np.searchsorted(ordered[:present], kind(np.inf), side="left"))
    finite = ordered[low:high]
    state = ColumnState(name, rows=len(ordered), count=len(finite), missing=len(ordered) - present,
                        negative_infinities=low, positive_infinities=present - high)
    if len(finite):
        state.zeros = int(np.searchsorted(finite, kind(0), side="right")
                          - np.searchsorted(finite, kind(0), side="left"))
        state.min, state.max = float(finite[0]), float(finite[-1])
        state.mean = float(np.sum(finite, dtype=np.float64)) / len(finite)
        # Squares summed by numpy's pairwise sum: a BLAS dot product would start its threads
        # (CPU the shard's other work needs) for no better result.
        deviations = np.subtract(finite, state.mean, dtype=np.float64)
        state.m2 = float(np.multiply(deviations, deviations, out=deviations).sum())
        # float32 bits as integer keys (-0.0 read as 0.0): the same key for the same value in
        # every shard
        state.hll = Registers.of_sorted(finite, HLL_LG_K)
    _sketched(state, ordered, present, finite, cuts, value_counts)
    return state


def _sketched(state: ColumnState, ordered: np.ndarray, present: int, finite: np.ndarray,
              cuts: np.ndarray | None, value_counts: bool) -> None:
    """What ``state`` reads off its column in ascending order besides the statistics: the KLL
    sketch, the exact value counts (``value_counts``) and the counts in the bins of ``cuts``."""
    if len(finite):
        state.kll = sketch_sorted(finite)
    if value_counts:
        state.values = _value_counts(finite, _distinct_sorted(finite)) if len(finite) else {}
    if cuts is not None:
        state.cuts = np.asarray(cuts, dtype=np.float64)
        edges = np.searchsorted(ordered[:present], _at_least(state.cuts, ordered.dtype),
                                side="left")
        state.counts = np.diff(np.concatenate([[0], edges, [present]])).astype(np.int64)


# The columns of the compiled pass's statistics (_letor.c's profile_block).
(_MISSING, _NEGATIVE_INFINITIES, _POSITIVE_INFINITIES, _ZEROS, _COUNT, _MIN, _MAX, _MEAN, _M2,
 _DISTINCT) = range(10)


def _compiled_states(features: np.ndarray, names: Sequence[str],
                     cuts: Mapping[str, np.ndarray], value_counts: bool = False
                     ) -> list[ColumnState]:
    """The profile of every column of a float32 matrix in C order, a block of columns at a
    time, by the compiled pass: each column radix-sorted and its statistics and distinct-count
    registers read off in C; the KLL sketch and the bins' counts then read off the sorted column
    here."""
    rows, width = features.shape
    states = []
    group = max(1, min(width, COMPILED_BLOCK_BYTES // max(1, rows * 4)))
    out, scratch = np.empty((group, rows), np.float32), np.empty(rows, np.uint32)
    rho, stats = np.empty((group, 1 << HLL_LG_K), np.uint8), np.empty((group, 10), np.float64)
    for start in range(0, width, group):
        block = min(group, width - start)
        _profile_block(features, width, start, out[:block], scratch, rho[:block], stats[:block],
                       DATASKETCHES_SEED)
        for offset in range(block):
            states.append(_passed_state(names[start + offset], out[offset],
                                        stats[offset].tolist(), rho[offset].copy(),
                                        cuts.get(names[start + offset]), value_counts))
    return states


def _sorted64_state(name: str, ordered: np.ndarray, cuts: np.ndarray | None,
                    value_counts: bool) -> ColumnState:
    """The profile of a float64 column in ascending order (a model's predictions, sorted by the
    compiled radix sort: about 16 ns a value against numpy's 40 here) by the compiled read of
    it."""
    ordered = np.ascontiguousarray(ordered)
    stats, rho = np.empty(10, np.float64), np.empty(1 << HLL_LG_K, np.uint8)
    _profile_sorted(ordered, np.empty(len(ordered), np.uint32), rho, stats, DATASKETCHES_SEED)
    return _passed_state(name, ordered, stats.tolist(), rho, cuts, value_counts)


def _passed_state(name: str, ordered: np.ndarray, numbers: list[float], rho: np.ndarray,
                  cuts: np.ndarray | None, value_counts: bool) -> ColumnState:
    """A column's state from its ascending values and what the compiled pass read off them."""
    rows = len(ordered)
    low, count = int(numbers[_NEGATIVE_INFINITIES]), int(numbers[_COUNT])
    present = rows - int(numbers[_MISSING])
    finite = ordered[low:low + count]
    state = ColumnState(name, rows=rows, count=count, missing=rows - present,
                        negative_infinities=low, positive_infinities=present - low - count,
                        zeros=int(numbers[_ZEROS]))
    if count:
        state.min, state.max = numbers[_MIN], numbers[_MAX]
        state.mean, state.m2 = numbers[_MEAN], numbers[_M2]
        few = Registers.few_of_sorted(finite) if numbers[_DISTINCT] <= FILTER_ABOVE else None
        state.hll = Registers(rho, few)
    # more distinct float32 values than the counts keep: more distinct values too
    _sketched(state, ordered, present, finite, cuts,
              value_counts and numbers[_DISTINCT] <= MAX_VALUE_COUNTS)
    return state


def sketch_sorted(ordered: np.ndarray) -> ds.kll_floats_sketch:
    """The KLL sketch of sorted finite values. Past a few thousand values, each run of
    ``stride`` values (a power of two, 2**h) counts as its middle value: the runs' stand-ins
    enter the sketch as the items of its level h (each weighs 2**h there, as a compaction's
    survivors do), the rest of the values at level 0, and the sketch compacts them to its size:
    a sketch of exactly the same count, its minimum and maximum the column's, in about a third
    of the time of feeding the stand-ins one by one (bench/RESULTS.md, "The stand-ins enter the
    sketch at their weight"). A value's rank in the runs' stand-ins is within stride / 2 of its
    rank in the column, and stride is chosen at most ``SAMPLED_ERROR_SHARE`` x 2 x n x the
    sketch's rank error, so the quantiles stay within :func:`rank_error` (the sketch's
    documented error and that share of it)."""
    values = ordered if ordered.dtype == np.float32 else ordered.astype(np.float32)
    sketch = _empty_kll()
    budget = len(values) * SAMPLED_ERROR_SHARE * 2 * _KLL_ERROR
    stride = 1 << int(math.log2(budget)) if budget >= 2 else 1
    if stride == 1:
        sketch.update(values)
        return sketch
    runs = len(values) // stride
    sketch.merge(ds.kll_floats_sketch.deserialize(_weighted_image(
        values[stride // 2:runs * stride:stride], stride.bit_length() - 1,
        values[runs * stride:], len(values), values[0], values[-1])))
    return sketch


# DataSketches' KLL format (datasketches-cpp kll_sketch: serialize): a full sketch's preamble
# (5 ints; serial version 1; family 15; flags; k; m; n; min_k; levels), the offsets of its
# levels but the last in a buffer of its total capacity, its min and max items, its items.
_KLL_PREAMBLE = struct.Struct("<BBBBHBBQHBB")
_KLL_FULL_PREAMBLE_INTS, _KLL_SERIAL_VERSION, _KLL_FAMILY = 5, 1, 15
_KLL_LEVEL_ZERO_SORTED = 2
_KLL_M, _KLL_MAX_K = 8, 65535


def _level_capacity(k: int, depth: int) -> int:
    """The items a KLL level ``depth`` levels below the top holds: k x (2/3)**depth, rounded
    (the library's integer arithmetic), at least m."""
    return max(_KLL_M, (((2 * k) << depth) // 3 ** depth + 1) >> 1)


@functools.lru_cache(maxsize=256)
def _total_capacity(k: int, levels: int) -> int:
    """The items a KLL sketch of ``levels`` levels holds (every shard of a size asks the same)."""
    return sum(_level_capacity(k, depth) for depth in range(levels))


def _weighted_image(standins: np.ndarray, height: int, rest: np.ndarray, n: int,
                    low: float, high: float) -> bytes:
    """A KLL sketch of n values, serialised, whose items are ``standins`` at level ``height``
    (each standing for 2**height values) and ``rest`` at level 0 (both ascending), its min and
    max ``low`` and ``high``; k as large as the stand-ins need (its min_k too: merged into a
    sketch of KLL_K, the result keeps KLL_K's error)."""
    k = max(KLL_K, len(standins))
    if k > _KLL_MAX_K or len(standins) * (1 << height) + len(rest) != n:
        raise ValueError(f"{len(standins)} stand-ins of 2**{height} and {len(rest)} values are "
                         f"not a KLL sketch of {n}")
    levels = height + 1
    start = _total_capacity(k, levels) - len(standins) - len(rest)
    offsets = [start] + [start + len(rest)] * height
    return b"".join((
        _KLL_PREAMBLE.pack(_KLL_FULL_PREAMBLE_INTS, _KLL_SERIAL_VERSION, _KLL_FAMILY,
                           _KLL_LEVEL_ZERO_SORTED, k, _KLL_M, 0, n, k, levels, 0),
        struct.pack(f"<{levels}I", *offsets), struct.pack("<ff", low, high),
        np.asarray(rest, np.float32).tobytes(), np.asarray(standins, np.float32).tobytes()))


def rank_error(sketch: ds.kll_floats_sketch) -> float:
    """How far a quantile of a profile's sketch may be from the exact one, in rank (at 99%
    confidence): the KLL sketch's documented error and the share runs add."""
    return sketch.normalized_rank_error(False) * (1 + SAMPLED_ERROR_SHARE)


def _at_least(cuts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Each cut as the smallest value of ``dtype`` at or above it: a value of that type is
    below the one exactly when it is below the other, so the column is searched in its own
    type (a float64 search would copy a float32 column)."""
    if dtype == cuts.dtype:
        return cuts
    rounded = cuts.astype(dtype)
    below = rounded.astype(cuts.dtype) < cuts
    rounded[below] = np.nextafter(rounded[below], dtype.type(np.inf))
    return rounded


def _distinct_sorted(ordered: np.ndarray) -> np.ndarray:
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _value_counts(ordered: np.ndarray, distinct: np.ndarray) -> dict[float, int] | None:
    if len(distinct) > MAX_VALUE_COUNTS:
        return None
    starts = np.searchsorted(ordered, distinct, side="left")
    counts = np.diff(np.append(starts, len(ordered)))
    return {float(value): int(count) for value, count in zip(distinct, counts)}


def feature_states(features: np.ndarray, names: Sequence[str],
                   cuts: Mapping[str, np.ndarray] | None = None) -> list[ColumnState]:
    """The profile of every column of a (rows x features) matrix, a block of columns at a time."""
    if features.shape[1] != len(names):
        raise ValueError(f"{features.shape[1]} feature columns but {len(names)} names")
    cuts = cuts or {}
    if features.dtype == np.float32 and features.flags.c_contiguous and \
            _profile_block is not None:
        return _compiled_states(features, names, cuts)
    states = []
    width = max(1, BLOCK_BYTES // max(1, features.shape[0] * features.itemsize))
    for start in range(0, features.shape[1], width):
        block = _transposed(features[:, start:start + width])
        block.sort(axis=1)
        for offset, ordered in enumerate(block):
            name = names[start + offset]
            states.append(_sorted_column_state(name, ordered, cuts.get(name), False))
    return states


def _transposed(columns: np.ndarray, tile_rows: int = 1024) -> np.ndarray:
    """The columns as contiguous rows, copied a tile of rows at a time (a tile's rows stay in
    the cache while they are spread over the columns: about twice as fast as one copy)."""
    out = np.empty((columns.shape[1], columns.shape[0]), columns.dtype)
    for start in range(0, columns.shape[0], tile_rows):
        out[:, start:start + tile_rows] = columns[start:start + tile_rows].T
    return out


def query_lengths(qids: np.ndarray) -> np.ndarray:
    """Rows per query: the runs of equal query ids (a shard holds whole queries)."""
    if not len(qids):
        return np.empty(0, np.int64)
    starts = np.flatnonzero(qids[1:] != qids[:-1]) + 1
    return np.diff(np.concatenate([[0], starts, [len(qids)]]))


@dataclass
class ProfileState:
    """The mergeable profile of a dataset's rows seen so far, and of each model's predictions
    on them. The data's part (everything but ``predictions``) depends only on the data and the
    bins, so the cache keeps it with the parsed parts."""

    rows: int = 0
    queries: int | None = None
    features: list[ColumnState] = field(default_factory=list)
    label: ColumnState | None = None
    query_lengths: ColumnState | None = None
    predictions: dict[str, ColumnState] = field(default_factory=dict)
    slice_values: dict[str, set[str]] = field(default_factory=dict)
    slices_truncated: set[str] = field(default_factory=set)

    def merged(self, other: "ProfileState") -> "ProfileState":
        """Both states' rows as one. Features are matched by name; one a shard lacks (a LETOR
        shard narrower than the widest) is missing on all of that shard's rows."""
        queries = None if self.queries is None and other.queries is None else \
            (self.queries or 0) + (other.queries or 0)
        slices = {name: self.slice_values.get(name, set()) | other.slice_values.get(name, set())
                  for name in self.slice_values.keys() | other.slice_values.keys()}
        truncated = self.slices_truncated | other.slices_truncated
        for name, values in slices.items():
            if len(values) > MAX_SLICE_VALUES:
                slices[name] = set(sorted(values)[:MAX_SLICE_VALUES])
                truncated.add(name)
        return ProfileState(
            self.rows + other.rows, queries, self._merged_features(other),
            _merged_optional(self.label, other.label),
            _merged_optional(self.query_lengths, other.query_lengths),
            {name: _merged_optional(self.predictions.get(name), other.predictions.get(name))
             for name in self.predictions.keys() | other.predictions.keys()},
            slices, truncated)

    def _merged_features(self, other: "ProfileState") -> list[ColumnState]:
        mine = {state.name: state for state in self.features}
        theirs = {state.name: state for state in other.features}
        order = [state.name for state in self.features] + \
            [state.name for state in other.features if state.name not in mine]
        merged = []
        for name in order:
            present = mine.get(name) or theirs[name]
            first = mine.get(name) or present.absent(self.rows)
            second = theirs.get(name) or present.absent(other.rows)
            merged.append(first.merged(second))
        return merged


def _merged_optional(first: ColumnState | None, second: ColumnState | None) -> ColumnState | None:
    if first is None or second is None:
        return first or second
    return first.merged(second)


class RunningProfile:
    """Profiles merged as they come in (the driver's: it holds one, not one per shard)."""

    def __init__(self) -> None:
        self.state: ProfileState | None = None

    def add(self, state: ProfileState) -> None:
        self.state = state if self.state is None else self.state.merged(state)


def merge_all(states: Sequence[ProfileState]) -> ProfileState:
    """The shards' states as one (the driver's merge; the order of shards does not matter)."""
    merged = ProfileState()
    for state in states:
        merged = merged.merged(state) if merged.rows or merged.features or merged.predictions \
            else state
    return merged


def profile_data(shard: ParsedShard, names: Sequence[str] | None = None,
                 cuts: Mapping[str, np.ndarray] | None = None,
                 slice_columns: Sequence[str] = ()) -> ProfileState:
    """The data's profile of one shard: its features (named by ``names``; LETOR's are their
    1-based indices), labels, query lengths and the values of its slice columns (from
    ``shard.extra``). ``cuts`` are the reference's bins, by feature name."""
    names = list(names) if names is not None else \
        [str(index + 1) for index in range(shard.features.shape[1])]
    label_cuts = (cuts or {}).get("label")
    state = ProfileState(rows=shard.rows, features=feature_states(shard.features, names, cuts),
                         label=column_state("label", shard.labels, label_cuts, value_counts=True))
    if shard.qids is not None:
        lengths = query_lengths(shard.qids)
        state.queries = len(lengths)
        state.query_lengths = column_state("queryLength", lengths, (cuts or {}).get("queryLength"),
                                           value_counts=True)
    for column in slice_columns:
        values = {str(value) for value in np.unique(np.asarray(shard.extra[column]).astype(str))}
        if len(values) > MAX_SLICE_VALUES:
            values = set(sorted(values)[:MAX_SLICE_VALUES])
            state.slices_truncated.add(column)
        state.slice_values[column] = values
    return state


def profile_predictions(predictions: Mapping[str, np.ndarray],
                        cuts: Mapping[str, np.ndarray] | None = None) -> ProfileState:
    """Each model's predictions on one shard (a score per row; a multiclass model's class
    probabilities are profiled as their row maximum, its confidence), as a state with only
    ``predictions`` set: merge it with the shard's data profile, cached or not."""
    states = {}
    for name, scores in predictions.items():
        scores = np.asarray(scores)
        if scores.ndim == 2:
            scores = scores.max(axis=1)
        states[name] = column_state(name, scores, (cuts or {}).get(f"prediction:{name}"),
                                    value_counts=True)
    return ProfileState(predictions=states)


@dataclass(frozen=True)
class ProfileRequest:
    """What each task profiles of its shard, beside its predictions: each model's predictions
    (named as the result names them), and the data too unless the cache already holds the
    data's profile on these bins (``data`` False: a warm read computes only the predictions');
    ``cuts``: the reference's bins by column name (none: the sketch's deciles); the slice
    columns whose values a ``sliceValuesSeen`` rule compares."""

    models: tuple[str, ...]
    data: bool = True
    cuts: Mapping[str, np.ndarray] = field(default_factory=dict)
    slice_columns: tuple[str, ...] = ()

    def data_of(self, shard: ParsedShard) -> ProfileState:
        """The shard's data profile (empty when the cache has it), its absent features still
        NaN (before any missingFeatures: zero filling: absent values count as missing)."""
        if not self.data:
            return ProfileState()
        return profile_data(shard, shard.feature_names, self.cuts, self.slice_columns)

    def with_predictions(self, state: ProfileState,
                         predictions: Sequence[np.ndarray]) -> ProfileState:
        """``state`` with each model's predictions profiled."""
        state.predictions = profile_predictions(dict(zip(self.models, predictions)),
                                                self.cuts).predictions
        return state


def cuts_digest(cuts: Mapping[str, np.ndarray]) -> str:
    """A short digest of the data's bins (the predictions' excluded: they are not cached), for
    the cache's profile entry: a data profile is reused only on the bins it was counted on."""
    digest = hashlib.sha256()
    for name in sorted(key for key in cuts if not key.startswith("prediction:")):
        digest.update(name.encode() + b"\0" + np.asarray(cuts[name], np.float64).tobytes())
    return digest.hexdigest()[:16] if cuts else "deciles"


def data_only(profile: DatasetProfile) -> DatasetProfile:
    """The profile without the models' predictions: what the cache keeps of a dataset."""
    return profile.model_copy(update={"predictions": {}})


def encoded(sketch_bytes: bytes) -> str:
    return base64.b64encode(sketch_bytes).decode("ascii")


def decoded_kll(text: str) -> ds.kll_floats_sketch:
    """A profile's KLL sketch, as the document keeps it."""
    return ds.kll_floats_sketch.deserialize(base64.b64decode(text)) if text else _empty_kll()


def column_profile(state: ColumnState) -> ColumnProfile:
    """A column's merged state as the result document keeps it."""
    from ..api.profile import ColumnProfile

    finite = state.count > 0
    sketch = state.hll.sketch(HLL_LG_K, _HLL_TYPE)
    return ColumnProfile(
        name=state.name, rows=state.rows, count=state.count, missing=state.missing,
        infinities=state.negative_infinities + state.positive_infinities, zeros=state.zeros,
        min=state.min if finite else None, max=state.max if finite else None,
        mean=state.mean if finite else None,
        std=float(np.sqrt(state.m2 / state.count)) if finite else None,
        distinct=float(sketch.get_estimate()) if finite else 0.0,
        quantiles=({str(rank): float(value) for rank, value in
                    zip(QUANTILE_RANKS, state.kll.get_quantiles(list(QUANTILE_RANKS)))}
                   if finite else {}),
        histogram=_histogram(state),
        value_counts=None if state.values is None else
        {format(value, ".9g"): count for value, count in sorted(state.values.items())},
        sketch=encoded(state.kll.serialize()) if finite else "",
        distinct_sketch=encoded(stored_hll(sketch).serialize_compact()) if finite else "")


def stored_hll(sketch: ds.hll_sketch) -> ds.hll_sketch:
    """The sketch as the document keeps it (HLL_4: half the bytes of HLL_8, the same registers)."""
    union = ds.hll_union(HLL_LG_K)
    union.update(sketch)
    return union.get_result(_HLL_STORED)


def _histogram(state: ColumnState) -> ColumnHistogram | None:
    """Exact counts on the bins fixed before the pass; without them, the sketch's deciles as
    bins and its masses in them (within its rank error), the infinities in the outer bins."""
    from ..api.profile import ColumnHistogram

    if state.cuts is not None and state.counts is not None:
        return ColumnHistogram(cuts=state.cuts.tolist(),
                               counts=state.counts.astype(float).tolist(), exact=True)
    if not state.count:
        return None
    cuts = sorted(set(state.kll.get_quantiles(list(SKETCH_BIN_RANKS))))
    counts = sketch_counts(state.kll, cuts, state.count)
    counts[0] += state.negative_infinities
    counts[-1] += state.positive_infinities
    return ColumnHistogram(cuts=cuts, counts=counts, exact=False)


def sketch_counts(kll: ds.kll_floats_sketch, cuts: Sequence[float], count: int) -> list[float]:
    """The values of a sketched column in the bins of ``cuts`` (bin i is [cuts[i-1], cuts[i])),
    read off the sketch: within its rank error of the exact counts."""
    if kll.is_empty():
        return [0.0] * (len(cuts) + 1)
    return [mass * count for mass in kll.get_pmf(list(cuts))]


def to_profile(state: ProfileState) -> DatasetProfile:
    """The merged state as the result document's profile."""
    from ..api.profile import DatasetProfile

    return DatasetProfile(
        rows=state.rows, queries=state.queries,
        features=[column_profile(column) for column in state.features],
        label=column_profile(state.label) if state.label else None,
        predictions={name: column_profile(column)
                     for name, column in sorted(state.predictions.items())},
        query_lengths=column_profile(state.query_lengths) if state.query_lengths else None,
        slice_values={name: sorted(values) for name, values in sorted(state.slice_values.items())},
        slice_values_truncated=sorted(state.slices_truncated))


def reference_cuts(reference: DatasetProfile) -> dict[str, np.ndarray]:
    """The bins a reference fixes for the next pass: each column's histogram edges, by the name
    ``profile_data`` and ``profile_predictions`` look them up under."""
    cuts = {column.name: np.asarray(column.histogram.cuts, dtype=np.float64)
            for column in reference.features if column.histogram is not None}
    if reference.label is not None and reference.label.histogram is not None:
        cuts["label"] = np.asarray(reference.label.histogram.cuts, dtype=np.float64)
    if reference.query_lengths is not None and reference.query_lengths.histogram is not None:
        cuts["queryLength"] = np.asarray(reference.query_lengths.histogram.cuts, dtype=np.float64)
    for name, column in reference.predictions.items():
        if column.histogram is not None:
            cuts[f"prediction:{name}"] = np.asarray(column.histogram.cuts, dtype=np.float64)
    return cuts
