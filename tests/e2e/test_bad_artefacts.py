"""Bad artefacts, applied all at once through the operator: each evaluation ends Failed with its
reason code and a message naming the object, after one attempt (a retry cannot fix the data),
with its failure document stored, its RayCluster removed, and the operator never restarting."""

from __future__ import annotations

import io
import pickle
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
import yaml
from kubernetes import client
from pymongo import MongoClient

from modeleval.demo import EXAMPLES_BUCKET, letor_bytes, make_letor
from modeleval.engine.storage import Storage

from .kube import eventually
from .operator_fixture import EVALUATIONS, kubectl

pytestmark = pytest.mark.e2e
RANKER = f"s3://{EXAMPLES_BUCKET}/models/ranker.json"  # 136 features


def corpus(bucket: str, storage: Storage) -> dict[str, tuple[dict, str, str]]:
    """name -> (spec overrides, reason, a text the message must contain)."""
    good = letor_bytes(make_letor(400, 136, mean_group=20, seed=3))
    lines = good.splitlines(keepends=True)
    ranker = storage.read(RANKER)
    narrow = xgb.XGBRanker(n_estimators=2).fit(np.random.rand(40, 5), np.random.randint(0, 3, 40),
                                               qid=np.repeat([1, 2], 20))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    binary = xgb.XGBClassifier(n_estimators=3).fit(x, (x[:, 0] > 0).astype(int))
    no_label = io.BytesIO()
    pq.write_table(pa.table({f"f{j}": x[:, j] for j in range(6)}), no_label)
    objects = {
        "models/truncated.json": ranker[: len(ranker) // 2],
        "models/noise.json": rng.bytes(4096),
        "models/pickled.json": pickle.dumps({"not": "a model"}),
        "models/five.json": bytes(narrow.get_booster().save_raw("json")),
        "models/binary.json": bytes(binary.get_booster().save_raw("json")),
        "data/truncated.txt": good[: good.rindex(b":") + 1],  # cut after "index:", mid-line
        "data/garbled.txt": rng.bytes(20_000),
        "data/empty.txt": b"",
        "data/wide.txt": b"".join(lines[:-1]) + b"1 qid:9999 1:0.5 200:1.0\n",
        "data/no-qid.txt": b"".join(b" ".join(line.split(b" ")[:1] + line.split(b" ")[2:])
                                    for line in lines),
        "data/negative.txt": b"".join(lines[:-1]) + b"-1 qid:9999 1:0.5\n",
        "data/graded.txt": b"".join(f"{i % 4} 1:{v:.3f} 2:0.1\n".encode()
                                    for i, v in enumerate(rng.normal(size=300))),
        "data/no-label.parquet": no_label.getvalue(),
    }
    for key, data in objects.items():
        storage.write(f"s3://{bucket}/{key}", data)
    s3 = f"s3://{bucket}"
    letor = lambda key, n=136: {"uri": f"{s3}/data/{key}", "numFeatures": n}  # noqa: E731
    return {
        "missing-model": ({"model": {"uri": f"{s3}/models/none.json"}, "dataset": letor("wide.txt")},
                          "ModelNotFound", "none.json"),
        "missing-data": ({"dataset": letor("none.txt")}, "DatasetNotFound", "none.txt"),
        "truncated-model": ({"model": {"uri": f"{s3}/models/truncated.json"}}, "ModelLoadError",
                            "truncated.json"),
        "noise-model": ({"model": {"uri": f"{s3}/models/noise.json"}}, "ModelLoadError", "noise.json"),
        "pickled-model": ({"model": {"uri": f"{s3}/models/pickled.json"}}, "PickleRefused",
                          "pickled.json"),
        "truncated-data": ({"dataset": letor("truncated.txt")}, "DatasetParseError", "truncated.txt"),
        "garbled-data": ({"dataset": letor("garbled.txt")}, "DatasetParseError", "garbled.txt"),
        "empty-data": ({"dataset": letor("empty.txt")}, "EmptyDataset", "empty.txt"),
        "fewer-features": ({"model": {"uri": f"{s3}/models/five.json"}}, "SchemaMismatch", "expects 5"),
        "index-too-large": ({"dataset": letor("wide.txt")}, "SchemaMismatch", "200"),
        "no-query-ids": ({"dataset": letor("no-qid.txt")}, "SchemaMismatch", "qid"),
        "negative-relevance": ({"dataset": letor("negative.txt")}, "LabelError", "negative"),
        "graded-labels-binary": ({"task": "binary", "metrics": ["auc"],
                                  "model": {"uri": f"{s3}/models/binary.json"},
                                  "dataset": letor("graded.txt", 6)}, "LabelError", "0 and 1"),
        "parquet-no-label": ({"task": "binary", "metrics": ["auc"],
                              "model": {"uri": f"{s3}/models/binary.json"},
                              "dataset": {"uri": f"{s3}/data/no-label.parquet", "format": "parquet",
                                          "labelColumn": "clicked"}}, "SchemaMismatch", "clicked"),
    }


def test_bad_artefacts_each_fail_once_with_their_reason(bed, api, namespace, operator):
    bucket = f"bad-{uuid.uuid4().hex[:6]}"
    storage = Storage()
    storage.create_bucket(bucket)
    cases = corpus(bucket, storage)
    base = {"task": "ranking", "model": {"uri": RANKER},
            "dataset": {"uri": f"s3://{EXAMPLES_BUCKET}/mslr/test.txt", "numFeatures": 136},
            "metrics": ["ndcg@10"], "backoffLimit": 3,
            "resources": {"workers": 1, "cpu": "100m", "memory": "256Mi", "headCpu": "100m",
                          "headMemory": "256Mi"}}
    manifests = [{"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
                  "metadata": {"name": name}, "spec": {**base, **overrides}}
                 for name, (overrides, _, _) in cases.items()]
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(manifests))
    custom = client.CustomObjectsApi(api)

    def all_terminal():
        items = custom.list_namespaced_custom_object(*EVALUATIONS[:2], namespace, EVALUATIONS[2])["items"]
        done = {i["metadata"]["name"]: i for i in items
                if (i.get("status") or {}).get("phase") in ("Succeeded", "Failed")}
        return done if len(done) == len(cases) else None

    done = eventually(all_terminal, 300, "every bad evaluation to end", interval=2)
    with MongoClient(bed.mongodb_uri) as mongo:
        for name, (_, reason, mentions) in cases.items():
            status = done[name]["status"]
            assert (status["phase"], status["reason"]) == ("Failed", reason), (name, status.get("message"))
            assert mentions in status["message"] and "not retried" in status["message"], name
            assert status["attempt"] == 1, name
            uid = done[name]["metadata"]["uid"]
            documents = list(mongo["modeleval"]["results"].find({"uid": uid}))
            assert [(d["attempt"], d["status"], d["reason"]) for d in documents] == [(1, "Failed", reason)]
    assert operator.process.poll() is None  # no crash, no restart
    eventually(lambda: not custom.list_namespaced_custom_object("ray.io", "v1", namespace,
                                                                "rayclusters")["items"],
               60, "every RayCluster to be removed")
