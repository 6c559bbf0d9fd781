"""Model adapters: one interface (load, predict, expected features), one class per format.

A new format is one subclass registered in ``ADAPTERS``. Predictions are task-shaped: a score
per row for ranking, binary (probability of class 1) and regression; a probability matrix
(rows x classes) for multiclass.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from .device import cuda_visible, to_host
from .errors import ModelError, Reason


class ModelAdapter(ABC):
    """A loaded model. Subclasses set ``format`` and implement the three methods."""

    format: ClassVar[str]
    # Whether predict takes device (CuPy) arrays when the model runs on a GPU.
    device_arrays: ClassVar[bool] = False
    # Why a model loaded for a GPU runs on the CPU all the same (None: it does not).
    cpu_reason: str | None = None

    @classmethod
    @abstractmethod
    def load(cls, data: bytes, task: str, use_gpu: bool = False, threads: int = 0) -> "ModelAdapter":
        """Builds the adapter from the model file's bytes, predicting with ``threads`` threads
        where the runtime lets it choose (0: its default); raises ModelError when unreadable."""

    @property
    @abstractmethod
    def expected_features(self) -> int | None:
        """How many input features the model takes, when the format records it."""

    @abstractmethod
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Task-shaped predictions for a float32 matrix (NaN = missing)."""


def _in_ray_worker() -> bool:
    return os.path.basename(sys.argv[0] if sys.argv else "") == "default_worker.py"


def _evaluates_only() -> bool:
    """Whether this process only evaluates, never trains through XGBoost's scikit-learn API: a
    Ray worker, `modeleval run`, or the cluster job's runner (``python -m modeleval.runner``)."""
    argv = sys.argv if sys.argv else [""]
    program = os.path.basename(argv[0])
    return (_in_ray_worker() or (program == "modeleval" and argv[1:2] == ["run"])
            or argv[0].endswith(os.path.join("modeleval", "runner.py")))


def import_xgboost():
    """The xgboost module. In a process that only evaluates and has not imported scikit-learn
    (a Ray worker, `modeleval run`, the job's runner), it is imported without its scikit-learn
    integration: xgboost imports scikit-learn whenever it is installed, at about 1.2 s of CPU
    per process (16 workers starting at once on 16 cores: 4.2 s to import xgboost, 2.2 s
    without; an inline `modeleval run` spends it before its first prediction), and the engine
    only calls ``Booster``; pickled scikit-learn-style XGBoost models still unpickle and
    predict, and scikit-learn itself imports as usual afterwards. (A process that trains
    through that API, such as `modeleval demo` or a test session, imports it as usual.)"""
    if "xgboost" in sys.modules or "sklearn" in sys.modules or not _evaluates_only():
        import xgboost

        return xgboost
    sys.modules["sklearn"] = None  # type: ignore[assignment] - import sklearn raises ImportError
    try:
        import xgboost
    finally:
        if sys.modules.get("sklearn", 0) is None:
            del sys.modules["sklearn"]
    return xgboost


class XGBoostAdapter(ModelAdapter):
    """XGBoost boosters saved as JSON or UBJSON (the format is detected from the bytes)."""

    format = "xgboost"
    device_arrays = True  # a CUDA booster reads CuPy input in place; host input goes via a DMatrix

    def __init__(self, booster, task: str):
        self.booster = booster
        self.task = task

    @classmethod
    def load(cls, data: bytes, task: str, use_gpu: bool = False,
             threads: int = 0) -> "XGBoostAdapter":
        xgb = import_xgboost()

        if not data:
            raise ModelError("the model file is empty")
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(data))
        except xgb.core.XGBoostError as error:
            # XGBoost prefixes its messages with "[time] source-file:line: ".
            detail = re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", str(error).splitlines()[0])
            raise ModelError(f"not a readable XGBoost model (JSON or UBJSON): {detail[:300]}") from None
        # 0: OpenMP's default, which a process fixes when it first loads XGBoost (in a Ray worker,
        # from its first task's CPUs), so tasks say how many they hold.
        booster.set_param({"nthread": threads})
        if use_gpu and cuda_visible():
            booster.set_param({"device": "cuda"})
        adapter = cls(booster, task)
        adapter._check_objective()
        return adapter

    def _check_objective(self) -> None:
        import json

        try:
            objective = json.loads(self.booster.save_config())["learner"]["objective"]["name"]
        except (KeyError, ValueError):
            return
        family = ("rank:" if self.task == "ranking" else
                  "binary:" if self.task == "binary" else
                  "multi:" if self.task == "multiclass" else "reg:")
        compatible = objective.startswith(family) or (
            self.task == "ranking" and objective.startswith(("reg:", "binary:")))
        if not compatible:
            raise ModelError(f"the model's objective {objective} does not fit task {self.task}",
                             Reason.SchemaMismatch)

    @property
    def expected_features(self) -> int | None:
        return int(self.booster.num_features())

    def predict(self, features: np.ndarray) -> np.ndarray:
        # inplace_predict skips building a DMatrix: the fastest path XGBoost offers.
        out = self.booster.inplace_predict(features, missing=np.nan)
        return np.asarray(to_host(out), dtype=np.float64)


