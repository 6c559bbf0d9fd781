"""spec.promote, decided: the candidate's registered version gets the alias when, and only when,
its gate passed, once. Pure: the round that sees a passing gate asks for :class:`PromoteModel`
and stays live; the next round reads how it went (``Observed.promotion``) and records it. A
promotion that failed is a condition (Promoted=False, PromotionFailed), never a failed
evaluation. An outcome lost to an operator restart is asked for again: setting an alias to the
version it already points to changes nothing.
"""

from __future__ import annotations

from ..api.reasons import Reason
from ..api.registry import PromotionStatus
from ..api.results import ResultDocument
from ..api.status import ConditionType
from .actions import Emit, PromoteModel
from .draft import DecisionDraft


def promotion_settled(draft: DecisionDraft, document: ResultDocument) -> bool:
    """Whether the succeeding round may finish: no promotion asked for, the gate failed, or
    the promotion's outcome is recorded. False: a promotion was just asked for."""
    promote, status = draft.spec.promote, draft.status
    if promote is None or (status.promotion is not None and status.promotion.promoted):
        return True
    if document.gate is None or not document.gate.passed:
        draft.condition(ConditionType.Promoted, False, Reason.NotPromoted, f"the gate did not "
                        f"pass: alias {promote.alias} was left where it was")
        return True
    candidate = next((m for m in status.resolved_models if m.field == "spec.model"), None)
    if candidate is None:  # the spec's rule makes spec.model a models:/ URI: resolved first
        draft.condition(ConditionType.Promoted, False, Reason.PromotionFailed,
                        "spec.model was not resolved to a registered version")
        return True
    outcome = draft.observed.promotion
    if status.promotion is None or outcome is None:
        status.promotion = PromotionStatus(alias=promote.alias, name=candidate.name,
                                           version=candidate.version)
        draft.condition(ConditionType.Promoted, False, Reason.Promoting, f"setting alias "
                        f"{promote.alias} of {candidate.name} to version {candidate.version}")
        draft.actions.append(PromoteModel(candidate.name, promote.alias, candidate.version))
        return False
    record_promotion(draft, *outcome)
    return True


def record_promotion(draft: DecisionDraft, done: bool, message: str) -> None:
    record = draft.status.promotion
    assert record is not None
    if done:
        record.promoted = True
        text = f"alias {record.alias} of {record.name} is version {record.version}"
        draft.condition(ConditionType.Promoted, True, Reason.Promoted, text)
        draft.actions.append(Emit(Reason.Promoted, text))
    else:
        text = f"alias {record.alias} of {record.name} was not set: {message}"
        draft.condition(ConditionType.Promoted, False, Reason.PromotionFailed, text)
        draft.actions.append(Emit(Reason.PromotionFailed, text, warning=True))
