"""Data profiles: exact statistics equal numpy's, quantiles within the KLL sketch's documented rank
error, exact histograms on given bins, and shards merged equal to the whole."""

from __future__ import annotations

import pickle
import struct

import datasketches as ds
import numpy as np
import pytest

from modeleval.api.profile import (COLUMN_BYTES, HLL_LG_K, KLL_K, QUANTILE_RANKS,
                                   ColumnProfile, size_bound)
from modeleval.engine.distinct import distinct_sketch
from modeleval.engine.letor import parse_letor
from modeleval.engine.profile import (_total_capacity, _weighted_image, column_profile,
                                      column_state, decoded_kll, merge_all, profile_data,
                                      profile_predictions, rank_error, reference_cuts,
                                      sketch_sorted, stored_hll, to_profile)
from modeleval.engine.shard import ParsedShard

RELATIVE = 1e-9


def dataset(rows: int = 30_000, features: int = 6, seed: int = 0) -> ParsedShard:
    """Queries of 1 to 40 rows; features with NaN (missing), +-inf, zeros and repeats."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 1.0, (rows, features)).astype(np.float32)
    x[:, 1] = np.round(x[:, 1])  # many zeros and repeated values
    x[rng.random(x.shape) < 0.07] = np.nan
    x[rng.integers(0, rows, 25), 2] = np.inf
    x[rng.integers(0, rows, 5), 2] = -np.inf
    sizes = rng.integers(1, 41, rows)
    qids = np.repeat(np.arange(rows), sizes)[:rows]
    labels = rng.integers(0, 5, rows).astype(np.float32)
    return ParsedShard(labels, qids, x)


def split(shard: ParsedShard, cuts: list[int]) -> list[ParsedShard]:
    """Pieces on query boundaries near ``cuts`` (as the sharding cuts a dataset)."""
    bounds = [0]
    for cut in cuts:
        while shard.qids[cut] == shard.qids[cut - 1]:
            cut += 1
        bounds.append(cut)
    bounds.append(shard.rows)
    return [ParsedShard(shard.labels[a:b], shard.qids[a:b], shard.features[a:b])
            for a, b in zip(bounds, bounds[1:])]


def test_exact_statistics_equal_numpys():
    shard = dataset()
    profile = to_profile(merge_all([profile_data(piece) for piece in split(shard, [9_000, 17_000])]))
    for j, column in enumerate(profile.features):
        values = shard.features[:, j].astype(np.float64)
        finite = values[np.isfinite(values)]
        assert column.name == str(j + 1)
        assert column.rows == shard.rows
        assert column.missing == np.isnan(values).sum()
        assert column.infinities == np.isinf(values).sum()
        assert column.zeros == (values == 0).sum()
        assert column.count == len(finite)
        assert (column.min, column.max) == (finite.min(), finite.max())
        assert column.mean == pytest.approx(finite.mean(), rel=RELATIVE)
        assert column.std == pytest.approx(finite.std(), rel=RELATIVE)
        # The HLL estimate is within 3 of its standard errors (2.3% at 2^11 registers).
        assert column.distinct == pytest.approx(len(np.unique(finite)), rel=0.07)
    assert profile.features[2].infinities == np.isinf(shard.features[:, 2]).sum() > 0


def test_quantiles_are_within_the_sketchs_rank_error():
    shard = dataset(rows=60_000)
    state = merge_all([profile_data(piece) for piece in split(shard, [20_000, 40_000])])
    for j, column in enumerate(to_profile(state).features):
        finite = np.sort(shard.features[:, j][np.isfinite(shard.features[:, j])])
        error = rank_error(decoded_kll(column.sketch))
        for rank in QUANTILE_RANKS:
            value = column.quantiles[str(rank)]
            # The true ranks the returned value spans (repeated values span several).
            low = np.searchsorted(finite, value, "left") / len(finite)
            high = np.searchsorted(finite, value, "right") / len(finite)
            assert low - error <= rank <= high + error, (column.name, rank)


def test_histogram_on_given_bins_is_exact_and_without_them_follows_the_sketch():
    shard = dataset()
    reference = to_profile(profile_data(shard))
    sketched = reference.features[0].histogram
    assert not sketched.exact and len(sketched.cuts) == 9
    values = shard.features[:, 0]
    # Sketch bins: each decile bin holds about a tenth of the finite values.
    assert np.allclose(np.array(sketched.counts) / np.isfinite(values).sum(), 0.1, atol=0.03)
    cuts = reference_cuts(reference)
    profile = to_profile(merge_all([profile_data(piece, cuts=cuts)
                                    for piece in split(shard, [5_000, 21_000])]))
    for j, column in enumerate(profile.features):
        values = shard.features[:, j]
        edges = np.concatenate([[-np.inf], cuts[column.name], [np.inf]])
        # Bins [a, b): numpy's histogram closes the last bin on the right, so +inf is counted
        # apart (it sits in our last bin).
        expected, _ = np.histogram(values[~np.isnan(values) & (values != np.inf)], edges)
        expected[-1] += np.sum(values == np.inf)
        assert column.histogram.exact
        assert column.histogram.cuts == cuts[column.name].tolist()
        assert column.histogram.counts == expected.tolist()


def test_merged_shards_equal_the_whole():
    shard = dataset()
    cuts = reference_cuts(to_profile(profile_data(shard)))
    whole = to_profile(profile_data(shard, cuts=cuts))
    pieces = [pickle.loads(pickle.dumps(profile_data(piece, cuts=cuts)))  # as Ray moves them
              for piece in split(shard, [3_000, 11_000, 24_000])]
    merged = to_profile(merge_all(pieces[::-1]))
    exact = {"rows", "count", "missing", "infinities", "zeros", "min", "max", "histogram",
             "value_counts"}
    for mine, theirs in zip([*merged.features, merged.label, merged.query_lengths],
                            [*whole.features, whole.label, whole.query_lengths]):
        assert mine.model_dump(include=exact) == theirs.model_dump(include=exact)
        assert mine.mean == pytest.approx(theirs.mean, rel=1e-12)
        assert mine.std == pytest.approx(theirs.std, rel=1e-12)
        assert decoded_kll(mine.sketch).n == decoded_kll(theirs.sketch).n == mine.count
    assert (merged.rows, merged.queries) == (whole.rows, whole.queries)


def test_labels_query_lengths_and_predictions():
    shard = dataset(rows=5_000)
    scores = np.random.default_rng(3).normal(size=shard.rows)
    state = merge_all([profile_data(shard), profile_predictions({"candidate": scores})])
    profile = to_profile(state)
    labels, counts = np.unique(shard.labels, return_counts=True)
    assert profile.label.value_counts == {f"{v:g}": int(c) for v, c in zip(labels, counts)}
    lengths = np.unique(shard.qids, return_counts=True)[1]
    assert profile.queries == len(lengths)
    assert profile.query_lengths.count == len(lengths)
    assert profile.query_lengths.mean == pytest.approx(lengths.mean(), rel=RELATIVE)
    assert profile.query_lengths.max == lengths.max()
    prediction = profile.predictions["candidate"]
    assert prediction.mean == pytest.approx(scores.mean(), rel=RELATIVE)
    assert prediction.value_counts is None  # more than 64 distinct scores


def test_omitted_letor_features_and_a_narrower_shard_count_as_missing():
    text = b"1 qid:1 1:0.5 3:2\n0 qid:1 2:1 3:0\n2 qid:2 1:1.5\n"
    narrow = parse_letor(b"0 qid:3 1:4\n")  # a shard whose lines never reach features 2 and 3
    assert narrow.features.shape[1] == 1
    profile = to_profile(merge_all([profile_data(parse_letor(text)), profile_data(narrow)]))
    assert [(c.name, c.count, c.missing) for c in profile.features] == \
        [("1", 3, 1), ("2", 1, 3), ("3", 2, 2)]
    assert profile.features[0].mean == pytest.approx(2.0)
    assert profile.features[2].zeros == 1


def test_an_all_missing_column_has_no_statistics():
    column = column_profile(column_state("empty", np.full(10, np.nan, np.float32)))
    assert (column.rows, column.count, column.missing) == (10, 0, 10)
    assert column.mean is None and column.histogram is None and column.sketch == ""


def test_the_profile_stays_within_its_size_bound():
    # A column's sketches at their widest: the KLL sketch of millions of values (it grows with
    # the log of the count), the HLL sketch past its sparse modes (tens of thousands distinct).
    values = np.random.default_rng(5).integers(0, 60_000, 3_000_000).astype(np.float32)
    one = column_profile(column_state("wide", values))
    assert len(one.model_dump_json(by_alias=True)) <= COLUMN_BYTES
    shard = dataset(rows=4_000, features=136, seed=2)
    profile = to_profile(merge_all([profile_data(shard),
                                    profile_predictions({"candidate": shard.labels * 0.3})]))
    size = len(profile.model_dump_json(by_alias=True))
    assert size <= size_bound(136) <= 1_000_000
    assert ColumnProfile.model_validate_json(one.model_dump_json(by_alias=True)) == one


def test_a_long_column_is_sketched_from_runs_with_its_exact_count_and_error():
    values = np.sort(np.random.default_rng(9).lognormal(0, 1, 1_000_003).astype(np.float32))
    sketch = sketch_sorted(values)
    assert sketch.n == len(values)
    assert sketch.num_retained < 2_000  # a sketch, not the values
    assert (sketch.get_min_value(), sketch.get_max_value()) == (values[0], values[-1])
    assert sketch.k == KLL_K and sketch.normalized_rank_error(False) == \
        ds.kll_floats_sketch(KLL_K).normalized_rank_error(False)
    for rank in (0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999):
        value = sketch.get_quantile(rank)
        low = np.searchsorted(values, value, "left") / len(values)
        high = np.searchsorted(values, value, "right") / len(values)
        assert low - rank_error(sketch) <= rank <= high + rank_error(sketch)


@pytest.mark.parametrize("k", [KLL_K, 1_000, 4_811])
def test_stand_ins_enter_a_sketch_laid_out_as_the_library_lays_out_its_own(k):
    # The library's own sketches of k: the offset of their first level plus what they retain
    # is their total capacity; the weighted image lays its levels out in the same capacity.
    for n in (3 * k, 40 * k, 2_000 * k):
        own = ds.kll_floats_sketch(k)
        own.update(np.arange(n, dtype=np.float32))
        image = own.serialize()
        levels = image[18]
        first = struct.unpack_from("<I", image, 20)[0]
        assert first + own.num_retained == _total_capacity(k, levels)
    standins = np.arange(k, dtype=np.float32)
    rebuilt = ds.kll_floats_sketch.deserialize(
        _weighted_image(standins, 4, np.array([k + 1.0], np.float32), 16 * k + 1, -1.0, k + 1))
    assert (rebuilt.n, rebuilt.num_retained, rebuilt.k) == (16 * k + 1, k + 1, k)
    assert rebuilt.get_rank(k // 2) == pytest.approx(k // 2 * 16 / (16 * k + 1))  # below it
    with pytest.raises(ValueError, match="not a KLL sketch of"):
        _weighted_image(standins, 4, standins[:0], 16 * k + 1, 0.0, 1.0)


def _fed_every_key(keys: np.ndarray) -> ds.hll_sketch:
    """DataSketches' own sketch of the keys: up to 8192 of them one sketch fed them one by one
    (in its list, set or HLL mode: what the profile keeps while a column has few values), else
    two such sketches and their union (out of order, as a merge of shards is)."""
    if len(keys) <= 8192:
        sketch = ds.hll_sketch(HLL_LG_K, ds.HLL_8)
        for key in keys.tolist():
            sketch.update(key)
        return sketch
    halves = [ds.hll_sketch(HLL_LG_K, ds.HLL_8) for _ in range(2)]
    for sketch, half in zip(halves, (keys[::2], keys[1::2])):
        for key in half.tolist():
            sketch.update(key)
    union = ds.hll_union(HLL_LG_K)
    for sketch in halves:
        union.update(sketch)
    return union.get_result(ds.HLL_8)


@pytest.mark.parametrize("distinct", [9_000, 60_000])
def test_the_distinct_sketch_from_registers_is_the_sketch_of_every_value(distinct):
    """Written from its registers in DataSketches' serialised form, it reads back as the union
    of sketches fed every value: the same registers (so the hash is DataSketches' own), as
    DataSketches serialises them, and the same estimate, within 3 standard errors."""
    keys = np.unique(np.random.default_rng(distinct).random(distinct).astype(np.float32))
    keys = keys.view(np.int32)
    every = _fed_every_key(keys)
    mine = distinct_sketch(keys, HLL_LG_K, ds.HLL_8)
    assert stored_hll(mine).serialize_compact() == stored_hll(every).serialize_compact()
    assert mine.get_estimate() == pytest.approx(every.get_estimate(), rel=1e-12)
    assert mine.get_estimate() == pytest.approx(len(keys), rel=3 * 1.04 / np.sqrt(2**HLL_LG_K))


@pytest.mark.parametrize("shape", ["continuous", "few values", "signed zeros"])
def test_merged_registers_make_the_sketch_of_every_value_compiled_or_not(shape, monkeypatch):
    """Shards' registers (computed in C by the compiled pass, or by numpy without it) merged
    and turned into a sketch give the registers, as DataSketches serialises them, and the
    estimate of DataSketches' own sketch fed every distinct value of the whole column."""
    from modeleval.engine import profile as profile_module

    rng = np.random.default_rng(4)
    values = {"continuous": rng.normal(size=40_000),
              "few values": rng.integers(0, 300, 40_000) / 7,
              "signed zeros": np.concatenate([np.zeros(5), -np.zeros(5), rng.normal(size=30_000)])
              }[shape].astype(np.float32)
    keys = np.unique((values + np.float32(0)).view(np.int32))
    every = _fed_every_key(keys)

    def merged():
        states = [column_state("x", part).hll for part in np.array_split(values, 7)]
        total = states[0]
        for state in states[1:]:
            total = total.merged(state)
        return total

    compiled = merged()
    monkeypatch.setattr(profile_module, "_profile_block", None)
    plain = merged()
    assert np.array_equal(compiled.rho, plain.rho)
    for state in (compiled, plain):
        sketch = state.sketch(HLL_LG_K, ds.HLL_8)
        assert stored_hll(sketch).serialize_compact() == stored_hll(every).serialize_compact()
        assert sketch.get_estimate() == pytest.approx(every.get_estimate(), rel=1e-12)
    assert (compiled.few is None) == (len(keys) > 8192)


def _awkward_columns(rows: int, seed: int) -> np.ndarray:
    """float32 columns the compiled pass must read as numpy does: NaN of both signs and other
    payloads, +-inf, signed zeros, subnormals, the extremes, repeats, constants, all missing;
    and keys that differ in one digit of the radix sort only (powers of two of one sign: the
    sort's one-pass path) or in two (small integers)."""
    rng = np.random.default_rng(seed)
    x = np.empty((rows, 11), np.float32)
    x[:, 0] = rng.normal(size=rows)
    x[:, 1] = np.round(rng.normal(size=rows) * 3)  # few values, zeros of both signs
    x[rng.random(rows) < 0.3, 1] *= -1
    x[:, 2] = 5.0
    x[:, 3] = np.nan
    x[:, 4] = rng.choice(np.array([np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4028235e38,
                                   -3.4028235e38, 1.2e-38], np.float32), rows)
    x[:, 5] = rng.gamma(2.0, 1.0, rows)
    x[:, 6] = -rng.gamma(2.0, 1.0, rows)
    x[:, 7] = rng.integers(-2**20, 2**20, rows)
    x[:, 8] = rng.normal(size=rows)
    x[:, 9] = rng.choice(np.array([0.5, 1.0, 4.0, 2.0**40, np.inf], np.float32), rows)
    x[:, 10] = -rng.choice(np.array([0.25, 1.0, 8.0, 2.0**-30], np.float32), rows)
    bits = x.view(np.uint32)
    for column, payload in ((0, 0xFFC00000), (5, 0x7F800001), (6, 0xFFFFFFFF), (8, 0x7FC00123),
                            (10, 0x7FC00000)):
        bits[rng.random(rows) < 0.05, column] = payload  # NaN: negative, signalling, payloads
    return x


def _same_state(compiled, plain) -> None:
    assert (compiled.name, compiled.rows, compiled.count, compiled.missing) == \
        (plain.name, plain.rows, plain.count, plain.missing)
    assert (compiled.negative_infinities, compiled.positive_infinities, compiled.zeros) == \
        (plain.negative_infinities, plain.positive_infinities, plain.zeros)
    assert (compiled.min, compiled.max) == (plain.min, plain.max)
    assert compiled.mean == pytest.approx(plain.mean, rel=1e-12, abs=1e-300)
    assert compiled.m2 == pytest.approx(plain.m2, rel=1e-12, abs=1e-300)
    assert np.array_equal(compiled.hll.rho, plain.hll.rho)
    assert (compiled.hll.few is None) == (plain.hll.few is None)
    if plain.hll.few is not None:
        assert np.array_equal(compiled.hll.few, plain.hll.few)
    if plain.count:  # the sketches are randomised: the same values' ranks within their error
        assert compiled.kll.n == plain.kll.n
        assert (compiled.kll.get_min_value(), compiled.kll.get_max_value()) == \
            (plain.kll.get_min_value(), plain.kll.get_max_value())
        for value in plain.kll.get_quantiles([0.01, 0.25, 0.5, 0.75, 0.99]):
            assert abs(compiled.kll.get_rank(value) - plain.kll.get_rank(value)) <= \
                2 * rank_error(plain.kll)
    assert (compiled.counts is None) == (plain.counts is None)
    if plain.counts is not None:
        assert np.array_equal(compiled.counts, plain.counts)
    assert compiled.values == plain.values


@pytest.mark.parametrize("rows", [0, 1, 2, 7, 5_000, 40_000])
def test_the_compiled_pass_reads_every_column_as_numpys_sort_does(rows, monkeypatch):
    """The compiled pass (a radix sort and one read of each sorted column in C) gives the
    states numpy's sort and reads give: counts, extremes, moments, registers, the sketch's
    quantiles and the bins' counts; blocks of columns split anywhere."""
    from modeleval.engine import profile as profile_module
    from modeleval.engine.profile import feature_states

    x = _awkward_columns(rows, seed=rows)
    names = [f"f{j}" for j in range(x.shape[1])]
    cuts = {"f0": np.array([-1.0, 0.0, 0.5]), "f4": np.array([-np.inf, -1e-45, 0.0, 1e-45]),
            "f7": np.array([-1000.5, 3.0, 1e6])}
    monkeypatch.setattr(profile_module, "BLOCK_BYTES", max(1, rows * 4 * 2))  # two a block
    monkeypatch.setattr(profile_module, "COMPILED_BLOCK_BYTES", max(1, rows * 4 * 3))
    compiled = feature_states(x, names, cuts)
    monkeypatch.setattr(profile_module, "_profile_block", None)
    plain = feature_states(x, names, cuts)
    assert len(compiled) == len(plain) == x.shape[1]
    for mine, theirs in zip(compiled, plain):
        _same_state(mine, theirs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_compiled_pass_reads_random_bit_patterns_as_numpy_does(seed, monkeypatch):
    """Columns of random float32 bit patterns (every NaN payload, infinities, subnormals,
    signed zeros, few values): the compiled pass's counts, read off the radix sort's top digit,
    and everything else equal numpy's."""
    from modeleval.engine import profile as profile_module
    from modeleval.engine.profile import feature_states

    rng = np.random.default_rng(seed)
    rows = int(rng.integers(1, 4_000))
    bits = rng.integers(0, 2**32, size=(rows, 5), dtype=np.uint64).astype(np.uint32)
    bits[:, 1] = (bits[:, 1] & 0x807FFFFF) | 0x7F800000  # infinities and NaNs only
    bits[:, 2] = (bits[:, 2] & 0x8000000F) | 0x3F800000  # a few values near -1 and 1
    bits[:, 3] = np.where(rng.random(rows) < 0.5, 0x80000000, 0)  # zeros of both signs
    bits[:, 4] &= 0x80FFFFFF  # subnormals and the smallest normals
    x = bits.view(np.float32)
    names = [f"c{j}" for j in range(x.shape[1])]
    cuts = {"c0": np.array([-1e30, 0.0, 1e-30, 1e30]), "c4": np.array([-1e-40, 0.0, 1e-40])}
    compiled = feature_states(x, names, cuts)
    monkeypatch.setattr(profile_module, "_profile_block", None)
    for mine, theirs in zip(compiled, feature_states(x, names, cuts)):
        _same_state(mine, theirs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_pass_profiles_labels_and_predictions_as_numpy_does(dtype, monkeypatch):
    """One column (labels; a model's predictions, in float64 and sorted by the compiled radix
    sort) read by the compiled pass gives numpy's state: moments over the float64 values,
    registers over their float32 roundings."""
    from modeleval.engine import profile as profile_module

    with np.errstate(invalid="ignore"):  # signalling NaN payloads widened
        x = _awkward_columns(3_000, seed=9).astype(dtype)
    columns = [x[:, j].copy() for j in range(x.shape[1])]
    if dtype == np.float64:  # values float32 cannot hold, some rounding to one float32
        rng = np.random.default_rng(10)
        columns.append(rng.normal(size=3_000) * 1e3)
        columns.append(1.0 + np.arange(3_000) * 1e-12)
    kept = [column.copy() for column in columns]
    compiled = [column_state(str(j), column, np.array([-1.0, 0.0, 2.5]), value_counts=True)
                for j, column in enumerate(columns)]
    for column, before in zip(columns, kept):  # the caller's values are not sorted in place
        assert np.array_equal(column.view(np.uint8), before.view(np.uint8))
    monkeypatch.setattr(profile_module, "_profile_block", None)
    for j, mine in enumerate(compiled):
        _same_state(mine, column_state(str(j), columns[j], np.array([-1.0, 0.0, 2.5]),
                                       value_counts=True))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_compiled_sort_of_doubles_is_numpys(seed):
    """Random float64 bit patterns (every NaN payload, infinities, subnormals, signed zeros),
    columns of a few values and of one: the radix sort's order is numpy's (NaN last)."""
    from modeleval.engine._letor import sort_float64

    rng = np.random.default_rng(seed)
    rows = int(rng.integers(2, 5_000))
    columns = [
        rng.integers(0, 2**64, rows, dtype=np.uint64).view(np.float64),
        rng.choice(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324,
                             1.5, -2.0]), rows),
        rng.normal(size=rows) * 1e3, np.full(rows, -3.25), np.empty(0), np.array([np.nan])]
    for column in columns:
        mine = column.copy()
        sort_float64(mine, np.empty(len(mine), np.uint64))
        assert np.array_equal(mine, np.sort(column), equal_nan=True)
        assert np.count_nonzero(np.isnan(mine)) == np.count_nonzero(np.isnan(column))
    with pytest.raises(ValueError, match="scratch as many"):
        sort_float64(np.zeros(3), np.empty(2, np.uint64))
    with pytest.raises(TypeError, match="items of 8 bytes"):
        sort_float64(np.zeros(3, np.float32), np.empty(3, np.uint64))
