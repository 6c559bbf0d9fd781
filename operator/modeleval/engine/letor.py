"""LETOR/SVMlight text (``label qid:Q i:v ...``, the MSLR-WEB10K/30K format, read as is) parsed
into a :class:`ParsedShard`.

Lines are read a block at a time straight into the shard's arrays by the compiled tokenizer
(``_letor.c``: dense or sparse lines, comments, about 4x Arrow's CSV reader on MSLR). Where the
package was installed without a C compiler, uniform files (MSLR's) go through Arrow's CSV reader
instead. Anything either does not read exactly goes to a general token parser (pyarrow compute,
no Python loop per line) that also names what is wrong with a bad file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import DatasetError, Reason
from .shard import ParsedShard, arrow_message, as_numpy

try:
    from . import _letor
except ImportError:  # installed without a C compiler: Arrow's CSV reader reads uniform files
    _letor = None

DEFAULT_BLOCK_BYTES = 2 * 2**20  # the text a stream is read and parsed in
# The widest a LETOR dataset may be (spec.dataset.numFeatures' bound): a feature index beyond it
# is an error, not a matrix of that width.
MAX_FEATURES = 1_000_000


def first_parser() -> str:
    """Which parser reads LETOR first here, for benchmarks and diagnostics."""
    if _letor is not None:
        return "the compiled tokenizer"
    return "Arrow's CSV reader (modeleval.engine._letor is not built: pip install -e . builds it)"


def parse_letor(data: bytes, num_features: int | None = None, where: str = "dataset", *,
                block_bytes: int = DEFAULT_BLOCK_BYTES) -> ParsedShard:
    """Parses whole LETOR/SVMlight lines. Feature indices are 1-based, as in MSLR and LETOR 4.0;
    lines may be sparse (any subset of features, in any order); ``# comments`` are ignored."""
    return parse_letor_stream(io.BytesIO(data).read, len(data), num_features, where, lambda: data,
                              block_bytes=block_bytes)


def parse_letor_stream(read: Callable[[int], bytes], size: int, num_features: int | None,
                       where: str, read_all: Callable[[], bytes], *,
                       block_bytes: int = DEFAULT_BLOCK_BYTES) -> ParsedShard:
    """Parses about ``size`` bytes of whole LETOR lines from ``read(n)`` (a stream: a range of
    an object in S3), holding one block of about ``block_bytes`` of lines at a time. Input that
    is not uniform goes to the general parser, which gets the whole text from ``read_all()``."""
    if _letor is not None:
        shard = _parse_compiled(_line_blocks(read, block_bytes, arrow=False), size, num_features)
    else:
        shard = _parse_uniform(_line_blocks(read, block_bytes), size, num_features, block_bytes)
    if shard is not None:
        return shard
    data = read_all()
    if not data.strip():
        return _empty(num_features)
    return _parse_tokens(data, num_features, where)


def join_pieces(pieces: list[ParsedShard], num_features: int | None,
                map_: Callable[[Callable, Iterable], Iterable] = map) -> ParsedShard | None:
    """The shard of consecutive pieces of a text, parsed each on its own, exactly as one parse
    of the whole text reads it: the rows in order and, where the width was not given, a piece
    narrower than the widest has NaN (absent) in the other columns, as earlier lines get when
    a parse widens. None where the pieces disagree on query ids (some lines have ``qid:``,
    others not): one parse of the whole names the line. ``map_`` copies the pieces (a thread
    pool's map copies them side by side)."""
    full = [piece for piece in pieces if piece.rows]
    if not full:
        return _empty(num_features)
    if len({piece.qids is None for piece in full}) > 1:
        return None
    if len(full) == 1:
        return full[0]
    width = max(piece.features.shape[1] for piece in full)
    offsets = np.cumsum([0] + [piece.rows for piece in full]).tolist()
    features = np.empty((offsets[-1], width), np.float32)

    def place(i: int) -> None:
        piece, rows = full[i], features[offsets[i]:offsets[i + 1]]
        rows[:, :piece.features.shape[1]] = piece.features
        rows[:, piece.features.shape[1]:] = np.nan

    list(map_(place, range(len(full))))
    qids = None if full[0].qids is None else np.concatenate([piece.qids for piece in full])
    return ParsedShard(np.concatenate([piece.labels for piece in full]), qids, features)


