"""Cached parts round-trip exactly, are refused when damaged, and are written through a file that
becomes the node-local copy when it fits."""

from __future__ import annotations

import numpy as np
import pytest

from modeleval.demo import letor_bytes, make_letor
from modeleval.engine.cache import PartStore
from modeleval.engine.errors import StorageError
from modeleval.engine.letor import parse_letor
from modeleval.engine.shard import ParsedShard
from modeleval.engine.storage import Storage


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
    # The part records its incomplete rows: a read need not look at every value again.
    assert back.incomplete == int(np.isnan(shard.features).any(axis=1).sum()) > 0


def test_a_part_without_its_incomplete_rows_recorded_is_counted_when_read(tmp_path):
    """Parts written before the count was recorded read as not counted, and are counted on
    use, to the same figure."""
    import pyarrow as pa

    from modeleval.engine import cache

    shard = parse_letor(letor_bytes(make_letor(300, 6, seed=9, sparse=0.2)), 6)
    table = cache._part_table(shard)
    old = table.replace_schema_metadata({k: v for k, v in table.schema.metadata.items()
                                         if k != b"incomplete"})
    path = tmp_path / "old.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, old.schema) as writer:
        writer.write_table(old)
    back = PartStore(Storage()).read(path.as_uri(), 6)
    assert back.incomplete is None
    assert back.counted().incomplete == shard.counted().incomplete > 0


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


class MemoryStorage:
    """Object storage in a dict: ``s3://`` parts, which a node-local tier copies, without a server."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def write(self, uri: str, data: bytes) -> None:
        self.objects[uri] = bytes(data)

    def write_file(self, uri: str, path) -> None:
        self.objects[uri] = path.read_bytes()

    def read(self, uri: str, start: int | None = None, end: int | None = None) -> bytes:
        return self.objects[uri][start:end]

    def local_path(self, uri: str) -> None:
        return None  # no object here is a file on this machine


def test_a_written_part_becomes_the_node_local_copy_when_it_fits(tmp_path):
    shard = parse_letor(letor_bytes(make_letor(300, 6, seed=19)), 6)
    storage = MemoryStorage()
    node, small = tmp_path / "node", tmp_path / "small"
    PartStore(storage, str(node), 2**20).write("s3://b/cache/a.arrow", shard)
    PartStore(storage, str(small), 100).write("s3://b/cache/b.arrow", shard)
    kept = list(node.iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == storage.objects["s3://b/cache/a.arrow"]
    assert not list(small.iterdir())  # larger than that tier: uploaded only, nothing staged left
    del storage.objects["s3://b/cache/a.arrow"]  # a read now has only the local copy
    back = PartStore(storage, str(node), 2**20).read("s3://b/cache/a.arrow", 6)
    np.testing.assert_array_equal(back.features, shard.features)


def test_a_part_read_from_the_shared_tier_is_kept_on_the_node(tmp_path):
    shard = parse_letor(letor_bytes(make_letor(200, 5, seed=20)), 5)
    storage = MemoryStorage()
    PartStore(storage).write("s3://b/cache/p.arrow", shard)
    node = tmp_path / "node"
    PartStore(storage, str(node), 2**20).read("s3://b/cache/p.arrow", 5)
    kept = list(node.iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == storage.objects["s3://b/cache/p.arrow"]


def test_a_part_is_read_locally_only_from_a_file_on_this_node(tmp_path):
    """What a predicting actor reads a part with: the node-local copy or a file:// part,
    memory-mapped; None (never a download) where this node has no readable copy."""
    shard = parse_letor(letor_bytes(make_letor(200, 5, seed=23)), 5)
    storage = MemoryStorage()
    storage.allow_file = True
    node = tmp_path / "node"
    parts = PartStore(storage, str(node), 2**20)
    parts.write("s3://b/cache/a.arrow", shard)
    np.testing.assert_array_equal(parts.read_local("s3://b/cache/a.arrow", 5).features,
                                  shard.features)
    assert parts.read_local("s3://b/cache/other.arrow", 5) is None  # in the shared tier only
    storage.write("s3://b/cache/other.arrow", b"")
    assert PartStore(storage).read_local("s3://b/cache/a.arrow", 5) is None  # no node tier
    next(node.iterdir()).write_bytes(b"damaged")
    assert parts.read_local("s3://b/cache/a.arrow", 5) is None
    local = (tmp_path / "p.arrow").as_uri()
    PartStore(Storage()).write(local, shard)
    assert PartStore(Storage()).read_local(local, 5).rows == 200
    assert PartStore(Storage(allow_file=False)).read_local(local, 5) is None
