"""LETOR parsing is exact (against scikit-learn's reader), handles sparse lines and comments, and
sharding never splits a query group."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from modeleval.demo import letor_bytes, make_letor
from modeleval.engine.datasets import (ParsedShard, PartStore, group_aligned_splits, letor_ranges,
                                       parse_letor)
from modeleval.engine.errors import DatasetError, Reason, StorageError
from modeleval.engine.storage import Storage


def test_dense_letor_matches_sklearn():
    data = make_letor(3000, 40, mean_group=30, seed=3)
    text = letor_bytes(data)
    shard = parse_letor(text, 40)
    x, y, q = load_svmlight_file(io.BytesIO(text), n_features=40, query_id=True)
    np.testing.assert_array_equal(shard.features, x.toarray().astype(np.float32))
    np.testing.assert_array_equal(shard.labels, y)
    np.testing.assert_array_equal(shard.qids, q)


def test_sparse_lines_leave_features_missing():
    data = make_letor(2000, 25, mean_group=17, seed=4, sparse=0.3)
    shard = parse_letor(letor_bytes(data), 25)
    np.testing.assert_array_equal(np.isnan(shard.features), np.isnan(data.features))
    np.testing.assert_array_equal(np.nan_to_num(shard.features), np.nan_to_num(data.features))


def test_unordered_indices_comments_and_blank_lines():
    text = b"# header comment\n3 qid:9 5:1.5 2:-2e-1 # docid = 7\n\n0 qid:9 1:4\n1 qid:10 3:0\n"
    shard = parse_letor(text)
    assert shard.features.shape == (3, 5)
    assert shard.features[0, 4] == 1.5 and shard.features[0, 1] == pytest.approx(-0.2)
    assert np.isnan(shard.features[1, 1]) and shard.features[2, 2] == 0
    np.testing.assert_array_equal(shard.qids, [9, 9, 10])
    np.testing.assert_array_equal(shard.labels, [3, 0, 1])


def test_sklearn_writer_output_reads_back():
    rng = np.random.default_rng(0)
    x = rng.random((50, 7))
    x[x < 0.3] = 0  # sklearn omits zeros: they come back missing, as XGBoost reads them
    y = rng.integers(0, 3, 50)
    buf = io.BytesIO()
    dump_svmlight_file(x, y, buf, query_id=np.repeat([1, 2], 25), zero_based=False)
    shard = parse_letor(buf.getvalue(), 7)
    np.testing.assert_allclose(np.nan_to_num(shard.features), x, rtol=1e-6)


@pytest.mark.parametrize("text, message", [
    (b"1 qid:1 1:0.5\nx qid:1 1:0.5\n", "label is not a number"),
    (b"1 qid:1 1:abc\n", "feature value is not a number"),
    (b"1 qid:1 1\n", "not index:value"),
    (b"1 qid:a 1:0.5\n", "qid is not an integer"),
    (b"1 qid:1 0:0.5\n", "start at 1"),
    (b"1 qid:1 1:0.5\n1 1:0.5\n", "no qid"),
])
def test_garbage_is_a_parse_error(text, message):
    with pytest.raises(DatasetError, match=message) as error:
        parse_letor(text)
    assert error.value.reason == Reason.DatasetParseError


def test_more_features_than_the_model_is_schema_mismatch():
    with pytest.raises(DatasetError, match="exceeds the expected 3") as error:
        parse_letor(b"1 qid:1 1:1 4:1\n", num_features=3)
    assert error.value.reason == Reason.SchemaMismatch


@pytest.mark.parametrize("shard_bytes", [500, 4096, 50_000])
def test_byte_ranges_never_split_a_query_group(tmp_path, shard_bytes):
    data = make_letor(4000, 12, mean_group=23, seed=5)
    text = letor_bytes(data)
    path = tmp_path / "d.txt"
    path.write_bytes(text)
    storage = Storage()
    info = storage.stat(path.as_uri())
    ranges = letor_ranges(storage, info, shard_bytes=shard_bytes)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    shards = [parse_letor(text[a:b], 12) for a, b in ranges]
    qid_sets = [set(s.qids.tolist()) for s in shards if s.rows]
    for left, right in zip(qid_sets, qid_sets[1:]):
        assert not left & right, "a query group was split between shards"
    np.testing.assert_array_equal(np.concatenate([s.qids for s in shards]), data.qids)
    np.testing.assert_array_equal(np.concatenate([s.features for s in shards]), data.features)


def test_row_splits_sit_on_group_starts():
    qids = np.repeat(np.array([5, 1, 9, 2]), [3, 10, 2, 7])
    splits = group_aligned_splits(qids, len(qids), 4)
    starts = {0, 3, 13, 15}
    assert all(a in starts for a, _ in splits)
    assert splits[-1][1] == len(qids)


@pytest.mark.parametrize("with_qid", [True, False])
def test_cache_part_round_trip(tmp_path, with_qid):
    shard = parse_letor(letor_bytes(make_letor(500, 9, seed=6, sparse=0.1)), 9)
    shard = ParsedShard(shard.labels, shard.qids if with_qid else None, shard.features,
                        {"region": np.array(["eu", "us"] * 250)})
    uri = (tmp_path / "p.arrow").as_uri()
    parts = PartStore(Storage(), str(tmp_path / "node"), 2**20)
    parts.write(uri, shard)
    back = parts.read(uri, 9, keep=["region"])
    np.testing.assert_array_equal(back.features, shard.features)  # NaN where a line was sparse
    assert np.isnan(back.features).any()
    np.testing.assert_array_equal(back.labels, shard.labels)
    assert (back.qids is None) == (not with_qid)
    if with_qid:
        np.testing.assert_array_equal(back.qids, shard.qids)
    assert list(back.extra["region"][:2]) == ["eu", "us"]
    assert not (tmp_path / "node").exists()  # a file:// cache is local already: no second copy


def test_a_cached_part_of_another_width_or_damaged_is_an_error(tmp_path):
    shard = parse_letor(letor_bytes(make_letor(50, 4, seed=7)), 4)
    uri = (tmp_path / "p.arrow").as_uri()
    parts = PartStore(Storage())
    parts.write(uri, shard)
    with pytest.raises(StorageError, match="4 features, its manifest 5"):
        parts.read(uri, 5)
    (tmp_path / "p.arrow").write_bytes(b"garbage")
    with pytest.raises(StorageError, match="unreadable"):
        parts.read(uri, 4)


@pytest.mark.parametrize("line_end", [b"\n", b" \n", b"\r\n"])
def test_dense_fast_path_handles_line_endings(line_end):
    data = make_letor(300, 8, mean_group=10, seed=8)
    text = letor_bytes(data).replace(b"\n", line_end)
    shard = parse_letor(text, 8)
    np.testing.assert_array_equal(shard.features, data.features)
    np.testing.assert_array_equal(shard.qids, data.qids)


def test_fast_and_general_paths_agree_on_mixed_input():
    dense = letor_bytes(make_letor(200, 6, seed=9))
    lines = dense.splitlines(keepends=True)
    lines[50] = b"4 qid:9999 2:1.5 6:2\n"  # one sparse line forces the general path
    mixed = parse_letor(b"".join(lines), 6)
    assert mixed.rows == 200 and np.isnan(mixed.features[50, 0]) and mixed.features[50, 5] == 2
    np.testing.assert_array_equal(parse_letor(dense, 6).features[:50], mixed.features[:50])


def test_binary_garbage_is_a_parse_error_not_a_crash():
    garbage = np.random.default_rng(0).bytes(20_000)
    with pytest.raises(DatasetError, match="not text") as error:
        parse_letor(garbage, 136, where="s3://b/garbled.txt")
    assert error.value.reason == Reason.DatasetParseError and "garbled.txt" in error.value.message


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of about 1 KB, so a small shard is parsed in many blocks."""
    from modeleval.engine import datasets

    monkeypatch.setattr(datasets, "_BLOCK_BYTES", 1024)


