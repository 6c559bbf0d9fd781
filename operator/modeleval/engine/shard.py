"""The shape every dataset reader produces: labels, query ids and a dense feature matrix, plus
the Arrow helpers the readers and the cache share."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class ParsedShard:
    """A parsed piece of a dataset: labels, query ids and a dense float32 feature matrix whose
    absent (sparse) entries are NaN, which XGBoost and ONNX models treat as missing."""

    labels: np.ndarray
    qids: np.ndarray | None
    features: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    # Rows without a value for every feature, and absent (NaN) values, where known (a cached
    # part records both, so a read of the part need not look at every value again); None: not
    # counted yet.
    incomplete: int | None = None
    missing: int | None = None
    # The features' names where the source has them (a table's columns); None: LETOR's 1-based
    # indices. The profile names its features by them.
    feature_names: tuple[str, ...] | None = None

    @property
    def rows(self) -> int:
        return len(self.labels)

    def counted(self) -> "ParsedShard":
        """This shard with its incomplete rows and absent values counted."""
        if self.incomplete is not None and self.missing is not None:
            return self
        incomplete, missing = absent_values(self.features)
        return replace(self, incomplete=incomplete, missing=missing)


def absent_values(features: np.ndarray) -> tuple[int, int]:
    """The rows of ``features`` with an absent (NaN) value, and its absent values: one look at
    every value for both."""
    if not features.size:
        return 0, 0
    absent = np.isnan(features)
    return int(absent.any(axis=1).sum()), int(np.count_nonzero(absent))


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


def arrow_message(error: Exception) -> str:
    """The first line of an Arrow error, short enough for a status message."""
    return str(error).splitlines()[0][:200]
