"""Parquet and CSV datasets: a table read whole, its columns turned into a :class:`ParsedShard`."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import DatasetError, Reason
from .shard import ParsedShard, arrow_message
from .storage import Storage


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
                           f"({arrow_message(error)})") from None
    if np.isnan(labels).any():
        raise DatasetError(f"{where}: the label column '{label_column}' has empty values",
                           Reason.LabelError)
    qids = None
    if group_column:
        qids = _as_group_ids(table.column(group_column))
    extra = {c: table.column(c).to_numpy(zero_copy_only=False) for c in keep}
    return ParsedShard(labels, qids, features, extra, feature_names=tuple(feature_columns))


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
        raise DatasetError(f"{uri}: not a readable {fmt} file ({arrow_message(error)})") from None
