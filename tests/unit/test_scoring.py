"""The GPU path on the CPU: the choice of device, batching onto it, and the predicting-actor
wiring, run with a CPU device and checked against the task path's metrics."""

from __future__ import annotations

import sys
import uuid
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from modeleval.demo import letor_bytes, make_letor, train_ranker
from modeleval.engine import device as device_module
from modeleval.engine.device import CPU, CUDA, Device, batches, cuda_unavailable, to_host
from modeleval.engine.inference import ModelHandle, Predictor
from modeleval.engine.scoring import ScoringPlan, gpu_warnings
from modeleval.engine.shard import ParsedShard


# ---------------------------------------------------------------- device choice
def test_a_cpu_evaluation_never_probes_for_a_gpu():
    def probe():
        raise AssertionError("probed")

    assert Device.select(False, probe) == (CPU, None)


def test_cuda_is_chosen_only_where_the_probe_finds_a_usable_gpu():
    assert Device.select(True, lambda: None) == (CUDA, None)
    assert Device.select(True, lambda: "CuPy is not installed") == (CPU, "CuPy is not installed")


@pytest.mark.parametrize("visible", ["", "-1", "NoDevFiles"])
def test_a_worker_without_a_visible_gpu_says_so(monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert cuda_unavailable() == "no NVIDIA GPU is visible to the worker"


def test_a_visible_gpu_without_cupy_is_unusable(monkeypatch):
    monkeypatch.setattr(device_module, "cuda_visible", lambda: True)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    assert cuda_unavailable() == "CuPy is not installed in the worker's image"


def test_a_cuda_runtime_error_is_a_reason_not_a_crash(monkeypatch):
    def broken():
        raise RuntimeError("cudaErrorInsufficientDriver: driver too old\nmore")

    fake = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=broken)))
    monkeypatch.setattr(device_module, "cuda_visible", lambda: True)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert cuda_unavailable() == "CUDA is unusable: cudaErrorInsufficientDriver: driver too old"


# ---------------------------------------------------------------- batching onto the device
class FakeDeviceArray:
    """What cupy.asarray returns, as far as the code under test can tell."""

    def __init__(self, host: np.ndarray):
        self.host = np.array(host)
        self.__cuda_array_interface__ = {"shape": self.host.shape}

    def get(self) -> np.ndarray:
        return self.host


@pytest.fixture
def fake_cupy(monkeypatch):
    moved: list[int] = []

    def asarray(batch):
        moved.append(len(batch))
        return FakeDeviceArray(batch)

    monkeypatch.setitem(sys.modules, "cupy", SimpleNamespace(asarray=asarray))
    return moved


class RowSum:
    """A model that sums each row where its input lives and, like the adapters, returns host
    values."""

    format = "fake"

    def __init__(self, device_arrays: bool):
        self.device_arrays = device_arrays
        self.seen: list[type] = []

    def predict(self, features):
        self.seen.append(type(features))
        if isinstance(features, FakeDeviceArray):
            return np.asarray(to_host(FakeDeviceArray(features.host.sum(axis=1))), np.float64)
        return features.sum(axis=1).astype(np.float64)


@pytest.mark.parametrize("count, size, expected", [
    (10, 4, [(0, 4), (4, 8), (8, 10)]), (8, 4, [(0, 4), (4, 8)]), (3, 100, [(0, 3)]),
    (0, 4, []), (2, 0, [(0, 1), (1, 2)])])
def test_batches_cover_every_row_once(count, size, expected):
    assert batches(count, size) == expected


def test_the_cpu_device_hands_batches_through_untouched(fake_cupy):
    batch = np.ones((3, 2), np.float32)
    assert CPU.put(batch, True) is batch and not fake_cupy


def test_cuda_moves_batches_only_for_models_that_read_device_arrays(fake_cupy):
    batch = np.ones((3, 2), np.float32)
    assert CUDA.put(batch, False) is batch  # onnxruntime's CUDA provider copies host input
    assert isinstance(CUDA.put(batch, True), FakeDeviceArray) and fake_cupy == [3]


