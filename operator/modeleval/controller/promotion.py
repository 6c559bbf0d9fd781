"""spec.promote, decided: the candidate's registered version gets the alias when, and only when,
its gate passed, once. Pure: the round that sees a passing gate asks for :class:`PromoteModel`
and stays live; the next round reads how it went (``Observed.promotion``) and records it. A
promotion that failed is a condition (Promoted=False, PromotionFailed), never a failed
evaluation; a registry that did not answer is asked again after a backoff, a few times. An outcome lost to an operator restart is asked for again: setting an alias to the
version it already points to changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

from ..api.reasons import Reason
from ..api.registry import PromotionStatus
from ..api.results import ResultDocument
from ..api.status import ConditionType
from . import status as st
from .actions import Emit, PromoteModel
from .draft import DecisionDraft

# Asks of a registry that does not answer before the promotion counts as failed; the waits
# between them double from the operator's backoffBaseSeconds (the evaluation waits for them:
# its Ray cluster is released once the promotion's outcome is known).
PROMOTION_TRIES = 5


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
    return record_promotion(draft, *outcome)


def record_promotion(draft: DecisionDraft, done: bool, message: str,
                     retryable: bool = False) -> bool:
    """Records how the promotion went; False when it is asked again after a backoff (the
    server did not answer, fewer than :data:`PROMOTION_TRIES` times so far)."""
    record = draft.status.promotion
    assert record is not None
    if not done and retryable and record.tries + 1 < PROMOTION_TRIES:
        record.tries += 1
        settings = draft.settings
        delay = st.backoff_delay(record.tries, settings.backoff_base, settings.backoff_max)
        draft.status.next_retry_time = draft.now + timedelta(seconds=delay)
        draft.condition(ConditionType.Promoted, False, Reason.Promoting, f"alias "
                        f"{record.alias} of {record.name} not set yet: {message}; asked again "
                        f"in {delay:.0f}s (try {record.tries + 1} of {PROMOTION_TRIES})")
        return False
    if done:
        record.promoted = True
        text = f"alias {record.alias} of {record.name} is version {record.version}"
        draft.condition(ConditionType.Promoted, True, Reason.Promoted, text)
        draft.actions.append(Emit(Reason.Promoted, text))
    else:
        text = f"alias {record.alias} of {record.name} was not set: {message}"
        draft.condition(ConditionType.Promoted, False, Reason.PromotionFailed, text)
        draft.actions.append(Emit(Reason.PromotionFailed, text, warning=True))
    return True
