"""The evaluation engine against the test bed's real MinIO, FerretDB and Ray head."""

from __future__ import annotations

import io
import pickle
import time
import uuid

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from pymongo import MongoClient

from modeleval.demo import letor_bytes, make_letor, train_ranker
from modeleval.engine.errors import EvaluationError, Reason
from modeleval.engine.evaluate import Evaluator, Identity
from modeleval.engine.scoring import ScoringPlan
from modeleval.engine.storage import Storage
from modeleval.runner import parse_manifest, run_manifest
from modeleval.settings import EngineSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(bed):
    client = boto3.client("s3", endpoint_url=bed.s3_endpoint, aws_access_key_id=bed.s3_access_key,
                          aws_secret_access_key=bed.s3_secret_key, region_name="us-east-1")
    return client


@pytest.fixture(scope="module")
def bucket(s3):
    name = f"engine-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def ranking_assets(s3, bucket):
    """MSLR-shaped test data (uneven groups, some sparse lines) and a trained ranker in MinIO."""
    train = make_letor(6000, 136, mean_group=40, seed=11)
    test = make_letor(5000, 136, mean_group=35, seed=12, sparse=0.05)
    ranker = train_ranker(train, rounds=15)
    s3.put_object(Bucket=bucket, Key="models/ranker.json",
                  Body=bytes(ranker.get_booster().save_raw("json")))
    s3.put_object(Bucket=bucket, Key="models/ranker.ubj",
                  Body=bytes(ranker.get_booster().save_raw("ubj")))
    s3.put_object(Bucket=bucket, Key="data/test.txt", Body=letor_bytes(test))
    return ranker, test


@pytest.fixture()
def settings(bed, tmp_path):
    # inline_bytes=0: these tests are about the Ray path, whatever the size of their data.
    return EngineSettings(mongodb_uri=bed.mongodb_uri, cache_uri=f"file://{tmp_path}/cache",
                          results_dir=tmp_path / "results", node_cache_dir=tmp_path / "node",
                          inline_bytes=0)


def manifest(bucket: str, **spec: str) -> str:
    body = {
        "task": "ranking",
        "model": f"{{uri: s3://{bucket}/models/ranker.json}}",
        "dataset": f"{{uri: s3://{bucket}/data/test.txt, numFeatures: 136}}",
        "metrics": "[ndcg@10, map@10, mrr, ndcg@5]",
        **spec,
    }
    lines = "".join(f"  {k}: {v}\n" for k, v in body.items())
    return (f"apiVersion: modeleval.dev/v1alpha1\nkind: ModelEvaluation\n"
            f"metadata: {{name: it-{uuid.uuid4().hex[:6]}}}\nspec:\n{lines}")


def xgboost_reference(ranker, data, metric: str) -> float:
    booster = ranker.get_booster().copy()
    d = xgb.DMatrix(data.features, label=data.labels, qid=data.qids, missing=np.nan)
    booster.set_param({"eval_metric": metric})
    fields = dict(f.split(":") for f in booster.eval(d, "d").split("\t")[1:])
    return float(fields[f"d-{metric}"])


def test_ranking_from_s3_to_mongodb(bed, bucket, ranking_assets, settings):
    ranker, test = ranking_assets
    spec = parse_manifest(manifest(bucket, output=f"{{predictionsUri: s3://{bucket}/predictions}}"))
    seen: list[tuple[int, int, str]] = []
    identity = Identity(uid=uuid.uuid4().hex, attempt=1, name=spec.metadata.name)
    result = run_manifest(spec, identity, settings, progress=lambda *p: seen.append(p))

    assert result.rows == 5000 and not result.cache_hit
    assert result.metrics["ndcg@10"] == pytest.approx(xgboost_reference(ranker, test, "ndcg@10"), abs=1e-6)
    assert result.metrics["ndcg@5"] == pytest.approx(xgboost_reference(ranker, test, "ndcg@5"), abs=1e-6)
    assert seen[-1][0] == seen[-1][1] > 0 and all(d <= t for d, t, _ in seen)

    with MongoClient(bed.mongodb_uri) as mongo:
        doc = mongo["modeleval"]["results"].find_one({"_id": f"{identity.uid}:1"})
    assert doc["status"] == "Succeeded" and doc["metrics"] == result.metrics
    assert doc["dataset"]["fingerprint"].startswith("s3-") and doc["model"]["features"] == 136
    assert doc["rows"] == 5000 and doc["queries"] == len(np.unique(test.qids))

    table = pq.read_table(io.BytesIO(Storage().read(result.predictions_uri)))
    expected = ranker.get_booster().inplace_predict(test.features)
    np.testing.assert_allclose(table.column("prediction").to_numpy(), expected, rtol=1e-6)