def test_device_output_comes_back_to_the_host():
    values = np.arange(3.0)
    assert to_host(values) is values
    np.testing.assert_array_equal(to_host(FakeDeviceArray(values)), values)


def _handle(fingerprint: str) -> ModelHandle:
    return ModelHandle(b"", fingerprint, "fake", "ranking", False)


@pytest.mark.parametrize("device_arrays", [True, False])
def test_scoring_on_cuda_batches_moves_and_returns_host_predictions(fake_cupy, device_arrays):
    features = np.arange(50, dtype=np.float32).reshape(25, 2)
    model = RowSum(device_arrays)
    predictor = Predictor((_handle("a"),), batch_size=10)
    [scores] = predictor.score(features, "shard 0", adapters=lambda h: model, device=CUDA)
    np.testing.assert_array_equal(scores, features.sum(axis=1))
    assert scores.dtype == np.float64
    if device_arrays:
        assert fake_cupy == [10, 10, 5] and model.seen == [FakeDeviceArray] * 3
    else:
        assert fake_cupy == [] and model.seen == [np.ndarray] * 3


def test_prepare_and_score_are_what_predict_returns():
    """The split the GPU path uses (prepare in a CPU task, score in an actor) gives what the
    CPU path's one call gives, slices' columns and absent features included."""
    features = np.arange(24, dtype=np.float32).reshape(6, 4)
    features[1, 2] = np.nan
    shard = ParsedShard(np.arange(6), np.repeat([1, 2], 3), features)
    model = RowSum(False)
    predictor = Predictor((_handle("a"), _handle("b")), 4, keep_features=(2,), missing_as_zero=True)
    rest = predictor.prepare(3, shard)
    rest.predictions = predictor.score(predictor.model_input(shard), "x", adapters=lambda h: model)
    import modeleval.engine.inference as inference

    inference._LOADED.update({("a", 0): model, ("b", 0): model})
    try:
        whole = predictor.predict(3, shard, "x")
    finally:
        inference._LOADED.pop(("a", 0)), inference._LOADED.pop(("b", 0))
    assert rest.index == whole.index == 3 and rest.incomplete_rows == whole.incomplete_rows == 1
    for a, b in zip(rest.predictions, whole.predictions):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rest.columns["feature:2"], whole.columns["feature:2"])
    assert rest.columns["feature:2"][1] == 0.0


# ---------------------------------------------------------------- plan and warnings
@pytest.mark.parametrize("cluster, plan", [
    ({"CPU": 16, "GPU": 1}, ScoringPlan(1, 1.0)), ({"GPU": 4}, ScoringPlan(4, 1.0)),
    ({"GPU": 2.5}, ScoringPlan(2, 1.0)), ({"GPU": 0.5}, ScoringPlan(1, 0.5))])
def test_one_predicting_actor_per_gpu(cluster, plan):
    assert ScoringPlan.for_cluster(cluster) == plan


@pytest.mark.parametrize("cluster, plan", [
    ({"CPU": 16, "GPU": 1}, ScoringPlan(4, 0.25)), ({"GPU": 2}, ScoringPlan(8, 0.25)),
    ({"GPU": 2.5}, ScoringPlan(8, 0.25)), ({"GPU": 0.5}, ScoringPlan(4, 0.125))])
def test_several_predicting_actors_share_each_gpu(cluster, plan):
    got = ScoringPlan.for_cluster(cluster, per_gpu=4)
    assert got == plan
    # What they hold together never passes what the cluster has.
    assert got.actors * got.num_gpus <= cluster["GPU"]


