"""Shards of a dataset that never split a query group: byte ranges of a LETOR file, each parsed
by its own task, and row ranges of a table read whole; and the line-aligned pieces a task
holding several CPUs parses a range in, side by side."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .storage import ObjectInfo, Storage

MIN_RANGE_BYTES = 4 * 2**20  # ranges are not cut smaller than this to fill task slots
_WINDOW = 1 * 2**20  # read at a time while looking for a group boundary
MIN_PIECE_BYTES = 1 * 2**20  # a range is not split into pieces smaller than this
_LINE_WINDOW = 64 * 2**10  # read at a time while looking for a line's end
# Group boundaries looked for at once: each is a read or two of object storage (tens of
# milliseconds to S3), and the first task waits for every one.
BOUNDARY_THREADS = 16


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
        begin = max(0, end - _LINE_WINDOW)
        newline = storage.read(uri, begin, end).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def _lines_from(storage: Storage, uri: str, offset: int, size: int):
    """(offset, line) pairs from ``offset`` on, read in windows. A line is the only copy made:
    the window is walked, not cut down line by line (a copy of the rest of it per line)."""
    buffer, begin, cursor = b"", 0, offset  # buffer[begin:] starts at ``offset`` in the file
    while True:
        newline = buffer.find(b"\n", begin)
        if newline < 0 and cursor < size:
            chunk = storage.read(uri, cursor, min(size, cursor + _WINDOW))
            buffer, begin, cursor = buffer[begin:] + chunk, 0, cursor + len(chunk)
            continue
        if newline < 0:
            if begin < len(buffer):
                yield offset, buffer[begin:]
            return
        yield offset, buffer[begin:newline]
        offset += newline + 1 - begin
        begin = newline + 1


def line_start(storage: Storage, uri: str, position: int, end: int) -> int:
    """The first offset in [``position``, ``end``] that starts a line (``end`` if none does)."""
    cursor = position - 1  # a line starts at ``position`` when the byte before it ends one
    while cursor < end:
        chunk = storage.read(uri, cursor, min(end, cursor + _LINE_WINDOW))
        if not chunk:
            break
        newline = chunk.find(b"\n")
        if newline >= 0:
            return cursor + newline + 1
        cursor += len(chunk)
    return end


def line_pieces(storage: Storage, uri: str, start: int, end: int, pieces: int,
                map_: Callable[[Callable, Iterable], Iterable] = map, *,
                min_bytes: int | None = None) -> list[tuple[int, int]]:
    """[``start``, ``end``) (which starts a line) cut into at most ``pieces`` runs of whole
    lines of about equal size, none planned smaller than ``min_bytes`` (default
    :data:`MIN_PIECE_BYTES`); ``map_`` looks for the cuts (a thread pool's map reads them side
    by side)."""
    pieces = max(1, min(pieces, (end - start) // (min_bytes or MIN_PIECE_BYTES)))
    targets = [start + i * (end - start) // pieces for i in range(1, pieces)]
    cuts = map_(lambda position: line_start(storage, uri, position, end), targets)
    edges = sorted({start, *cuts, end})
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def letor_ranges(storage: Storage, info: ObjectInfo, shard_bytes: int, slots: int = 1, *,
                 min_range_bytes: int = MIN_RANGE_BYTES) -> list[tuple[int, int]]:
    """Byte ranges of at most about ``shard_bytes`` whose edges sit on query-group boundaries.
    Their count is a multiple of ``slots`` (the tasks that can run at once), so the last round
    of tasks keeps every slot busy, unless that would make ranges smaller than ``min_range_bytes``.
    In object storage the boundaries are looked for side by side."""
    if info.size == 0:
        return []
    count = max(1, -(-info.size // shard_bytes))
    if slots > 1:
        count = max(count, min(-(-count // slots) * slots, info.size // min_range_bytes))
    positions = [i * info.size // count for i in range(1, count)]

    def boundary(position: int) -> int:
        return group_boundary(storage, info.uri, position, info.size)

    if storage.local_path(info.uri) is not None or len(positions) < 2:
        # A local file's reads take microseconds: threads would only take turns at the GIL.
        cuts = list(map(boundary, positions))
    else:
        with ThreadPoolExecutor(min(BOUNDARY_THREADS, len(positions))) as pool:
            cuts = list(pool.map(boundary, positions))
    edges = [0, *cuts, info.size]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


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
