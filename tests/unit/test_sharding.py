"""Shards never split a query group: byte ranges of a LETOR file and row ranges of a table."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from modeleval.demo import letor_bytes, make_letor
from modeleval.engine.letor import parse_letor
from modeleval.engine import sharding
from modeleval.engine.sharding import group_aligned_splits, letor_ranges
from modeleval.engine.storage import Storage


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


def test_range_count_fills_the_last_round_of_task_slots(tmp_path):
    text = letor_bytes(make_letor(3000, 8, mean_group=10, seed=17))
    path = tmp_path / "d.txt"
    path.write_bytes(text)
    storage = Storage()
    info = storage.stat(path.as_uri())
    shard = len(text) // 11 + 1  # 11 ranges of this size
    assert len(letor_ranges(storage, info, shard, min_range_bytes=1024)) == 11
    assert len(letor_ranges(storage, info, shard, slots=2, min_range_bytes=1024)) == 12
    assert len(letor_ranges(storage, info, shard, slots=4, min_range_bytes=1024)) == 12
    assert len(letor_ranges(storage, info, shard, slots=8, min_range_bytes=1024)) == 16
    # Never below the minimum range size: a small file stays whole, and with the default
    # minimum (megabytes) this file is not cut to fill slots at all.
    assert len(letor_ranges(storage, info, len(text), slots=8, min_range_bytes=len(text))) == 1
    assert len(letor_ranges(storage, info, shard, slots=8)) == 11



@pytest.mark.parametrize("window", [5, 64, 1 << 20])
def test_lines_are_read_in_windows_of_any_size(monkeypatch, tmp_path, window):
    text = b"1 qid:1 1:0.5\n\n2 qid:1 1:0.25 2:1\n" + b"0 qid:2 3:7\n" * 20 + b"1 qid:3 1:1"
    path = tmp_path / "d.txt"
    path.write_bytes(text)
    monkeypatch.setattr(sharding, "_WINDOW", window)
    lines = list(sharding._lines_from(Storage(), path.as_uri(), 14, len(text)))
    offsets = [14]
    for line in text[14:].split(b"\n")[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    assert lines == list(zip(offsets, text[14:].split(b"\n")))


class _SlowStorage(Storage):
    """Object storage whose every read takes a while (S3's latency), served from a local file;
    counts the reads in flight at once."""

    def __init__(self, path):
        super().__init__()
        self.path, self.inflight, self.most = path, 0, 0
        self.lock = threading.Lock()

    def read(self, uri, start=None, end=None, not_found=None):
        with self.lock:
            self.inflight += 1
            self.most = max(self.most, self.inflight)
        time.sleep(0.02)
        with self.lock:
            self.inflight -= 1
        return super().read(self.path.as_uri(), start, end)


def test_group_boundaries_in_object_storage_are_looked_for_side_by_side(tmp_path):
    text = letor_bytes(make_letor(3000, 8, mean_group=10, seed=17))
    path = tmp_path / "d.txt"
    path.write_bytes(text)
    info = Storage().stat(path.as_uri())
    shard = len(text) // 11 + 1
    local = letor_ranges(Storage(), info, shard, min_range_bytes=1024)
    slow = _SlowStorage(path)
    remote = letor_ranges(slow, replace(info, uri="s3://bucket/d.txt"), shard,
                          min_range_bytes=1024)
    assert remote == local and len(remote) == 11
    assert slow.most > 1, "the boundaries were looked for one after another"