def test_a_gpu_evaluation_starts_the_configured_actors_per_gpu(monkeypatch):
    import ray

    from modeleval.api.spec import ModelEvaluationSpec
    from modeleval.engine import plan
    from modeleval.settings import EngineSettings

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 2.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}])
    monkeypatch.setattr(plan, "ensure_ray", lambda: None)
    spec = ModelEvaluationSpec.model_validate({
        "task": "binary", "model": {"uri": "file:///m.json"}, "metrics": ["auc"],
        "dataset": {"uri": "file:///d.parquet", "format": "parquet"},
        "resources": {"cpu": "1", "gpu": 1}})
    run = plan.plan_run(spec, EngineSettings(scorers_per_gpu=3),
                        plan.Workload("parquet", 1000, 5, 1000, gpu=True))
    assert run.scoring == ScoringPlan(actors=6, num_gpus=1 / 3)
    # The tasks hold CPUs only: the actors hold the GPUs.
    assert (run.task.num_cpus, run.task.num_gpus, run.inline) == (1.0, 0.0, False)


def test_a_gpu_that_was_asked_for_but_not_used_is_a_warning():
    plan = ScoringPlan(2, 1.0)
    assert gpu_warnings(plan, [("cuda", []), ("cuda", [])]) == []
    why = "CuPy is not installed: the models predicted on the CPU"
    assert gpu_warnings(plan, [("cpu", [why]), ("cpu", [why])]) == [
        f"spec.resources.gpu asks for a GPU, but {why}"]
    assert gpu_warnings(ScoringPlan(1, 0.0, use_gpu=False), [("cpu", [])]) == []
    # The GPU asked for was not used at all: the actors started after the tasks had finished.
    assert gpu_warnings(plan, [], actors_predicted=False) == [
        "spec.resources.gpu asks for a GPU, but the tasks predicted every shard on the CPU while "
        "the predicting actors started"]


def test_an_onnx_model_without_the_cuda_provider_says_it_ran_on_the_cpu(monkeypatch):
    """A GPU worker whose onnxruntime lacks the CUDA provider (the CPU package) predicts ONNX
    models on the CPU; the actor reports it, so the result can say so."""
    import onnxruntime as ort

    from modeleval.engine import scoring
    from modeleval.engine.models import OnnxAdapter

    onnx_bytes = _tiny_onnx()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(scoring.Device, "select", classmethod(lambda cls, want: (CUDA, None)))
    actor = scoring.ShardScorer(want_gpu=True)
    predictor = Predictor((ModelHandle(onnx_bytes, "m", "onnx", "regression", False),), 10)
    kind, whys = actor.start(predictor)
    assert kind == "cuda" and isinstance(actor.adapters["m"], OnnxAdapter)
    assert whys == ["onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu is not installed): "
                    "the ONNX models predicted on the CPU"]
    scores = actor.score(np.ones((4, 3), np.float32), predictor, "x")
    np.testing.assert_allclose(scores[0], 6.0)


def _tiny_onnx() -> bytes:
    """y = x @ [1, 2, 3]: an ONNX regression model of 3 features."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([[1.0], [2.0], [3.0]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


# ---------------------------------------------------------------- tasks hand shards to actors
class FakeActor:
    """A predicting actor without Ray: ``score.remote`` runs the actor's own method at once."""

    def __init__(self):
        from modeleval.engine.scoring import ShardScorer

        self.scorer = SimpleNamespace(adapters={}, device=CPU, _adapter=lambda handle: RowSum(False))
        self.scorer.score = lambda *args: ShardScorer.score(self.scorer, *args)
        self.seen: list[tuple[int, Predictor]] = []  # the matrices handed over
        self.parts: list[str] = []  # the cached parts it was asked to read
        self.score = SimpleNamespace(remote=self._remote)
        self.score_part = SimpleNamespace(remote=self._remote_part)

    def _remote(self, features, predictor, where):
        self.seen.append((len(features), predictor))
        return self.scorer.score(features, predictor, where)

    def _remote_part(self, parts, part, predictor):
        from modeleval.engine.scoring import ShardScorer

        self.parts.append(part.uri)
        return ShardScorer.score_part(self.scorer, parts, part, predictor)


