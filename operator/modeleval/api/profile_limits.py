"""The bounds of a data profile (``api.profile`` explains them): constants a task process reads
without importing the document's models (pydantic)."""

from __future__ import annotations

KLL_K = 200
HLL_LG_K = 11
MAX_BINS = 20
# The quantiles a column's profile lists (the sketch answers any other).
QUANTILE_RANKS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
# Labels, predictions and query lengths with at most this many distinct values keep exact counts.
MAX_VALUE_COUNTS = 64
MAX_SLICE_VALUES = 1000
COLUMN_BYTES = 7_000


def size_bound(features: int, models: int = 1, slice_columns: int = 0) -> int:
    """An upper bound on a profile's JSON bytes: every column at its widest, plus the slice
    values (at most ``MAX_SLICE_VALUES`` per slice column, each at most 64 characters)."""
    columns = features + 2 + models  # features, the labels, the query lengths, each model
    return columns * COLUMN_BYTES + slice_columns * MAX_SLICE_VALUES * 70 + 2_000


# A profile whose JSON is larger than this is kept whole beside the result (in the dataset's
# cache entry) and the document keeps each column's numbers only (measured at 10,000 features:
# 5.3 MB, and their drift 0.9 MB, within MongoDB's 16 MB; the whole profile 34 MB at 300 rows,
# up to the 70 MB bound with more rows).
DOCUMENT_PROFILE_BYTES = 4 * 2**20
# The features whose bins and counts a compacted document's drift keeps (the largest PSI first):
# the report charts as many (every feature's counts would be about 0.5 MB per 1,000 features).
CHARTED_FEATURES = 8
