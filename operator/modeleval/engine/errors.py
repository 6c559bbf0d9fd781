"""Typed evaluation errors. Each carries the reason code that status conditions and results use."""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    InvalidSpec = "InvalidSpec"
    ModelNotFound = "ModelNotFound"
    DatasetNotFound = "DatasetNotFound"
    AccessDenied = "AccessDenied"
    StorageUnavailable = "StorageUnavailable"
    ModelLoadError = "ModelLoadError"
    PickleRefused = "PickleRefused"
    DatasetParseError = "DatasetParseError"
    EmptyDataset = "EmptyDataset"
    SchemaMismatch = "SchemaMismatch"
    LabelError = "LabelError"
    InferenceError = "InferenceError"
    Unschedulable = "Unschedulable"
    ResultsStoreUnavailable = "ResultsStoreUnavailable"


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


class ResultsStoreError(EvaluationError):
    reason = Reason.ResultsStoreUnavailable
    retryable = True
