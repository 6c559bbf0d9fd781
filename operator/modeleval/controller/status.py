"""Pure status transitions: every change of phase or condition goes through here."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..api.reasons import Reason
from ..api.status import Condition, ConditionType, ModelEvaluationStatus, Phase, Progress


# Status is read by every `kubectl get`: a message that quotes a huge scheduler or S3 error is
# cut here rather than grow the object (and etcd) without bound.
MESSAGE_LIMIT = 1024


def cap(text: str | None, limit: int = MESSAGE_LIMIT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    marker = " ... [truncated]"
    return text[: limit - len(marker)] + marker


def set_condition(status: ModelEvaluationStatus, type_: ConditionType, value: bool, reason: Reason,
                  message: str, generation: int | None, now: datetime) -> None:
    """Sets a condition; the transition time moves only when the status value changes."""
    text = "True" if value else "False"
    message = cap(message) or ""
    old = status.condition(type_)
    if old is not None and (old.status, old.reason, old.message) == (text, reason, message):
        return
    stamp = old.last_transition_time if old is not None and old.status == text else now
    new = Condition(type=type_, status=text, reason=reason, message=message,
                    last_transition_time=stamp, observed_generation=generation)
    if old is None:
        status.conditions.append(new)
    else:
        status.conditions = [new if c.type == type_ else c for c in status.conditions]


def false_for(status: ModelEvaluationStatus, type_: ConditionType, now: datetime) -> timedelta | None:
    """How long ``type_`` has been False (None when it is not False)."""
    found = status.condition(type_)
    if found is None or found.status != "False":
        return None
    return now - found.last_transition_time


def progress(done: int, total: int, unit: str = "rows") -> Progress:
    percent = f"{(100.0 * done / total):.0f}%" if total else "0%"
    return Progress(done=done, total=total, unit=unit, percent=percent)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Delay before attempt ``attempt + 1``: base, 2*base, 4*base ... capped."""
    return min(cap, base * (2 ** max(0, attempt - 1)))


def fail(status: ModelEvaluationStatus, reason: Reason, message: str, generation: int | None,
         now: datetime) -> None:
    status.phase = Phase.Failed
    status.reason, status.message = reason, cap(message)
    status.completion_time = status.completion_time or now
    status.next_retry_time = None
    set_condition(status, ConditionType.Failed, True, reason, message, generation, now)
    set_condition(status, ConditionType.Complete, False, reason, message, generation, now)


def succeed(status: ModelEvaluationStatus, message: str, generation: int | None, now: datetime) -> None:
    status.phase = Phase.Succeeded
    status.reason, status.message = Reason.Succeeded, cap(message)
    status.completion_time = now
    set_condition(status, ConditionType.Complete, True, Reason.Succeeded, message, generation, now)
    set_condition(status, ConditionType.Failed, False, Reason.Succeeded, message, generation, now)


def deadline_passed(status: ModelEvaluationStatus, seconds: int | None, now: datetime) -> bool:
    return bool(seconds and status.start_time and now - status.start_time > timedelta(seconds=seconds))


def ttl_expired(status: ModelEvaluationStatus, seconds: int | None, now: datetime) -> bool:
    done = status.completion_time
    return seconds is not None and done is not None and now - done >= timedelta(seconds=seconds)