def test_second_model_on_same_data_skips_parsing(bed, bucket, ranking_assets, settings):
    first = run_manifest(parse_manifest(manifest(bucket)), Identity(uuid.uuid4().hex), settings)
    again = parse_manifest(manifest(bucket, model=f"{{uri: s3://{bucket}/models/ranker.ubj}}"))
    second = run_manifest(again, Identity(uuid.uuid4().hex), settings)
    assert second.cache_hit and not first.cache_hit
    assert second.metrics == pytest.approx(first.metrics, abs=1e-12)  # UBJSON = JSON model


def test_ray_tasks_profile_their_shards_and_a_reference_is_found_in_mongodb(
        bed, bucket, ranking_assets, settings):
    """On Ray, each task profiles its shard (sparse lines' omitted features missing) and the
    driver's merge equals numpy on the whole file; a later evaluation names the first as its
    reference, found in MongoDB in its own namespace: the same data, so no feature drifts."""
    _, test = ranking_assets
    first = run_manifest(parse_manifest(manifest(bucket)),
                         Identity(uuid.uuid4().hex, name="profiled", namespace="team-a"), settings)
    profile = first.profile
    assert [c.name for c in profile.features] == [str(j + 1) for j in range(136)]
    assert profile.rows == 5000 and profile.queries == len(np.unique(test.qids))
    assert profile.query_lengths.count == profile.queries
    for j in (0, 7, 135):
        column, values = profile.features[j], test.features[:, j].astype(np.float64)
        assert column.missing == int(np.isnan(values).sum())
        assert column.mean == pytest.approx(np.nanmean(values), rel=1e-9)
        assert column.std == pytest.approx(np.nanstd(values), rel=1e-9)
    assert profile.predictions["model"].count == 5000
    again = parse_manifest(manifest(bucket, dataQuality="{reference: {evaluation: profiled}}"))
    second = run_manifest(again, Identity(uuid.uuid4().hex, name="again", namespace="team-a"),
                          settings)
    assert second.cache_hit and second.drift.reference.startswith("evaluation profiled (uid ")
    # the reference's bins are its sketch's deciles, their counts read off the sketch (within
    # its rank error): the same data gives a PSI near 0, not 0
    assert not second.drift.drifted and max(f.psi for f in second.drift.features) < 1e-2
    with MongoClient(bed.mongodb_uri) as mongo:
        doc = mongo["modeleval"]["results"].find_one({"_id": f"{second.identity.uid}:1"})
    assert len(doc["profile"]["features"]) == 136 and doc["drift"]["driftedShare"] == 0


def test_a_task_of_two_cpus_gives_the_metrics_of_one_cpu_tasks(bed, bucket, ranking_assets,
                                                                settings):
    """resources.cpu 2: each task holds both of the head's CPUs and parses its range in two
    pieces side by side (the data is two ranges' worth); cold and warm, with the tasks
    predicting and with predicting actors, exactly the metrics of one-CPU tasks."""
    ranker, test = ranking_assets
    small = settings.model_copy(update={"shard_bytes": 3 * 2**20})
    one = run_manifest(parse_manifest(manifest(bucket)), Identity(uuid.uuid4().hex), small)
    two_cpus = parse_manifest(manifest(bucket, resources="{cpu: '2'}"))
    wide = small.model_copy(update={"cache_uri": settings.cache_uri + "-two-cpus"})
    cold = run_manifest(two_cpus, Identity(uuid.uuid4().hex), wide)
    warm = run_manifest(two_cpus, Identity(uuid.uuid4().hex), wide)
    assert not cold.cache_hit and warm.cache_hit and cold.dataset["shards"] == 3
    # The GPU path's wiring (its actors predicting on the CPU here): each task of two CPUs
    # hands its two shards to the actors side by side.
    on_actors = ScoringPlan(actors=2, num_gpus=0.0, use_gpu=False)
    wired = small.model_copy(update={"cache_uri": settings.cache_uri + "-two-cpus-actors"})
    actors = [Evaluator(two_cpus.spec, Identity(uuid.uuid4().hex), wired, scoring=on_actors).run()
              for _ in ("cold", "warm")]
    assert [r.cache_hit for r in actors] == [False, True]
    for result in (cold, warm, *actors):
        assert result.metrics == pytest.approx(one.metrics, abs=1e-12)
    assert cold.metrics["ndcg@10"] == pytest.approx(xgboost_reference(ranker, test, "ndcg@10"), abs=1e-6)


