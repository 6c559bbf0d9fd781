"""Datasets: LETOR/SVMlight (``label qid:Q i:v ...``, the MSLR-WEB10K/30K format, read as is),
Parquet and CSV, turned into one columnar shape: ``label``, ``qid`` and ``f1..fN``.

Parsing is vectorised with pyarrow (no Python loop per line). A LETOR file is cut into byte
ranges whose edges are moved to query-group boundaries, so a shard never splits a group and each
range can be parsed by a different Ray task. Parsed shards are cached as Arrow parts under a
key derived from the source's fingerprint, so a second evaluation of the same data skips parsing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import DatasetError, Reason, StorageError
from .storage import ObjectInfo, Storage, content_digest, file_path, join_uri

LABEL = "label"
QID = "qid"
CACHE_LAYOUT_VERSION = 3
DEFAULT_SHARD_BYTES = 32 * 2**20
_MIN_RANGE_BYTES = 4 * 2**20
_WINDOW = 1 * 2**20


def feature_name(index: int) -> str:
    """Column name of 0-based feature ``index`` (``f1`` is LETOR's feature 1)."""
    return f"f{index + 1}"


@dataclass(frozen=True)
class ParsedShard:
    """A parsed piece of a dataset: labels, query ids and a dense float32 feature matrix whose
    absent (sparse) entries are NaN, which XGBoost and ONNX models treat as missing."""

    labels: np.ndarray
    qids: np.ndarray | None
    features: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.labels)


# ------------------------------------------------------------------------------------- LETOR
def parse_letor(data: bytes, num_features: int | None = None, where: str = "dataset") -> ParsedShard:
    """Parses whole LETOR/SVMlight lines. Feature indices are 1-based, as in MSLR and LETOR 4.0;
    lines may be sparse (any subset of features, in any order); ``# comments`` are ignored."""
    return parse_letor_stream(io.BytesIO(data).read, len(data), num_features, where, lambda: data)


def parse_letor_stream(read: Callable[[int], bytes], size: int, num_features: int | None,
                       where: str, read_all: Callable[[], bytes]) -> ParsedShard:
    """Parses about ``size`` bytes of whole LETOR lines from ``read(n)`` (a stream: a range of
    an object in S3), holding one block of lines at a time. Input that is not uniform goes to
    the general parser, which gets the whole text from ``read_all()``."""
    shard = _parse_uniform(_line_blocks(read), size, num_features)
    if shard is not None:
        return shard
    data = read_all()
    if not data.strip():
        return ParsedShard(np.empty(0, np.float32), np.empty(0, np.int64),
                           np.empty((0, num_features or 0), np.float32))
    return _parse_tokens(data, num_features, where)


_COLON_TO_SPACE = bytes.maketrans(b":", b" ")
_BLOCK_BYTES = 2 * 2**20


