"""The evaluation's plan: chosen once (inline or Ray) by a cost model, frozen; and the engine's
functions stay short (a newcomer reads each stage whole)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from modeleval.engine import plan
from modeleval.engine.plan import Capacity, Choice, RunPlan, Workload, choose

ENGINE = Path(__file__).resolve().parents[2] / "operator" / "modeleval" / "engine"
MAX_FUNCTION_LINES = 60
MODEL_100_TREES = 672_336  # bytes of bench/inline.py's model: 100 depth-6 trees, JSON


def _parquet(rows: int, features: int = 50) -> Workload:
    """A float32 Parquet table of ``rows`` x ``features`` (5.1 bytes a value, as written)."""
    return Workload("parquet", int(rows * features * 5.1), features, MODEL_100_TREES)


def _letor(rows: int, features: int = 50) -> Workload:
    return Workload("letor", int(rows * features * 22), features, MODEL_100_TREES)


LAPTOP = Capacity(local_cpus=8, ray_cpus=8, connected=False)


def test_a_small_file_runs_inline():
    choice = choose(_parquet(10_000), LAPTOP)
    assert choice == Choice(True, "cost", choice.inline_seconds, choice.ray_seconds)
    assert choice.inline_seconds < 0.1 < plan.RAY_START_SECONDS <= choice.ray_seconds


def test_the_issue_laptop_case_runs_inline():
    """500k x 50 Parquet, 100 trees, Ray not running: starting Ray costs more than the work."""
    choice = choose(_parquet(500_000), LAPTOP)
    assert choice.inline and choice.inline_seconds < choice.ray_seconds


def test_3m_rows_of_text_on_many_cpus_run_on_ray():
    """3M LETOR lines are parsed by one thread inline; on Ray by every CPU, worth the start-up."""
    many = Capacity(local_cpus=64, ray_cpus=64, connected=False)
    choice = choose(_letor(3_000_000), many)
    assert not choice.inline and choice.ray_seconds < choice.inline_seconds
    # A tenth of it on two CPUs does not win the start-up back: inline.
    assert choose(_letor(300_000), Capacity(2, 2, False)).inline


def test_3m_rows_on_a_connected_cluster_of_many_cpus_run_on_ray():
    """A job on a Ray cluster (no start-up) whose driver has 2 CPUs and the cluster 32."""
    choice = choose(_parquet(3_000_000), Capacity(local_cpus=2, ray_cpus=32, connected=True))
    assert not choice.inline


def test_being_connected_to_ray_already_makes_ray_cheaper():
    work = _letor(300_000)
    cold, running = choose(work, Capacity(8, 8, False)), choose(work, Capacity(8, 8, True))
    assert cold.inline and not running.inline
    assert cold.ray_seconds - running.ray_seconds == pytest.approx(
        plan.RAY_START_SECONDS - plan.RAY_CONNECTED_SECONDS)


def test_an_explicit_setting_overrides_the_cost_model():
    small, large = _parquet(1_000), _letor(3_000_000)
    many = Capacity(64, 64, True)
    assert choose(small, many, execution="ray") == Choice(False, "setting")
    assert choose(large, many, execution="inline") == Choice(True, "setting")
    # The former fixed rule, when set: datasets up to inline_bytes inline, 0 always Ray.
    assert choose(small, many, inline_bytes=0) == Choice(False, "setting")
    assert choose(large, many, inline_bytes=large.data_bytes) == Choice(True, "setting")
    # A GPU evaluation runs on Ray whatever the setting: its actors hold the GPUs.
    gpu = dataclasses.replace(small, gpu=True)
    assert choose(gpu, many, execution="inline") == Choice(False, "gpu")
    with pytest.raises(ValueError, match="execution must be one of"):
        choose(small, many, execution="sometimes")


def test_a_cache_hit_counts_its_parts_rows_exactly():
    work = Workload("cache", 500_000 * 50 * 4, 50, MODEL_100_TREES)
    assert work.rows == 500_000 and not work.read_in_driver
    # Parts in object storage are fetched first: slower to read than parts on this disk.
    remote = dataclasses.replace(work, encoding="remote-cache")
    assert remote.rows == work.rows and remote.read_seconds > work.read_seconds


def test_a_tiny_evaluation_in_a_ray_job_stays_inline_without_touching_ray(monkeypatch):
    """Below the least Ray could cost, the plan never asks the cluster (nor imports Ray)."""
    from modeleval.api.spec import ModelEvaluationSpec
    from modeleval.settings import EngineSettings

    monkeypatch.setenv("RAY_ADDRESS", "ray://nowhere:1")

    def refuse() -> None:
        raise AssertionError("the plan joined Ray")

    monkeypatch.setattr(plan, "ensure_ray", refuse)
    spec = ModelEvaluationSpec.model_validate({
        "task": "binary", "model": {"uri": "file:///m.json"}, "metrics": ["auc"],
        "dataset": {"uri": "file:///d.parquet", "format": "parquet"}})
    run = plan.plan_run(spec, EngineSettings(), _parquet(2_000))
    assert run.inline and run.ray is None and run.choice.ray_seconds is None
    assert run.resources_used("cluster", 1, 0)["plan"]["decidedBy"] == "cost"


def test_the_plan_is_frozen():
    run = RunPlan(Choice(True, "cost", 0.1, 4.2), local_cpus=2)
    for name, value in (("choice", Choice(False, "setting")), ("max_inflight", 9)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(run, name, value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.task.num_cpus = 4  # type: ignore[misc]
    assert run.shard_threads(3) == [0, 0, 0] and run.task_slots == 1 and run.table_parts == 1


def _long_functions(directory: Path) -> list[str]:
    out = []
    for path in sorted(directory.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_engine_function_is_over_60_lines():
    assert _long_functions(ENGINE) == []


def test_the_length_rule_sees_a_long_function(tmp_path):
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    (tmp_path / "short.py").write_text("def g():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1))
    assert _long_functions(tmp_path) == [f"long.py:1 f ({MAX_FUNCTION_LINES + 1} lines)"]


def test_the_evaluator_sets_its_attributes_only_when_constructed():
    """Its stages take what they need and return values: no method sets an attribute a later
    one (or a cached property) reads."""
    late = []
    for name, owner in (("evaluate.py", "Evaluator"), ("datapaths.py", "ShardScoring")):
        module = ast.parse((ENGINE / name).read_text())
        [cls] = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == owner]
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef):
                continue
            decorators = {getattr(d, "id", getattr(d, "attr", "")) for d in method.decorator_list}
            assert "cached_property" not in decorators, f"{owner}.{method.name}"
            if method.name == "__init__":
                continue
            late += [f"{owner}.{method.name}:{node.lineno}" for node in ast.walk(method)
                     if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                     and isinstance(node.value, ast.Name) and node.value.id == "self"]
    assert late == []


def test_an_inline_table_predicted_in_memory_agrees_with_its_cached_part(tmp_path, monkeypatch):
    """Cold, an inline table is predicted from memory while its part is written; warm, from
    that part: the same metrics, slices and counts, so the part is whole and equal."""
    import uuid

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    from modeleval.api.spec import ModelEvaluationSpec
    from modeleval.engine.cache import PartStore
    from modeleval.engine.evaluate import Evaluator, Identity
    from modeleval.settings import EngineSettings

    rng = np.random.default_rng(5)
    values = rng.standard_normal((3000, 5)).astype(np.float32)
    values[rng.random(values.shape) < 0.02] = np.nan
    labels = (np.nan_to_num(values[:, 0]) + rng.standard_normal(3000) > 0).astype(np.int8)
    country = rng.choice(["de", "fr", "<b>"], 3000)
    pq.write_table(pa.table({**{f"f{j}": values[:, j] for j in range(5)}, "label": labels,
                             "country": country}), tmp_path / "t.parquet")
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3},
                        xgb.DMatrix(values, label=labels), num_boost_round=5)
    booster.save_model(tmp_path / "m.json")
    spec = ModelEvaluationSpec.model_validate({
        "task": "binary", "model": {"uri": (tmp_path / "m.json").as_uri()},
        "dataset": {"uri": (tmp_path / "t.parquet").as_uri(), "format": "parquet",
                    "labelColumn": "label"},
        "metrics": ["auc", "accuracy"], "slices": [{"name": "country", "column": "country"}]})
    settings = EngineSettings(cache_uri=(tmp_path / "cache").as_uri(), report=False,
                              results_dir=tmp_path / "results")
    reads: list[str] = []
    read = PartStore.read
    monkeypatch.setattr(PartStore, "read", lambda store, uri, *args, **kwargs: (
        reads.append(uri), read(store, uri, *args, **kwargs))[1])
    cold = Evaluator(spec, Identity(uuid.uuid4().hex), settings).run()
    assert reads == []  # predicted from memory: the part written was not read back
    warm = Evaluator(spec, Identity(uuid.uuid4().hex), settings).run()
    assert len(reads) == 1
    assert cold.resources["inline"] and not cold.cache_hit and warm.cache_hit
    assert cold.metrics == warm.metrics and cold.slices == warm.slices
    assert set(cold.slices["country"]) == {"de", "fr", "<b>"}
    assert cold.dataset == warm.dataset and cold.dataset["missingValues"] > 0
