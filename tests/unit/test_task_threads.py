"""A task that holds several CPUs (a worker pod of N CPUs runs one task at a time) uses them
all: it works on N shards side by side in threads of one process, or parses a range alone in
N line-aligned pieces, and its models predict with their share of the CPUs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from modeleval.demo import letor_bytes, make_letor, train_ranker
from modeleval.engine import inference
from modeleval.engine.inference import batched, run_threaded
from modeleval.engine.models import load_model


def test_batches_keep_the_order_and_cover_every_item():
    assert batched(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batched([], 4) == [] and batched([1, 2], 5) == [[1, 2]]


@pytest.fixture()
def no_thread_setting(monkeypatch):
    monkeypatch.setattr(inference, "_PREDICT_THREADS", 0)
    monkeypatch.setattr(inference, "_LOADED", {})


def test_calls_run_side_by_side_and_return_in_order(no_thread_setting):
    barrier = threading.Barrier(4, timeout=10)  # fails unless all four run at once

    def call(i: int) -> tuple[int, int]:
        barrier.wait()
        return i, inference._PREDICT_THREADS

    assert run_threaded(call, [(i,) for i in range(4)], 8) == [(i, 2) for i in range(4)]
    alone = run_threaded(lambda i: (i, inference._PREDICT_THREADS), [(9,)], 8)
    assert alone == [(9, 8)]  # a call alone in its task predicts with every CPU


def test_the_first_failing_call_fails_the_task(no_thread_setting):
    from modeleval.engine.errors import DatasetError

    def call(i: int) -> int:
        if i == 2:
            raise DatasetError("piece 2 is bad")
        return i

    with pytest.raises(DatasetError, match="piece 2 is bad"):
        run_threaded(call, [(i,) for i in range(4)], 4)


def test_models_loaded_before_and_after_predict_with_their_share(no_thread_setting):
    data = make_letor(2000, 6, seed=1)
    model = bytes(train_ranker(data, rounds=3).get_booster().save_raw("json"))
    handle = inference.ModelHandle(model, "m1", "xgboost", "ranking", False, False)
    earlier = inference._model(handle)
    run_threaded(lambda: None, [()] * 2, 8)  # two calls on 8 CPUs: 4 threads each
    later = inference._model(inference.ModelHandle(model, "m2", "xgboost", "ranking", False, False))
    for adapter in (earlier, later):
        assert _nthread(adapter) == 4
    np.testing.assert_allclose(later.predict(data.features), earlier.predict(data.features), rtol=0)


def _nthread(adapter) -> int:
    import json

    return int(json.loads(adapter.booster.save_config())["learner"]["generic_param"]["nthread"])


def test_a_model_keeps_its_default_threads_outside_threaded_tasks(no_thread_setting):
    data = make_letor(500, 4, seed=2)
    model = bytes(train_ranker(data, rounds=2).get_booster().save_raw("json"))
    assert _nthread(load_model(model, "xgboost", "ranking")) == 0  # the runtime's default


@pytest.mark.parametrize("cpu, inline, threads", [
    ("500m", False, 1), ("1", False, 1), ("2", False, 2), ("2500m", False, 2), ("16", False, 16),
    ("16", True, 1),  # an evaluation small enough to run in the driver parses in one thread
])
def test_a_task_parses_its_range_in_as_many_threads_as_it_holds_cpus(tmp_path, monkeypatch, cpu,
                                                                    inline, threads):
    """A worker of N CPUs runs one task at a time (the task requests the worker's CPUs): its
    range is parsed in N pieces side by side, not by one thread beside N-1 idle CPUs."""
    import ray

    from modeleval.engine import inference
    from modeleval.engine.cache import PartStore
    from modeleval.engine.evaluate import Evaluator, Identity, _DatasetEntry
    from modeleval.engine.inference import _parse_range
    from modeleval.runner import parse_manifest
    from modeleval.settings import EngineSettings

    data = make_letor(40_000, 8, mean_group=20, seed=9)
    path = tmp_path / "d.txt"
    path.write_bytes(letor_bytes(data))
    spec = parse_manifest(f"""
apiVersion: modeleval.dev/v1alpha1
kind: ModelEvaluation
metadata: {{name: threads}}
spec:
  task: ranking
  model: {{uri: "file:///unused.json"}}
  dataset: {{uri: "{path.as_uri()}", numFeatures: 8}}
  metrics: [ndcg@10]
  resources: {{cpu: "{cpu}"}}
""").spec
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 16.0}}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    evaluator = Evaluator(spec, Identity("u"), EngineSettings(cache_uri=(tmp_path / "c").as_uri()))
    evaluator._inline = inline
    storage = evaluator.storage
    info = storage.stat(path.as_uri())
    entry = _DatasetEntry(info, _cache(storage, tmp_path), "key", 8, None)
    [letor_range] = evaluator._letor_ranges(entry, 8)
    assert letor_range.threads == threads

    pieces: list[tuple[int, int]] = []
    piece = inference._parse_piece
    monkeypatch.setattr(inference, "_parse_piece",
                        lambda *args: pieces.append(args[2:4]) or piece(*args))
    shard = _parse_range(PartStore(storage), letor_range)
    assert len(pieces) == min(threads, info.size // 2**20)
    np.testing.assert_array_equal(shard.features, data.features)
    np.testing.assert_array_equal(shard.qids, data.qids)


def _cache(storage, tmp_path):
    from modeleval.engine.cache import DatasetCache

    return DatasetCache(storage, (tmp_path / "c").as_uri())