@dataclass(frozen=True)
class _Layout:
    """The column layout of a uniform LETOR file, read from its first line."""

    names: list[str]
    types: dict[str, pa.DataType]
    has_qid: bool
    pairs: list[tuple[str, str]]  # (index column, value column) per feature token

    @classmethod
    def of(cls, first: bytes) -> "_Layout | None":
        columns = first.translate(_COLON_TO_SPACE).rstrip(b"\r").split(b" ")
        # MSLR's lines end with a space: an empty last column, read and then left out.
        tokens = columns[:-1] if len(columns) > 1 and not columns[-1] else columns
        has_qid = len(tokens) > 2 and tokens[1] == b"qid"
        first_pair = 3 if has_qid else 1
        if not all(tokens) or len(tokens) < first_pair or (len(tokens) - first_pair) % 2:
            return None
        names = [f"c{i}" for i in range(len(columns))]
        types = {"c0": pa.float32()}
        if has_qid:
            types["c2"] = pa.int64()
        pairs = [(names[i], names[i + 1]) for i in range(first_pair, len(tokens), 2)]
        for index, value in pairs:
            types[index], types[value] = pa.int32(), pa.float32()
        return cls(names, types, has_qid, pairs)

    def read(self, text: bytes) -> pa.Table | None:
        try:
            table = pacsv.read_csv(
                pa.BufferReader(pa.py_buffer(text)),
                # One thread: a task holds one CPU, and tasks run side by side.
                read_options=pacsv.ReadOptions(column_names=self.names, block_size=2 * _BLOCK_BYTES,
                                               use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=" ", quote_char=False, double_quote=False),
                convert_options=pacsv.ConvertOptions(column_types=self.types,
                                                     include_columns=list(self.types)),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # not this layout: the general parser reads it or names what is wrong
        return None if any(table.column(n).null_count for n in self.types) else table


def _line_blocks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Blocks of whole lines, about _BLOCK_BYTES each, read from a stream."""
    carry = b""
    while True:
        piece = read(_BLOCK_BYTES)
        if not piece:
            if carry:
                yield carry
            return
        text = carry + piece if carry else piece
        cut = text.rfind(b"\n") + 1
        if cut:
            yield text[:cut] if cut < len(text) else text
        carry = text[cut:]


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    grown = np.empty((rows, *array.shape[1:]), array.dtype)
    grown[:len(array)] = array
    return grown


def _parse_uniform(blocks: Iterator[bytes], size: int, num_features: int | None) -> ParsedShard | None:
    """The fast path for files whose lines all have the same layout (MSLR's are dense: every
    line lists features 1..136): with ``:`` read as a separator, a block of lines is a
    space-delimited table that Arrow's CSV reader parses. Blocks are parsed one at a time
    straight into the shard's arrays, so only one block's text and table are held at once.
    Returns None for anything irregular (sparse lines, stray spaces, bad tokens, comments); the
    general path then parses it or names the error."""
    layout = None
    labels = np.empty(0, np.float32)
    qids = np.empty(0, np.int64)
    features = np.empty((0, num_features or 0), np.float32)
    rows = done = 0
    for text in blocks:
        done += len(text)
        if b"#" in text:
            return None
        if layout is None:
            body = text.lstrip()
            if not body:
                continue
            end = body.find(b"\n")
            layout = _Layout.of(body[:end if end >= 0 else len(body)])
            if layout is None:
                return None
        table = layout.read(text.translate(_COLON_TO_SPACE))
        if table is None:
            return None
        n = table.num_rows
        if n == 0:
            continue
        index = np.empty((n, len(layout.pairs)), np.int32)
        for j, (column, _) in enumerate(layout.pairs):
            index[:, j] = as_numpy(table.column(column))
        low, high = index.min(axis=0, initial=1), index.max(axis=0, initial=0)
        if (low < 1).any():
            return None  # the general path names the bad index
        width = int(high.max(initial=0))
        if num_features is not None and width > num_features:
            return None
        if rows + n > len(labels):  # room for the rest, estimated from the bytes per line so far
            estimate = rows + n + int((size - done) * (rows + n) / done * 1.05) + 1
            labels, qids = _grown(labels, estimate), _grown(qids, estimate)
            features = _grown(features, estimate)
            features[rows:] = np.nan
        if width > features.shape[1]:  # only when the width is not given and a block widens it
            wider = np.full((len(features), width), np.nan, dtype=np.float32)
            wider[:, :features.shape[1]] = features
            features = wider
        block = features[rows:rows + n]
        values = [as_numpy(table.column(column)) for _, column in layout.pairs]
        if len(values) == width and (low == high).all() and (low == np.arange(1, width + 1)).all():
            np.stack(values, axis=1, out=block[:, :width])  # MSLR: features 1..N, in order
        elif values and (low == high).all():
            block[:, low - 1] = np.stack(values, axis=1)  # the same features on every line
        elif values:
            block[np.arange(n)[:, None], index - 1] = np.stack(values, axis=1)
        labels[rows:rows + n] = as_numpy(table.column("c0"))
        if layout.has_qid:
            qids[rows:rows + n] = as_numpy(table.column("c2"))
        rows += n
    if layout is None:
        return ParsedShard(np.empty(0, np.float32), np.empty(0, np.int64),
                           np.empty((0, num_features or 0), np.float32))
    return ParsedShard(labels[:rows], qids[:rows] if layout.has_qid else None, features[:rows])


def _parse_tokens(data: bytes, num_features: int | None, where: str) -> ParsedShard:
    """The general path: any mix of sparse lines, comments and feature orders."""
    try:
        text = pa.array([data], type=pa.large_binary()).cast(pa.large_string())
    except pa.ArrowInvalid:
        raise DatasetError(f"{where}: not text (invalid UTF-8); a LETOR file is text lines "
                           "'label qid:Q index:value ...'") from None
    lines = pc.list_flatten(pc.split_pattern(text, "\n"))
    if b"#" in data:
        lines = pc.replace_substring_regex(lines, r"#.*$", "")
    lines = pc.utf8_trim_whitespace(lines)
    lines = pc.filter(lines, pc.not_equal(pc.utf8_length(lines), 0))
    n = len(lines)
    tokens = pc.ascii_split_whitespace(lines)
    counts = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(tokens)
    starts = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])

    labels = _floats(pc.take(flat, pa.array(starts)), where, "label")
    has_qid = counts >= 2
    second = pc.take(flat, pa.array(np.minimum(starts + 1, len(flat) - 1)))
    is_qid = pc.and_(pa.array(has_qid), pc.starts_with(second, "qid:")).to_numpy(zero_copy_only=False)
    if is_qid.any() and not is_qid.all():
        row = int(np.flatnonzero(~is_qid)[0])
        raise DatasetError(f"{where}: line {row + 1} of a shard has no qid: while others do")
    qids = None
    first_feature = starts + 1
    if is_qid.all():
        qid_text = pc.utf8_slice_codeunits(second, 4)
        try:
            qids = pc.cast(qid_text, pa.int64()).to_numpy()
        except pa.ArrowInvalid as error:
            raise DatasetError(f"{where}: a qid is not an integer ({_first_line(error)})") from None
        first_feature = starts + 2

    # Every token after the label (and qid) is "index:value".
    per_line = counts - (first_feature - starts)
    if (per_line < 0).any():
        raise DatasetError(f"{where}: a line has no label")
    out_offsets = np.cumsum(per_line) - per_line
    token_index = np.arange(per_line.sum()) + np.repeat(first_feature - out_offsets, per_line)
    pairs = pc.take(flat, pa.array(token_index))
    parts = pc.split_pattern(pairs, ":", max_splits=1)
    if len(pairs) and (pc.min(pc.list_value_length(parts)).as_py() != 2):
        raise DatasetError(f"{where}: a feature token is not index:value")
    split = pc.list_flatten(parts)
    even = pa.array(np.arange(0, len(split), 2))
    try:
        indices = pc.cast(pc.take(split, even), pa.int64()).to_numpy()
    except pa.ArrowInvalid as error:
        raise DatasetError(f"{where}: a feature index is not an integer ({_first_line(error)})") from None
    values = _floats(pc.take(split, pa.array(np.arange(1, len(split), 2))), where, "feature value")
    if len(indices) and indices.min() < 1:
        raise DatasetError(f"{where}: feature index {int(indices.min())} found; LETOR feature "
                           "indices start at 1")
    width = int(indices.max()) if len(indices) else 0
    if num_features is not None:
        if width > num_features:
            raise DatasetError(f"{where}: feature index {width} exceeds the expected "
                               f"{num_features} features", Reason.SchemaMismatch)
        width = num_features
    features = np.full((n, width), np.nan, dtype=np.float32)
    rows = np.repeat(np.arange(n), per_line)
    features[rows, indices - 1] = values
    return ParsedShard(labels.astype(np.float32), qids, features)


def _floats(array: pa.Array, where: str, what: str) -> np.ndarray:
    try:
        return pc.cast(array, pa.float32()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as error:
        raise DatasetError(f"{where}: a {what} is not a number ({_first_line(error)})") from None


_NUMPY_TYPES = {pa.float32(): np.float32, pa.float64(): np.float64, pa.int64(): np.int64,
                pa.int32(): np.int32}


def as_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow to numpy. A fixed-width column without nulls becomes a view of Arrow's buffer;
    that path, unlike pyarrow's own ``to_numpy``, does not import pandas (about half a second
    in every new worker and job process)."""
    if isinstance(values, pa.ChunkedArray):
        array = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    else:
        array = values
    dtype = _NUMPY_TYPES.get(array.type)
    if dtype is None or array.null_count:
        return array.to_numpy(zero_copy_only=False)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array),
                         offset=array.offset * np.dtype(dtype).itemsize)