@pytest.mark.parametrize("line_end", [b"\n", b" \n", b"\r\n"])
def test_block_wise_parse_is_exact_across_block_edges(small_blocks, line_end):
    data = make_letor(700, 12, mean_group=9, seed=10)
    text = b"\n\n" + letor_bytes(data).replace(b"\n", line_end)
    text = text.replace(line_end, line_end + b"\n", 5)  # blank lines inside early blocks
    shard = parse_letor(text, 12)
    np.testing.assert_array_equal(shard.features, data.features)
    np.testing.assert_array_equal(shard.labels, data.labels)
    np.testing.assert_array_equal(shard.qids, data.qids)


def test_a_sparse_line_in_a_late_block_falls_back_to_the_general_path(small_blocks):
    lines = letor_bytes(make_letor(400, 6, seed=11)).splitlines(keepends=True)
    lines[-3] = b"2 qid:77 5:0.25\n"
    shard = parse_letor(b"".join(lines), 6)
    assert shard.rows == 400 and shard.features[-3, 4] == np.float32(0.25)
    assert np.isnan(shard.features[-3, :4]).all()


def test_uniform_lines_with_shifting_indices_and_no_width_given(small_blocks):
    head = b"".join(b"1 qid:1 1:0.5 2:1.5\n" for _ in range(200))
    tail = b"".join(b"0 qid:2 3:2.5 7:3.5\n" for _ in range(200))  # a wider block, later
    shard = parse_letor(head + tail)
    assert shard.features.shape == (400, 7)
    assert shard.features[0, 1] == 1.5 and np.isnan(shard.features[0, 6])
    assert shard.features[399, 6] == 3.5 and np.isnan(shard.features[399, 0])
    np.testing.assert_array_equal(parse_letor(head + tail, 9).features[:, :7], shard.features)


