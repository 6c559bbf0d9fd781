"""Drift: a profile compared with a reference profile, feature by feature (pure functions).

On the reference's bins (each feature's histogram edges; the current pass counted its values
into the same bins exactly): the population stability index and the Jensen-Shannon distance.
From the two KLL sketches: the Kolmogorov-Smirnov statistic, the largest gap between the
sketches' distribution functions (each within its rank error of the exact one, so the
statistic is within the sum of the two errors of the exact two-sample statistic), and its
p-value from SciPy's distribution of the statistic at the effective sample size n*m/(n+m), as
``scipy.stats.ks_2samp`` computes it asymptotically.
"""

from __future__ import annotations

import math

import datasketches as ds
import numpy as np

from ..api.profile import ColumnProfile, DataDrift, DatasetProfile, FeatureDrift
from ..api.spec import DriftThresholds
from .errors import DatasetError, Reason
from .profile import decoded_kll, rank_error, sketch_counts

# Bin shares are floored here before the logarithms of PSI: an empty bin on one side would
# otherwise make the index infinite. (Evidently and NannyML floor at about 1e-4 to 1e-6.)
PSI_FLOOR = 1e-6


def _shares(counts: np.ndarray | list[float]) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.full(len(counts), 1.0 / len(counts))


def psi(reference_counts: np.ndarray | list[float], current_counts: np.ndarray | list[float]
        ) -> float:
    """Population stability index: sum over bins of (q - p) ln(q / p), p the reference's
    shares and q the current's, each floored at ``PSI_FLOOR``."""
    reference = np.maximum(_shares(reference_counts), PSI_FLOOR)
    current = np.maximum(_shares(current_counts), PSI_FLOOR)
    return float(np.sum((current - reference) * np.log(current / reference)))


def jensen_shannon(reference_counts: np.ndarray | list[float],
                   current_counts: np.ndarray | list[float]) -> float:
    """Jensen-Shannon distance in base 2 (0: the same shares, 1: no bin in common): the square
    root of the mean of the two Kullback-Leibler divergences from the shares' midpoint."""
    reference, current = _shares(reference_counts), _shares(current_counts)
    middle = (reference + current) / 2

    def divergence(shares: np.ndarray) -> float:
        held = shares > 0
        return float(np.sum(shares[held] * np.log2(shares[held] / middle[held])))

    return math.sqrt(max((divergence(reference) + divergence(current)) / 2, 0.0))


def ks_from_sketches(reference: ds.kll_floats_sketch, current: ds.kll_floats_sketch
                     ) -> tuple[float, float]:
    """The Kolmogorov-Smirnov statistic of two sketched samples and its p-value. Each sketch's
    distribution function is a step function that changes only at its retained items, so the
    largest gap is at one of them: both are read at every item either retains."""
    if reference.is_empty() or current.is_empty():
        return 0.0, 1.0
    points = np.unique(np.array([item for item, _ in reference] + [item for item, _ in current]))
    first = np.asarray(reference.get_cdf(points.tolist(), inclusive=True))[:-1]
    second = np.asarray(current.get_cdf(points.tolist(), inclusive=True))[:-1]
    statistic = float(np.max(np.abs(first - second)))
    effective = reference.n * current.n / (reference.n + current.n)
    return statistic, ks_p_value(statistic, effective)


# Past this effective sample size the p-value is read off the limiting (Kolmogorov)
# distribution: SciPy's exact one-sample distribution takes 6-74 ms a call from 10,000 to
# 100,000 samples (up to 20 s for 136 features), and the two differ by at most about
# 0.3 / sqrt(n) (0.0027 at 10,000, 0.0006 at 100,000, measured), far less than the sketched
# statistic's own error moves the p-value.
EXACT_KS_SAMPLES = 10_000


def ks_p_value(statistic: float, effective: float) -> float:
    """The KS statistic's p-value at the effective sample size n*m/(n+m)."""
    # Imported here, by the evaluations that compare: scipy.stats is half of a job's start-up
    # (0.5 of 1.1 s of imports), which every other job would pay.
    from scipy import stats

    samples = max(round(effective), 1)
    if samples <= EXACT_KS_SAMPLES:
        return float(stats.kstwo.sf(statistic, samples))
    return float(stats.kstwobign.sf(statistic * math.sqrt(samples)))