def _empty(num_features: int | None) -> ParsedShard:
    return ParsedShard(np.empty(0, np.float32), np.empty(0, np.int64),
                       np.empty((0, num_features or 0), np.float32))


_COLON_TO_SPACE = bytes.maketrans(b":", b" ")


@dataclass(frozen=True)
class _Layout:
    """The column layout of a uniform LETOR file, read from its first line, and the options of
    Arrow's CSV reader for it (made once per file, not per block)."""

    types: dict[str, pa.DataType]
    has_qid: bool
    tokens: int  # feature tokens per line (an index column and a value column each)
    options: dict[str, Any]

    @classmethod
    def of(cls, first: bytes, block_bytes: int) -> "_Layout | None":
        import pyarrow.csv as pacsv  # the path where the tokenizer is not built (and tests)

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
        options = {
            # One thread: a task holds one CPU, and tasks run side by side.
            "read_options": pacsv.ReadOptions(column_names=names, block_size=2 * block_bytes,
                                              use_threads=False),
            "parse_options": pacsv.ParseOptions(delimiter=" ", quote_char=False, double_quote=False),
            # No token reads as null (an empty one is an error), so no column has nulls.
            "convert_options": pacsv.ConvertOptions(column_types=types, include_columns=list(types),
                                                    null_values=[]),
        }
        return cls(types, has_qid, len(pairs), options)

    def read(self, text: memoryview) -> pa.Table | None:
        """A block of whole lines, ``:`` already read as a space."""
        import pyarrow.csv as pacsv

        try:
            return pacsv.read_csv(pa.BufferReader(pa.py_buffer(text)), **self.options)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # not this layout: the general parser reads it or names what is wrong


class _Irregular(Exception):
    """The text is not for the uniform path (a comment in it)."""


def _line_blocks(read: Callable[[int], bytes], block_bytes: int, *,
                 arrow: bool = True) -> Iterator[memoryview]:
    """Runs of whole lines, about ``block_bytes`` each, read from a stream, as views of the
    pieces read. A line cut by a piece's end is joined to the next piece's first line alone
    (that line is yielded by itself): joining whole pieces would copy every byte while holding
    the GIL, which the threads of one task then take turns at. For Arrow's CSV reader
    (``arrow``) ``:`` is read as a space (each piece is translated as it is read), and a ``#``
    raises _Irregular: comments are for the general path."""
    carry = b""
    while True:
        piece = read(block_bytes)
        if not piece:
            if carry:
                yield memoryview(carry)
            return
        if arrow:
            if b"#" in piece:
                raise _Irregular
            piece = piece.translate(_COLON_TO_SPACE)
        head = piece.find(b"\n") + 1 if carry else 0
        if carry and not head:  # a line longer than the piece
            carry += piece
            continue
        if head:
            yield memoryview(carry + piece[:head])
        cut = piece.rfind(b"\n") + 1
        if cut > head:
            yield memoryview(piece)[head:cut]
        carry = piece[max(cut, head):]


def _newlines(text: memoryview) -> int:
    return int(np.count_nonzero(np.frombuffer(text, np.uint8) == ord("\n")))


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    grown = np.empty((rows, *array.shape[1:]), array.dtype)
    grown[:len(array)] = array
    return grown


IN_ORDER = "in order"  # every line lists features 1..k in order (MSLR): a block copy
SAME_COLUMNS = "same columns"  # every line lists the same features: a column copy
SCATTERED = "scattered"  # the same number of features, not the same ones: a scatter