def test_a_task_hands_its_shard_to_an_actor_and_finishes_it_itself(monkeypatch):
    """On the GPU path a task gets its predictions from one of the actors (by shard, round
    robin), the actors get no actor handles, and the task computes the shard's per-query
    values as the CPU path does: the same shard, the same result."""
    import modeleval.engine.inference as inference

    monkeypatch.setattr(inference, "result_of", lambda value: value)
    monkeypatch.setattr(inference, "_LOADED", {("a", 0): RowSum(False), ("b", 0): RowSum(False)})
    rng = np.random.default_rng(5)
    shard = ParsedShard(rng.integers(0, 3, 40).astype(np.float32), np.repeat(np.arange(8), 5),
                        rng.random((40, 4), dtype=np.float32))
    names = ("ndcg@3", "map")
    on_cpu = Predictor((_handle("a"), _handle("b")), 7, query_metrics=names)
    actors = [FakeActor(), FakeActor(), FakeActor()]
    on_actors = replace(on_cpu, scorers=tuple(actors))
    for index in range(6):
        mine, theirs = on_cpu.predict(index, shard, "x"), on_actors.predict(index, shard, "x")
        for a, b in zip(mine.predictions, theirs.predictions):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(mine.per_query.qids, theirs.per_query.qids)
        for a, b in zip(mine.per_query.models, theirs.per_query.models):
            assert a.keys() == b.keys() == set(names)
            for name in names:
                np.testing.assert_array_equal(a[name], b[name])
    assert [len(a.seen) for a in actors] == [2, 2, 2]
    assert all(p.scorers == () and p.handles == on_cpu.handles for a in actors for _, p in a.seen)


def test_a_shard_whose_actor_has_not_started_is_predicted_by_its_task(monkeypatch):
    """With the actors' starts in the predictor, a task asks whether its shard's actor has
    started; the shards of one that has not are predicted here, on the CPU, the same."""
    import modeleval.engine.inference as inference

    monkeypatch.setattr(inference, "result_of", lambda value: value)
    monkeypatch.setattr(inference, "_LOADED", {("a", 0): RowSum(False)})
    monkeypatch.setattr(inference, "_started", lambda ref: ref != "actor 1 starting")
    shard = ParsedShard(np.zeros(6), np.repeat([1, 2], 3), np.arange(24, dtype=np.float32).reshape(6, 4))
    actors = [FakeActor(), FakeActor(), FakeActor()]
    predictor = Predictor((_handle("a"),), 4, scorers=tuple(actors),
                          starting=("actor 0 started", "actor 1 starting", "actor 2 started"))
    results = [predictor.predict(index, shard, "x") for index in range(6)]
    assert [r.actor for r in results] == [0, None, 2, 0, None, 2]
    assert [len(a.seen) for a in actors] == [2, 0, 2]
    for result in results:
        np.testing.assert_array_equal(result.predictions[0], shard.features.sum(axis=1))
    # Without the starts, every shard waits for its actor.
    waiting = replace(predictor, starting=())
    assert [waiting.predict(index, shard, "x").actor for index in range(3)] == [0, 1, 2]


