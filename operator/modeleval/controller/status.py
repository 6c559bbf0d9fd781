"""Pure status transitions: every change of phase or condition goes through here."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..api.status import Condition, ConditionType, ModelEvaluationStatus, Phase, Progress


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def set_condition(status: ModelEvaluationStatus, type_: ConditionType, value: bool, reason: str,
                  message: str, generation: int | None, now: datetime) -> bool:
    """Sets a condition; the transition time moves only when the status value changes.
    Returns whether anything changed."""
    text = "True" if value else "False"
    for i, c in enumerate(status.conditions):
        if c.type == type_.value:
            if c.status == text and c.reason == reason and c.message == message:
                return False
            stamp = c.last_transition_time if c.status == text else now_iso(now)
            status.conditions[i] = Condition(type=type_.value, status=text, reason=reason,
                                             message=message, last_transition_time=stamp,
                                             observed_generation=generation)
            return True
    status.conditions.append(Condition(type=type_.value, status=text, reason=reason, message=message,
                                       last_transition_time=now_iso(now),
                                       observed_generation=generation))
    return True


def progress(done: int, total: int, unit: str = "rows") -> Progress:
    percent = f"{(100.0 * done / total):.0f}%" if total else "0%"
    return Progress(done=done, total=total, unit=unit, percent=percent)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Delay before attempt ``attempt + 1``: base, 2*base, 4*base ... capped."""
    return min(cap, base * (2 ** max(0, attempt - 1)))


def fail(status: ModelEvaluationStatus, reason: str, message: str, generation: int | None,
         now: datetime) -> None:
    status.phase = Phase.Failed
    status.reason, status.message = reason, message
    status.completion_time = status.completion_time or now_iso(now)
    status.next_retry_time = None
    set_condition(status, ConditionType.Failed, True, reason, message, generation, now)
    set_condition(status, ConditionType.Complete, False, reason, message, generation, now)


def succeed(status: ModelEvaluationStatus, message: str, generation: int | None, now: datetime) -> None:
    status.phase = Phase.Succeeded
    status.reason, status.message = "Succeeded", message
    status.completion_time = now_iso(now)
    set_condition(status, ConditionType.Complete, True, "Succeeded", message, generation, now)
    set_condition(status, ConditionType.Failed, False, "Succeeded", message, generation, now)


def deadline_passed(status: ModelEvaluationStatus, seconds: int | None, now: datetime) -> bool:
    start = parse_time(status.start_time)
    return bool(seconds and start and now - start > timedelta(seconds=seconds))


def ttl_expired(status: ModelEvaluationStatus, seconds: int | None, now: datetime) -> bool:
    done = parse_time(status.completion_time)
    return seconds is not None and done is not None and now - done >= timedelta(seconds=seconds)