def from_numpy(values: np.ndarray) -> pa.Array:
    """numpy to Arrow without pyarrow's pandas check, for the fixed-width types of a part."""
    values = np.ascontiguousarray(values)
    for arrow_type, dtype in _NUMPY_TYPES.items():
        if values.dtype == dtype:
            return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])
    return pa.array(values)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200]


def _line_qid(line: bytes) -> bytes | None:
    match = re.match(rb"\s*\S+\s+qid:(\S+)", line)
    return match.group(1) if match else None


def group_boundary(storage: Storage, uri: str, position: int, size: int) -> int:
    """The first byte offset >= ``position`` that starts a line beginning a new query group.

    Every caller asking about the same position gets the same answer, so adjacent shards agree
    on where one ends and the next begins, and no query group is split between them.
    """
    if position <= 0:
        return 0
    if position >= size:
        return size
    previous_qid: bytes | None = None
    seen = False
    for offset, line in _lines_from(storage, uri, _line_start(storage, uri, position - 1), size):
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        qid = _line_qid(line)
        if offset >= position and (qid is None or (seen and qid != previous_qid)):
            return offset
        previous_qid, seen = qid, True
    return size


def _line_start(storage: Storage, uri: str, position: int) -> int:
    """Offset of the first byte of the line that contains byte ``position``."""
    end = position
    while end > 0:
        begin = max(0, end - _WINDOW)
        newline = storage.read(uri, begin, end).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def _lines_from(storage: Storage, uri: str, offset: int, size: int):
    """(offset, line) pairs from ``offset`` on, read in windows."""
    buffer, cursor = b"", offset
    while True:
        newline = buffer.find(b"\n")
        if newline < 0 and cursor < size:
            chunk = storage.read(uri, cursor, min(size, cursor + _WINDOW))
            buffer, cursor = buffer + chunk, cursor + len(chunk)
            continue
        if newline < 0:
            if buffer:
                yield offset, buffer
            return
        yield offset, buffer[:newline]
        offset += newline + 1
        buffer = buffer[newline + 1:]


