"""The result document's data profile and drift: what an evaluation records about the data it
read (every feature, the labels, each model's predictions, the query lengths) and how that data
compares with a reference.

The engine computes a profile per shard and merges them (``modeleval.engine.profile``); these
models are the contract the result document, the report, the CLI and a later evaluation (which
takes this profile as its reference) share.

Size bound. A column's profile holds a fixed set of numbers, a KLL sketch of at most
``KLL_K`` = 200 retained items per level (float32 items, 2-3 KB serialised up to billions of
rows, base64 in the document: about 4 KB), a compact HLL sketch of 2**``HLL_LG_K`` four-bit
registers (about 1.1 KB, 1.4 KB in base64), nine quantiles and a histogram of at most
``MAX_BINS`` + 1 bins: ``COLUMN_BYTES`` = 7 KB is a bound on one column's JSON (measured on the
widest sketches). So a profile of F features is at most (F + 3 + M) x 7 KB plus ``MAX_SLICE_VALUES``
short strings per slice column, for M models: 136 features (MSLR) and 3 models fit in
about 1 MB (:func:`size_bound`), and 10,000 features need about 70 MB, past MongoDB's 16 MB
document limit: a profile larger than ``DOCUMENT_PROFILE_BYTES`` (4 MiB, about 570 columns) is
kept whole beside the document (in the dataset's cache entry, ``storedAt``), and the document
keeps each column's numbers (about 530 bytes a column: 5.3 MB at 10,000 features, measured)
and the drift (about 630 bytes a feature with the reference's bins and both sides' counts, 86 KB
at 136 features; a compacted document keeps bins and counts for the ``CHARTED_FEATURES``
largest PSIs only: 0.9 MB at 10,000).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .profile_limits import (COLUMN_BYTES, DOCUMENT_PROFILE_BYTES, HLL_LG_K, KLL_K, MAX_BINS, MAX_SLICE_VALUES,
                             MAX_VALUE_COUNTS, QUANTILE_RANKS, size_bound)

__all__ = ["COLUMN_BYTES", "DOCUMENT_PROFILE_BYTES", "HLL_LG_K", "KLL_K", "MAX_BINS", "MAX_SLICE_VALUES", "MAX_VALUE_COUNTS",
           "QUANTILE_RANKS", "size_bound"]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ColumnHistogram(_Model):
    """Counts of a column's values in bins. ``cuts`` are the inner edges: bin 0 is below
    ``cuts[0]`` (and holds -inf), bin i is [cuts[i-1], cuts[i]), the last bin is at or above
    ``cuts[-1]`` (and holds +inf). Missing values are in no bin."""

    cuts: list[float] = Field(description="Inner bin edges, ascending.")
    counts: list[float] = Field(description="Values in each bin (len(cuts) + 1 of them).")
    exact: bool = Field(description="True: counted on every value (the bins were fixed before "
                        "the pass, by a reference). False: read off the quantile sketch (bins "
                        "at its deciles), within its rank error.")


class ColumnProfile(_Model):
    """One column: a feature, the labels, one model's predictions or the query lengths.
    count, mean, std, min and max are over the finite values; missing (NaN, or absent from a
    sparse line) and infinite values are counted apart."""

    name: str = Field(description="The feature's name (LETOR: its 1-based index), or 'label', "
                      "'queryLength', or the model's name.")
    rows: int = Field(description="Rows seen: count + missing + infinities.")
    count: int = Field(description="Finite values.")
    missing: int = Field(description="NaN or absent values.")
    infinities: int = Field(description="Values that are +inf or -inf.")
    zeros: int = Field(description="Values equal to 0.")
    min: float | None = Field(None, description="Smallest finite value (none without any).")
    max: float | None = Field(None, description="Largest finite value.")
    mean: float | None = Field(None, description="Mean of the finite values (exact).")
    std: float | None = Field(None, description="Population standard deviation of the finite "
                              "values (exact).")
    distinct: float = Field(description="Estimated distinct finite values (HLL sketch).")
    quantiles: dict[str, float] = Field(default_factory=dict, description="Quantiles from the "
                                        "KLL sketch, keyed by rank ('0.5' is the median).")
    histogram: ColumnHistogram | None = Field(None, description="Counts on the reference's bins, or "
                                        "on the sketch's deciles without a reference.")
    value_counts: dict[str, int] | None = Field(None, description="Exact counts of each value, "
                                                f"kept while at most {MAX_VALUE_COUNTS} distinct.")
    sketch: str = Field("", description="The KLL quantile sketch (Apache DataSketches "
                        "kll_floats_sketch, serialised, base64): drift's Kolmogorov-Smirnov test "
                        "reads it.")
    distinct_sketch: str = Field("", description="The HLL distinct-count sketch (serialised, "
                                 "base64), for merging.")

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


class DatasetProfile(_Model):
    """Everything an evaluation's pass recorded about its data."""

    rows: int = Field(description="Rows read.")
    queries: int | None = Field(None, description="Queries (ranking), else none.")
    features: list[ColumnProfile] = Field(default_factory=list, description="One per feature, "
                                          "in the dataset's order.")
    label: ColumnProfile | None = Field(None, description="The label column.")
    predictions: dict[str, ColumnProfile] = Field(default_factory=dict, description="Each "
                                                  "model's predictions, by model name.")
    query_lengths: ColumnProfile | None = Field(None, description="Rows per query (ranking).")
    slice_values: dict[str, list[str]] = Field(default_factory=dict, description="The distinct "
                                               "values of each slice column (at most "
                                               f"{MAX_SLICE_VALUES}; see sliceValuesTruncated).")
    slice_values_truncated: list[str] = Field(default_factory=list, description="Slice columns "
                                              f"with more than {MAX_SLICE_VALUES} values.")
    stored_at: str | None = Field(None, description="Where the whole profile is kept when it "
                                  f"is larger than {DOCUMENT_PROFILE_BYTES // 2**20} MiB: the "
                                  "document's columns then leave out their sketches, histograms "
                                  "and value counts (a later evaluation that names this one as "
                                  "its reference reads the whole profile from here).")

    def compacted(self, stored_at: str) -> "DatasetProfile":
        """This profile as a document keeps it when it is too large: each column's numbers."""
        def numbers(column: ColumnProfile) -> ColumnProfile:
            return column.model_copy(update={"sketch": "", "distinct_sketch": "",
                                             "histogram": None, "value_counts": None})

        return self.model_copy(update={"features": [numbers(c) for c in self.features],
                                       "stored_at": stored_at})

    def feature(self, name: str) -> ColumnProfile:
        for column in self.features:
            if column.name == name:
                return column
        raise KeyError(name)


