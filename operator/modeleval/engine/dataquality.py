"""The data-quality stage: the shards' profiles (computed by the tasks, in the pass that reads
every row) merged on the driver, compared with ``spec.dataQuality.reference``'s profile, and
checked by its rules, before the evaluation's metrics are trusted.

The reference is found before the pass, because its bins are the ones the pass counts into: a
previous evaluation's recorded profile (the job finds it in the result store: ``runner``), or a
dataset profiled once and cached by its fingerprint (:meth:`Evaluator` profiles it). A
reference that is missing or has other features fails the evaluation with its reason
(ReferenceNotFound, SchemaMismatch) when a rule fails evaluations; when every rule only warns
(or there is none: drift alone), the metrics are recorded and a warning says why there is no
drift. A schedule's first run has no run before it: it records its profile, which later runs
compare with, and no warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..api.profile import DataDrift, DatasetProfile
from ..api.profile_limits import CHARTED_FEATURES, DOCUMENT_PROFILE_BYTES, size_bound
from ..api.spec import DataQuality
from . import drift as drift_fns
from . import quality
from .cache import DatasetCache
from .errors import EvaluationError, Reason, StorageError
from .storage import Storage, join_uri
from .profile import ProfileRequest, ProfileState, column_profile, reference_cuts, to_profile


@dataclass(frozen=True)
class Reference:
    """``spec.dataQuality.reference`` as the job found it: ``profile`` (a previous
    evaluation's), ``uri`` (a dataset still to profile), or ``missing`` (why there is none;
    ``expected``: whether none is an error, False for a schedule's first run)."""

    name: str
    profile: DatasetProfile | None = None
    uri: str | None = None
    missing: str | None = None
    expected: bool = True


@dataclass(frozen=True)
class Checked:
    """What the stage adds to the result: the profile, the drift (with a reference) and the
    warnings of rules that warn or of a reference that could not be used."""

    profile: DatasetProfile | None = None
    drift: DataDrift | None = None
    warnings: list[str] = field(default_factory=list)


def cuts_of(reference: Reference | None) -> dict:
    """The bins the pass counts into: the reference profile's (none: the sketch's deciles)."""
    return reference_cuts(reference.profile) if reference and reference.profile else {}


def request(models: Sequence[str], reference: Reference | None, slice_columns: Sequence[str],
            cached: DatasetProfile | None) -> ProfileRequest:
    """What each task profiles: the data unless ``cached`` (the cache's profile of this data on
    these bins), on the reference's bins when it has a profile."""
    return ProfileRequest(tuple(models), data=cached is None, cuts=cuts_of(reference),
                          slice_columns=tuple(slice_columns))


def merged(state: ProfileState | None, cached: DatasetProfile | None) -> DatasetProfile:
    """The shards' merged profile as the document keeps it; with ``cached``, the cache's
    profile of the data and the shards' of the predictions."""
    state = state or ProfileState()
    if cached is None:
        return to_profile(state)
    predictions = {name: column_profile(column) for name, column in sorted(state.predictions.items())}
    return cached.model_copy(update={"predictions": predictions})


def check(settings: DataQuality | None, profile: DatasetProfile,
          reference: Reference | None) -> Checked:
    """The drift against the reference and the rules' findings. DataQualityFailed names every
    failing rule; a reference that cannot be used fails only when a rule fails evaluations."""
    if settings is None:
        return Checked(profile)
    warnings: list[str] = []
    drift, compared_with = None, None
    if reference is not None and reference.missing is not None:
        if reference.expected:
            warnings.append(_tolerated(settings, EvaluationError(reference.missing,
                                                                 Reason.ReferenceNotFound)))
    elif reference is not None and reference.profile is not None:
        try:
            drift = drift_fns.compare(profile, reference.profile, settings.thresholds,
                                      reference.name)
            compared_with = reference.profile
        except EvaluationError as error:  # SchemaMismatch, naming the features
            warnings.append(_tolerated(settings, error))
    findings = quality.check(settings.quality_rules, profile, compared_with)
    return Checked(profile, drift, warnings + quality.enforce(findings))


def _tolerated(settings: DataQuality, error: EvaluationError) -> str:
    """The error, raised when a rule fails evaluations; else the warning that replaces it."""
    if any(rule.action == "fail" for rule in settings.quality_rules):
        raise error
    return (f"dataQuality.reference ({error.reason}): {error.message}; no drift was computed "
            "(no rule fails evaluations, so the metrics are recorded)")


def profile_file(digest: str) -> str:
    return f"profile-{digest}.json"


def load_profile(cache: DatasetCache, key: str, digest: str) -> DatasetProfile | None:
    """The data's profile the entry keeps for the bins of ``digest`` (``profile.cuts_digest``),
    None when it has none (or an unreadable one: computed again, not trusted)."""
    try:
        raw = cache.storage.read(join_uri(cache.entry(key), profile_file(digest)))
    except StorageError as error:
        if error.reason == Reason.DatasetNotFound:
            return None
        raise
    try:
        return DatasetProfile.model_validate_json(raw)
    except ValueError:
        return None


def save_profile(cache: DatasetCache, key: str, digest: str, profile: DatasetProfile) -> None:
    """Keeps the data's profile (no predictions) beside the entry's parts: a warm read computes
    only the predictions' profile."""
    cache.storage.write(join_uri(cache.entry(key), profile_file(digest)),
                        profile.model_dump_json(by_alias=True).encode())


def kept(checked: Checked, cache: DatasetCache, key: str, attempt_id: str) -> Checked:
    """The checked profile as the document keeps it: whole, or, past
    ``DOCUMENT_PROFILE_BYTES``, whole in the dataset's cache entry and compacted in the
    document (drift was computed on the whole one)."""
    profile = checked.profile
    if profile is None or size_bound(len(profile.features), len(profile.predictions),
                                      len(profile.slice_values)) <= DOCUMENT_PROFILE_BYTES:
        return checked
    text = profile.model_dump_json(by_alias=True)
    if len(text) <= DOCUMENT_PROFILE_BYTES:
        return checked
    uri = join_uri(cache.entry(key), f"profiles/{attempt_id}.json")
    cache.storage.write(uri, text.encode())
    return replace(checked, profile=profile.compacted(uri),
                   drift=checked.drift and _charted_counts(checked.drift))


def _charted_counts(drift: DataDrift) -> DataDrift:
    """The drift with bins and counts for the ``CHARTED_FEATURES`` largest PSIs only."""
    kept = {f.name for f in sorted(drift.features, key=lambda f: -f.psi)[:CHARTED_FEATURES]}
    return drift.model_copy(update={"features": [
        f if f.name in kept else f.model_copy(update={"cuts": [], "reference_counts": [],
                                                      "counts": []})
        for f in drift.features]})


def whole(reference: Reference | None, storage: Storage) -> Reference | None:
    """A reference evaluation's whole profile where its document kept a compacted one."""
    if reference is None or reference.profile is None or reference.profile.stored_at is None:
        return reference
    where = reference.profile.stored_at
    try:
        profile = DatasetProfile.model_validate_json(storage.read(where))
    except StorageError as error:
        return replace(reference, profile=None, missing=f"{reference.name}: its whole profile "
                       f"could not be read from {where}: {error.message}")
    except ValueError:
        return replace(reference, profile=None,
                       missing=f"{reference.name}: its whole profile at {where} is unreadable")
    return replace(reference, profile=profile)
