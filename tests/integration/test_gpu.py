"""The GPU path on a real GPU: predicting actors on CUDA against the CPU path, on generated
MSLR-shaped data with file:// URIs and a local Ray (no test bed). Runs only where nvidia-smi
works; skipped elsewhere (CI has no GPU; the CPU side of this wiring is tests/unit/test_scoring.py).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from modeleval.demo import letor_bytes, make_letor, train_ranker
from modeleval.engine.device import machine_gpu_unavailable


def _no_gpu() -> str | None:
    why = machine_gpu_unavailable()
    return f"no GPU: {why}" if why else None


pytestmark = pytest.mark.skipif(_no_gpu() is not None, reason=_no_gpu() or "")

ROWS, FEATURES = 200_000, 136


@pytest.fixture(scope="module")
def gpu_ray():
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x): the "
                        "GPU path moves batches to the device with it")
    import ray

    from modeleval.engine import scoring

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=os.cpu_count(), log_to_driver=False,
             include_dashboard=False, configure_logging=False)
    assert ray.cluster_resources().get("GPU", 0) >= 1, "nvidia-smi sees a GPU, Ray does not"
    yield
    scoring.release_scorers()
    ray.shutdown()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    data = make_letor(ROWS, FEATURES, seed=11)
    (root / "test.txt").write_bytes(letor_bytes(data))
    ranker = train_ranker(make_letor(20_000, FEATURES, seed=12), rounds=100)
    (root / "ranker.json").write_bytes(bytes(ranker.get_booster().save_raw("json")))
    return root


def _evaluate(files, gpu: int, cache: str):
    from modeleval.engine.evaluate import Evaluator, Identity
    from modeleval.runner import parse_manifest
    from modeleval.settings import EngineSettings

    manifest = parse_manifest(f"""
apiVersion: modeleval.dev/v1alpha1
kind: ModelEvaluation
metadata: {{name: gpu}}
spec:
  task: ranking
  model: {{uri: "{(files / 'ranker.json').as_uri()}"}}
  dataset: {{uri: "{(files / 'test.txt').as_uri()}", numFeatures: {FEATURES}}}
  metrics: [ndcg@10, ndcg@5, map]
  resources: {{gpu: {gpu}}}
  output: {{predictionsUri: "{(files / 'predictions').as_uri()}"}}
""")
    # Every shard waits for the GPU: the test is of the GPU's predictions.
    settings = EngineSettings(cache_uri=(files / cache).as_uri(), node_cache_dir=files / "parts",
                              results_dir=files / "results", predict_while_actors_start=False)
    result = Evaluator(manifest.spec, Identity(uuid.uuid4().hex), settings).run()
    path = result.predictions_uri.removeprefix("file://")
    return result, pq.read_table(path).column("prediction").to_numpy()


def _relative_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0)))


def test_gpu_predictions_and_metrics_agree_with_the_cpu_path(gpu_ray, files):
    cpu, cpu_scores = _evaluate(files, gpu=0, cache="cache-cpu")
    cold, cold_scores = _evaluate(files, gpu=1, cache="cache-gpu")
    warm, warm_scores = _evaluate(files, gpu=1, cache="cache-gpu")
    assert not cold.cache_hit and warm.cache_hit
    for result, scores in ((cold, cold_scores), (warm, warm_scores)):
        assert not any("GPU" in w for w in result.warnings), result.warnings  # ran on CUDA
        assert result.model["predictedBy"] == {"actors": result.dataset["shards"], "tasks": 0}
        assert result.rows == cpu.rows == ROWS
        assert _relative_gap(scores, cpu_scores) <= 1e-6
        assert result.metrics == pytest.approx(cpu.metrics, abs=1e-6)


def test_an_xgboost_model_on_cuda_reads_device_arrays(gpu_ray, files):
    import cupy

    from modeleval.engine.models import load_model

    data = make_letor(5_000, FEATURES, seed=13)
    model = (files / "ranker.json").read_bytes()
    on_gpu = load_model(model, "xgboost", "ranking", use_gpu=True)
    on_cpu = load_model(model, "xgboost", "ranking")
    gpu_scores = on_gpu.predict(cupy.asarray(data.features))
    assert isinstance(gpu_scores, np.ndarray)
    assert _relative_gap(gpu_scores, on_cpu.predict(data.features)) <= 1e-6