def test_small_data_runs_inline_with_the_same_metrics(bed, bucket, ranking_assets, settings):
    """Below inline_bytes the job evaluates in its own process (no task workers to start); the
    metrics are those of the Ray path, cold and warm."""
    from ray.util.state import list_tasks

    text = parse_manifest(manifest(bucket))
    on_ray = run_manifest(text, Identity(uuid.uuid4().hex), settings)
    inline = settings.model_copy(update={"inline_bytes": 64 * 2**20,
                                         "cache_uri": settings.cache_uri + "-inline"})
    def settled_task_count() -> int:  # task events reach the state API a little late
        count = len(list_tasks(limit=10_000))
        while True:
            time.sleep(1.5)
            again = len(list_tasks(limit=10_000))
            if again == count:
                return count
            count = again

    tasks_before = settled_task_count()
    cold = run_manifest(text, Identity(uuid.uuid4().hex), inline)
    warm = run_manifest(text, Identity(uuid.uuid4().hex), inline)
    assert settled_task_count() == tasks_before  # no task was started
    assert not cold.cache_hit and warm.cache_hit
    assert cold.metrics == pytest.approx(on_ray.metrics, abs=1e-12)
    assert warm.metrics == pytest.approx(on_ray.metrics, abs=1e-12)


def test_shared_cache_in_s3_with_node_local_copies(bed, s3, bucket, ranking_assets, tmp_path):
    """Parts go to the shared S3 cache and to a bounded node-local copy; a warm run reads the
    copies, and a missing or damaged copy falls back to S3 with the same metrics."""
    prefix = f"cache-{uuid.uuid4().hex[:6]}"
    node = tmp_path / "node"
    settings = EngineSettings(cache_uri=f"s3://{bucket}/{prefix}", results_dir=tmp_path / "r",
                              node_cache_dir=node, shard_bytes=256 * 1024, inline_bytes=0)
    text = parse_manifest(manifest(bucket))
    size = s3.head_object(Bucket=bucket, Key="data/test.txt")["ContentLength"]

    def evaluate(settings):
        seen: list[tuple[int, int, str]] = []
        result = run_manifest(text, Identity(uuid.uuid4().hex), settings, progress=lambda *p: seen.append(p))
        return result, seen[-1]

    cold, last = evaluate(settings)
    assert not cold.cache_hit and last == (size, size, "bytes")  # parse and predict in one pass
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    parts = sorted(k for k in stored if k.endswith(".arrow"))
    assert len(parts) == cold.dataset["shards"] > 1 and any(k.endswith("manifest.json") for k in stored)
    copies = sorted(node.glob("*.arrow"))
    assert len(copies) == len(parts)

    warm, last = evaluate(settings)
    assert warm.cache_hit and last == (5000, 5000, "rows")
    assert warm.metrics == cold.metrics

    copies[0].unlink()
    copies[1].write_bytes(b"not an arrow file")
    again, _ = evaluate(settings)
    assert again.metrics == cold.metrics and len(list(node.glob("*.arrow"))) == len(parts)

    one_part = max(c.stat().st_size for c in node.glob("*.arrow"))
    bounded = settings.model_copy(update={"node_cache_bytes": 2 * one_part})
    for c in node.glob("*.arrow"):
        c.unlink()
    small, _ = evaluate(bounded)
    assert small.metrics == cold.metrics
    assert sum(c.stat().st_size for c in node.glob("*.arrow")) <= 2 * one_part


def test_baseline_deltas_and_gate(bed, s3, bucket, ranking_assets, settings):
    ranker, test = ranking_assets
    noise = make_letor(2000, 136, seed=99)
    noise.labels = np.random.default_rng(0).permutation(noise.labels)  # nothing to learn
    weak = train_ranker(noise, rounds=3)
    s3.put_object(Bucket=bucket, Key="models/weak.json", Body=bytes(weak.get_booster().save_raw("json")))
    text = manifest(bucket, model=f"{{uri: s3://{bucket}/models/weak.json}}",
                    baseline=f"{{model: {{uri: s3://{bucket}/models/ranker.json}}}}",
                    gate="[{metric: ndcg@10, maxRegression: 0.0}, {metric: mrr, min: 0.0}]")
    result = run_manifest(parse_manifest(text), Identity(uuid.uuid4().hex), settings)
    delta = result.baseline["deltas"]["ndcg@10"]
    assert delta == pytest.approx(result.metrics["ndcg@10"] - result.baseline["metrics"]["ndcg@10"])
    assert delta < 0 and result.gate["passed"] is False
    assert [r["passed"] for r in result.gate["rules"]] == [False, True]