def test_an_actor_reads_a_cached_part_on_its_node_rather_than_be_handed_the_matrix(
        monkeypatch, tmp_path):
    """On a cache hit the task names the part; an actor that has it as a file on its node reads
    it itself (no matrix through the object store), and one that has no copy (another node)
    says so and is handed the matrix: the same predictions either way, absent features as 0
    when asked, as on the CPU."""
    import modeleval.engine.inference as inference
    from modeleval.engine.cache import PartStore
    from modeleval.engine.inference import CachedPart
    from modeleval.engine.storage import Storage

    monkeypatch.setattr(inference, "result_of", lambda value: value)
    monkeypatch.setattr(inference, "_LOADED", {("a", 0): RowSum(False)})
    features = np.arange(24, dtype=np.float32).reshape(6, 4)
    features[2, 1] = np.nan
    parts = PartStore(Storage())
    uri = (tmp_path / "p.arrow").as_uri()
    parts.write(uri, ParsedShard(np.zeros(6), np.repeat([1, 2], 3), features))
    shard = parts.read(uri, 4)
    actor = FakeActor()
    on_cpu = Predictor((_handle("a"),), 4, missing_as_zero=True, keep_features=(1,))
    on_actor = replace(on_cpu, scorers=(actor,))
    expected = on_cpu.predict(0, shard, uri)
    here = on_actor.predict(0, shard, uri, part=(parts, CachedPart(0, uri, 4)))
    assert actor.parts == [uri] and actor.seen == [] and here.actor == 0
    gone = (tmp_path / "elsewhere.arrow").as_uri()  # a part this node has no copy of
    there = on_actor.predict(0, shard, uri, part=(parts, CachedPart(0, gone, 4)))
    assert actor.parts == [uri, gone] and [n for n, _ in actor.seen] == [6]
    for result in (here, there):
        np.testing.assert_array_equal(result.predictions[0], expected.predictions[0])
        np.testing.assert_array_equal(result.columns["feature:1"], expected.columns["feature:1"])
        assert result.incomplete_rows == expected.incomplete_rows == 1
    np.testing.assert_array_equal(expected.predictions[0], np.nan_to_num(features).sum(axis=1))


def test_only_a_ranking_evaluation_computes_per_query_values_in_its_tasks(monkeypatch):
    import modeleval.engine.inference as inference

    monkeypatch.setattr(inference, "_LOADED", {("a", 0): RowSum(False)})
    shard = ParsedShard(np.array([1.0, 0.0, np.nan]), np.array([1, 1, 2]), np.ones((3, 2), np.float32))
    assert Predictor((_handle("a"),), 4).predict(0, shard, "x").per_query is None
    # A label the whole-dataset path must refuse: the shard leaves it to that path.
    ranking = Predictor((_handle("a"),), 4, query_metrics=("ndcg@10",))
    assert ranking.predict(0, shard, "x").per_query is None
    shard.labels[2] = 2.0
    values = ranking.predict(0, shard, "x").per_query
    np.testing.assert_array_equal(values.qids, [1, 2])
    np.testing.assert_array_equal(values.models[0]["ndcg@10"], [1.0, 1.0])


# ---------------------------------------------------------------- the actor wiring on Ray
@pytest.fixture(scope="module")
def local_ray():
    """A one-CPU Ray that also declares one GPU: enough for actors asking num_gpus=1, on a
    machine where no worker can use one (the bad input of a GPU that is not there)."""
    import ray

    from modeleval.engine import scoring

    if ray.is_initialized():  # an earlier test's connection (e.g. to the bed's Ray head)
        ray.shutdown()
    # address="local": a Ray of its own even where RAY_ADDRESS names the bed's head.
    ray.init(address="local", num_cpus=1, num_gpus=1, object_store_memory=100 * 2**20,
             log_to_driver=False, include_dashboard=False, configure_logging=False)
    yield
    scoring.release_scorers()
    ray.shutdown()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    data = make_letor(3_000, 12, mean_group=40, seed=3, sparse=0.05)
    (root / "test.txt").write_bytes(letor_bytes(data))
    for name, seed in (("candidate", 3), ("baseline", 4)):
        ranker = train_ranker(make_letor(2_000, 12, mean_group=40, seed=seed), rounds=15)
        (root / f"{name}.json").write_bytes(bytes(ranker.get_booster().save_raw("json")))
    return root