def ks_error(reference: ds.kll_floats_sketch, current: ds.kll_floats_sketch) -> float:
    """How far the sketched KS statistic may be from the exact one: the sum of the profile
    sketches' rank errors (DataSketches' documented error, at 99% confidence, and the share
    that feeding a sketch runs' stand-ins adds: ``profile.rank_error``)."""
    return rank_error(reference) + rank_error(current)


def check_schema(current: DatasetProfile, reference: DatasetProfile, where: str) -> None:
    """SchemaMismatch, naming the features, where the two profiles' features differ."""
    mine = [column.name for column in current.features]
    theirs = [column.name for column in reference.features]
    only_current = [name for name in mine if name not in set(theirs)]
    only_reference = [name for name in theirs if name not in set(mine)]
    if not only_current and not only_reference:
        return
    parts = []
    if only_current:
        parts.append(f"not in the reference: {_names(only_current)}")
    if only_reference:
        parts.append(f"only in the reference: {_names(only_reference)}")
    raise DatasetError(f"{where}: the features differ from the reference's ({'; '.join(parts)})",
                       Reason.SchemaMismatch)


def _names(names: list[str], shown: int = 10) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def feature_drift(current: ColumnProfile, reference: ColumnProfile,
                  thresholds: DriftThresholds) -> FeatureDrift:
    """One feature's measures and whether any passed its threshold."""
    reference_kll, current_kll = decoded_kll(reference.sketch), decoded_kll(current.sketch)
    reference_counts, current_counts = _binned(current, reference, current_kll)
    measures = {"psi": psi(reference_counts, current_counts),
                "jensenShannon": jensen_shannon(reference_counts, current_counts)}
    statistic, p_value = ks_from_sketches(reference_kll, current_kll)
    by = [name for name, value, limit in
          (("psi", measures["psi"], thresholds.psi),
           ("jensenShannon", measures["jensenShannon"], thresholds.jensen_shannon))
          if limit is not None and value > limit]
    if thresholds.ks is not None and statistic > thresholds.ks and p_value < thresholds.ks_p_value:
        by.append("ks")
    cuts = reference.histogram.cuts if reference.histogram is not None else []
    return FeatureDrift(name=current.name, psi=measures["psi"],
                        jensen_shannon=measures["jensenShannon"], ks=statistic,
                        ks_p_value=p_value, drifted=bool(by), by=by, cuts=list(cuts),
                        reference_counts=list(reference_counts), counts=list(current_counts))


def _binned(current: ColumnProfile, reference: ColumnProfile, current_kll: ds.kll_floats_sketch
            ) -> tuple[list[float], list[float]]:
    """Both columns' counts on the reference's bins: the current pass's exact counts where it
    was given those bins, else read off its sketch (within its rank error)."""
    if reference.histogram is None:  # the reference had no finite value
        return [float(reference.infinities)], [float(current.count + current.infinities)]
    cuts = reference.histogram.cuts
    if current.histogram is not None and current.histogram.cuts == cuts:
        return reference.histogram.counts, current.histogram.counts
    return reference.histogram.counts, sketch_counts(current_kll, cuts, current.count)


def compare(current: DatasetProfile, reference: DatasetProfile, thresholds: DriftThresholds,
            reference_name: str) -> DataDrift:
    """Every feature of ``current`` against ``reference`` (SchemaMismatch where their features
    differ), and the dataset's verdict: drifted when the drifted share reaches
    ``thresholds.drift_share``."""
    check_schema(current, reference, reference_name)
    by_name = {column.name: column for column in reference.features}
    features = [feature_drift(column, by_name[column.name], thresholds)
                for column in current.features]
    share = sum(f.drifted for f in features) / len(features) if features else 0.0
    return DataDrift(reference=reference_name, thresholds=thresholds.model_dump(by_alias=True),
                     features=features,
                     drifted_share=share, drifted=bool(features) and share >= thresholds.drift_share)