def test_failures_are_typed_and_recorded(bed, s3, bucket, ranking_assets, settings):
    s3.put_object(Bucket=bucket, Key="models/garbage.json", Body=b"{not a model")
    s3.put_object(Bucket=bucket, Key="models/pickled.json", Body=pickle.dumps({"a": 1}))
    narrow = xgb.XGBRanker(n_estimators=2).fit(np.random.rand(40, 5), np.random.randint(0, 3, 40),
                                               qid=np.repeat([1, 2], 20))
    s3.put_object(Bucket=bucket, Key="models/five.json", Body=bytes(narrow.get_booster().save_raw("json")))
    s3.put_object(Bucket=bucket, Key="data/empty.txt", Body=b"")
    s3.put_object(Bucket=bucket, Key="data/garbled.txt", Body=b"2 qid:1 1:0.5 2:zz\n")
    cases = {
        Reason.ModelNotFound: {"model": f"{{uri: s3://{bucket}/models/missing.json}}"},
        Reason.DatasetNotFound: {"dataset": f"{{uri: s3://{bucket}/data/missing.txt}}"},
        Reason.ModelLoadError: {"model": f"{{uri: s3://{bucket}/models/garbage.json}}"},
        Reason.PickleRefused: {"model": f"{{uri: s3://{bucket}/models/pickled.json}}"},
        Reason.SchemaMismatch: {"model": f"{{uri: s3://{bucket}/models/five.json}}"},
        Reason.EmptyDataset: {"dataset": f"{{uri: s3://{bucket}/data/empty.txt}}"},
        Reason.DatasetParseError: {"dataset": f"{{uri: s3://{bucket}/data/garbled.txt}}"},
    }
    with MongoClient(bed.mongodb_uri) as mongo:
        for reason, spec in cases.items():
            identity = Identity(uuid.uuid4().hex, attempt=2)
            with pytest.raises(EvaluationError) as error:
                run_manifest(parse_manifest(manifest(bucket, **spec)), identity, settings)
            assert error.value.reason == reason, error.value.message
            doc = mongo["modeleval"]["results"].find_one({"_id": f"{identity.uid}:2"})
            assert doc["status"] == "Failed" and doc["reason"] == reason.value
            assert doc["message"] == error.value.message


def test_storage_errors_tell_denied_from_unreachable(bed, bucket, ranking_assets, monkeypatch):
    uri = f"s3://{bucket}/data/test.txt"
    # One GET gives a whole object and the fingerprint a HEAD gives (a model's, in results).
    info, data = Storage().fetch(uri)
    assert info == Storage().stat(uri) and data == Storage().read(uri)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    for look in (Storage().stat, Storage().fetch):
        with pytest.raises(EvaluationError) as denied:
            look(uri)
        assert denied.value.reason == Reason.AccessDenied
    monkeypatch.undo()
    with pytest.raises(EvaluationError) as unreachable:
        Storage(endpoint_url="http://127.0.0.1:9").stat(uri)
    assert unreachable.value.reason == Reason.StorageUnavailable and unreachable.value.retryable


def test_onnx_binary_classifier_on_parquet(bed, s3, bucket, settings):
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 12)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] + rng.normal(scale=0.8, size=3000) > 0).astype(int)
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(x[:2000], y[:2000])
    onnx_model = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, 12]))])
    s3.put_object(Bucket=bucket, Key="models/clf.onnx", Body=onnx_model.SerializeToString())
    table = pa.table({**{f"x{j}": x[2000:, j] for j in range(12)}, "y": y[2000:],
                      "region": np.where(x[2000:, 1] > 0, "north", "south")})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    s3.put_object(Bucket=bucket, Key="data/clf.parquet", Body=sink.getvalue())

    text = manifest(bucket, task="binary", model=f"{{uri: s3://{bucket}/models/clf.onnx, format: onnx}}",
                    dataset=f"{{uri: s3://{bucket}/data/clf.parquet, format: parquet, labelColumn: y}}",
                    metrics="[auc, logloss, accuracy, f1]", slices="[{name: region, column: region}]")
    result = run_manifest(parse_manifest(text), Identity(uuid.uuid4().hex), settings)
    expected = clf.predict_proba(x[2000:])[:, 1]
    assert result.metrics["auc"] == pytest.approx(roc_auc_score(y[2000:], expected), abs=1e-5)
    assert result.metrics["logloss"] == pytest.approx(log_loss(y[2000:], expected), abs=1e-5)
    assert set(result.slices["region"]) == {"north", "south"}
    assert sum(g["rows"] for g in result.slices["region"].values()) == 1000


