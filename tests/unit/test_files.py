"""Files are written whole: a reader sees the old content or the whole new one, and a write that
fails or is abandoned leaves the old file and nothing else."""

from __future__ import annotations

import threading

import pytest

from modeleval.engine.errors import Reason, StorageError
from modeleval.files import StagedFile, atomic_write
from modeleval.engine.storage import Storage


def test_atomic_write_replaces_the_whole_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "a" / "b" / "doc.json"
    atomic_write(path, b"first, and longer than the second")
    atomic_write(path, "zweite Fassung \u2713")  # text is written as UTF-8
    assert path.read_text(encoding="utf-8") == "zweite Fassung \u2713"
    assert [p.name for p in path.parent.iterdir()] == ["doc.json"]


def test_the_old_content_stays_until_the_commit(tmp_path):
    path = tmp_path / "part.arrow"
    path.write_bytes(b"old")
    with StagedFile(path) as staged:
        staged.temp.write_bytes(b"new")
        assert path.read_bytes() == b"old" and staged.temp.parent == path.parent
        staged.commit()
        assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["part.arrow"]


def test_a_failed_or_abandoned_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "part.arrow"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        with StagedFile(path) as staged:
            staged.temp.write_bytes(b"half")
            raise OSError("disk full")
    with StagedFile(path) as staged:
        staged.temp.write_bytes(b"not wanted")  # never committed
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["part.arrow"]


def test_concurrent_writers_of_one_path_never_mix_their_content(tmp_path):
    path = tmp_path / "shared.bin"
    payloads = [bytes([i]) * (1000 + 5000 * i) for i in range(4)]
    errors: list[Exception] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(30):
                atomic_write(path, data)
        except OSError as error:  # e.g. another writer moved a shared temporary file away
            errors.append(error)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and path.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


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