def letor_ranges(storage: Storage, info: ObjectInfo, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 slots: int = 1) -> list[tuple[int, int]]:
    """Byte ranges of at most about ``shard_bytes`` whose edges sit on query-group boundaries.
    Their count is a multiple of ``slots`` (the tasks that can run at once), so the last round
    of tasks keeps every slot busy, unless that would make ranges smaller than _MIN_RANGE_BYTES."""
    if info.size == 0:
        return []
    count = max(1, -(-info.size // shard_bytes))
    if slots > 1:
        count = max(count, min(-(-count // slots) * slots, info.size // _MIN_RANGE_BYTES))
    edges = [0] + [group_boundary(storage, info.uri, i * info.size // count, info.size)
                   for i in range(1, count)] + [info.size]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


# ------------------------------------------------------------------------- Parquet and CSV
def table_to_shard(table: pa.Table, label_column: str, group_column: str | None,
                   feature_columns: list[str] | None, keep: list[str], where: str) -> ParsedShard:
    """Columns of a Parquet/CSV table as a shard; features in ``feature_columns`` order."""
    names = table.column_names
    for column in [label_column, *([group_column] if group_column else []), *keep]:
        if column not in names:
            raise DatasetError(f"{where}: column '{column}' not found (columns: "
                               f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''})",
                               Reason.SchemaMismatch)
    if feature_columns is None:
        skip = {label_column, group_column, *keep}
        feature_columns = [c for c in names if c not in skip
                           and (pa.types.is_integer(table.schema.field(c).type)
                                or pa.types.is_floating(table.schema.field(c).type)
                                or pa.types.is_boolean(table.schema.field(c).type))]
    missing = [c for c in feature_columns if c not in names]
    if missing:
        raise DatasetError(f"{where}: feature columns not found: {', '.join(missing[:10])}",
                           Reason.SchemaMismatch)
    try:
        features = np.empty((table.num_rows, len(feature_columns)), dtype=np.float32)
        for j, column in enumerate(feature_columns):
            features[:, j] = pc.cast(table.column(column), pa.float32()).to_numpy(zero_copy_only=False)
        labels = pc.cast(table.column(label_column), pa.float32()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise DatasetError(f"{where}: a feature or label column is not numeric "
                           f"({_first_line(error)})") from None
    if np.isnan(labels).any():
        raise DatasetError(f"{where}: the label column '{label_column}' has empty values",
                           Reason.LabelError)
    qids = None
    if group_column:
        qids = _as_group_ids(table.column(group_column))
    extra = {c: table.column(c).to_numpy(zero_copy_only=False) for c in keep}
    return ParsedShard(labels, qids, features, extra)


def _as_group_ids(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_integer(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.int64)
    # Non-integer query ids (strings, say) become dense integer codes in order of appearance.
    encoded = pc.dictionary_encode(column.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def read_table(storage: Storage, uri: str, fmt: str) -> pa.Table:
    data = storage.read(uri, not_found=Reason.DatasetNotFound)
    try:
        if fmt == "parquet":
            return pq.read_table(io.BytesIO(data))
        return pacsv.read_csv(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetError(f"{uri}: not a readable {fmt} file ({_first_line(error)})") from None


def group_aligned_splits(qids: np.ndarray | None, rows: int, parts: int) -> list[tuple[int, int]]:
    """Row ranges for ``parts`` shards, each edge moved to the start of a query group."""
    if rows == 0:
        return []
    parts = max(1, min(parts, rows))
    targets = [i * rows // parts for i in range(1, parts)]
    if qids is None:
        edges = targets
    else:
        starts = np.flatnonzero(np.concatenate(([True], qids[1:] != qids[:-1])))
        # The first group start at or after each target; past the last group, the end.
        edges = np.append(starts, rows)[np.searchsorted(starts, targets)].tolist()
    bounds = sorted({0, *edges, rows})
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


# ------------------------------------------------------------------------------- cache
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
        """Encodes the part into a file (the node-local copy when there is one), then uploads
        that file: the encoded part is never held in memory besides the shard itself."""
        local = self._local_path(uri)
        spool = None
        try:
            try:
                spool = self._spool(local)
                write_part(shard, spool)
            except OSError:  # a full or read-only disk only costs memory: encode in memory
                self.storage.write(uri, encode_part(shard))
                return
            self.storage.write_file(uri, spool)
            if local is not None and spool.stat().st_size <= self.node_bytes:
                spool.replace(local)
                self._evict()
        finally:
            if spool is not None:
                with contextlib.suppress(OSError):
                    spool.unlink()

    @staticmethod
    def _spool(local: Path | None) -> Path:
        """Where a part is encoded: next to its node-local copy, else a temporary file."""
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            return local.with_name(f".{local.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        handle, name = tempfile.mkstemp(prefix="modeleval-part-", suffix=".arrow")
        os.close(handle)
        return Path(name)

    def read(self, uri: str, num_features: int, keep: Sequence[str] = ()) -> ParsedShard:
        if uri.startswith("file://"):
            self.storage.stat(uri)  # the same checks and errors as any read
            return decode_part(pa.memory_map(str(file_path(uri))), num_features, keep, uri)
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
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
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
    return pa.table(columns).replace_schema_metadata({"width": str(width), "rows": str(rows)})


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
        raise StorageError(f"{where}: a cached part is unreadable ({_first_line(error)})",
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
    return ParsedShard(labels, qids, features, extra)


def _column_numpy(table: pa.Table, name: str) -> np.ndarray:
    return as_numpy(table.column(name))
