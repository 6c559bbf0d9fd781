"""Typed evaluation errors. Each carries its :class:`~modeleval.api.reasons.Reason`, the one
vocabulary that status conditions, result documents and Events share."""

from __future__ import annotations

from ..api.reasons import Reason


class EvaluationError(Exception):
    """An evaluation failed for a reason the user can act on."""

    reason: Reason = Reason.InferenceError
    retryable = False

    def __init__(self, message: str, reason: Reason | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if retryable is not None:
            self.retryable = retryable

    def __reduce__(self):  # survive pickling across Ray workers with reason and flags intact
        return (self.__class__, (self.message, self.reason, self.retryable))

    def to_dict(self) -> dict[str, str | bool]:
        return {"reason": Reason(self.reason).value, "message": self.message,
                "retryable": self.retryable}


class StorageError(EvaluationError):
    """Reading or writing an object failed (missing, denied, unreachable)."""


class ModelError(EvaluationError):
    reason = Reason.ModelLoadError


class DatasetError(EvaluationError):
    reason = Reason.DatasetParseError


__all__ = ["DatasetError", "EvaluationError", "ModelError", "Reason", "StorageError"]