def test_a_range_is_streamed_in_pieces_and_parsed_exactly(tmp_path, small_blocks):
    from modeleval.engine.datasets import parse_letor_stream

    data = make_letor(900, 10, mean_group=12, seed=12)
    text = letor_bytes(data)
    path = tmp_path / "d.txt"
    path.write_bytes(b"xxxx" + text + b"yyyy")
    storage = Storage(allow_file=True)
    pieces = []
    with storage.open_range(path.as_uri(), 4, 4 + len(text)) as read:
        def counting(n: int) -> bytes:
            pieces.append(read(n))
            return pieces[-1]

        shard = parse_letor_stream(counting, len(text), 10, "d.txt", lambda: pytest.fail("re-read"))
    assert len(pieces) > 10 and max(map(len, pieces)) <= 1024 and b"".join(pieces) == text
    np.testing.assert_array_equal(shard.features, data.features)
    np.testing.assert_array_equal(shard.qids, data.qids)


def test_a_stream_that_turns_irregular_is_parsed_again_whole(small_blocks):
    from modeleval.engine.datasets import parse_letor_stream

    lines = letor_bytes(make_letor(300, 5, seed=13)).splitlines(keepends=True)
    lines[250] = b"3 qid:5 2:0.5 # a comment\n"
    text = b"".join(lines)
    reads = []
    shard = parse_letor_stream(io.BytesIO(text).read, len(text), 5, "d.txt",
                               lambda: reads.append(1) or text)
    assert reads == [1] and shard.rows == 300 and shard.features[250, 1] == np.float32(0.5)


def test_parts_are_written_through_a_file_and_leave_no_spool(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    shard = parse_letor(letor_bytes(make_letor(300, 6, seed=14)), 6)
    storage = Storage(allow_file=True)
    node = tmp_path / "node"
    PartStore(storage, str(node), 2**20).write((tmp_path / "shared" / "a.arrow").as_uri(), shard)
    PartStore(storage).write((tmp_path / "shared" / "b.arrow").as_uri(), shard)
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["a.arrow", "b.arrow"]
    assert not node.exists()  # a file:// cache is local already
    assert not list((tmp_path / "tmp").iterdir())  # no spool left
    back = PartStore(storage).read((tmp_path / "shared" / "b.arrow").as_uri(), 6)
    np.testing.assert_array_equal(back.features, shard.features)


def test_a_part_is_still_written_when_the_node_disk_refuses(tmp_path):
    shard = parse_letor(letor_bytes(make_letor(100, 4, seed=15)), 4)
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    parts = PartStore(Storage(allow_file=True), str(blocked / "node"), 2**20)
    uri = (tmp_path / "shared" / "p.arrow").as_uri()
    parts.write(uri, shard)
    np.testing.assert_array_equal(parts.read(uri, 4).labels, shard.labels)


def test_dense_lines_narrower_than_num_features_leave_the_rest_missing(small_blocks):
    data = make_letor(300, 5, seed=16)
    shard = parse_letor(letor_bytes(data), 8)
    assert shard.features.shape == (300, 8) and np.isnan(shard.features[:, 5:]).all()
    np.testing.assert_array_equal(shard.features[:, :5], data.features)


def test_range_count_fills_the_last_round_of_task_slots(tmp_path, monkeypatch):
    from modeleval.engine import datasets

    text = letor_bytes(make_letor(3000, 8, mean_group=10, seed=17))
    path = tmp_path / "d.txt"
    path.write_bytes(text)
    storage = Storage()
    info = storage.stat(path.as_uri())
    monkeypatch.setattr(datasets, "_MIN_RANGE_BYTES", 1024)
    shard = len(text) // 11 + 1  # 11 ranges of this size
    assert len(letor_ranges(storage, info, shard)) == 11
    assert len(letor_ranges(storage, info, shard, slots=2)) == 12
    assert len(letor_ranges(storage, info, shard, slots=4)) == 12
    assert len(letor_ranges(storage, info, shard, slots=8)) == 16
    # Never below the minimum range size: a small file stays whole.
    monkeypatch.setattr(datasets, "_MIN_RANGE_BYTES", len(text))
    assert len(letor_ranges(storage, info, len(text), slots=8)) == 1


def test_local_writes_replace_whole_files_and_refuse_when_file_uris_are_off(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"part")
    target = tmp_path / "out" / "p.arrow"
    storage = Storage(allow_file=True)
    storage.write_file(target.as_uri(), source)
    storage.write(target.as_uri(), b"newer")
    assert target.read_bytes() == b"newer" and [p.name for p in target.parent.iterdir()] == ["p.arrow"]
    refused = tmp_path / "refused" / "p.arrow"
    for write in (lambda: Storage(allow_file=False).write(refused.as_uri(), b"x"),
                  lambda: Storage(allow_file=False).write_file(refused.as_uri(), source)):
        with pytest.raises(StorageError, match="file:// URIs are refused") as error:
            write()
        assert error.value.reason == Reason.InvalidSpec
    assert not refused.parent.exists()