class FeatureDrift(_Model):
    name: str = Field(description="The feature.")
    psi: float = Field(description="Population stability index on the reference's bins.")
    jensen_shannon: float = Field(description="Jensen-Shannon distance (base 2) on the "
                                  "reference's bins.")
    ks: float = Field(description="Kolmogorov-Smirnov statistic from the two KLL sketches "
                      "(within their rank errors of the exact one).")
    ks_p_value: float = Field(description="Its p-value: the KS distribution at the effective "
                              "sample size n*m/(n+m).")
    drifted: bool = Field(description="Whether a measure passed its threshold.")
    by: list[str] = Field(default_factory=list, description="The measures that passed.")
    cuts: list[float] = Field(default_factory=list, description="The reference's inner bin "
                              "edges PSI and Jensen-Shannon were computed on.")
    reference_counts: list[float] = Field(default_factory=list, description="The reference's "
                                          "values in each bin (len(cuts) + 1).")
    counts: list[float] = Field(default_factory=list, description="This data's values in each "
                                "of those bins.")


class DataDrift(_Model):
    """The profile compared with a reference profile, feature by feature."""

    reference: str = Field(description="What the reference was (an evaluation, a dataset URI).")
    thresholds: dict[str, float | None] = Field(description="The thresholds applied "
                                                "(spec.dataQuality.thresholds, by name).")
    features: list[FeatureDrift] = Field(default_factory=list, description="One per feature.")
    drifted_share: float = Field(description="Share of the features that drifted.")
    drifted: bool = Field(description="Whether the dataset drifted (driftedShare at least "
                          "thresholds.driftShare).")

    def most_drifted(self, count: int = 3) -> list[FeatureDrift]:
        """The drifted features, largest PSI first (what a condition's message names)."""
        return sorted((f for f in self.features if f.drifted), key=lambda f: -f.psi)[:count]