def test_killed_worker_is_retried_and_metrics_stay_exact(bed, s3, bucket, ranking_assets, tmp_path):
    """A Ray worker process killed mid-task (SIGKILL from outside) costs a retry, not a result."""
    import threading

    import psutil

    ranker, _ = ranking_assets
    data = make_letor(20_000, 136, mean_group=40, seed=21)
    s3.put_object(Bucket=bucket, Key="data/kill.txt", Body=letor_bytes(data))
    settings = EngineSettings(mongodb_uri=bed.mongodb_uri, cache_uri=f"file://{tmp_path}/cache",
                              results_dir=tmp_path / "results", shard_bytes=256 * 1024,
                              max_inflight_tasks=2, inline_bytes=0)
    killed: list[str] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                if cmdline.startswith(("ray::parse_and_predict", "ray::predict_part")):
                    proc.kill()
                    killed.append(cmdline.split()[0])
                    return
            stop.wait(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    text = manifest(bucket, dataset=f"{{uri: s3://{bucket}/data/kill.txt, numFeatures: 136}}")
    try:
        result = run_manifest(parse_manifest(text), Identity(uuid.uuid4().hex), settings)
    finally:
        stop.set()
        thread.join()
    assert killed, "no worker was caught running a task"
    assert result.rows == 20_000
    assert result.metrics["ndcg@10"] == pytest.approx(xgboost_reference(ranker, data, "ndcg@10"), abs=1e-6)


def test_result_kept_while_store_is_down_then_written_once(bed, tmp_path):
    from modeleval.api.results import ResultDocument, document_id
    from modeleval.store import MongoResultStore, replay_spool, write_with_retry

    uid = uuid.uuid4().hex
    document = ResultDocument(_id=document_id(uid, 1), uid=uid, attempt=1, name="spooled",
                              status="Succeeded", metrics={"mrr": 0.5})
    down = MongoResultStore("mongodb://127.0.0.1:9/", timeout_ms=300)
    delays: list[float] = []
    spool = tmp_path / "spool"
    assert write_with_retry(down, document, spool, attempts=4, sleep=delays.append) is False
    assert delays == [1.0, 2.0, 4.0]  # exponential backoff between the attempts
    assert len(list(spool.glob("*.json"))) == 1

    up = MongoResultStore(bed.mongodb_uri)
    assert replay_spool(up, spool) == 1 and replay_spool(up, spool) == 0
    with MongoClient(bed.mongodb_uri) as mongo:
        docs = list(mongo["modeleval"]["results"].find({"uid": uid}))
    assert len(docs) == 1 and docs[0]["metrics"] == {"mrr": 0.5}
    assert up.get(uid, 1) == document and up.get(uid) == document
    assert up.insert_if_absent(document) is False  # an attempt's document is never overwritten


def test_csv_ranking_with_string_query_ids(bed, s3, bucket, ranking_assets, settings):
    """CSV input, query ids that are strings, uneven groups: the same metrics as LETOR input."""
    import pyarrow.csv as pacsv

    ranker, test = ranking_assets
    columns = {"query": np.char.add("q-", test.qids.astype(str)), "relevance": test.labels}
    columns.update({f"feat_{j}": test.features[:, j] for j in range(136)})
    sink = io.BytesIO()
    pacsv.write_csv(pa.table(columns), sink)
    s3.put_object(Bucket=bucket, Key="data/test.csv", Body=sink.getvalue())
    text = manifest(bucket, dataset=f"{{uri: s3://{bucket}/data/test.csv, format: csv, "
                                    "labelColumn: relevance, groupColumn: query}")
    result = run_manifest(parse_manifest(text), Identity(uuid.uuid4().hex), settings)
    letor = run_manifest(parse_manifest(manifest(bucket)), Identity(uuid.uuid4().hex), settings)
    assert result.rows == letor.rows and result.queries == letor.queries
    assert result.metrics == pytest.approx(letor.metrics, abs=1e-9)