def _evaluate(files, gpu: int = 0, scoring: ScoringPlan | None = None, cache: str = "cold",
              wait_for_actors: bool = True):
    from modeleval.engine.evaluate import Evaluator, Identity
    from modeleval.runner import parse_manifest
    from modeleval.settings import EngineSettings

    manifest = parse_manifest(f"""
apiVersion: modeleval.dev/v1alpha1
kind: ModelEvaluation
metadata: {{name: scoring}}
spec:
  task: ranking
  model: {{uri: "{(files / 'candidate.json').as_uri()}"}}
  baseline: {{model: {{uri: "{(files / 'baseline.json').as_uri()}"}}}}
  dataset: {{uri: "{(files / 'test.txt').as_uri()}", missingFeatures: zero}}
  metrics: [ndcg@10, map]
  slices: [{{name: f3, feature: 3, buckets: [1.0, 2.0]}}]
  batchSize: 1000
  resources: {{gpu: {gpu}}}
""")
    cache_dir = files / (f"cache-{uuid.uuid4().hex}" if cache == "cold" else f"cache-{cache}")
    settings = EngineSettings(cache_uri=cache_dir.as_uri(), inline_bytes=0, shard_bytes=64 * 1024,
                              max_inflight_tasks=3, node_cache_dir=files / "parts",
                              results_dir=files / "results",
                              predict_while_actors_start=not wait_for_actors)
    return Evaluator(manifest.spec, Identity(uuid.uuid4().hex), settings, scoring=scoring).run()


def _same(a, b) -> None:
    assert a.rows == b.rows and a.queries == b.queries
    assert a.metrics == pytest.approx(b.metrics, abs=1e-12)
    assert a.baseline["metrics"] == pytest.approx(b.baseline["metrics"], abs=1e-12)
    assert a.slices == b.slices


def test_predicting_actors_give_the_task_paths_metrics(local_ray, files):
    """Cold (parse tasks feeding the actor, many shards through a window of 3) and warm (cache
    reads feeding it): the same metrics, baseline and slices as tasks that predict themselves."""
    on_cpu = ScoringPlan(actors=1, num_gpus=0.0, use_gpu=False)
    tasks = _evaluate(files)
    cold = _evaluate(files, scoring=on_cpu, cache="actors")
    warm = _evaluate(files, scoring=on_cpu, cache="actors")
    assert cold.dataset["shards"] > 3 and not cold.cache_hit and warm.cache_hit
    for result in (cold, warm):
        _same(result, tasks)
        assert not any("GPU" in w for w in result.warnings)
        assert result.model["predictedBy"] == {"actors": result.dataset["shards"], "tasks": 0}
    assert "predictedBy" not in tasks.model


def test_tasks_predict_on_the_cpu_while_their_actors_start(local_ray, files):
    """New actors (a process and the models each) start while the tasks go on: shards whose
    actor has not started are predicted by their task, on the CPU, and the result counts them;
    the metrics are those of tasks that predict everything."""
    on_cpu = ScoringPlan(actors=1, num_gpus=0.0, use_gpu=False)
    tasks = _evaluate(files)
    for cache in ("cold", "mixed", "mixed"):  # new actors each time; then a cache hit
        result = _evaluate(files, scoring=on_cpu, cache=cache, wait_for_actors=False)
        _same(result, tasks)
        by = result.model["predictedBy"]
        assert by["actors"] + by["tasks"] == result.dataset["shards"] > 3


def test_actors_are_kept_between_evaluations_only_when_the_plan_says_so(local_ray):
    from modeleval.engine import scoring

    kept = ScoringPlan(actors=1, num_gpus=0.0, use_gpu=False, keep=True)
    assert scoring.scorers(kept) is scoring.scorers(kept)
    fresh = ScoringPlan(actors=1, num_gpus=0.0, use_gpu=False)
    first, second = scoring.scorers(fresh), scoring.scorers(fresh)
    assert first != second
    scoring.stop_scorers(first + second)
    scoring.release_scorers()
    assert not scoring._KEPT


def test_asking_for_a_gpu_the_worker_cannot_see_is_a_warning_in_the_result(local_ray, files):
    """Ray offers a GPU, the predicting actor finds none it can use: it predicts on the CPU,
    and the result says so rather than hiding it."""
    tasks = _evaluate(files)
    result = _evaluate(files, gpu=1)
    _same(result, tasks)
    [warning] = [w for w in result.warnings if "GPU" in w]
    assert warning.startswith("spec.resources.gpu asks for a GPU, but ")
    assert "predicted on the CPU" in warning
    assert result.document().warnings == result.warnings