def _placement(index: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """How a block's values land in its rows of the matrix, from its feature indices (one row
    per feature token of a line, one column per line), and each token's lowest and highest
    index."""
    if not index.size:
        empty = np.empty(len(index), index.dtype)
        return IN_ORDER, empty, empty
    low, high = index.min(axis=1), index.max(axis=1)
    if not (low == high).all():
        return SCATTERED, low, high
    return (IN_ORDER if (low == np.arange(1, len(low) + 1)).all() else SAME_COLUMNS), low, high


def _parse_compiled(blocks: Iterator[memoryview], size: int,
                    num_features: int | None) -> ParsedShard | None:
    """The compiled tokenizer, a block at a time into the shard's arrays, which grow (by an
    estimate from the bytes per line so far) when it runs out of rows. Returns None where it
    does not read the text exactly (the general path then parses it or names the error)."""
    width = num_features or 0
    labels, qids = np.empty(0, np.float32), np.empty(0, np.int64)
    features = np.empty((0, width), np.float32)
    rows = done = 0  # rows and bytes read
    has_qid = -1
    for text in blocks:
        start = 0
        while start < len(text):
            if rows == len(labels):
                # Room for the rest, by the bytes per row so far, or before any, per line of
                # the first block (one count; a first line alone may be a short comment).
                per_line = done / rows if rows else \
                    (len(text) - start) / (_newlines(text[start:]) + 1)
                estimate = rows + int((size - done) / max(per_line, 1) * 1.05) + 16
                labels, qids = _grown(labels, estimate), _grown(qids, estimate)
                features = _grown(features, estimate)
            piece = text[start:]
            result = _letor.parse(piece, labels[rows:], qids[rows:], features[rows:], width, has_qid)
            if result is not None and result[2] > width:
                if num_features is not None or result[2] > MAX_FEATURES:
                    return None  # an index beyond numFeatures: the general path names it
                # Wider than the lines so far (or the first piece, the width not given): the rows
                # read get NaN in the new columns, and the piece is read again at its width.
                wider = np.empty((len(features), result[2]), np.float32)
                wider[:rows, :width] = features[:rows]
                wider[:rows, width:] = np.nan
                features, width = wider, result[2]
                result = _letor.parse(piece, labels[rows:], qids[rows:], features[rows:], width,
                                      has_qid)
            if result is None:
                return None
            read, has_qid, _, used = result
            rows, start, done = rows + read, start + used, done + used
    if has_qid < 0:
        return _empty(num_features)
    return ParsedShard(labels[:rows], qids[:rows] if has_qid else None, features[:rows])


def _parse_uniform(blocks: Iterator[memoryview], size: int, num_features: int | None,
                   block_bytes: int) -> ParsedShard | None:
    try:
        return _parse_blocks(blocks, size, num_features, block_bytes)
    except _Irregular:
        return None


def _parse_blocks(blocks: Iterator[memoryview], size: int, num_features: int | None,
                  block_bytes: int) -> ParsedShard | None:
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
        if layout is None:
            body = bytes(text).lstrip()
            if not body:
                continue
            end = body.find(b"\n")
            layout = _Layout.of(body[:end if end >= 0 else len(body)], block_bytes)
            if layout is None:
                return None
        table = layout.read(text)
        if table is None:
            return None
        n = table.num_rows
        if n == 0:
            continue
        # The table's columns: label, qid (if any), then index and value of each feature token.
        columns = table.columns
        first = 2 if layout.has_qid else 1
        # One row per feature token of a line: each row's range says whether that token names
        # the same feature on every line (the common case, checked without transposing).
        index = np.stack([as_numpy(c) for c in columns[first::2]]) \
            if layout.tokens else np.empty((0, n), np.int32)
        placement, low, high = _placement(index)
        if (low < 1).any():
            return None  # the general path names the bad index
        width = int(high.max(initial=0))
        if width > (num_features or MAX_FEATURES):
            return None
        if rows + n > len(labels):  # room for the rest, estimated from the bytes per line so far
            estimate = rows + n + int((size - done) * (rows + n) / done * 1.05) + 1
            labels, qids = _grown(labels, estimate), _grown(qids, estimate)
            features = _grown(features, estimate)
        if width > features.shape[1]:  # only when the width is not given and a block widens it
            features = _widened(features, rows, width)
        _fill_block(features[rows:rows + n], [as_numpy(c) for c in columns[first + 1::2]],
                    placement, low, index, width)
        labels[rows:rows + n] = as_numpy(columns[0])
        if layout.has_qid:
            qids[rows:rows + n] = as_numpy(columns[1])
        rows += n
    if layout is None:
        return _empty(num_features)
    return ParsedShard(labels[:rows], qids[:rows] if layout.has_qid else None, features[:rows])


def _widened(features: np.ndarray, rows: int, width: int) -> np.ndarray:
    """``features`` with columns up to ``width``: its first ``rows`` rows copied, the new
    columns absent (NaN)."""
    wider = np.empty((len(features), width), dtype=np.float32)
    wider[:rows, :features.shape[1]] = features[:rows]
    wider[:rows, features.shape[1]:] = np.nan
    return wider


def _fill_block(block: np.ndarray, values: list[np.ndarray], placement: int, low: np.ndarray,
                index: np.ndarray, width: int) -> None:
    """Writes all of a block's rows: the values it has, NaN (absent) everywhere else."""
    if placement == IN_ORDER:  # MSLR: features 1..N, in order (or none at all)
        if values:
            np.stack(values, axis=1, out=block[:, :width])
        block[:, width:] = np.nan
    else:
        block.fill(np.nan)
        if placement == SAME_COLUMNS:
            block[:, low - 1] = np.stack(values, axis=1)
        elif values:
            block[np.arange(len(block))[:, None], index.T - 1] = np.stack(values, axis=1)


def _parse_tokens(data: bytes, num_features: int | None, where: str) -> ParsedShard:
    """The general path: any mix of sparse lines, comments and feature orders."""
    import pyarrow.compute as pc  # here, not in every task process (the tokenizer needs none)

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
    qids = _token_qids(flat, starts, counts, where)
    first_feature = starts + (1 if qids is None else 2)

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
        raise DatasetError(f"{where}: a feature index is not an integer ({arrow_message(error)})") from None
    values = _floats(pc.take(split, pa.array(np.arange(1, len(split), 2))), where, "feature value")
    if len(indices) and indices.min() < 1:
        raise DatasetError(f"{where}: feature index {int(indices.min())} found; LETOR feature "
                           "indices start at 1")
    features = np.full((n, _token_width(indices, num_features, where)), np.nan, dtype=np.float32)
    rows = np.repeat(np.arange(n), per_line)
    features[rows, indices - 1] = values
    return ParsedShard(labels.astype(np.float32), qids, features)


def _token_qids(flat: pa.Array, starts: np.ndarray, counts: np.ndarray,
                where: str) -> np.ndarray | None:
    """The lines' query ids (each line's second token, "qid:Q"), or None when no line has
    one; a shard where only some lines do is refused."""
    import pyarrow.compute as pc

    second = pc.take(flat, pa.array(np.minimum(starts + 1, len(flat) - 1)))
    is_qid = pc.and_(pa.array(counts >= 2),
                     pc.starts_with(second, "qid:")).to_numpy(zero_copy_only=False)
    if is_qid.any() and not is_qid.all():
        row = int(np.flatnonzero(~is_qid)[0])
        raise DatasetError(f"{where}: line {row + 1} of a shard has no qid: while others do")
    if not is_qid.all():
        return None
    try:
        return pc.cast(pc.utf8_slice_codeunits(second, 4), pa.int64()).to_numpy()
    except pa.ArrowInvalid as error:
        raise DatasetError(f"{where}: a qid is not an integer ({arrow_message(error)})") from None


def _token_width(indices: np.ndarray, num_features: int | None, where: str) -> int:
    """The parsed matrix's width: the given feature count (no index may pass it), else the
    largest index (at most MAX_FEATURES)."""
    width = int(indices.max()) if len(indices) else 0
    if num_features is None and width > MAX_FEATURES:
        raise DatasetError(f"{where}: feature index {width} found; a LETOR dataset has at most "
                           f"{MAX_FEATURES:,} features", Reason.SchemaMismatch)
    if num_features is not None:
        if width > num_features:
            raise DatasetError(f"{where}: feature index {width} exceeds the expected "
                               f"{num_features} features", Reason.SchemaMismatch)
        width = num_features
    return width


def _floats(array: pa.Array, where: str, what: str) -> np.ndarray:
    import pyarrow.compute as pc

    try:
        return pc.cast(array, pa.float32()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as error:
        raise DatasetError(f"{where}: a {what} is not a number ({arrow_message(error)})") from None
