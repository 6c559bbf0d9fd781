"""The cache of parsed datasets: Arrow IPC parts under a key derived from the source's
fingerprint and the parse options, so a second evaluation of the same data skips parsing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import Reason, StorageError
from ..files import StagedFile, atomic_write
from .shard import ParsedShard, arrow_message, as_numpy, from_numpy
from .storage import ObjectInfo, Storage, content_digest, join_uri

LABEL = "label"
QID = "qid"
CACHE_LAYOUT_VERSION = 3


@dataclass
class CacheManifest:
    """What a complete cache entry holds; written last, so its presence means complete."""

    source_uri: str
    fingerprint: str
    parts: list[str]
    rows: list[int]
    num_features: int
    has_qid: bool
    layout: int = CACHE_LAYOUT_VERSION
    # A table's feature columns, in order (None: LETOR, whose features are their indices).
    feature_names: list[str] | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.rows)


class DatasetCache:
    """Parsed datasets as Arrow IPC parts under ``<root>/<key>/``, keyed by source fingerprint and
    parse options; a ``manifest.json`` written after every part marks the entry complete."""

    def __init__(self, storage: Storage, root: str):
        self.storage = storage
        self.root = root.rstrip("/")

    @staticmethod
    def key(info: ObjectInfo, options: dict) -> str:
        blob = json.dumps({"fp": info.fingerprint, "uri": info.uri, "opts": options,
                           "layout": CACHE_LAYOUT_VERSION}, sort_keys=True)
        return content_digest(blob.encode())

    def entry(self, key: str) -> str:
        return join_uri(self.root, key)

    def part_uri(self, key: str, index: int) -> str:
        return join_uri(self.entry(key), f"part-{index:05d}.arrow")

    def load_manifest(self, key: str) -> CacheManifest | None:
        try:
            raw = self.storage.read(join_uri(self.entry(key), "manifest.json"))
        except StorageError as error:
            if error.reason == Reason.DatasetNotFound:
                return None
            raise
        try:
            manifest = CacheManifest(**json.loads(raw))
        except (ValueError, TypeError):
            return None  # an unreadable entry is rebuilt, not trusted
        return manifest if manifest.layout == CACHE_LAYOUT_VERSION else None

    def save_manifest(self, key: str, manifest: CacheManifest) -> None:
        self.storage.write(join_uri(self.entry(key), "manifest.json"),
                           json.dumps(asdict(manifest)).encode())


class PartStore:
    """Cached parts, as Arrow IPC files whose features are one row-major float32 block, so a read
    is a zero-copy view rather than a decode.

    Two tiers: the shared cache (``s3://`` or a directory, durable, seen by every node) and an
    optional node-local directory of copies, bounded in bytes (least recently used go first) and
    memory-mapped on read. A part's URI names immutable content (its cache key covers the source's
    fingerprint and the parse options), so a local copy never goes stale.
    """

    def __init__(self, storage: Storage, node_dir: str | None = None, node_bytes: int = 0):
        self.storage = storage
        self.node_dir = node_dir if node_bytes > 0 else None
        self.node_bytes = node_bytes

    def write(self, uri: str, shard: ParsedShard) -> None:
        """Encodes the part into a file, then uploads that file: the encoded part is never held in
        memory besides the shard itself. With a node-local tier the file is staged there and,
        once uploaded, becomes the node-local copy."""
        local = self._local_path(uri)
        with contextlib.ExitStack() as cleanup:
            try:
                staged = cleanup.enter_context(StagedFile(local)) if local is not None else None
                spool = staged.temp if staged is not None else cleanup.enter_context(_scratch_file())
                write_part(shard, spool)
            except OSError:  # a full or read-only disk only costs memory: encode in memory
                self.storage.write(uri, encode_part(shard))
                return
            self.storage.write_file(uri, spool)
            if staged is not None and spool.stat().st_size <= self.node_bytes:
                staged.commit()
                self._evict()

    def read(self, uri: str, num_features: int, keep: Sequence[str] = ()) -> ParsedShard:
        if (path := self.storage.local_path(uri)) is not None:
            self.storage.stat(uri)  # the same checks and errors as any read
            return decode_part(pa.memory_map(str(path)), num_features, keep, uri)
        local = self._local_path(uri)
        if local is not None and local.exists():
            try:
                os.utime(local)  # most recently used
                return decode_part(pa.memory_map(str(local)), num_features, keep, uri)
            except (OSError, StorageError):
                with contextlib.suppress(OSError):
                    local.unlink()  # a damaged copy is dropped; the shared tier has the part
        data = self.storage.read(uri)
        self._keep_local(uri, data)
        return decode_part(pa.py_buffer(data), num_features, keep, uri)

    def read_local(self, uri: str, num_features: int) -> ParsedShard | None:
        """The part from a file on this node (a file:// cache, or the node-local copy),
        memory-mapped; None where this node has none or cannot read it: it is never fetched
        here. (A part's URI names immutable content, so any node's copy is the part.)"""
        path = self.storage.local_path(uri) or self._local_path(uri)
        if path is None:
            return None
        try:
            return decode_part(pa.memory_map(str(path)), num_features, (), uri)
        except (OSError, StorageError):
            return None

    # ------------------------------------------------------------------ node-local tier
    def _local_path(self, uri: str) -> Path | None:
        if self.node_dir is None or uri.startswith("file://"):
            return None
        return Path(self.node_dir) / f"{hashlib.sha256(uri.encode()).hexdigest()[:40]}.arrow"

    def _keep_local(self, uri: str, data: bytes) -> None:
        path = self._local_path(uri)
        if path is None or len(data) > self.node_bytes:
            return
        try:  # a full or read-only disk only costs speed: the shared tier has the part
            atomic_write(path, data)
            self._evict()
        except OSError:
            return

    def _evict(self) -> None:
        entries = []
        for entry in os.scandir(self.node_dir):
            if entry.name.endswith(".arrow"):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat()
                    entries.append((st.st_mtime, st.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.node_bytes:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a reader that mapped it keeps its view
            total -= size


@contextlib.contextmanager
def _scratch_file() -> Iterator[Path]:
    """A new temporary file, removed on the way out."""
    handle, name = tempfile.mkstemp(prefix="modeleval-part-", suffix=".arrow")
    os.close(handle)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


_FEATURES = "features"


def _part_table(shard: ParsedShard) -> pa.Table:
    """A shard as a table: label, qid, kept columns, and ``features`` as one
    FixedSizeList<float32> column (the dense matrix, row-major, not copied)."""
    rows, width = shard.features.shape
    columns = {LABEL: from_numpy(shard.labels)}
    if shard.qids is not None:
        columns[QID] = from_numpy(shard.qids)
    for name, values in shard.extra.items():
        columns[name] = pa.array(values)
    if width:
        flat = from_numpy(np.ascontiguousarray(shard.features, dtype=np.float32).reshape(-1))
        columns[_FEATURES] = pa.FixedSizeListArray.from_arrays(flat, width)
    counted = shard.counted()
    return pa.table(columns).replace_schema_metadata({"width": str(width), "rows": str(rows),
                                                      "incomplete": str(counted.incomplete),
                                                      "missing": str(counted.missing)})


def write_part(shard: ParsedShard, path: Path) -> None:
    """A shard as an Arrow IPC file at ``path``."""
    table = _part_table(shard)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def encode_part(shard: ParsedShard) -> bytes:
    """A shard as the bytes of an Arrow IPC file."""
    table = _part_table(shard)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_part(source, num_features: int, keep: Sequence[str], where: str) -> ParsedShard:
    try:
        table = pa.ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as error:
        raise StorageError(f"{where}: a cached part is unreadable ({arrow_message(error)})",
                           Reason.StorageUnavailable, retryable=True) from None
    rows = table.num_rows
    labels = _column_numpy(table, LABEL)
    qids = _column_numpy(table, QID) if QID in table.column_names else None
    if _FEATURES in table.column_names and rows:
        values = table.column(_FEATURES).combine_chunks().flatten()
        features = as_numpy(values).reshape(rows, -1)
    else:
        features = np.empty((rows, 0), dtype=np.float32)
    if features.shape[1] != num_features:
        raise StorageError(f"{where}: a cached part has {features.shape[1]} features, its manifest "
                           f"{num_features}", Reason.StorageUnavailable, retryable=True)
    extra = {c: _column_numpy(table, c) for c in keep}
    return ParsedShard(labels, qids, features, extra, *(_recorded(table, key)
                                                        for key in (b"incomplete", b"missing")))


def _recorded(table: pa.Table, key: bytes) -> int | None:
    """A count the part's writer recorded (None in parts written before it was)."""
    value = (table.schema.metadata or {}).get(key)
    return int(value) if value is not None and value.isdigit() else None


def _column_numpy(table: pa.Table, name: str) -> np.ndarray:
    return as_numpy(table.column(name))
