"""Registered models (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``) resolved before the first
attempt, as pure functions of a round: which URIs still need resolving, what the round does with
the registry's answer, and the spec the job is given (every models:/ URI replaced by the pinned
artefact). The runtime asks the registry (``mlflow.py``); nothing here does I/O.

Resolved once and pinned in ``status.resolvedModels``: a retry, a resume or an operator restart
scores the version the first resolution found, whatever the alias points to since.
"""

from __future__ import annotations

from datetime import timedelta

from ..api.reasons import Reason
from ..api.registry import ResolvedModel, is_registry_uri
from ..api.spec import ModelEvaluationSpec
from ..api.status import ConditionType, ModelEvaluationStatus
from .actions import Emit
from .draft import DecisionDraft


def unresolved(spec: ModelEvaluationSpec, status: ModelEvaluationStatus) -> list[tuple[str, str]]:
    """The (field, models:/ URI) pairs of the spec not pinned in status yet."""
    pinned = {(model.field, model.uri) for model in status.resolved_models}
    return [(where, model.uri) for where, model in spec.named_models()
            if is_registry_uri(model.uri) and (where, model.uri) not in pinned]


def resolution_delay(draft: DecisionDraft) -> float:
    """How long to wait before asking an unreachable registry again: as long as it has been
    unreachable (so the wait doubles), within the operator's backoff bounds."""
    settings = draft.settings
    down = draft.status.condition(ConditionType.ModelResolved)
    waited = 0.0
    if down is not None and not down.true and down.reason == Reason.RegistryUnavailable:
        waited = (draft.now - down.last_transition_time).total_seconds()
    return min(settings.backoff_max, max(settings.backoff_base, waited))


def models_resolved(draft: DecisionDraft) -> bool:
    """Whether every models:/ URI is pinned; pins what the registry answered this round. An
    unreachable registry is asked again after a backoff; a refusal fails the evaluation."""
    if not unresolved(draft.spec, draft.status):
        return True
    answer = draft.observed.registry
    if answer is None:  # not asked this round
        return False
    if answer.problem is not None:
        reason, message = answer.problem
        if not answer.retryable:
            draft.fail(reason, message)
            return False
        delay = resolution_delay(draft)
        draft.condition(ConditionType.ModelResolved, False, reason, message)
        draft.status.next_retry_time = draft.now + timedelta(seconds=delay)
        draft.status.message = f"{message}; asked again in {delay:.0f}s"
        return False
    status = draft.status
    status.resolved_models = [*status.resolved_models, *answer.resolved]
    text = "; ".join(f"{m.uri} is version {m.version} ({m.artifact_uri})" for m in answer.resolved)
    draft.condition(ConditionType.ModelResolved, True, Reason.ModelResolved, text)
    draft.actions.append(Emit(Reason.ModelResolved, text))
    return True


def with_resolved(spec: ModelEvaluationSpec, resolved: list[ResolvedModel]) -> ModelEvaluationSpec:
    """The spec the job runs: each models:/ URI replaced by its pinned artefact (the runner
    reads S3 only). A spec without models:/ URIs is returned as it is."""
    if not resolved:
        return spec
    raw = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    # The operator promotes, never the runner; and promote's rule wants a models:/ candidate.
    raw.pop("promote", None)
    for model in resolved:
        source = _model_source(raw, model.field)
        if source is not None and source.get("uri") == model.uri:
            source["uri"] = model.artifact_uri
    return ModelEvaluationSpec.model_validate(raw)


def _model_source(raw: dict, field: str) -> dict | None:
    """The model object at a named_models() path (spec.model, spec.baseline.model,
    spec.challengers[i].model) of a spec as a dict."""
    node: object = {"spec": raw}
    for part in field.replace("[", ".").replace("]", "").split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node if isinstance(node, dict) else None