class OnnxAdapter(ModelAdapter):
    """ONNX models run with onnxruntime. For classifiers the probability output is used."""

    format = "onnx"

    def __init__(self, session, task: str):
        self.session = session
        self.task = task
        self.input = session.get_inputs()[0]

    @classmethod
    def load(cls, data: bytes, task: str, use_gpu: bool = False, threads: int = 0) -> "OnnxAdapter":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # The CPUs the task holds (or, not given, Ray's OMP_NUM_THREADS: a task's CPUs), not a
        # thread per core of the machine in each of the machine's task processes.
        omp = os.environ.get("OMP_NUM_THREADS", "")
        threads = threads or (int(omp) if omp.isdigit() else 0)
        if threads > 0:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if use_gpu and cuda:
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(data, options, providers=providers)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises several unrelated types
            raise ModelError(f"not a readable ONNX model: {str(error).splitlines()[0][:300]}") from None
        adapter = cls(session, task)
        if use_gpu and not cuda:
            adapter.cpu_reason = ("onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu is "
                                  "not installed): the ONNX models predicted on the CPU")
        return adapter

    @property
    def expected_features(self) -> int | None:
        shape = self.input.shape
        return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None

    def predict(self, features: np.ndarray) -> np.ndarray:
        outputs = self.session.run(None, {self.input.name: features.astype(np.float32, copy=False)})
        if self.task in ("binary", "multiclass"):
            probabilities = _probabilities(outputs)
            if self.task == "binary":
                return probabilities[:, 1] if probabilities.ndim == 2 and probabilities.shape[1] == 2 \
                    else probabilities.reshape(-1)
            return probabilities
        return np.asarray(outputs[0], dtype=np.float64).reshape(-1)


def _probabilities(outputs: list) -> np.ndarray:
    """The probability output of a converted classifier: a float matrix, or a list of dicts
    (``ZipMap``) turned into one; falls back to the first float output."""
    for out in outputs:
        if isinstance(out, list) and out and isinstance(out[0], dict):
            keys = sorted(out[0])
            return np.array([[row[k] for k in keys] for row in out], dtype=np.float64)
    floats = [np.asarray(o) for o in outputs if np.asarray(o).dtype.kind == "f"]
    if not floats:
        raise ModelError("the ONNX model has no float output to read probabilities from")
    return floats[-1].astype(np.float64)


class PickleAdapter(ModelAdapter):
    """Pickled scikit-learn-style estimators or XGBoost boosters. Loading a pickle runs code from
    the file, so it happens only when the spec sets ``model.allowPickle: true``."""

    format = "pickle"

    def __init__(self, model, task: str):
        self.model = model
        self.task = task

    @classmethod
    def load(cls, data: bytes, task: str, use_gpu: bool = False,
             threads: int = 0) -> "PickleAdapter":
        try:
            model = pickle.loads(data)  # noqa: S301 - only reached with allowPickle
        except Exception as error:  # noqa: BLE001
            raise ModelError(f"not a readable pickle: {error}") from None
        if not hasattr(model, "predict") and not hasattr(model, "inplace_predict"):
            raise ModelError(f"the pickled {type(model).__name__} has no predict method")
        return cls(model, task)

    @property
    def expected_features(self) -> int | None:
        n = getattr(self.model, "n_features_in_", None)
        if n is None and hasattr(self.model, "num_features"):
            n = self.model.num_features()
        return int(n) if n is not None else None

    def predict(self, features: np.ndarray) -> np.ndarray:
        if hasattr(self.model, "inplace_predict"):
            return np.asarray(self.model.inplace_predict(features), dtype=np.float64)
        if self.task in ("binary", "multiclass") and hasattr(self.model, "predict_proba"):
            probabilities = np.asarray(self.model.predict_proba(features), dtype=np.float64)
            return probabilities[:, 1] if self.task == "binary" else probabilities
        return np.asarray(self.model.predict(features), dtype=np.float64).reshape(-1)


ADAPTERS: dict[str, type[ModelAdapter]] = {
    a.format: a for a in (XGBoostAdapter, OnnxAdapter, PickleAdapter)
}


def load_model(data: bytes, fmt: str, task: str, allow_pickle: bool = False,
               use_gpu: bool = False, threads: int = 0) -> ModelAdapter:
    if fmt == "pickle" and not allow_pickle:
        raise ModelError("pickle models are refused: loading one runs arbitrary code. Set "
                         "model.allowPickle: true only for files you trust", Reason.PickleRefused)
    if fmt != "pickle" and data[:2] in (b"\x80\x04", b"\x80\x05", b"\x80\x03", b"\x80\x02"):
        raise ModelError(f"the model file is a pickle, not {fmt}; pickles are refused unless "
                         "model.format is pickle and model.allowPickle is true", Reason.PickleRefused)
    try:
        adapter = ADAPTERS[fmt]
    except KeyError:
        raise ModelError(f"unknown model format '{fmt}' (known: {', '.join(ADAPTERS)})") from None
    return adapter.load(data, task, use_gpu=use_gpu, threads=threads)
