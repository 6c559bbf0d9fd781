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


def test_batches_keep_the_order_and_cover_every_item():
    assert batched(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batched([], 4) == [] and batched([1, 2], 5) == [[1, 2]]


def test_calls_run_side_by_side_and_return_in_order():
    barrier = threading.Barrier(4, timeout=10)  # fails unless all four run at once

    def call(i: int) -> int:
        barrier.wait()
        return i

    assert run_threaded(call, [(i,) for i in range(4)]) == list(range(4))
    assert run_threaded(lambda i: -i, [(9,)]) == [-9]


def test_the_first_failing_call_fails_the_task():
    from modeleval.engine.errors import DatasetError

    def call(i: int) -> int:
        if i == 2:
            raise DatasetError("piece 2 is bad")
        return i

    with pytest.raises(DatasetError, match="piece 2 is bad"):
        run_threaded(call, [(i,) for i in range(4)])


def _nthread(adapter) -> int:
    import json

    return int(json.loads(adapter.booster.save_config())["learner"]["generic_param"]["nthread"])


def test_a_shard_predicts_with_the_threads_it_was_given(monkeypatch):
    """A model is loaded once per thread count and never changed afterwards: calls side by side
    share it, and a worker whose first task held other CPUs (OpenMP's default fixed by it)
    still predicts with what each task holds."""
    monkeypatch.setattr(inference, "_LOADED", {})
    data = make_letor(2000, 6, seed=1)
    model = bytes(train_ranker(data, rounds=3).get_booster().save_raw("json"))
    handle = inference.ModelHandle(model, "m1", "xgboost", "ranking", False)
    predictor = inference.Predictor((handle,), batch_size=10_000)
    from modeleval.engine.shard import ParsedShard

    shard = ParsedShard(data.labels, data.qids, data.features)
    results = {t: predictor.predict(0, shard, "d", t).predictions[0] for t in (0, 1, 4)}
    assert {key: _nthread(adapter) for key, adapter in inference._LOADED.items()} == \
        {("m1", 0): 0, ("m1", 1): 1, ("m1", 4): 4}
    for predictions in results.values():
        np.testing.assert_array_equal(predictions, results[0])


@pytest.mark.parametrize("cpu, inline, threads", [
    ("500m", False, 1), ("1", False, 1), ("2", False, 2), ("2500m", False, 2), ("16", False, 16),
    ("16", True, 0),  # an evaluation small enough to run in the driver: one piece, the defaults
])
def test_a_task_parses_its_range_in_as_many_threads_as_it_holds_cpus(tmp_path, monkeypatch, cpu,
                                                                    inline, threads):
    """A worker of N CPUs runs one task at a time (the task requests the worker's CPUs): its
    range is parsed in N pieces side by side, not by one thread beside N-1 idle CPUs."""
    import ray

    from modeleval.engine import inference
    from modeleval.engine.cache import PartStore
    from modeleval.api.spec import ModelEvaluationSpec
    from modeleval.engine import plan
    from modeleval.engine.cache import PartStore
    from modeleval.engine.datapaths import DatasetEntry, ShardScoring
    from modeleval.engine.inference import _parse_range
    from modeleval.engine.storage import Storage
    from modeleval.settings import EngineSettings

    data = make_letor(40_000, 8, mean_group=20, seed=9)
    path = tmp_path / "d.txt"
    path.write_bytes(letor_bytes(data))
    spec = ModelEvaluationSpec.model_validate({
        "task": "ranking", "model": {"uri": "file:///unused.json"}, "metrics": ["ndcg@10"],
        "dataset": {"uri": path.as_uri(), "numFeatures": 8}, "resources": {"cpu": cpu}})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 16.0}}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    monkeypatch.setattr(plan, "ensure_ray", lambda: None)
    settings = EngineSettings(cache_uri=(tmp_path / "c").as_uri(),
                              execution="inline" if inline else "ray")
    storage = Storage.from_settings(settings)
    info = storage.stat(path.as_uri())
    run = plan.plan_run(spec, settings, plan.Workload("letor", info.size, 8, 1000))
    assert run.inline is inline
    scoring = ShardScoring(spec, run, PartStore(storage), None, lambda *_: None,  # type: ignore[arg-type]
                           settings.shard_bytes)
    entry = DatasetEntry(info, _cache(storage, tmp_path), "key", 8, None)
    [letor_range] = scoring.letor_ranges(entry, 8)
    assert letor_range.threads == threads

    pieces: list[tuple[int, int]] = []
    piece = inference._parse_piece
    monkeypatch.setattr(inference, "_parse_piece",
                        lambda *args: pieces.append(args[2:4]) or piece(*args))
    shard = _parse_range(PartStore(storage), letor_range)
    assert len(pieces) == max(1, min(threads, info.size // 2**20))
    np.testing.assert_array_equal(shard.features, data.features)
    np.testing.assert_array_equal(shard.qids, data.qids)


def _cache(storage, tmp_path):
    from modeleval.engine.cache import DatasetCache

    return DatasetCache(storage, (tmp_path / "c").as_uri())
