"""Model adapters: XGBoost (JSON and UBJSON; ranker, classifiers, regressor), ONNX, pickle."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import xgboost as xgb

from modeleval.engine.errors import ModelError, Reason
from modeleval.engine.models import ADAPTERS, ModelAdapter, load_model

rng = np.random.default_rng(0)
X = rng.normal(size=(300, 6)).astype(np.float32)
X[rng.random(X.shape) < 0.05] = np.nan


def raw(model, fmt: str) -> bytes:
    return bytes(model.get_booster().save_raw(fmt))


@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_xgboost_families_predict_like_xgboost(fmt):
    y_bin = (X[:, 0] > 0).astype(int)
    cases = [
        ("ranking", xgb.XGBRanker(n_estimators=5).fit(X, rng.integers(0, 4, 300), qid=np.repeat(np.arange(10), 30)),
         lambda m: m.predict(X)),
        ("binary", xgb.XGBClassifier(n_estimators=5).fit(X, y_bin), lambda m: m.predict_proba(X)[:, 1]),
        ("multiclass", xgb.XGBClassifier(n_estimators=5).fit(X, rng.integers(0, 3, 300)),
         lambda m: m.predict_proba(X)),
        ("regression", xgb.XGBRegressor(n_estimators=5).fit(X, rng.normal(size=300)), lambda m: m.predict(X)),
    ]
    for task, model, reference in cases:
        adapter = load_model(raw(model, fmt), "xgboost", task)
        assert adapter.expected_features == 6
        np.testing.assert_allclose(adapter.predict(X), reference(model), rtol=1e-6, atol=1e-7)


def test_objective_must_fit_the_task():
    clf = xgb.XGBClassifier(n_estimators=2).fit(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(ModelError, match="does not fit task regression") as error:
        load_model(raw(clf, "json"), "xgboost", "regression")
    assert error.value.reason == Reason.SchemaMismatch


def test_onnx_regressor_and_classifier():
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [("input", FloatTensorType([None, 6]))]
    dense = np.nan_to_num(X)
    reg = xgb.XGBRegressor(n_estimators=5).fit(dense, rng.normal(size=300))
    onnx_reg = load_model(convert_xgboost(reg, initial_types=types).SerializeToString(), "onnx", "regression")
    assert onnx_reg.expected_features == 6
    np.testing.assert_allclose(onnx_reg.predict(dense), reg.predict(dense), rtol=1e-4, atol=1e-5)
    clf = xgb.XGBClassifier(n_estimators=5).fit(dense, rng.integers(0, 3, 300))
    onnx_clf = load_model(convert_xgboost(clf, initial_types=types).SerializeToString(), "onnx", "multiclass")
    np.testing.assert_allclose(onnx_clf.predict(dense), clf.predict_proba(dense), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("omp, given, threads", [("3", 0, 3), (None, 0, 0), ("", 0, 0), ("x", 0, 0),
                                                ("3", 2, 2)])
def test_an_onnx_session_uses_the_cpus_its_task_holds(monkeypatch, omp, given, threads):
    """The threads a task gives, else Ray's OMP_NUM_THREADS (a task's CPUs); onnxruntime would
    otherwise start a thread per core of the machine in every task process."""
    import onnxruntime as ort
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    seen: list[int] = []
    session = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda data, options, **kw: (
        seen.append(options.intra_op_num_threads) or session(data, options, **kw)))
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    reg = xgb.XGBRegressor(n_estimators=2).fit(np.nan_to_num(X), rng.normal(size=300))
    model = convert_xgboost(reg, initial_types=[("input", FloatTensorType([None, 6]))])
    load_model(model.SerializeToString(), "onnx", "regression", threads=given)
    assert seen == [threads]


def test_pickle_is_refused_unless_allowed():
    clf = xgb.XGBClassifier(n_estimators=2).fit(X, (X[:, 0] > 0).astype(int))
    blob = pickle.dumps(clf)
    with pytest.raises(ModelError, match="refused") as error:
        load_model(blob, "pickle", "binary")
    assert error.value.reason == Reason.PickleRefused
    with pytest.raises(ModelError, match="is a pickle") as error:
        load_model(blob, "xgboost", "binary")  # a pickle renamed .json is refused too
    assert error.value.reason == Reason.PickleRefused
    allowed = load_model(blob, "pickle", "binary", allow_pickle=True)
    np.testing.assert_allclose(allowed.predict(X), clf.predict_proba(X)[:, 1], rtol=1e-6)


@pytest.mark.parametrize("fmt, data", [("xgboost", b""), ("xgboost", b"{\"learner\": 1"),
                                       ("onnx", b"\x08\x01garbage"), ("xgboost", b"\x00" * 64)])
def test_unreadable_models_are_load_errors(fmt, data):
    with pytest.raises(ModelError) as error:
        load_model(data, fmt, "ranking")
    assert error.value.reason == Reason.ModelLoadError


def test_a_new_format_is_one_class():
    assert all(issubclass(a, ModelAdapter) for a in ADAPTERS.values())
    assert set(ADAPTERS) == {"xgboost", "onnx", "pickle"}


_LEAN = """
import pickle, sys
import numpy as np
sys.argv = {argv!r}
from modeleval.engine.models import import_xgboost, load_model
xgb = import_xgboost()
print(xgb.compat.SKLEARN_INSTALLED, "sklearn" in sys.modules)
model = load_model(sys.stdin.buffer.read(), "pickle", "binary", allow_pickle=True)
np.save(sys.stdout.buffer, model.predict(np.eye(4, dtype=np.float32)))
"""


PROCESSES = [
    (["/ray/_private/workers/default_worker.py"], True),
    (["/venv/bin/modeleval", "run", "evaluation.yaml"], True),  # evaluates only
    (["/site-packages/modeleval/runner.py", "--manifest", "m.yaml"], True),  # the cluster's job
    (["/venv/bin/modeleval", "demo"], False),  # trains through the scikit-learn API first
    (["modeleval"], False)]


@pytest.mark.parametrize("argv, lean", PROCESSES)
def test_which_processes_only_evaluate(argv, lean, monkeypatch):
    from modeleval.engine import models

    monkeypatch.setattr(sys, "argv", argv)
    assert models._evaluates_only() is lean


# One process of each kind imports for real (a process apiece: about 4 s each).
@pytest.mark.parametrize("argv, lean", [PROCESSES[2], PROCESSES[3]])
def test_processes_that_only_evaluate_import_xgboost_without_scikit_learn(argv, lean):
    import io
    import os
    import subprocess
    import sys

    x = np.random.default_rng(0).random((60, 4)).astype(np.float32)
    estimator = xgb.XGBClassifier(n_estimators=3).fit(x, (x[:, 0] > 0.5).astype(int))
    done = subprocess.run([sys.executable, "-c", _LEAN.format(argv=argv)],
                          input=pickle.dumps(estimator), capture_output=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    first, _, rest = done.stdout.partition(b"\n")
    # In a worker: no scikit-learn integration, and scikit-learn not imported...
    assert first.decode().split() == ([str(not lean), str(not lean)])
    # ...while a pickled scikit-learn-style XGBoost model still predicts the same.
    expected = estimator.predict_proba(np.eye(4, dtype=np.float32))[:, 1]
    np.testing.assert_allclose(np.load(io.BytesIO(rest)), expected, rtol=1e-6)
